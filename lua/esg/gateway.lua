--[[
esg.gateway: turns a script's pipeline table into libesg's gateway (store:gateway,
docs/lua.md "Gateways") and runs it; the pipeline itself runs in C:

  source -> filter -> idempotence -> latch (check) -> enrich -> transform -> latch (mark) -> sink

docs/gateway.md describes the table, each step, faults and resubmission. What stays
here is Lua's: the descriptors, the check of a table, the options of store:gateway,
the run record of `esg stats`; resync and replay sources are esg.resync's.
]]
local esg = require "esg"
local sandbox = require "esg.sandbox"
local resync = require "esg.resync"
-- Everything the runner uses, taken now: a script may change any global or library table
-- (ipairs = nil, string.format = nil) and the runner must go on regardless. Strings are
-- handled with these functions, never with methods (s:find), which go through the string
-- metatable; the sandbox protects that metatable too.
local type, pairs, ipairs, next, tostring, error, pcall, assert = type, pairs, ipairs, next, tostring, error, pcall, assert
local fmt, sub, find = string.format, string.sub, string.find
local pack, unpack, concat = table.pack, table.unpack, table.concat
local floor, random, stderr = math.floor, math.random, io.stderr
local uuid5, http_loader = esg.uuid5, esg.http_loader
local text_of = sandbox.text_of

local M = { RUN_TYPE = "esg.run", RUN_KEY = "esg.runs", RESUBMIT_PREFIX = "esg.resubmit/", text_of = text_of }
M.COUNTERS = { "received", "delivered", "duplicates", "echoes", "stale", "faults", "filtered", "dropped", "busy",
               "cancelled" }

-- Sources and sinks are descriptors: the run opens them. lines: a list of strings or an iterator.
M.source = {
  jsonl = function(path) return { kind = "jsonl", path = path } end,
  stdin = function() return { kind = "jsonl", path = "-" } end,
  lines = function(lines) return { kind = "lines", lines = lines } end,
  -- {source=, listing = function(ctx) -> iterator of key, content, type=, entity_field=, log_ttl=}
  snapshot = function(opts) return { kind = "snapshot", opts = opts } end,
  -- {name=, source=, fetch = function(cursor, ctx) -> page | nil, msg, entity_field=, log_ttl=, max_pages=}
  cursor = function(opts) return { kind = "cursor", opts = opts } end,
  -- {key=, type=, since=, ["until"]=}: stored events again, same ids
  replay = function(opts) return { kind = "replay", opts = opts or {} } end,
}

M.sink = {
  stdout = function() return { kind = "jsonl", path = "-" } end,
  jsonl = function(path) return { kind = "jsonl", path = path } end,
  eventlog = function(opts) opts = opts or {}; return { kind = "eventlog", key = opts.key, ttl = opts.ttl } end,
  collect = function(list) return { kind = "collect", list = list } end, -- each output appended, as returned
  -- {url = string | function(out, ctx), method=, headers = list | map, body = function(out, ctx), engine options}
  http = function(opts)
    if type(opts) ~= "table" or (type(opts.url) ~= "string" and type(opts.url) ~= "function") then
      error("gateway.sink.http: opts.url (a string or a function) is required", 2)
    end
    return { kind = "http", opts = opts }
  end,
}

local STEPS = { name = 1, source = 1, filter = 1, idempotence = 1, latch = 1, enrich = 1, transform = 1, sink = 1,
                description = 1 }

local function must(cond, msg, level) if not cond then error("pipeline: " .. msg, level or 3) end end
local function fns(t, prefix, ...) -- the fields of t named must be functions, or absent
  for _, k in ipairs { ... } do must(t[k] == nil or type(t[k]) == "function", prefix .. k .. " must be a function", 4) end
end

-- A copy of the script's table made with raw reads only (next, no __index or __pairs), so
-- no metamethod of the script's runs in the runner outside a budget. Functions and userdata
-- stay as they are; so do the lists a descriptor hands over (a collect sink's list, a
-- lines source), which are read raw or written to.
local KEEP = { list = true, lines = true }
local function plain(v, depth)
  if type(v) ~= "table" then return v end
  must(depth < 32, "tables nested too deeply (a cycle?)", 4)
  local t, k, x = {}, next(v)
  while k ~= nil do
    t[k] = KEEP[k] and x or plain(x, depth + 1)
    k, x = next(v, k)
  end
  return t
end

-- Checks a pipeline table; returns a plain copy of it (see plain), or raises naming the bad field.
function M.check(spec)
  if type(spec) ~= "table" then
    error("a gateway script must return a pipeline table (got " .. type(spec) .. ")", 2)
  end
  spec = plain(spec, 0)
  for k in pairs(spec) do must(STEPS[k], fmt("unknown field %q", text_of(k))) end
  must(spec.name == nil or type(spec.name) == "string", "name must be a string")
  fns(spec, "", "filter", "transform")
  for _, k in ipairs { "latch", "enrich" } do
    must(spec[k] == nil or type(spec[k]) == "function" or type(spec[k]) == "table", k .. " must be a function or a table")
  end
  local latch, enrich, idem = spec.latch, spec.enrich, spec.idempotence
  if type(latch) == "table" then
    must(type(latch.key) == "function", "latch.key must be a function")
    must(latch.from ~= nil or latch.to ~= nil or latch.flag, "latch needs from, to or flag")
    fns(latch, "latch.", "doc", "out_doc")
  end
  if type(enrich) == "table" then
    fns(enrich, "enrich.", "key", "fn")
    must(not enrich.key or enrich.into, "enrich.key needs enrich.into")
    local ld = enrich.load
    must(ld == nil or type(ld) == "function" or (type(ld) == "table" and ld.url),
      "enrich.load must be a function or {url = ...}")
  end
  must(idem == nil or type(idem) == "boolean" or type(idem) == "table", "idempotence must be true, false or a table")
  if type(idem) == "table" then
    fns(idem, "idempotence.", "key", "entity")
    must(idem.hash == nil or idem.hash == false or type(idem.hash) == "function",
      "idempotence.hash must be a function or false")
  end
  local sink, source = spec.sink, spec.source
  must(sink == nil or type(sink) == "function" or (type(sink) == "table" and sink.kind),
    "sink must be a gateway.sink descriptor or a function")
  must(source == nil or (type(source) == "table" and source.kind), "source must be a gateway.source descriptor")
  return spec
end

local function now_ms(store) return floor(store:now() * 1000 + 0.5) end
local function resolve(path, base)
  if base and sub(path, 1, 1) ~= "/" then return base .. path end
  return path
end

-- A run (or resubmission): its id, ctx, faults_list and the options of store:gateway for spec.
local function new_run(spec, opts, source)
  local store = assert(opts.store, "gateway: opts.store is required")
  local name = spec.name or "gateway"
  local r = { store = store, script = opts.script or spec.name or "gateway", source = source, faults_list = {},
              extra = 0, started = now_ms(store), budget = opts.budget, written = store:bytes_written() }
  r.id = uuid5(fmt("esg.run/%s/%d/%s/%s", r.script, r.started, tostring(r), tostring(random())))
  r.ctx = { store = store, name = spec.name, run = r.id, now = function() return store:now() end,
            log = function(...)
              local t = pack(...)
              for i = 1, t.n do t[i] = text_of(t[i]) end
              stderr:write("[", name, "] ", concat(t, " ", 1, t.n), "\n")
            end }
  function r.on_fault(f)
    f.source, f.script, f.run = r.source, r.script, r.id
    if #r.faults_list < 100 then r.faults_list[#r.faults_list + 1] = f end
    if opts.on_fault then opts.on_fault(f) end
  end
  local o = { name = name, filter = spec.filter, transform = spec.transform, budget = opts.budget, ctx = r.ctx,
              max_line = opts.max_line,
              on_fault = r.on_fault, fault_note = fmt("script %s, run %s", r.script, r.id),
              progress = opts.progress }
  local idem, l = spec.idempotence, spec.latch
  o.no_idempotence = idem == false
  if type(idem) == "table" then
    o.key, o.hash, o.entity, o.lease, o.ttl = idem.key, idem.hash, idem.entity, idem.lease, idem.ttl
  end
  if type(l) == "function" then
    o.echo = l
  elseif l then
    o.latch_key, o.latch_from, o.latch_to, o.latch_doc, o.latch_out_doc, o.latch_ttl, o.latch_flag =
      l.key, l.from, l.to, l.doc, l.out_doc, l.ttl, l.flag
  end
  local e = spec.enrich
  if type(e) == "function" then
    o.enrich = e
  elseif e then
    o.cache, o.collect, o.enrich_key, o.enrich_into, o.enrich_required, o.enrich = e.cache, e.collect, e.key, e.into,
      e.required, e.fn
    o.load = type(e.load) == "table" and assert(http_loader(e.load)) or e.load
  end
  local sink, base = spec.sink, opts.base
  -- -o redirects a stdout or JSON lines sink only: an HTTP, event log or collect sink stays
  if opts.output and (sink == nil or (type(sink) == "table" and sink.kind == "jsonl")) then
    sink, base = M.sink.jsonl(opts.output), nil
  end
  sink = sink or M.sink.stdout()
  if type(sink) == "function" then
    o.sink, o.write = "callback", sink
  elseif sink.kind == "jsonl" then
    o.sink = "file"
    if sink.path and sink.path ~= "-" then o.sink_path = resolve(sink.path, base) end
  elseif sink.kind == "eventlog" then
    o.sink, o.eventlog_key, o.eventlog_ttl = "eventlog", sink.key, sink.ttl
  elseif sink.kind == "collect" then
    local list = sink.list
    o.sink, o.write = "callback", function(out) list[#list + 1] = out end
  elseif sink.kind == "http" then
    local h = sink.opts
    o.sink, o.http_url, o.http_method, o.http_headers, o.http_body, o.egress = "http", h.url, h.method, h.headers,
      h.body, h -- the engine's options are read from it
    o.on_retry = h.on_retry
  end
  return r, o
end

-- Deletes old faults (--fault-ttl), commits, stores the run's record; the counters or nil, message.
local function finish(r, gw, kind, spec, opts)
  local ok, cerr = gw:close()
  local c, store = gw:stats(), r.store
  c.received, c.faults = c.received + r.extra, c.faults + r.extra
  if opts.progress_done then opts.progress_done(c) end
  if not ok then return nil, "cannot commit: " .. tostring(cerr) end
  if opts.fault_ttl then store:purge_faults(store:now() - opts.fault_ttl) end
  local fok, ferr = store:flush()
  if not fok then return nil, "cannot commit: " .. tostring(ferr) end
  c.faults_list, c.resync, c.run, c.source = r.faults_list, r.resync, r.id, r.source
  c.bytes_written = store:bytes_written() - r.written
  local rec = { id = uuid5("esg.run/" .. r.id), type = M.RUN_TYPE, timestamp = now_ms(store), partitionKey = M.RUN_KEY,
                run = { script = r.script, name = spec.name, source = r.source, started = r.started, elapsed = c.elapsed,
                        kind = kind } }
  for _, k in ipairs(M.COUNTERS) do rec.run[k] = c[k] end
  store:put(rec, { key = M.RUN_KEY, ttl = opts.run_ttl })
  store:flush()
  return c
end

-- The source's name in fault records and the run record, and what gw:run takes (nil: drive it).
local function source_of(desc, base)
  local k = desc.kind
  if k == "lines" then return "lines", desc.lines end
  if resync.drives(k) then return resync.name(desc) end
  if desc.path == nil or desc.path == "-" then return "stdin", "-" end
  local path = resolve(desc.path, base)
  return path, path
end

-- Runs a pipeline (opts: store, input, output, base, script, budget, max_line, progress(stats) and
-- progress_done(stats), fault_ttl, on_fault, run_ttl): the counters (M.COUNTERS, elapsed, faults_list, resync, run, source) or nil, message.
function M.run(spec, opts)
  spec = M.check(spec)
  local desc, base = spec.source, opts.base
  if opts.input then
    desc, base = type(opts.input) == "table" and opts.input.kind and opts.input or M.source.jsonl(opts.input), nil
  end
  desc = desc or M.source.stdin()
  local source, input = source_of(desc, base)
  if not source then return nil, input end
  local r, o = new_run(spec, opts, source)
  o.source_name = source
  local gw, err = r.store:gateway(o)
  if not gw then return nil, err end
  local ok, rerr
  if input then ok, rerr = gw:run(input) else ok, rerr = resync.drive(r, gw, desc) end
  if not ok and find(text_of(rerr), "^cannot open the source") then gw:close(); return nil, rerr end -- no run
  local c, ferr = finish(r, gw, "run", spec, opts)
  if not ok then return nil, rerr end
  return c, ferr
end

-- Resubmits the faults opts.ids (nil: all, oldest first; other opts as for M.run): the counters
-- plus resubmitted, skipped (held elsewhere) and missing, or nil, message.
function M.resubmit(spec, opts)
  spec = M.check(spec)
  local r, o = new_run(spec, opts, "faults")
  local store, ids = r.store, opts.ids
  if not ids then
    local list, err = store:faults()
    if not list then return nil, err end
    ids = {}
    for i, f in ipairs(list) do ids[i] = f.id end
  end
  o.http_rerender = opts.rerender -- else a stored request goes again byte for byte
  local gw, err = store:gateway(o)
  if not gw then return nil, err end
  local skipped, missing = 0, 0
  for _, id in ipairs(ids) do
    local how, rerr = gw:resubmit(id)
    if how == "busy" then skipped = skipped + 1
    elseif how == nil and rerr == nil then missing = missing + 1
    elseif how == nil then gw:close(); return nil, rerr end
  end
  local c, ferr = finish(r, gw, "resubmit", spec, opts)
  if not c then return nil, ferr end
  c.skipped, c.missing = skipped, missing
  return c
end

-- One run at a time: a step that started another would share and reset its budget.
local running
for _, name in ipairs { "run", "resubmit" } do
  local f = M[name]
  M[name] = function(spec, opts)
    if running then error("gateway." .. name .. ": a run is in progress (a step cannot start another)", 2) end
    running = true
    local r = pack(pcall(f, spec, opts))
    running = false
    if not r[1] then error(r[2], 0) end
    return unpack(r, 2, r.n)
  end
end

return M
