-- The pipeline runner in-process (plain lua5.4 with esg.so): every step and
-- outcome, faults from script errors, sinks and sources.
local T = require "testlib"
local esg = require "esg"
local gateway = require "esg.gateway"

local function line(id, extra)
  local t = { id = id, type = "thing-updated", timestamp = 1700000000000, partitionKey = "p",
              thing = { id = "t-1", version = 1 } }
  for k, v in pairs(extra or {}) do t[k] = v end
  return esg.json.encode(t)
end

local now = 5000.0
local store = assert(esg.open(":memory:", { clock = function() return now end }))

-- all outcomes in one run
local out = {}
local lines = {
  line("a"), line("b", { thing = { id = "t-2", version = 1 } }), line("a"), "",
  line("skip", { type = "other" }),
  line("echo", { thing = { id = "t-3", version = 1 }, tags = { origin = "crm" } }),
  line("old", { thing = { id = "t-1", version = 0 } }),
  line("boom", { thing = { id = "t-9", version = 1, fail = true } }),
  line("drop", { thing = { id = "t-8", version = 1, drop = true } }),
  "{not json", '{"id":"x","type":"t"}',
}
local seen_faults = {}
local spec = {
  name = "test",
  filter = function(ev) return ev.type == "thing-updated" end,
  idempotence = { ttl = 60, entity = function(ev) return "thing:" .. ev.thing.id, ev.thing.version end },
  latch = function(ev) return ev.tags and ev.tags.origin == "crm" end,
  enrich = function(ev, ctx)
    ev.enriched = ctx.store ~= nil and ctx.event:id() == ev.id
    return ev
  end,
  transform = function(ev)
    if ev.thing.fail then error("transform failed on purpose") end
    if ev.thing.drop then return nil end
    return { id = ev.id, enriched = ev.enriched }
  end,
  sink = gateway.sink.collect(out),
}
local c = assert(gateway.run(spec, { store = store, input = gateway.source.lines(lines), script = "t.lua",
                                     on_fault = function(f) seen_faults[#seen_faults + 1] = f end }))
T.eq(c.received, 10, "received (blank lines skipped)")
T.eq(c.delivered, 2, "delivered")
T.eq(c.duplicates, 1, "duplicates")
T.eq(c.filtered, 1, "filtered")
T.eq(c.echoes, 1, "echoes suppressed")
T.eq(c.stale, 1, "stale")
T.eq(c.dropped, 1, "dropped")
T.eq(c.faults, 3, "faults: transform error and two bad envelopes")
T.eq(#out, 2, "sink got two records")
T.eq(out[1].id, "a", "sink record")
T.eq(out[1].enriched, true, "enrich ran with ctx")
T.eq(#seen_faults, 3, "on_fault called")
T.eq(seen_faults[1].stage, "transform", "fault stage")
T.match(seen_faults[1].error, "transform failed on purpose", "fault message")
T.match(seen_faults[1].traceback, "traceback", "fault traceback")
T.eq(seen_faults[1].event_id, "boom", "fault event id")
T.eq(seen_faults[1].line, 8, "fault line number")
T.eq(seen_faults[2].stage, "parse", "bad JSON is a parse fault")
T.eq(seen_faults[3].stage, "parse", "bad envelope is a parse fault")

-- faults are stored as events and listed
local faults = assert(gateway.faults(store))
T.eq(#faults, 3, "faults stored")
local by_line = {}
for _, f in ipairs(faults) do by_line[f.fault.line] = f end
T.eq(by_line[8].fault.event_id, "boom", "stored fault")
T.eq(by_line[10].raw, "{not json", "raw line kept")
local rec = store:event(by_line[8].id, { decode = true })
T.eq(rec.type, "esg.fault", "fault event type")
T.eq(rec.key, "esg.faults", "fault correlation key")
-- the faulted event's claim is completed with the fault: a rerun sees a duplicate
local st, cl = store:claim("boom", nil)
T.eq(st, "duplicate", "faulted event is settled")
T.eq(esg.json.decode(cl.result).status, "fault", "claim result names the fault")

-- second run: every processed event is a duplicate
out = {}
spec.sink = gateway.sink.collect(out)
c = assert(gateway.run(spec, { store = store, input = gateway.source.lines(lines) }))
T.eq(c.duplicates, 7, "rerun: all claimed events are duplicates")
T.eq(c.delivered, 0, "rerun: nothing delivered")
T.eq(c.faults, 2, "rerun: unparsable lines fault again")

-- purge hides the faults listed so far
now = now + 1
T.eq(gateway.purge_faults(store), 5, "purge counts")
T.eq(#gateway.faults(store), 0, "purged faults hidden")

-- runs are recorded
T.eq(#store:events(gateway.RUN_KEY), 2, "run records")

-- no steps: the bytes pass through; idempotence off
out = {}
c = assert(gateway.run({ idempotence = false, sink = gateway.sink.collect(out) },
                       { store = store, input = gateway.source.lines { line("z"), line("z") } }))
T.eq(c.delivered, 2, "idempotence off delivers repeats")
T.eq(out[1], line("z"), "bytes as received")

-- custom key, function sink, eventlog sink, iterator source
local got = {}
local it = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(line("it-" .. i)) end end)
c = assert(gateway.run({
  idempotence = { key = function(ev) return "custom:" .. ev.id end },
  transform = function(ev) return { id = "out-" .. ev.id, type = "thing-exported", timestamp = 1, partitionKey = "exp" } end,
  sink = function(o, ctx) got[#got + 1] = o.id .. "/" .. ctx.event:id() end,
}, { store = store, input = gateway.source.lines(it) }))
T.eq(c.delivered, 3, "iterator source")
T.eq(got[2], "out-it-2/it-2", "function sink")
T.eq((store:claim("custom:it-1")), "duplicate", "custom idempotence key")
c = assert(gateway.run({
  transform = function(ev) return { id = "out-" .. ev.id, type = "thing-exported", timestamp = 1, partitionKey = "exp" } end,
  sink = gateway.sink.eventlog { ttl = 60 },
}, { store = store, input = gateway.source.lines { line("el-1"), line("el-2") } }))
T.eq(c.delivered, 2, "eventlog sink")
T.eq(#store:events("exp"), 2, "events in the log")
c = gateway.run({ transform = function() return { nope = 1 } end, sink = gateway.sink.eventlog() },
                { store = store, input = gateway.source.lines { line("el-3") } })
T.eq(c.faults, 1, "bad envelope into the eventlog sink is a sink fault")

-- jsonl file source and sink, paths relative to base
local dir = T.tmpdir("gw")
T.write(dir .. "/in.jsonl", line("f-1") .. "\n" .. line("f-2") .. "\r\n")
c = assert(gateway.run({ source = gateway.source.jsonl("in.jsonl"), sink = gateway.sink.jsonl("out.jsonl") },
                       { store = store, base = dir .. "/" }))
T.eq(c.delivered, 2, "file source")
local text = T.read(dir .. "/out.jsonl")
T.eq(select(2, text:gsub("\n", "")), 2, "file sink lines")
local r, err = gateway.run({}, { store = store, input = dir .. "/missing.jsonl" })
T.ok(r == nil and err:find("cannot open the source"), "missing input: nil, message")

-- pipeline checks raise
T.raises(function() gateway.check(5) end, "pipeline table", "spec must be a table")
T.raises(function() gateway.check { transfrom = print } end, "unknown field", "typo in a step name")
T.raises(function() gateway.check { filter = 1 } end, "filter must be a function", "bad step type")
T.raises(function() gateway.check { sink = "stdout" } end, "sink must be", "bad sink")
T.raises(function() gateway.check { idempotence = { key = "id" } } end, "idempotence.key", "bad key fn")

store:close()
T.done()
