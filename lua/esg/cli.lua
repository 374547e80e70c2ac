--[[
esg.cli: the `esg` command (the C host in bindings/lua/esg_cli.c calls main(arg)).
Exit status: 0 done, 1 faults recorded (run) / not genuine (webhook verify) /
not found, 2 usage or setup error. See docs/gateway.md.
]]
local esg = require "esg"
local gateway = require "esg.gateway"
local sandbox = require "esg.sandbox"
local ok_host, host = pcall(require, "esg.host")
if not ok_host then host = nil end

-- Everything used after the script is loaded is taken now: a script may change any global
-- or library table (type = nil, string.format = nil), and the runner must not depend on
-- it. Strings are handled with these functions, never with methods (s:match), which go
-- through the string table the script can change.
local type, pairs, ipairs, tostring, tonumber, error, pcall, xpcall, loadfile, select =
  type, pairs, ipairs, tostring, tonumber, error, pcall, xpcall, loadfile, select
local json = esg.json
local json_encode, json_decode = json.encode, json.decode
local io_open, io_stdout, io_stderr, io_read = io.open, io.stdout, io.stderr, io.read
local os_getenv, os_date, fmt = os.getenv, os.date, string.format
local sub, match, gsub, find = string.sub, string.match, string.gsub, string.find
local floor, tointeger, mtype = math.floor, math.tointeger, math.type
local concat, insert, unpack = table.concat, table.insert, table.unpack
local traceback = debug.traceback
local gateway_run, gateway_resubmit, gateway_check, text_of = gateway.run, gateway.resubmit, gateway.check,
  gateway.text_of
local RUN_KEY, COUNTERS = gateway.RUN_KEY, gateway.COUNTERS
local sandbox_apply = sandbox.apply

local M = {}

local USAGE = {
  main = [[
usage: esg <command> [options]

commands:
  run SCRIPT.lua      run a gateway script over JSON lines (the main job)
  faults list|show|resubmit|purge   the fault records of a store
  events [KEY]        events stored under a correlation key
  stats               what a store holds and the last runs
  webhook sign|verify|secret   Standard Webhooks signatures
  lua SCRIPT.lua [ARGS]   run a trusted Lua script with the esg module (no sandbox)

options: --version, --help; `esg help COMMAND` or `esg COMMAND --help` for more.
Store commands take --db PATH (default: $ESG_DB).]],
  run = [[
usage: esg run SCRIPT.lua [-i FILE] [-o FILE] [--db PATH] [options]

Runs the pipeline the script returns: source -> filter -> idempotence -> latch
-> enrich -> transform -> sink, one JSON line (event envelope) at a time.
  -i, --input FILE     read events from FILE ("-" = stdin; default: the script's
                       source, else stdin)
  -o, --output FILE    append the sink's JSON lines to FILE instead of stdout
  --db PATH            the store (default: SCRIPT with .db for .lua, next to it)
  --durability full    fsync each commit (default: normal)
  --group-commit S     commit claims in groups at most S seconds old (default 0: each
                       claim at once). About 5x the events/s and 1/80 of the bytes
                       written (docs/performance.md W1, W5); a crash then loses the
                       open group: its events run again, so the sink may see up to
                       S seconds of events twice (an HTTP sink resends the same bytes
                       and Idempotency-Key). The summary shows the bytes written.
  --budget N           instructions per event (default 10000000, 0 = none)
  --memory MB          memory limit of the Lua state and of what libesg allocates
                       for the script (default 256, 0 = none)
  --deadline S         wall-clock seconds per call into the script (default 30, 0 = none)
  --max-line BYTES     a longer input line is a fault, stored as its first 64 KiB with
                       its length and SHA-256 (default and most: 1048576, an event's limit)
  --fault-ttl S        at the end, delete faults last attempted over S s ago
  --allow-io           scripts may write files and open stores
  --allow-exec         scripts may run programs (os.execute, io.popen, os.exit)
  --allow-native       scripts may load C modules and binary chunks
  --progress S         a plain progress line every S seconds, also when stderr is not a
                       terminal (a pipe, a log, systemd); on a terminal the line is
                       redrawn in place by default
  -q, --quiet          no summary;  --no-progress  no progress line
Summary on stderr; exit 0 when no fault was recorded, 1 otherwise, 2 on setup errors.]],
  faults = [[
usage: esg faults list [--json] [--db PATH]
       esg faults show ID [--json] [--db PATH]
       esg faults resubmit ID... | --all  --script SCRIPT.lua [--rerender] [--db PATH] [run options]
       esg faults purge [--older-than S] [--db PATH]

A fault record is an event that could not be handled: the stage that failed, the
error, the attempts and the event itself. resubmit runs the stored events of the
faults through the script's pipeline again (same event ids, so nothing is done
twice): a fault whose event is then handled is deleted, one that fails again is
replaced by a new record (attempts + 1). An HTTP delivery is sent again as its
first attempt stored it (same bytes, same url); --rerender runs the script's steps
again instead, to apply a fix to the transform or the sink. It takes the options of esg run
(--budget, --memory, --deadline, --allow-*, -o, -q); --db defaults to the script's store.
purge deletes every fault (or those last attempted more than S seconds ago).
Exit status of resubmit: 0 when every fault was settled, 1 otherwise.]],
  events = [[
usage: esg events [KEY] [--json] [--db PATH]

Lists the unexpired events stored under the correlation key KEY, oldest first.
Without KEY: how many runs are recorded (esg.runs) and how many faults are open.]],
  stats = [[
usage: esg stats [--json] [--db PATH]

The store's backend, schema, size, open faults, the number of runs and the last run.]],
  webhook = [[
usage: esg webhook sign --secret S --id ID [--timestamp T] [FILE]
       esg webhook verify --secret S [--secret S2 ...] --id ID --timestamp T
                          --signature SIG [--tolerance S] [--now T] [FILE]
       esg webhook secret

The payload is read from FILE (default stdin), byte for byte. Timestamps are
epoch seconds. sign prints the three headers; verify exits 0 when genuine and
fresh, 1 otherwise (the reason on stderr); secret prints a new whsec_ secret.]],
  lua = [[
usage: esg lua SCRIPT.lua [ARGS...]

Runs a trusted Lua script with esg, esg.gateway and esg.host available, no
sandbox (like lua5.4). The script gets its arguments in `arg` and `...`.]],
}

local function say(...) io_stderr:write(...) end

local function usage_error(cmd, msg)
  say("esg", cmd and (" " .. cmd) or "", ": ", msg, "\n")
  say("try 'esg ", cmd and (cmd .. " ") or "", "--help'\n")
  return 2
end

-- Parses args[from..] into flags and positionals. spec: name -> "flag" | "value" | "list"; aliases.
local function parse(args, from, spec, aliases)
  local opts, pos = {}, {}
  local i = from
  while i <= #args do
    local a = args[i]
    if a == "--" then
      for j = i + 1, #args do pos[#pos + 1] = args[j] end
      break
    end
    if sub(a, 1, 1) == "-" and a ~= "-" then
      local name, val = match(a, "^%-%-([^=]+)=(.*)$")
      name = name or gsub(a, "^%-%-?", "")
      name = aliases and aliases[name] or name
      local kind = spec[name]
      if not kind then return nil, "unknown option " .. a end
      if kind == "flag" then
        if val then return nil, "option " .. a .. " takes no value" end
        opts[name] = true
      else
        if not val then
          i = i + 1
          val = args[i]
          if val == nil then return nil, "option " .. a .. " needs a value" end
        end
        if kind == "list" then
          opts[name] = opts[name] or {}
          insert(opts[name], val)
        else
          opts[name] = val
        end
      end
    else
      pos[#pos + 1] = a
    end
    i = i + 1
  end
  return opts, pos
end

local function number_opt(opts, name, default)
  local v = opts[name]
  if v == nil then return default end
  local n = tonumber(v)
  if not n or n < 0 then error({ usage = "option --" .. name .. " needs a number >= 0" }) end
  return n
end

local function dirname(path)
  return match(path, "^(.*/)") or "./"
end

-- The file a store URI names ("sqlite:PATH", "sqlite:///abs" or a plain path), or nil
-- for a store that is not a file (":memory:").
local function store_file(uri)
  if uri == ":memory:" or uri == "sqlite::memory:" then return nil end
  return match(uri, "^sqlite://(/.*)$") or match(uri, "^sqlite:(.*)$") or uri
end

-- existing: the command only reads (faults, events, stats): a store that does not exist
-- is a mistyped --db, refused with its path instead of created empty.
local function open_store(path, opts, existing)
  local file = existing and store_file(path)
  if file then
    local f = io_open(file, "rb")
    if not f then
      say("esg: no store at ", file, " (check --db or ESG_DB; only esg run creates a store)\n")
      return nil
    end
    f:close()
  end
  local store, err = esg.open(path, opts)
  if not store then
    -- libesg's text names the store already when it could not open it: no second prefix
    if find(tostring(err), path, 1, true) then say("esg: ", err, "\n")
    else say("esg: cannot open the store ", path, ": ", err, "\n") end
  end
  return store
end

local function store_path(opts)
  local p = opts.db or os_getenv("ESG_DB")
  if not p or p == "" then return nil end
  return p
end

-- Parses a command's arguments (after the command), answering a parse error and --help.
-- Returns opts, positionals, or nil, exit status.
local function parse_cmd(cmd, args, spec, aliases)
  local opts, pos = parse(args, 2, spec, aliases)
  if not opts then return nil, usage_error(cmd, pos) end
  if opts.help then io_stdout:write(USAGE[cmd], "\n"); return nil, 0 end
  return opts, pos
end

-- The store a command works on (--db or ESG_DB), or nil, exit status after a usage error.
local function cmd_store_path(cmd, opts)
  local path = store_path(opts)
  if not path then return nil, usage_error(cmd, "no store: pass --db PATH (or set ESG_DB)") end
  return path
end

-- ------------------------------------------------------------------ run --

local function bytes(n)
  if n < 1024 then return fmt("%d bytes", n) end
  if n < 1024 * 1024 then return fmt("%.1f KiB", n / 1024) end
  return fmt("%.1f MiB", n / 1048576)
end

-- What the store wrote, and what the commit mode trades (docs/concepts.md "Durability").
local function durability_lines(lines, c, group)
  if c.bytes_written then
    lines[#lines + 1] = fmt("  store writes       %s%s", bytes(c.bytes_written),
      c.received > 0 and fmt(", %d bytes per event", floor(c.bytes_written / c.received + 0.5)) or "")
  end
  if group and group > 0 then
    lines[#lines + 1] = fmt("  commits            grouped, up to %g s: a crash repeats the last %g s of events (the sink may see them twice)",
      group, group)
  else
    lines[#lines + 1] = "  commits            each claim at once: a crash loses nothing (--group-commit S: about 5x faster," ..
      " 1/80 of the writes, a crash repeats the last S s)"
  end
end

local function summary(name, c, faults, group)
  local lines = {
    fmt("%s: %d received in %.3f s", name, c.received, c.elapsed),
    fmt("  delivered          %8d", c.delivered),
    fmt("  duplicates         %8d", c.duplicates),
    fmt("  echoes suppressed  %8d", c.echoes),
    fmt("  stale              %8d", c.stale),
    fmt("  faults             %8d", c.faults),
  }
  local extra = {}
  for _, k in ipairs { "filtered", "dropped", "busy", "cancelled" } do
    if c[k] > 0 then extra[#extra + 1] = fmt("%s %d", k, c[k]) end
  end
  if #extra > 0 then lines[#lines + 1] = "  (" .. concat(extra, ", ") .. ")" end
  local r = c.resync
  if r and (r.created + r.updated + r.deleted + r.unchanged) > 0 then
    lines[#lines + 1] = fmt("  listing: created %d, updated %d, deleted %d, unchanged %d", r.created, r.updated,
      r.deleted, r.unchanged)
  elseif r and r.pages then
    lines[#lines + 1] = fmt("  pages %d, emitted %d%s", r.pages, r.emitted, r.done and " (source done)" or "")
  end
  durability_lines(lines, c, group)
  for i, f in ipairs(faults) do
    if i > 5 then
      lines[#lines + 1] = fmt("  ... and %d more: esg faults list", #faults - 5)
      break
    end
    lines[#lines + 1] = fmt("  fault %s: %s%s, %s: %s", tostring(f.id), f.line and ("line " .. f.line) or "event",
      f.event_id and (" (" .. f.event_id .. ")") or "", f.stage, (gsub(f.error or "", "\n.*", "")))
  end
  return concat(lines, "\n") .. "\n"
end

local RUN_OPTS = {
  input = "value", output = "value", db = "value", durability = "value", ["group-commit"] = "value",
  budget = "value", memory = "value", deadline = "value", ["max-line"] = "value", ["fault-ttl"] = "value", ["allow-io"] = "flag",
  ["allow-exec"] = "flag", ["allow-native"] = "flag", quiet = "flag", ["no-progress"] = "flag", progress = "value",
  help = "flag",
}
local RUN_ALIASES = { i = "input", o = "output", q = "quiet", h = "help" }

-- Opens the store and loads the script under the sandbox. Returns store, spec, settings, or nil, exit status.
local function load_gateway(cmd, script, opts)
  local budget = floor(number_opt(opts, "budget", 10000000))
  local memory = number_opt(opts, "memory", 256)
  local deadline = number_opt(opts, "deadline", 30)
  local max_line = floor(number_opt(opts, "max-line", 0))
  if max_line > esg.EVENT_MAX_BYTES then
    return nil, usage_error(cmd, fmt("--max-line is at most %d (an event's limit)", esg.EVENT_MAX_BYTES))
  end
  local group = number_opt(opts, "group-commit", 0)
  if opts.durability and opts.durability ~= "normal" and opts.durability ~= "full" then
    return nil, usage_error(cmd, "--durability is normal or full")
  end
  local f = io_open(script, "r")
  if not f then return nil, usage_error(cmd, "cannot read " .. script) end
  f:close()
  local db = opts.db or (gsub(script, "%.lua$", "") .. ".db")
  local store = open_store(db, { durability = opts.durability, group_commit = group })
  if not store then return nil, 2 end

  -- From here on the script's rules hold.
  sandbox_apply { io = opts["allow-io"], exec = opts["allow-exec"], native = opts["allow-native"] }
  if host then
    host.memory_limit(floor(memory * 1024 * 1024))
    host.deadline(deadline)
  end
  local chunk, lerr = loadfile(script, "t")
  local ok, spec
  if chunk then
    if host then ok, spec = host.pcall(budget, chunk) else ok, spec = pcall(chunk) end
    if ok then ok, spec = pcall(gateway_check, spec) end
  else
    ok, spec = false, lerr
  end
  if not ok then
    store:close()
    say("esg ", cmd, ": ", script, ": ", text_of(spec), "\n")
    return nil, 2
  end
  return store, spec, { budget = budget, max_line = max_line, group = group }
end

-- The progress line: redrawn in place on a terminal (every = true), or a plain line every
-- `every` seconds (a pipe, a log, systemd). The reporter and its last word at the end.
local function progress_of(name, every)
  if not every then return nil end
  local function text(c)
    return fmt("%s: received %d, delivered %d, duplicates %d, faults %d (%.1f s)", name, c.received, c.delivered,
      c.duplicates, c.faults, c.elapsed)
  end
  if every == true then
    return function(c) io_stderr:write("\r", text(c), "\27[K"); io_stderr:flush() end,
      function(c) io_stderr:write("\r", text(c), "\27[K\n") end
  end
  local next_at = every
  return function(c)
    if c.elapsed >= next_at then
      io_stderr:write(text(c), "\n")
      io_stderr:flush()
      next_at = c.elapsed + every
    end
  end, nil
end

local function cmd_run(args)
  local opts, pos = parse_cmd("run", args, RUN_OPTS, RUN_ALIASES)
  if not opts then return pos end
  if #pos ~= 1 then return usage_error("run", "expected one SCRIPT.lua") end
  local script = pos[1]
  local fault_ttl = number_opt(opts, "fault-ttl", 0)
  local store, spec, set = load_gateway("run", script, opts)
  if not store then return spec end
  local every = opts.progress and number_opt(opts, "progress", 0)
  if every == 0 then return usage_error("run", "--progress needs a number of seconds > 0") end
  local progress, progress_done = progress_of(spec.name or script,
    not opts["no-progress"] and (every or (not opts.quiet and host and host.isatty(2))))
  local c, err = gateway_run(spec, {
    store = store, input = opts.input, output = opts.output, base = dirname(script),
    script = script, budget = set.budget, max_line = set.max_line, progress = progress, progress_done = progress_done, fault_ttl = fault_ttl > 0 and fault_ttl or nil,
  })
  store:close()
  if not c then
    say("esg run: ", err, "\n")
    return 2
  end
  if not opts.quiet then say(summary(spec.name or script, c, c.faults_list, set.group)) end
  return c.faults > 0 and 1 or 0
end

-- --------------------------------------------------------------- faults --

local function iso(ms)
  return os_date("!%Y-%m-%dT%H:%M:%S", ms // 1000) .. fmt(".%03dZ", ms % 1000)
end

local function first_line(s) return match(tostring(s or ""), "^[^\n]*") end

local function fault_json(f)
  return json_encode {
    id = f.id, event_id = f.event_id, stage = f.stage, error = f.error, http_status = f.http_status,
    attempts = f.attempts, first_attempt = f.first_attempt, last_attempt = f.last_attempt, event = f.event,
  }
end

local function faults_resubmit(opts, pos)
  if not opts.script then return usage_error("faults", "resubmit needs --script SCRIPT.lua") end
  local ids = {}
  for i = 2, #pos do
    local id = tointeger(tonumber(pos[i]))
    if not id then return usage_error("faults", "not a fault id: " .. pos[i]) end
    ids[#ids + 1] = id
  end
  if (opts.all and true or false) == (#ids > 0) then return usage_error("faults", "resubmit takes fault IDs or --all") end
  local script = opts.script
  local store, spec, set = load_gateway("faults", script, opts)
  if not store then return spec end
  local name = (spec.name or script) .. " (resubmit)"
  local c, err = gateway_resubmit(spec, {
    store = store, ids = (not opts.all) and ids or nil, output = opts.output, base = dirname(script),
    script = script, budget = set.budget, rerender = opts.rerender,
  })
  store:close()
  if not c then say("esg faults: ", err, "\n"); return 2 end
  if not opts.quiet then
    say(summary(name, c, c.faults_list, set.group))
    say(fmt("  resubmitted %d, still faulted %d, skipped %d%s\n", c.resubmitted, c.faults, c.skipped,
      c.missing > 0 and fmt(", not found %d", c.missing) or ""))
  end
  return (c.faults > 0 or c.skipped > 0 or c.missing > 0) and 1 or 0
end

local function cmd_faults(args)
  local spec = { json = "flag", all = "flag", script = "value", ["older-than"] = "value", rerender = "flag" }
  for k, v in pairs(RUN_OPTS) do spec[k] = v end
  local opts, pos = parse_cmd("faults", args, spec, RUN_ALIASES)
  if not opts then return pos end
  local sub = pos[1] or "list"
  if sub ~= "list" and sub ~= "show" and sub ~= "purge" and sub ~= "resubmit" then
    return usage_error("faults", "unknown subcommand " .. sub)
  end
  if sub == "resubmit" then return faults_resubmit(opts, pos) end
  local path, status = cmd_store_path("faults", opts)
  if not path then return status end
  local older = number_opt(opts, "older-than", -1)
  local store = open_store(path, nil, true)
  if not store then return 2 end
  local rc = 0
  if sub == "list" then
    local list, err = store:faults()
    if not list then say("esg faults: ", err, "\n"); rc = 2
    elseif opts.json then
      for _, f in ipairs(list) do io_stdout:write(fault_json(f), "\n") end
    else
      for _, f in ipairs(list) do
        io_stdout:write(fmt("%-5d %s  %-11s %-24s %s\n", f.id, iso(floor(f.last_attempt * 1000)), f.stage,
          f.event_id, first_line(f.error)))
      end
      io_stdout:flush()
      say(#list, " fault(s)\n")
    end
  elseif sub == "show" then
    local id = tointeger(tonumber(pos[2]))
    if not pos[2] then store:close(); return usage_error("faults", "show needs a fault ID") end
    local f = id and store:fault(id)
    if not f then
      say("esg faults: no fault ", pos[2], "\n")
      rc = 1
    elseif opts.json then
      io_stdout:write(fault_json(f), "\n")
    else
      local function field(k, v) if v ~= nil then io_stdout:write(fmt("%-13s %s\n", k, tostring(v))) end end
      field("id", f.id)
      field("event", f.event_id)
      field("stage", f.stage)
      field("attempts", f.attempts)
      field("first attempt", iso(floor(f.first_attempt * 1000)))
      field("last attempt", iso(floor(f.last_attempt * 1000)))
      if f.http_status ~= 0 then field("http status", f.http_status) end
      field("error", f.error)
      field("stored event", f.event)
    end
  else
    local n, err = store:purge_faults(older >= 0 and store:now() - older or nil)
    if not n then say("esg faults: ", err, "\n"); rc = 2
    else io_stdout:write(fmt("purged %d fault(s)\n", n)) end
  end
  store:close()
  return rc
end

-- --------------------------------------------------------------- events --

local function cmd_events(args)
  local opts, pos = parse_cmd("events", args, { db = "value", json = "flag", help = "flag" }, { h = "help" })
  if not opts then return pos end
  local path, status = cmd_store_path("events", opts)
  if not path then return status end
  local store = open_store(path, nil, true)
  if not store then return 2 end
  local rc = 0
  if pos[1] then
    local list, err = store:events(pos[1])
    if not list then say("esg events: ", err, "\n"); rc = 2
    else
      for _, r in ipairs(list) do
        if opts.json then io_stdout:write(r.json, "\n")
        else io_stdout:write(fmt("%s  %-24s %s\n", iso(r.timestamp), r.type, r.id)) end
      end
      if not opts.json then say(#list, " event(s) under ", pos[1], "\n") end
    end
  else
    local list = store:events(RUN_KEY) or {}
    io_stdout:write(fmt("%-12s %d event(s)\n", RUN_KEY, #list))
    io_stdout:write(fmt("%-12s %d open (esg faults list)\n", "faults", #(store:faults() or {})))
    say("pass a correlation KEY to list its events\n")
  end
  store:close()
  return rc
end

-- ---------------------------------------------------------------- stats --

local function cmd_stats(args)
  local opts, pos = parse_cmd("stats", args, { db = "value", json = "flag", help = "flag" }, { h = "help" })
  if not opts then return pos end
  if #pos > 0 then return usage_error("stats", "unexpected argument " .. pos[1]) end
  local path, status = cmd_store_path("stats", opts)
  if not path then return status end
  local store = open_store(path, nil, true)
  if not store then return 2 end
  local runs = store:events(RUN_KEY, { decode = true }) or {}
  local faults = store:faults() or {}
  local size
  -- the file behind a SQLite URI ("sqlite:PATH" or a plain path); other backends have none
  local file = match(path, "^sqlite:(.*)$") or (not match(path, "^%a[%w+.-]+:") and path)
  local f = file and io_open(file, "rb")
  if f then size = f:seek("end"); f:close() end
  local totals = {}
  for _, k in ipairs(COUNTERS) do totals[k] = 0 end
  for _, r in ipairs(runs) do
    for _, k in ipairs(COUNTERS) do totals[k] = totals[k] + (tonumber(r.event.run[k]) or 0) end
  end
  local last = runs[#runs] and runs[#runs].event.run
  local st = { store = path, backend = store:backend(), schema = store:schema_version(), bytes = size,
               runs = #runs, open_faults = #faults, totals = totals, last_run = last }
  store:close()
  if opts.json then io_stdout:write(json_encode(st), "\n"); return 0 end
  local w = function(...) io_stdout:write(fmt(...)) end
  w("store        %s (%s, schema %d, %s bytes)\n", path, st.backend, st.schema, tostring(size or "?"))
  w("runs         %d\n", #runs)
  w("open faults  %d\n", #faults)
  w("totals       received %d, delivered %d, duplicates %d, echoes %d, stale %d, faults %d\n",
    totals.received, totals.delivered, totals.duplicates, totals.echoes, totals.stale, totals.faults)
  if last then
    w("last run     %s at %s: received %d, delivered %d, duplicates %d, faults %d in %.3f s\n",
      tostring(last.script), iso(last.started), last.received, last.delivered, last.duplicates, last.faults,
      tonumber(last.elapsed) or 0)
  end
  return 0
end

-- -------------------------------------------------------------- webhook --

local function read_payload(path)
  if not path or path == "-" then return io_read("a") end
  local f, err = io_open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function cmd_webhook(args)
  local opts, pos = parse_cmd("webhook", args, {
    secret = "list", id = "value", timestamp = "value", signature = "value", tolerance = "value",
    now = "value", help = "flag",
  }, { h = "help" })
  if not opts then return pos end
  local sub = pos[1]
  if sub == "secret" then
    io_stdout:write(assert(esg.webhook.secret()), "\n")
    return 0
  end
  if sub ~= "sign" and sub ~= "verify" then return usage_error("webhook", "expected sign, verify or secret") end
  if not opts.secret then return usage_error("webhook", "--secret is required") end
  if not opts.id then return usage_error("webhook", "--id is required") end
  local payload, perr = read_payload(pos[2])
  if not payload then say("esg webhook: ", perr, "\n"); return 2 end
  if sub == "sign" then
    local ts = tonumber(opts.timestamp) or floor(esg.now())
    if mtype(ts) ~= "integer" then return usage_error("webhook", "--timestamp must be integer seconds") end
    local sig, err = esg.webhook.sign(opts.secret[1], opts.id, ts, payload)
    if not sig then say("esg webhook: ", err, "\n"); return 2 end
    io_stdout:write("webhook-id: ", opts.id, "\nwebhook-timestamp: ", ts, "\nwebhook-signature: ", sig, "\n")
    return 0
  end
  if not opts.timestamp or not opts.signature then
    return usage_error("webhook", "verify needs --timestamp and --signature")
  end
  local ok, err = esg.webhook.verify(opts.secret, {
    ["webhook-id"] = opts.id, ["webhook-timestamp"] = opts.timestamp, ["webhook-signature"] = opts.signature,
  }, payload, { tolerance = tonumber(opts.tolerance), now = tonumber(opts.now) })
  if ok then io_stdout:write("genuine\n"); return 0 end
  say("esg webhook: not genuine: ", err, "\n")
  return 1
end

-- ------------------------------------------------------------------ lua --

local function cmd_lua(args)
  local script = args[2]
  if not script or script == "--help" or script == "-h" then
    io_stdout:write(USAGE.lua, "\n")
    return script and 0 or 2
  end
  local chunk, err = loadfile(script)
  if not chunk then say("esg lua: ", err, "\n"); return 2 end
  local a = { [0] = script }
  for i = 3, #args do a[#a + 1] = args[i] end
  _G.arg = a
  local ok, res = xpcall(chunk, traceback, unpack(a))
  if not ok then say("esg lua: ", tostring(res), "\n"); return 1 end
  return mtype(res) == "integer" and res or 0
end

-- ----------------------------------------------------------------- main --

local COMMANDS = { run = cmd_run, faults = cmd_faults, events = cmd_events, stats = cmd_stats,
                   webhook = cmd_webhook, lua = cmd_lua }

function M.main(args)
  local cmd = args[1]
  if cmd == nil or cmd == "--help" or cmd == "-h" or cmd == "help" then
    local topic = cmd == "help" and args[2]
    if topic and not USAGE[topic] then return usage_error(nil, "no command " .. topic) end
    io_stdout:write(USAGE[topic or "main"], "\n")
    return cmd == nil and 2 or 0
  end
  if cmd == "--version" or cmd == "-v" or cmd == "version" then
    io_stdout:write(fmt("esg %s (libesg %s, %s)\n", match(esg._VERSION, "%S+$"), esg.version, _VERSION))
    return 0
  end
  local fn = COMMANDS[cmd]
  if not fn then return usage_error(nil, "unknown command " .. cmd) end
  local ok, rc = pcall(fn, args)
  if ok then return rc end
  if type(rc) == "table" and rc.usage then return usage_error(cmd, rc.usage) end
  error(rc, 0)
end

return M
