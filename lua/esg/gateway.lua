--[[
esg.gateway: the pipeline runner of Lua gateway scripts.

A gateway script returns a pipeline table; every step is optional:

  source -> filter -> idempotence -> latch (check) -> enrich -> transform -> latch (mark) -> sink

  {
    name        = "orders",                        -- shown in the summary
    source      = gateway.source.jsonl("in.jsonl") | .snapshot{...} | .cursor{...} | .replay{...},
    filter      = function(ev, ctx) return keep end, -- falsy: the event is filtered out
    idempotence = { key = fn, lease = 30, ttl = 3600, entity = fn } | true | false,
    latch       = { key = fn, from = "side", to = "side", doc = fn, out_doc = fn, ttl = s, flag = bool }
                  | function(ev, ctx) return is_echo end,
    enrich      = { cache = opts, collect = true | fn, key = fn, load = fn | {url=...}, into = "field",
                    required = bool, fn = fn } | function(ev, ctx) return ev2 end,
    transform   = function(ev, ctx) return out end,  -- nil drops the event
    sink        = gateway.sink.stdout() | .jsonl(path) | .eventlog{key=, ttl=} | .http{url=, ...}
                  | function(out, ctx),
  }

ev is the envelope decoded to a table (esg.null for JSON null). See docs/gateway.md.

Idempotence is on by default: the event id is claimed with the SHA-256 of the
event's bytes; a completed claim makes a later copy a duplicate. An event whose
steps raise becomes a fault record in the store's fault table (store:faults())
and its claim is completed with {"status":"fault","fault":<id>}, so a rerun of
the same input counts it as a duplicate instead of failing again. M.resubmit
runs the stored event of a fault through the pipeline again: it gets past the
idempotence step because a claim whose result names a fault is taken as "not
done yet" (a claim on "esg.resubmit/<fault id>" keeps two resubmitters from
running one fault at once), and the fault is deleted once the event is handled.
With the HTTP sink, deliveries run in libesg's egress engine: it completes the
claim on success and records the fault (stage "deliver", the claim completed
with it) when retries are exhausted or the receiver refuses.
]]
local esg = require "esg"

local ok_host, host = pcall(require, "esg.host") -- only inside the esg command
if not ok_host then host = nil end

local json_encode, json_decode, lazy = esg.json.encode, esg.json.decode, esg.json.lazy
local uuid5 = esg.uuid5
local io_open, io_stdout, io_stderr, io_lines = io.open, io.stdout, io.stderr, io.lines
local traceback = debug.traceback
local host_pcall = host and host.pcall
local pcall, xpcall, type, tostring, error, select = pcall, xpcall, type, tostring, error, select
local fmt, floor = string.format, math.floor

local M = {}

M.RUN_TYPE = "esg.run"
M.RUN_KEY = "esg.runs"
M.RESUBMIT_PREFIX = "esg.resubmit/" -- claim key prefix that makes a fault's resubmission exclusive

-- Sources and sinks are descriptors: the runner opens them when the run starts.
M.source = {}
function M.source.jsonl(path) return { kind = "jsonl", path = path } end
function M.source.stdin() return { kind = "jsonl", path = "-" } end
-- lines: a list of strings, or an iterator function returning the next line (nil at the end).
function M.source.lines(lines) return { kind = "lines", lines = lines } end
--[[
snapshot: a full listing of a slow external system, turned into "<type>-created",
"-updated" and "-deleted" events for what changed since the previous listing
(libesg's snapshot diff). opts: source (name, required), listing = function(ctx)
returning an iterator of key, content (content: a table or JSON text), type
(default "entity"), entity_field, log_ttl (s). Each change runs through the
pipeline inside the transaction that records it, so a crash never loses one.
]]
function M.source.snapshot(opts) return { kind = "snapshot", opts = opts } end
--[[
cursor: a cursor job over a paged source (libesg's cursor jobs). opts: name (the
durable cursor's name, required), source (required), fetch = function(cursor, ctx)
returning a page {items = {{id=, version=, type=, data=, timestamp=,
partition_key=}, ...}, next = "cursor", done = bool} or nil, message;
entity_field, log_ttl, max_pages. Items run through the pipeline inside the
transaction that stores the page and moves the cursor.
]]
function M.source.cursor(opts) return { kind = "cursor", opts = opts } end
-- replay: stored events again, same ids. opts: key, type, since, ["until"] (epoch ms).
function M.source.replay(opts) return { kind = "replay", opts = opts or {} } end

M.sink = {}
function M.sink.stdout() return { kind = "jsonl", path = "-" } end
function M.sink.jsonl(path) return { kind = "jsonl", path = path } end
function M.sink.eventlog(opts)
  opts = opts or {}
  return { kind = "eventlog", key = opts.key, ttl = opts.ttl }
end
-- collect: appends each output (a table, or a string as returned) to list; for tests.
function M.sink.collect(list) return { kind = "collect", list = list } end
--[[
http: delivers each output as an HTTP request through libesg's egress engine
(retries with backoff and jitter, Retry-After, per-partition order, an
Idempotency-Key header carrying the event id). opts: url (string, or
function(out, ctx) -> url), method (default POST), headers (list of "Name: value"
or a map), body = function(out, ctx) -> string or table (default: out),
and the engine's: max_in_flight, max_attempts, max_elapsed, backoff_base,
backoff_cap, timeout, connect_timeout, rate, burst, claim_lease,
idempotency_header, content_type, on_retry = function(event_id, attempt, status, delay_s, error).
]]
function M.sink.http(opts)
  if type(opts) ~= "table" or (type(opts.url) ~= "string" and type(opts.url) ~= "function") then
    error("gateway.sink.http: opts.url (a string or a function) is required", 2)
  end
  return { kind = "http", opts = opts }
end

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
  for _, k in ipairs { "filter", "transform" } do
    if spec[k] ~= nil and type(spec[k]) ~= "function" then
      error(fmt("pipeline: %s must be a function", k), 2)
    end
  end
  for _, k in ipairs { "latch", "enrich" } do
    local v = spec[k]
    if v ~= nil and type(v) ~= "function" and type(v) ~= "table" then
      error(fmt("pipeline: %s must be a function or a table", k), 2)
    end
  end
  local latch = spec.latch
  if type(latch) == "table" then
    if type(latch.key) ~= "function" then error("pipeline: latch.key must be a function", 2) end
    if latch.from == nil and latch.to == nil and not latch.flag then
      error("pipeline: latch needs from, to or flag", 2)
    end
    for _, k in ipairs { "doc", "out_doc" } do
      if latch[k] ~= nil and type(latch[k]) ~= "function" then error(fmt("pipeline: latch.%s must be a function", k), 2) end
    end
  end
  local enrich = spec.enrich
  if type(enrich) == "table" then
    for _, k in ipairs { "key", "fn" } do
      if enrich[k] ~= nil and type(enrich[k]) ~= "function" then error(fmt("pipeline: enrich.%s must be a function", k), 2) end
    end
    if enrich.key and not enrich.into then error("pipeline: enrich.key needs enrich.into", 2) end
    local ld = enrich.load
    if ld ~= nil and type(ld) ~= "function" and not (type(ld) == "table" and ld.url) then
      error("pipeline: enrich.load must be a function or {url = ...}", 2)
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
    if idem.hash ~= nil and idem.hash ~= false and type(idem.hash) ~= "function" then
      error("pipeline: idempotence.hash must be a function or false", 2)
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
  if desc.kind == "snapshot" or desc.kind == "cursor" or desc.kind == "replay" then
    return "driver", desc
  end
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
  elseif desc.kind == "http" then
    return { kind = "http", opts = desc.opts }
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
local make_event -- below: the per-event hot path

local COUNTERS = { "received", "delivered", "duplicates", "echoes", "stale", "faults",
                   "filtered", "dropped", "busy", "cancelled" }

-- Opens a runner: the state of one run (or resubmission) of a pipeline. See M.run for opts.
local function new_runner(spec, opts, sink)
  local store = opts.store
  local self = setmetatable({
    spec = spec, store = store, sink = sink, opts = opts,
    script = opts.script or spec.name or "gateway", source = "-",
    budget = opts.budget or 0, faults_list = {},
  }, Runner)
  local c = {}
  for _, k in ipairs(COUNTERS) do c[k] = 0 end
  self.c = c
  self.started_ms = now_ms(store)
  self.run_id = uuid5(fmt("esg.run/%s/%d/%s/%s", self.script, self.started_ms, tostring(self), tostring(math.random())))
  local idem = spec.idempotence
  if idem == nil or idem == true then idem = {} end
  self.lease, self.ttl = 30, 3600
  if idem then
    self.idem = idem
    self.lease, self.ttl = idem.lease or 30, idem.ttl or 3600
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
  -- ctx.event, ctx.claim and ctx.cache are built only when a step reads them
  local intake = store:intake { lease = self.lease, ttl = self.ttl }
  self.intake = intake
  setmetatable(self.ctx, { __index = function(ctx, k)
    local v
    if k == "event" then
      v = intake:event()
    elseif k == "claim" then
      local key, token = intake:owned()
      if key then v = store:owned_claim(key, token) end
    elseif k == "cache" then
      v = self:cache() -- kept for the run
    end
    if k ~= "cache" then self.ctx_dirty = true end -- reset before the next event
    rawset(ctx, k, v)
    return v
  end })
  if sink.kind == "http" then self:open_egress(sink.opts) end
  self.mono = host and host.monotonic or os.clock
  self.event = make_event(self)
  self.t0 = self.mono()
  self.last = self.t0
  return self
end

-- The run's enrichment cache (opened on first use with the enrich step's cache options).
function Runner:cache()
  if not self.cache_h then
    local e = self.spec.enrich
    local copts = type(e) == "table" and e.cache or nil
    self.cache_h = assert(self.store:cache(copts))
  end
  return self.cache_h
end

local EGRESS_OPTS = { "max_in_flight", "max_attempts", "max_elapsed", "backoff_base", "backoff_cap", "timeout",
                      "connect_timeout", "rate", "burst", "claim_lease", "idempotency_header", "content_type",
                      "max_response_bytes", "seed", "on_retry" }

-- The HTTP sink's engine: faults complete the claim (a rerun sees a duplicate, as for script faults).
function Runner:open_egress(o)
  local eo = { complete_on_fault = true }
  for _, k in ipairs(EGRESS_OPTS) do eo[k] = o[k] end
  eo.on_done = function(r) self:egress_done(r) end
  self.egress = assert(self.store:egress(eo))
  self.pending = 0
  self.backlog = 4 * (o.max_in_flight or 16)
  self.outcomes = {}
  self.inflight = {} -- claim keys whose delivery is in flight
end

-- A delivery finished: count it; a fault was recorded by the engine.
function Runner:egress_done(r)
  local c = self.c
  self.pending = self.pending - 1
  local outcome = r.outcome
  local ud = r.ud
  if ud then self.inflight[ud.key] = nil end
  if self.resubmitting_ids then self.outcomes[r.event_id] = outcome end
  if outcome == "delivered" then
    c.delivered = c.delivered + 1
  elseif outcome == "cancelled" then
    c.cancelled = c.cancelled + 1
  else
    c.faults = c.faults + 1
    local fault = { id = r.fault_id, stage = "deliver", error = r.error, event_id = r.event_id, line = ud and ud.line,
                    http_status = r.http_status, attempts = r.attempts, source = self.source,
                    script = self.script, run = self.run_id }
    local list = self.faults_list
    if #list < 100 then list[#list + 1] = fault end
    if self.opts.on_fault then self.opts.on_fault(fault) end
  end
end

-- Closes the sink, commits, stores the run's record; returns the counters or nil, message.
function Runner:finish(kind)
  local c, store, sink, opts = self.c, self.store, self.sink, self.opts
  if self.egress then
    self.egress:drain()
    self.egress:close()
    self.egress = nil
  end
  if self.cache_h then
    self.cache_h:close()
    self.cache_h = nil
  end
  if sink.kind == "file" then
    sink.file:flush()
    if sink.close then sink.file:close() end
  end
  if opts.fault_ttl then store:purge_faults(store:now() - opts.fault_ttl) end
  local ok, ferr = store:flush()
  c.elapsed = self.mono() - self.t0
  if opts.progress then
    self:progress(c.elapsed)
    io_stderr:write("\n")
  end
  if not ok then return nil, "cannot commit: " .. tostring(ferr) end
  c.faults_list = self.faults_list
  c.resync = self.resync
  c.run = self.run_id
  c.source = self.source
  -- the run's record, for `esg stats`
  local rec = { id = uuid5("esg.run/" .. self.run_id), type = M.RUN_TYPE, timestamp = now_ms(store),
                partitionKey = M.RUN_KEY,
                run = { script = self.script, name = self.spec.name, source = self.source, started = self.started_ms,
                        elapsed = c.elapsed, kind = kind } }
  for _, k in ipairs(COUNTERS) do rec.run[k] = c[k] end
  store:put(rec, { key = M.RUN_KEY, ttl = opts.run_ttl })
  store:flush()
  return c
end

--[[
Runs a pipeline. opts:
  store     an open esg store (required)
  input     a path, "-" (stdin) or a gateway.source descriptor; overrides spec.source
  output    a path overriding a stdout/jsonl sink
  base      directory (with trailing /) relative paths of the spec are resolved against
  script    the script's name, for fault records
  budget    instructions per event (0 = none; needs the esg command)
  progress  write a live progress line to stderr
  fault_ttl seconds: at the end of the run, delete faults whose last attempt is older
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
  local self = new_runner(spec, opts, sink)
  if next_line == "driver" then
    local ok, err = self:drive(source_name)
    local c, ferr = self:finish("run")
    if not ok then return nil, err end
    return c, ferr
  end
  self.source = source_name
  local c, progress, mono = self.c, opts.progress, self.mono
  local event = self.event
  local lineno = 0
  for line in next_line do
    lineno = lineno + 1
    event(line, lineno) -- blank lines are skipped there, a trailing CR dropped
    if progress and (c.received & 63) == 0 then
      local t = mono()
      if t - self.last >= 0.2 then
        self.last = t
        self:progress(t - self.t0)
      end
    end
  end
  if source_file then source_file:close() end
  return self:finish("run")
end

-- Runs a resync or replay source: its events go through the pipeline from its sink callback.
function Runner:drive(desc)
  local store, o, kind = self.store, desc.opts, desc.kind
  local event = self.event
  local n = 0
  local function sink(rec)
    n = n + 1
    event(rec.json, n)
  end
  if kind == "snapshot" then
    if type(o) ~= "table" or type(o.source) ~= "string" or type(o.listing) ~= "function" then
      return nil, "gateway.source.snapshot needs source and listing"
    end
    self.source = "snapshot " .. o.source
    local sn, err = store:snapshot(o.source, { type = o.type, entity_field = o.entity_field, log_ttl = o.log_ttl,
                                               batch = 1, sink = sink })
    if not sn then return nil, err end
    for key, content in o.listing(self.ctx) do
      local ok, aerr = sn:add(key, content)
      if not ok then
        self.c.received = self.c.received + 1
        self:fault("resync", tostring(aerr), nil, json_encode { key = tostring(key) }, nil, false)
      end
    end
    local st, ferr = sn:finish()
    sn:close()
    if not st then return nil, ferr end
    self.resync = st
  elseif kind == "cursor" then
    if type(o) ~= "table" or type(o.name) ~= "string" or type(o.source) ~= "string" or type(o.fetch) ~= "function" then
      return nil, "gateway.source.cursor needs name, source and fetch"
    end
    self.source = "cursor " .. o.name
    local fetch, ctx = o.fetch, self.ctx
    local st, err = store:cursor_run(o.name, o.source, function(cursor) return fetch(cursor, ctx) end,
      { sink = sink, entity_field = o.entity_field, log_ttl = o.log_ttl, max_pages = o.max_pages })
    if not st then return nil, err end
    self.resync = st
  else
    self.source = "replay"
    local nrep, err = store:replay(o, function(rec) sink(rec) end)
    if not nrep then return nil, err end
  end
  return true
end

function Runner:progress(elapsed)
  local c = self.c
  io_stderr:write(fmt("\r%s: received %d, delivered %d, duplicates %d, faults %d (%.1f s)\27[K",
    self.spec.name or "gateway", c.received, c.delivered, c.duplicates, c.faults, elapsed))
  io_stderr:flush()
end

-- Completes the current claim (if held) with a small JSON result.
function Runner:settle(result)
  local ok, err = self.intake:settle(result)
  if not ok then error({ esg_fault = true, msg = "cannot complete the claim: " .. tostring(err) }) end
end

local function deliver(self, out, ctx)
  local sink = self.sink
  local kind = sink.kind
  if kind == "file" then
    -- an unchanged event (a lazy object nobody looked at) is written as received
    local ok, err = self.intake:write(sink.file, out)
    if not ok then error(err, 0) end
  elseif kind == "eventlog" then
    local st, err = self.store:put(out, sink.opts)
    if not st then error(err, 0) end
  elseif kind == "collect" then
    sink.list[#sink.list + 1] = out
  else
    sink.fn(out, ctx)
  end
end

-- Did a claim's stored result come from a fault (ours or the egress engine's)?
local function is_fault_result(result)
  if type(result) ~= "string" or not result:find('"fault"', 1, true) then return false end
  local r = json_decode(result)
  return type(r) == "table" and math.type(r.fault) == "integer"
end

-- The content of an event: the envelope without id, type, timestamp, partitionKey, tags, raw.
local ENVELOPE = { id = true, type = true, timestamp = true, partitionKey = true, tags = true, raw = true }
local function content_of(ev)
  local t = {}
  for k, v in pairs(ev) do
    if not ENVELOPE[k] then t[k] = v end
  end
  return t
end

-- The latch step as functions: check(t, ctx) -> echo?, mark(out, t, ctx) before the sink.
local function make_latch(self, l)
  if type(l) == "function" then return l, nil end
  local store = self.store
  local key_fn, from, to, flag = l.key, l.from, l.to, l.flag
  local doc = l.doc or content_of
  local out_doc = l.out_doc or function(out) return out end
  local ttl = l.ttl or 600
  local flagged = esg.latch.flagged
  local function check(t, ctx)
    if flag and flagged(t) then return true end
    if not from then return false end
    local key = key_fn(t, ctx)
    if key == nil then return false end
    local verdict, err = store:latch_check_doc(key, from, doc(t, ctx))
    if not verdict then error(err, 0) end
    return verdict == "echo"
  end
  local mark
  if to then
    mark = function(out, t, ctx)
      local key = key_fn(t, ctx)
      if key == nil then return end
      local ok, err = store:latch_doc(key, to, out_doc(out, t, ctx), ttl)
      if not ok then error(err, 0) end
    end
  end
  return check, mark
end

-- The enrich step as a function(t, ctx) -> t.
local function make_enrich(self, e)
  if type(e) == "function" then return e end
  local collect, key_fn, into, required, fn = e.collect, e.key, e.into, e.required, e.fn
  local load = e.load
  if type(load) == "table" then
    local hl = assert(esg.http_loader(load))
    self.http_loader = hl
    load = hl
  end
  return function(t, ctx)
    local cache = ctx.cache
    if collect and (collect == true or collect(t, ctx)) then
      local st, err = cache:collect(ctx.line)
      if not st then error(err, 0) end
    end
    if key_fn then
      local key = key_fn(t, ctx)
      if key ~= nil then
        local result, value, err
        if load then
          result, value, _, _, _, err = cache:get_or_load(key, load)
          if not result then error(value, 0) end
        else
          result, value = cache:get(key)
          if not result then error(value, 0) end
        end
        if value then
          t[into] = json_decode(value)
        elseif required then
          error(fmt("enrich: no value for %s (%s)", tostring(key), result), 0)
        end
      elseif required then
        error("enrich: no key for this event", 0)
      end
    end
    if fn then
      local t2 = fn(t, ctx)
      if t2 ~= nil then t = t2 end
    end
    return t
  end
end

--[[
Builds the steps of one event for this runner, run protected; `stage` names
the running one (self.get_stage()). The pipeline's parts are upvalues, the intake's methods are
looked up once: this closure is the per-event hot path. t, what the steps see,
is a lazy object: decoded on its first access, written as the bytes received
when no step looked at it.
]]
local function make_steps(self)
  local spec, ctx, c, intake, store = self.spec, self.ctx, self.c, self.intake, self.store
  local filter, transform = spec.filter, spec.transform
  local latch, mark
  if spec.latch then latch, mark = make_latch(self, spec.latch) end
  local enrich = spec.enrich and make_enrich(self, spec.enrich)
  local idem = self.idem
  local key_fn, entity_fn = idem and idem.key, idem and idem.entity
  local hash_opt = idem and idem.hash -- nil: the event's bytes; false: none; function(ev, ctx) -> string|nil
  local sink = self.sink
  local file = sink.kind == "file" and sink.file
  local http = sink.kind == "http" and sink.opts
  local claim, settle, write = intake.claim, intake.settle, intake.write
  if file then intake:set_sink(file) end
  local function fail_settle(err)
    error({ esg_fault = true, msg = "cannot complete the claim: " .. tostring(err) })
  end
  local function finish(result)
    local ok, err = settle(intake, result)
    if not ok then fail_settle(err) end
  end
  local stage -- the running step, for fault records (an upvalue: cheaper than a field)
  self.get_stage = function() return stage end
  self.set_stage = function(s) stage = s end
  -- the HTTP sink: the delivery takes the claim over; "egress" tells the caller
  local function deliver_http(out, line, lineno)
    local o = http
    local body = out
    if o.body then body = o.body(out, ctx) end
    local url = o.url
    if type(url) == "function" then url = url(out, ctx) end
    local req = { event_id = intake:id(), url = url, method = o.method, headers = o.headers, body = body,
                  partition_key = intake:partition_key(), event = line }
    req.claim_key, req.claim_token = intake:owned()
    if req.claim_key then
      req.ud = { key = req.claim_key, line = lineno }
      self.inflight[req.claim_key] = true
    end
    local egress = self.egress
    local ok, err
    if self.resubmitting then
      ok, err = egress:resubmit(self.resubmitting.id, req)
      if ok == nil and err == nil then ok = true end -- the fault is gone: settled meanwhile
    else
      ok, err = egress:submit(req)
    end
    if not ok then error(err, 0) end
    intake:handover()
    self.pending = self.pending + 1
    if self.pending >= self.backlog then
      repeat egress:run(0.05) until self.pending < self.backlog
    else
      egress:run(0)
    end
    return "egress"
  end
  return function(line, t)
    if filter then
      stage = "filter"
      if not filter(t, ctx) then c.filtered = c.filtered + 1; return end
    end
    local entity
    if idem then
      stage = "idempotence"
      local st, x
      if hash_opt ~= nil then
        local h = false
        if hash_opt then h = hash_opt(t, ctx) or false end
        st, x = claim(intake, key_fn and key_fn(t, ctx) or nil, h)
      elseif key_fn then
        st, x = claim(intake, key_fn(t, ctx))
      else
        st, x = claim(intake)
      end
      if st == "duplicate" then
        -- a resubmitted fault's own claim names the fault: not done yet, so go on unowned
        if not (self.resubmitting and is_fault_result(x)) then
          c.duplicates = c.duplicates + 1
          return
        end
      elseif st == "busy" then
        -- held by this run's own delivery still in flight: a copy of it, so a duplicate
        local inflight = self.inflight
        if inflight and inflight[key_fn and key_fn(t, ctx) or intake:id()] then
          c.duplicates = c.duplicates + 1
          return
        end
        c.busy = c.busy + 1
        return "busy"
      elseif st ~= "new" then
        error(x, 0)
      end
      if entity_fn then
        local ekey, version, doc = entity_fn(t, ctx)
        if ekey ~= nil then
          if math.type(version) ~= "integer" then
            error("idempotence.entity must return key, integer version [, doc]", 0)
          end
          -- checked now, written once the event is handled: a fault does not move the version
          -- (a resubmission may find its own version, written before an HTTP delivery failed)
          local cur = store:get(ekey, { raw = true })
          if cur and (cur.version > version or (cur.version == version and not self.resubmitting)) then
            c.stale = c.stale + 1
            finish('{"status":"stale"}')
            return
          end
          entity = { ekey, version, doc or json_encode(t) }
        end
      end
    end
    if latch then
      stage = "latch"
      if latch(t, ctx) then
        c.echoes = c.echoes + 1
        finish('{"status":"echo"}')
        return
      end
    end
    if enrich then
      stage = "enrich"
      local t2 = enrich(t, ctx)
      if t2 ~= nil then t = t2 end
    end
    local out
    if transform then
      stage = "transform"
      out = transform(t, ctx)
      if out == nil or out == false then
        c.dropped = c.dropped + 1
        finish('{"status":"dropped"}')
        return
      end
    elseif enrich then
      out = t
    else
      out = line -- nothing changed it: the bytes as received
    end
    if mark then
      stage = "latch"
      mark(out, t, ctx) -- before the write, so its echo can never come first
    end
    stage = "sink"
    if entity and http then
      -- written before an HTTP delivery, which finishes later
      local applied, err = store:upsert(entity[1], entity[2], entity[3])
      if not applied then error(err, 0) end
      entity = nil
    end
    if file then
      -- an unchanged event (a lazy object nobody looked at) is written as received
      local ok, err = write(intake, out)
      if not ok then error(err, 0) end
    elseif http then
      return deliver_http(out, line, self.lineno)
    else
      deliver(self, out, ctx)
    end
    c.delivered = c.delivered + 1
    stage = "complete"
    if entity then
      local applied, err = store:upsert(entity[1], entity[2], entity[3])
      if not applied then error(err, 0) end
    end
    local ok, err = settle(intake) -- delivered: the claim completed without a result
    if not ok then fail_settle(err) end
  end
end

-- Builds self.event(line, lineno [, resubmit]): runs one event (a JSON line);
-- resubmit is the fault record being resubmitted, if any. It returns true when the
-- event was handled, false when it faulted or is busy elsewhere.
function make_event(self)
  local c, ctx, intake = self.c, self.ctx, self.intake
  local begin = intake.begin
  local steps = make_steps(self)
  local set_stage, get_stage = self.set_stage, self.get_stage
  local budget = self.budget
  local budgeted = budget > 0 and host_pcall
  return function(line, lineno, resubmit)
    local t, x = begin(intake, line)
    if t == false then return true, "blank" end
    c.received = c.received + 1
    self.resubmitting, self.lineno = resubmit, lineno
    if self.ctx_dirty then
      ctx.event, ctx.claim, self.ctx_dirty = nil, nil, false
    end
    if not t then
      set_stage("parse")
      return self:fault("parse", x, nil, line, lineno, false)
    end
    if x then line = x end -- without its CR
    ctx.line = line
    set_stage("parse")
    local ok, err, tb
    if budgeted then -- the budget is armed and disarmed in C
      ok, err, tb = host_pcall(budget, steps, line, t)
    else
      ok, err = xpcall(steps, on_error, line, t)
    end
    if not ok then
      if type(err) == "table" and err.esg_fault then err, tb = err.msg, err.tb end
      if not tb then collectgarbage() end -- memory errors come without a traceback
      return self:fault(get_stage(), tostring(err), tb, line, lineno, true)
    end
    return err ~= "busy", err -- steps' result: "busy" when another worker holds the event, "egress"
  end
end

-- The event id a fault of an unparsable line is recorded under: its id if it has one.
local function unparsed_id(line)
  local ok, t = pcall(json_decode, line)
  if ok and type(t) == "table" and type(t.id) == "string" and t.id ~= "" and #t.id <= 1024 then return t.id end
  return "unparsed:" .. esg.sha256(line):sub(1, 16)
end

--[[
Records a fault in the store's fault table and completes the event's claim with
{"status":"fault","fault":<id>}. The error text is the message, then a line of
context (input line, source, script, run), then the traceback if any.
]]
function Runner:fault(stage, msg, tb, line, lineno, parsed)
  local c, store, intake = self.c, self.store, self.intake
  c.faults = c.faults + 1
  local event_id = parsed and intake:id() or unparsed_id(line)
  local where = fmt("at %s%s (script %s, run %s)", lineno and ("line " .. lineno .. " of ") or "",
    self.resubmitting and ("fault " .. self.resubmitting.id) or tostring(self.source), self.script, self.run_id)
  local text = msg .. "\n" .. where
  if tb then text = text .. "\n" .. (tb:match("\n(stack traceback:.*)$") or tb) end
  local prev = self.resubmitting
  local id, err = store:fault_record {
    event_id = event_id, stage = stage, error = text, event = line,
    attempts = prev and prev.attempts + 1 or 1, first_attempt = prev and prev.first_attempt or nil,
  }
  if not id then io_stderr:write("esg: cannot record a fault: ", tostring(err), "\n") end
  if id and prev then store:fault_delete(prev.id) end -- the new record replaces it
  intake:settle(fmt('{"status":"fault","fault":%d}', id or 0))
  local fault = {
    id = id, stage = stage, error = msg, traceback = tb, event_id = event_id,
    event_type = parsed and intake:type() or nil, line = lineno, source = self.source,
    script = self.script, run = self.run_id,
  }
  local list = self.faults_list
  if #list < 100 then list[#list + 1] = fault end
  if self.opts.on_fault then self.opts.on_fault(fault) end
  return false
end

--[[
Resubmits faults: runs the stored event of each through the pipeline again, with
the same event id. opts as for M.run, plus:
  ids   list of fault ids; nil = every fault in the store, oldest first
Each fault is resubmitted under a claim on "esg.resubmit/<id>", so two
resubmitters never run one fault at once; the event's own claim, completed with
the fault when it failed, lets the event through (a claim completed otherwise
makes it a duplicate: it was handled since, e.g. by a rerun). When the event is
handled (delivered, filtered, dropped, stale, echo or duplicate) the fault is
deleted; when it fails again a new fault replaces it (attempts + 1). Returns the
counters (plus resubmitted, skipped, missing) or nil, message.
]]
function M.resubmit(spec, opts)
  M.check(spec)
  local store = assert(opts.store, "gateway.resubmit: opts.store is required")
  local sink, serr = open_sink(spec.sink, opts.output, opts.base, store)
  if not sink then return nil, "cannot open the sink: " .. tostring(serr) end
  local self = new_runner(spec, opts, sink)
  self.source = "faults"
  local c = self.c
  c.resubmitted, c.skipped, c.missing = 0, 0, 0
  local list
  if opts.ids then
    list = {}
    for _, id in ipairs(opts.ids) do
      local f, err = store:fault(id)
      if f then list[#list + 1] = f
      elseif err then return nil, err
      else c.missing = c.missing + 1 end
    end
  else
    local err
    list, err = store:faults()
    if not list then return nil, err end
  end
  local lease = self.lease or 30
  self.resubmitting_ids = true
  for _, f in ipairs(list) do
    local gkey = M.RESUBMIT_PREFIX .. f.id
    local st, guard = store:claim(gkey, nil, { lease = lease, ttl = 86400 })
    if st == "new" then
      local busy = c.busy
      local ok, how = self.event(f.event or "", nil, f)
      if how == "egress" then
        -- the engine resubmitted the fault: it deletes or replaces it; wait for the outcome
        self.egress:drain()
        local outcome = self.outcomes[f.event_id]
        self.outcomes[f.event_id] = nil
        if outcome == "delivered" then
          guard:complete('{"status":"resubmitted"}')
          c.resubmitted = c.resubmitted + 1
        else
          guard:release()
        end
      elseif ok then
        store:fault_delete(f.id)
        guard:complete('{"status":"resubmitted"}')
        c.resubmitted = c.resubmitted + 1
      else
        guard:release()
        if c.busy > busy then c.skipped = c.skipped + 1 end -- the event is in progress elsewhere
      end
    elseif st == "duplicate" then
      store:fault_delete(f.id) -- resubmitted before; the deletion did not land
      c.resubmitted = c.resubmitted + 1
    else
      c.skipped = c.skipped + 1 -- another resubmitter holds it
    end
  end
  self.resubmitting = nil
  return self:finish("resubmit")
end

M.COUNTERS = COUNTERS
return M
