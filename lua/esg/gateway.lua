--[[
esg.gateway: the pipeline runner of Lua gateway scripts.

A gateway script returns a pipeline table; every step is optional:

  source -> filter -> idempotence -> latch -> enrich -> transform -> sink

  {
    name        = "orders",                        -- shown in the summary
    source      = gateway.source.jsonl("in.jsonl"), -- default: -i FILE, else stdin
    filter      = function(ev, ctx) return keep end, -- falsy: the event is filtered out
    idempotence = { key = fn, lease = 30, ttl = 3600, entity = fn } | true | false,
    latch       = function(ev, ctx) return is_echo end,  -- placeholder hook
    enrich      = function(ev, ctx) return ev2 end,  -- nil keeps ev
    transform   = function(ev, ctx) return out end,  -- nil drops the event
    sink        = gateway.sink.stdout() | .jsonl(path) | .eventlog{key=, ttl=} | function(out, ctx),
  }

ev is the envelope decoded to a table (esg.null for JSON null). See docs/gateway.md.

Idempotence is on by default: the event id is claimed with the SHA-256 of the
event's bytes; a completed claim makes a later copy a duplicate. An event whose
steps raise becomes a fault record (an event of type "esg.fault" stored under
the correlation key "esg.faults") and its claim is completed with the fault, so
a rerun counts it as a duplicate instead of failing again.
]]
local esg = require "esg"

local ok_host, host = pcall(require, "esg.host") -- only inside the esg command
if not ok_host then host = nil end

local json_encode, json_decode = esg.json.encode, esg.json.decode
local esg_parse, uuid5 = esg.parse, esg.uuid5
local io_open, io_stdout, io_stderr, io_lines = io.open, io.stdout, io.stderr, io.lines
local traceback = debug.traceback
local pcall, xpcall, type, tostring, error, select = pcall, xpcall, type, tostring, error, select
local fmt, floor = string.format, math.floor

local M = {}

M.FAULT_TYPE = "esg.fault"
M.FAULT_KEY = "esg.faults"
M.RUN_TYPE = "esg.run"
M.RUN_KEY = "esg.runs"
M.PURGE_MARK = "esg.faults.purged" -- entity whose version is the purge watermark (ms)

-- Sources and sinks are descriptors: the runner opens them when the run starts.
M.source = {}
function M.source.jsonl(path) return { kind = "jsonl", path = path } end
function M.source.stdin() return { kind = "jsonl", path = "-" } end
-- lines: a list of strings, or an iterator function returning the next line (nil at the end).
function M.source.lines(lines) return { kind = "lines", lines = lines } end

M.sink = {}
function M.sink.stdout() return { kind = "jsonl", path = "-" } end
function M.sink.jsonl(path) return { kind = "jsonl", path = path } end
function M.sink.eventlog(opts)
  opts = opts or {}
  return { kind = "eventlog", key = opts.key, ttl = opts.ttl }
end
-- collect: appends each output (a table, or a string as returned) to list; for tests.
function M.sink.collect(list) return { kind = "collect", list = list } end

local STEPS = { name = 1, source = 1, filter = 1, idempotence = 1, latch = 1, enrich = 1,
                transform = 1, sink = 1, description = 1 }

-- Checks a pipeline table; returns it, or raises naming the bad field.
function M.check(spec)
  if type(spec) ~= "table" then
    error("a gateway script must return a pipeline table (got " .. type(spec) .. ")", 2)
  end
  for k in pairs(spec) do
    if not STEPS[k] then error(fmt("pipeline: unknown field %q", tostring(k)), 2) end
  end
  for _, k in ipairs { "filter", "latch", "enrich", "transform" } do
    if spec[k] ~= nil and type(spec[k]) ~= "function" then
      error(fmt("pipeline: %s must be a function", k), 2)
    end
  end
  local idem = spec.idempotence
  if idem ~= nil and type(idem) ~= "boolean" and type(idem) ~= "table" then
    error("pipeline: idempotence must be true, false or a table", 2)
  end
  if type(idem) == "table" then
    for _, k in ipairs { "key", "entity" } do
      if idem[k] ~= nil and type(idem[k]) ~= "function" then
        error(fmt("pipeline: idempotence.%s must be a function", k), 2)
      end
    end
  end
  local sink = spec.sink
  if sink ~= nil and type(sink) ~= "function" and not (type(sink) == "table" and sink.kind) then
    error("pipeline: sink must be a gateway.sink descriptor or a function", 2)
  end
  local source = spec.source
  if source ~= nil and not (type(source) == "table" and source.kind) then
    error("pipeline: source must be a gateway.source descriptor", 2)
  end
  return spec
end

local function now_ms(store) return floor(store:now() * 1000 + 0.5) end

local function open_source(desc, input, base)
  if input then -- the command line wins; its paths are not relative to the script
    if type(input) == "table" and input.kind then desc = input
    else desc = M.source.jsonl(input) end
    base = nil
  end
  desc = desc or M.source.stdin()
  if desc.kind == "lines" then
    local lines = desc.lines
    if type(lines) == "function" then return lines, "lines", nil end
    local i = 0
    return function() i = i + 1; return lines[i] end, "lines", nil
  end
  local path = desc.path
  if path == "-" or path == nil then return io_lines(), "stdin", nil end
  if base and path:sub(1, 1) ~= "/" then path = base .. path end
  local f, err = io_open(path, "r")
  if not f then return nil, err end
  return f:lines(), path, f
end

local function open_sink(desc, output, base, store)
  if type(desc) == "function" then return { kind = "function", fn = desc } end
  if output then
    desc = M.sink.jsonl(output)
    base = nil
  end
  desc = desc or M.sink.stdout()
  if desc.kind == "jsonl" then
    local path = desc.path
    if path == "-" or path == nil then return { kind = "file", file = io_stdout, name = "stdout" } end
    if base and path:sub(1, 1) ~= "/" then path = base .. path end
    local f, err = io_open(path, "a")
    if not f then return nil, err end
    return { kind = "file", file = f, name = path, close = true }
  elseif desc.kind == "eventlog" then
    return { kind = "eventlog", store = store, opts = { key = desc.key, ttl = desc.ttl } }
  elseif desc.kind == "collect" then
    return { kind = "collect", list = desc.list }
  end
  return nil, "unknown sink kind " .. tostring(desc.kind)
end

-- The error handler of a step: the message and a traceback (not called for memory errors).
local function on_error(e)
  if type(e) == "table" and e.esg_fault then return e end
  return { esg_fault = true, msg = tostring(e), tb = traceback(tostring(e), 2) }
end

local Runner = {}
Runner.__index = Runner

local COUNTERS = { "received", "delivered", "duplicates", "echoes", "stale", "faults",
                   "filtered", "dropped", "busy" }

--[[
Runs a pipeline. opts:
  store     an open esg store (required)
  input     a path, "-" (stdin) or a gateway.source descriptor; overrides spec.source
  output    a path overriding a stdout/jsonl sink
  base      directory (with trailing /) relative paths of the spec are resolved against
  script    the script's name, for fault records
  budget    instructions per event (0 = none; needs the esg command)
  progress  write a live progress line to stderr
  fault_ttl seconds fault records live (0 / nil = until purged)
  on_fault  function(fault) called for each fault record, after it is stored
Returns the counters {received, delivered, duplicates, echoes, stale, faults,
filtered, dropped, busy, elapsed, faults_list}, or nil, message on a setup error.
]]
function M.run(spec, opts)
  M.check(spec)
  local store = assert(opts.store, "gateway.run: opts.store is required")
  local next_line, source_name, source_file = open_source(spec.source, opts.input, opts.base)
  if not next_line then return nil, "cannot open the source: " .. tostring(source_name) end
  local sink, serr = open_sink(spec.sink, opts.output, opts.base, store)
  if not sink then return nil, "cannot open the sink: " .. tostring(serr) end

  local self = setmetatable({
    spec = spec, store = store, sink = sink, opts = opts,
    script = opts.script or spec.name or "gateway", source = source_name,
    budget = opts.budget or 0, fault_seq = 0, faults_list = {},
  }, Runner)
  local c = {}
  for _, k in ipairs(COUNTERS) do c[k] = 0 end
  self.c = c
  local started_ms = now_ms(store)
  self.run_id = uuid5(fmt("esg.run/%s/%d/%s/%s", self.script, started_ms, tostring(self), tostring(math.random())))

  local idem = spec.idempotence
  if idem == nil or idem == true then idem = {} end
  if idem then
    self.idem = idem
    self.claim_opts = { lease = idem.lease or 30, ttl = idem.ttl or 3600 }
  end
  self.ctx = {
    store = store, name = spec.name, run = self.run_id,
    log = function(...)
      local n = select("#", ...)
      local parts = {}
      for i = 1, n do parts[i] = tostring((select(i, ...))) end
      io_stderr:write("[", spec.name or "gateway", "] ", table.concat(parts, " "), "\n")
    end,
    now = function() return store:now() end,
  }

  local mono = host and host.monotonic or os.clock
  local t0 = mono()
  local progress = opts.progress
  local last = t0
  local lineno = 0
  for line in next_line do
    lineno = lineno + 1
    if line:find("%S") then
      if line:byte(-1) == 13 then line = line:sub(1, -2) end
      self:event(line, lineno)
      if progress and (c.received & 63) == 0 then
        local t = mono()
        if t - last >= 0.2 then
          last = t
          self:progress(t - t0)
        end
      end
    end
  end
  if source_file then source_file:close() end
  if sink.kind == "file" then
    sink.file:flush()
    if sink.close then sink.file:close() end
  end
  local ok, ferr = store:flush()
  c.elapsed = mono() - t0
  if progress then
    self:progress(c.elapsed)
    io_stderr:write("\n")
  end
  if not ok then return nil, "cannot commit: " .. tostring(ferr) end
  c.faults_list = self.faults_list
  c.run = self.run_id
  c.source = source_name
  -- the run's record, for `esg stats`
  local rec = { id = uuid5("esg.run/" .. self.run_id), type = M.RUN_TYPE, timestamp = now_ms(store),
                partitionKey = M.RUN_KEY,
                run = { script = self.script, name = spec.name, source = source_name, started = started_ms,
                        elapsed = c.elapsed } }
  for _, k in ipairs(COUNTERS) do rec.run[k] = c[k] end
  store:put(rec, { key = M.RUN_KEY, ttl = opts.run_ttl })
  store:flush()
  return c
end

function Runner:progress(elapsed)
  local c = self.c
  io_stderr:write(fmt("\r%s: received %d, delivered %d, duplicates %d, faults %d (%.1f s)\27[K",
    self.spec.name or "gateway", c.received, c.delivered, c.duplicates, c.faults, elapsed))
  io_stderr:flush()
end

-- Completes the current claim with a small JSON result.
function Runner:settle(result)
  local claim = self.claim
  if claim then
    self.claim = nil
    local ok, err = self.store:complete(claim.key, claim.token, result)
    if not ok then error({ esg_fault = true, msg = "cannot complete the claim: " .. tostring(err) }) end
  end
end

local function deliver(self, out, ev, ctx)
  local sink = self.sink
  local kind = sink.kind
  if kind == "file" then
    local s = type(out) == "string" and out or json_encode(out)
    sink.file:write(s, "\n")
  elseif kind == "eventlog" then
    local st, err = self.store:put(out, sink.opts)
    if not st then error(err, 0) end
  elseif kind == "collect" then
    sink.list[#sink.list + 1] = out
  else
    sink.fn(out, ctx)
  end
end

-- The steps of one event, run protected; self.stage names the running one.
local function steps(self, line, ev)
  local spec, ctx, c = self.spec, self.ctx, self.c
  ctx.event, ctx.line = ev, line
  local idem = self.idem
  local t
  -- decoded only once a step needs the table: a duplicate without filter or key function never is
  if spec.filter or (idem and idem.key) then t = ev:decode() end
  if spec.filter then
    self.stage = "filter"
    if not spec.filter(t, ctx) then c.filtered = c.filtered + 1; return end
  end
  if idem then
    self.stage = "idempotence"
    local key = idem.key and idem.key(t, ctx) or ev:id()
    local st, claim = self.store:claim(key, ev:hash(true), self.claim_opts)
    if not st then error(claim, 0) end
    if st == "duplicate" then c.duplicates = c.duplicates + 1; return end
    if st == "busy" then c.busy = c.busy + 1; return end
    self.claim = claim
    ctx.claim = claim
  end
  t = t or ev:decode()
  if idem then
    if idem.entity then
      local ekey, version, doc = idem.entity(t, ctx)
      if ekey ~= nil then
        if math.type(version) ~= "integer" then
          error("idempotence.entity must return key, integer version [, doc]", 0)
        end
        local applied, err = self.store:upsert(ekey, version, doc or t)
        if not applied then error(err, 0) end
        if applied == "stale" then
          c.stale = c.stale + 1
          self:settle('{"status":"stale"}')
          return
        end
      end
    end
  end
  if spec.latch then
    self.stage = "latch"
    if spec.latch(t, ctx) then
      c.echoes = c.echoes + 1
      self:settle('{"status":"echo"}')
      return
    end
  end
  if spec.enrich then
    self.stage = "enrich"
    local t2 = spec.enrich(t, ctx)
    if t2 ~= nil then t = t2 end
  end
  local out
  if spec.transform then
    self.stage = "transform"
    out = spec.transform(t, ctx)
    if out == nil or out == false then
      c.dropped = c.dropped + 1
      self:settle('{"status":"dropped"}')
      return
    end
  elseif spec.enrich then
    out = t
  else
    out = line -- nothing changed it: the bytes as received
  end
  self.stage = "sink"
  deliver(self, out, t, ctx)
  c.delivered = c.delivered + 1
  self.stage = "complete"
  self:settle('{"status":"delivered"}')
end

function Runner:event(line, lineno)
  local c = self.c
  c.received = c.received + 1
  self.claim, self.stage = nil, "parse"
  local ev, perr = esg_parse(line)
  if not ev then return self:fault("parse", perr, nil, line, lineno) end
  local ok, err, tb
  if host and self.budget > 0 then -- the budget is armed and disarmed in C
    ok, err, tb = host.pcall(self.budget, steps, self, line, ev)
  else
    ok, err = xpcall(steps, on_error, self, line, ev)
  end
  self.ctx.claim = nil
  if not ok then
    if type(err) == "table" and err.esg_fault then err, tb = err.msg, err.tb end
    if not tb then collectgarbage() end -- memory errors come without a traceback
    self:fault(self.stage, tostring(err), tb, line, lineno, ev)
  end
end

-- Records a fault: an "esg.fault" event under "esg.faults"; completes the claim with it.
function Runner:fault(stage, msg, tb, line, lineno, ev)
  local c = self.c
  c.faults = c.faults + 1
  self.fault_seq = self.fault_seq + 1
  local id = uuid5(fmt("esg.fault/%s/%d", self.run_id, self.fault_seq))
  local event_id = ev and ev:id() or nil
  local fault = {
    stage = stage, error = msg, traceback = tb, event_id = event_id,
    event_type = ev and ev:type() or nil, line = lineno, source = self.source,
    script = self.script, run = self.run_id,
  }
  local rec = { id = id, type = M.FAULT_TYPE, timestamp = now_ms(self.store),
                partitionKey = M.FAULT_KEY, fault = fault, raw = line }
  local ok, err = self.store:put(rec, { key = M.FAULT_KEY, ttl = self.opts.fault_ttl })
  if not ok then io_stderr:write("esg: cannot record a fault: ", tostring(err), "\n") end
  local claim = self.claim
  if claim then
    self.claim = nil
    self.store:complete(claim.key, claim.token, json_encode { status = "fault", fault = id })
  end
  fault.id = id
  local list = self.faults_list
  if #list < 100 then list[#list + 1] = fault end
  if self.opts.on_fault then self.opts.on_fault(fault) end
end

-- Fault records not hidden by `esg faults purge`, oldest first: list of {id, timestamp, fault, raw}.
function M.faults(store)
  local mark = store:get(M.PURGE_MARK)
  local since = mark and mark.version or -1
  local recs, err, code = store:events(M.FAULT_KEY, { decode = true })
  if not recs then return nil, err, code end
  local out = {}
  for _, r in ipairs(recs) do
    if r.timestamp > since then
      out[#out + 1] = { id = r.id, timestamp = r.timestamp, fault = r.event.fault, raw = r.event.raw }
    end
  end
  return out
end

-- Hides every fault recorded up to now from M.faults (see docs/gateway.md); returns how many.
function M.purge_faults(store)
  local list, err, code = M.faults(store)
  if not list then return nil, err, code end
  local st, uerr, ucode = store:upsert(M.PURGE_MARK, now_ms(store), { purged = #list })
  if not st then return nil, uerr, ucode end
  store:purge_events()
  return #list
end

M.COUNTERS = COUNTERS
return M
