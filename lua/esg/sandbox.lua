--[[
esg.sandbox: what a gateway script may not do, unless the operator allows it.

apply(allow) changes the running state in place, so it covers every chunk and
module loaded afterwards; the runner captured what it needs before. allow:
  io     = true   io.open for writing, io.output(file), io.tmpfile, os.remove,
                  os.rename, os.tmpname, esg.open (opening other stores)  (--allow-io)
  exec   = true   os.execute, io.popen, os.exit                         (--allow-exec)
  native = true   C modules (package.loadlib, the cpath searchers) and
                  binary chunks in load/loadfile/dofile/require           (--allow-native)
Always: the debug library is reduced to debug.traceback (it could lift the
instruction budget or reach the runner's upvalues), and esg.host (the budget
and memory controls) is out of reach.

call(budget, f, ...) and text_of(v) are how the runner calls script code outside the
C gateway's steps (a source's listing, an error object's __tostring): under the
budget, the deadline and the memory limit, as the steps are.
]]
local M = {}
-- The esg command's host (taken before apply hides it); elsewhere (plain Lua) calls are plain pcalls.
local has_host, host = pcall(require, "esg.host")
local type, tostring, pcall = type, tostring, pcall
local pack, unpack = table.pack, table.unpack

-- Calls f(...) as script code: true, results | false, message.
function M.call(budget, f, ...)
  if not has_host then return pcall(f, ...) end
  local r = pack(host.pcall(budget or 0, f, ...))
  return unpack(r, 1, r[1] and r.n or 2)
end

-- A script's value as text for a message, without running its code outside a budget: an
-- error object's __tostring runs as script code (under the budget), other values by type.
function M.text_of(v, budget)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" or t == "boolean" or t == "nil" then return tostring(v) end
  local ok, s = M.call(budget or 1000000, tostring, v)
  if ok and type(s) == "string" then return s end
  return "(a " .. t .. " whose __tostring failed)"
end

local function denied(name, flag)
  return function()
    error(name .. ": not allowed in the esg sandbox (run with " .. flag .. " to allow it)", 2)
  end
end
M.denied = denied

function M.apply(allow)
  allow = allow or {}
  local esg = require "esg"
  if not allow.exec then
    os.execute = denied("os.execute", "--allow-exec")
    io.popen = denied("io.popen", "--allow-exec")
    os.exit = denied("os.exit", "--allow-exec")
  end
  if not allow.io then
    local open, output = io.open, io.output
    io.open = function(path, mode, ...)
      if mode ~= nil and (type(mode) ~= "string" or mode:find("[wa+]")) then
        error("io.open for writing: not allowed in the esg sandbox (run with --allow-io to allow it)", 2)
      end
      return open(path, mode, ...)
    end
    io.output = function(f, ...)
      if f ~= nil then
        error("io.output: not allowed in the esg sandbox (run with --allow-io to allow it)", 2)
      end
      return output()
    end
    io.tmpfile = denied("io.tmpfile", "--allow-io")
    os.remove = denied("os.remove", "--allow-io")
    os.rename = denied("os.rename", "--allow-io")
    os.tmpname = denied("os.tmpname", "--allow-io")
    esg.open = denied("esg.open", "--allow-io")
  end
  if not allow.native then
    package.loadlib = denied("package.loadlib", "--allow-native")
    package.cpath = ""
    -- Every way to load code reads text only: crafted bytecode can crash the VM. Lua's
    -- own file searcher loads binary chunks too, so it is replaced by one that does not.
    local load_, loadfile_, searchpath = load, loadfile, package.searchpath
    local function text_only(what, chunk, err)
      if not chunk and tostring(err):find("attempt to load a binary chunk", 1, true) then
        err = what .. ": binary chunks are not allowed in the esg sandbox (run with --allow-native)"
      end
      return chunk, err
    end
    local searchers = package.searchers
    for i = #searchers, 2, -1 do searchers[i] = nil end -- keep preload
    searchers[2] = function(name)
      local path, err = searchpath(name, package.path)
      if not path then return err end
      local chunk, lerr = text_only("require " .. name .. " (" .. path .. ")", loadfile_(path, "t"))
      if not chunk then error(lerr, 3) end
      return chunk, path
    end
    load = function(chunk, name, mode, ...)
      if mode ~= nil and mode ~= "t" and mode ~= "bt" and mode ~= "tb" then
        error("load: binary chunks are not allowed in the esg sandbox (run with --allow-native)", 2)
      end
      if select("#", ...) > 0 then return text_only("load", load_(chunk, name, "t", ...)) end
      return text_only("load", load_(chunk, name, "t"))
    end
    loadfile = function(filename, mode, ...)
      if select("#", ...) > 0 then return text_only("loadfile", loadfile_(filename, "t", ...)) end
      return text_only("loadfile", loadfile_(filename, "t"))
    end
    dofile = function(filename)
      local f, err = text_only("dofile", loadfile_(filename, "t"))
      if not f then error(err, 2) end
      return f()
    end
  end
  -- The budget's holes: Lua runs a message handler called for an error raised by the
  -- budget's hook, and every __gc finaliser, with hooks off, so an endless loop there
  -- would never end; a coroutine made before an arming would run without the hook.
  if has_host and type(host) == "table" then
    local xpcall_, exhausted = xpcall, host.exhausted
    xpcall = function(f, handler, ...)
      return xpcall_(f, function(...)
        if exhausted() then return ... end -- the budget's own error: no script code now
        return handler(...)
      end, ...)
    end
    -- string patterns backtrack inside C, where no hook runs: matched by a copy of Lua's
    -- semantics that charges its steps to the budget (the string metatable's __index is
    -- this table, so s:find(...) is covered too)
    for name, f in pairs(host.string) do string[name] = f end
    local co = coroutine
    local create, resume, close = co.create, host.resume, co.close
    local pack, unpack, type_, error_ = table.pack, table.unpack, type, error
    co.resume = resume
    co.wrap = function(f)
      local c = create(f)
      return function(...)
        local r = pack(resume(c, ...))
        if r[1] then return unpack(r, 2, r.n) end
        close(c)
        error_(r[2], type_(r[2]) == "string" and 2 or 0)
      end
    end
  end
  local setmetatable_, rawget_, type__, error__ = setmetatable, rawget, type, error
  setmetatable = function(t, mt)
    if type__(mt) == "table" and rawget_(mt, "__gc") ~= nil then
      error__("__gc: finalisers are not allowed in the esg sandbox (they run outside the instruction budget)", 2)
    end
    return setmetatable_(t, mt)
  end
  -- The metatables the runner's own calls go through (strings: s:find; files: stderr:write;
  -- libesg's objects: store:flush) are protected: getmetatable gives false, setmetatable
  -- refuses, so a script cannot change what a method does for the runner. Lua's string
  -- table itself stays the script's (string.trim = ... still works in the script).
  local registry = debug.getregistry()
  local function protect(mt) if type(mt) == "table" and rawget(mt, "__metatable") == nil then mt.__metatable = false end end
  protect(getmetatable(""))
  protect(registry["FILE*"])
  for name, mt in pairs(registry) do
    if type(name) == "string" and name:find("^esg%.") and type(mt) == "table" and rawget(mt, "__index") ~= nil
       and name ~= "esg.json.lazy" and name ~= "esg.json.array" then
      protect(mt)
    end
  end
  local dbg = { traceback = debug.traceback }
  debug = dbg
  package.loaded.debug = dbg
  package.loaded["esg.host"] = nil
  package.preload["esg.host"] = nil
  package.loaded["esg.sandbox"] = nil
end

return M
