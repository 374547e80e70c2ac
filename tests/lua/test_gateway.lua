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

-- faults are stored in the fault table and listed
local faults = assert(store:faults())
T.eq(#faults, 3, "faults stored")
local by_event = {}
for _, f in ipairs(faults) do by_event[f.event_id] = f end
local boom = by_event.boom
T.ok(boom ~= nil, "fault of the failed event")
T.eq(math.type(boom.id), "integer", "fault ids are integers")
T.eq(boom.id, seen_faults[1].id, "on_fault gets the stored id")
T.eq(boom.stage, "transform", "stored stage")
T.match(boom.error, "^[^\n]*transform failed on purpose", "stored error: the message first")
T.match(boom.error, "line 8 of lines", "stored error: where")
T.match(boom.error, "stack traceback", "stored error: traceback")
T.eq(boom.attempts, 1, "one attempt")
T.eq(boom.event, line("boom", { thing = { id = "t-9", version = 1, fail = true } }), "stored event: the bytes received")
T.eq(boom.first_attempt, 5000.0, "first attempt on the store clock")
T.ok(by_event.x ~= nil, "a bad envelope with an id is recorded under it")
local unparsed
for k in pairs(by_event) do if k:find("^unparsed:") then unparsed = by_event[k] end end
T.eq(unparsed and unparsed.event, "{not json", "bad JSON kept as received")
-- the faulted event's claim is completed with the fault: a rerun sees a duplicate
local st, cl = store:claim("boom", nil)
T.eq(st, "duplicate", "faulted event is settled")
T.eq(esg.json.decode(cl.result).status, "fault", "claim result names the fault")
T.eq(esg.json.decode(cl.result).fault, boom.id, "claim result has the fault id")
-- a faulted event did not move its entity's version
T.eq(store:get("thing:t-9"), nil, "no entity written for a faulted event")

-- second run: every processed event is a duplicate
out = {}
spec.sink = gateway.sink.collect(out)
c = assert(gateway.run(spec, { store = store, input = gateway.source.lines(lines) }))
T.eq(c.duplicates, 7, "rerun: all claimed events are duplicates")
T.eq(c.delivered, 0, "rerun: nothing delivered")
T.eq(c.faults, 2, "rerun: unparsable lines fault again")
T.eq(#store:faults(), 5, "five faults now")

-- resubmit with the script unfixed: fails again, the record is replaced (attempts 2)
out = {}
spec.sink = gateway.sink.collect(out)
c = assert(gateway.resubmit(spec, { store = store, ids = { boom.id } }))
T.eq(c.faults, 1, "resubmit unfixed: faults again")
T.eq(c.resubmitted, 0, "resubmit unfixed: nothing settled")
T.eq(store:fault(boom.id), nil, "the old record is replaced")
local boom2 = store:faults()[5]
T.eq(boom2.event_id, "boom", "the new record")
T.eq(boom2.attempts, 2, "attempts carried over")
T.eq(boom2.first_attempt, boom.first_attempt, "first attempt carried over")
-- fixed script + resubmit --all: the failed event is delivered exactly once; bad lines stay faults
local fixed = {}
for k, v in pairs(spec) do fixed[k] = v end
fixed.transform = function(ev) return { id = ev.id, fixed = true } end
out = {}
fixed.sink = gateway.sink.collect(out)
c = assert(gateway.resubmit(fixed, { store = store }))
T.eq(c.received, 5, "resubmit all: five faults")
T.eq(c.delivered, 1, "resubmit all: the event delivered")
T.eq(#out, 1, "sink got it once")
T.eq(out[1].id, "boom", "the resubmitted event keeps its id")
T.eq(c.resubmitted, 1, "one settled")
T.eq(c.faults, 4, "the unparsable lines fault again")
T.eq(#store:faults(), 4, "their records replaced, the event's deleted")
T.eq(store:get("thing:t-9").version, 1, "the entity written once delivered")
c = assert(gateway.resubmit(fixed, { store = store }))
T.eq(c.delivered, 0, "second resubmit: nothing delivered again")
out = {}
fixed.sink = gateway.sink.collect(out)
c = assert(gateway.run(fixed, { store = store, input = gateway.source.lines(lines) }))
T.eq(c.delivered, 0, "rerun after resubmit: nothing delivered again")
-- a resubmitted fault whose event was handled since is settled as a duplicate
local fid = store:fault_record { event_id = "a", stage = "sink", error = "lost", event = line("a") }
c = assert(gateway.resubmit(fixed, { store = store, ids = { fid, 999999 } }))
T.eq(c.duplicates, 1, "handled since: a duplicate")
T.eq(c.missing, 1, "unknown id counted")
T.eq(store:fault(fid), nil, "and its fault deleted")
-- an exclusive resubmission: a fault held by another resubmitter is skipped
fid = store:fault_record { event_id = "held", stage = "sink", error = "x", event = line("held") }
local gst, guard = store:claim(gateway.RESUBMIT_PREFIX .. fid, nil, { lease = 30 })
T.eq(gst, "new", "another resubmitter holds it")
c = assert(gateway.resubmit(fixed, { store = store, ids = { fid } }))
T.eq(c.skipped, 1, "held fault skipped")
T.ok(store:fault(fid) ~= nil, "held fault kept")
guard:release()

-- purge deletes
now = now + 1
T.eq(store:purge_faults(now - 2), 0, "purge before: none old enough")
T.eq(store:purge_faults(), 7, "purge counts (the rerun's parse faults too)")
T.eq(#store:faults(), 0, "purged faults gone")

-- runs are recorded
T.eq(#store:events(gateway.RUN_KEY), 8, "run records (runs and resubmissions)")

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

-- an event no step looked at reaches a file sink as the bytes received (spacing kept);
-- one a step read is re-encoded
do
  local d = T.tmpdir("lazy")
  local raw = '{"id": "sp-1", "type": "t", "timestamp": 1}'
  c = assert(gateway.run({ transform = function(ev) return ev end, sink = gateway.sink.jsonl(d .. "/o.jsonl") },
                         { store = store, input = gateway.source.lines { raw } }))
  T.eq(T.read(d .. "/o.jsonl"), raw .. "\n", "untouched event written as received")
  c = assert(gateway.run({ transform = function(ev) ev.seen = true; return ev end, sink = gateway.sink.jsonl(d .. "/p.jsonl") },
                         { store = store, input = gateway.source.lines { '{"id": "sp-2", "type": "t", "timestamp": 1}' } }))
  local got = esg.json.decode(T.read(d .. "/p.jsonl"))
  T.ok(got.seen == true and got.id == "sp-2", "modified event re-encoded")
  -- ctx.event and ctx.claim are built on demand
  local seen = {}
  c = assert(gateway.run({ transform = function(ev, ctx)
      seen[#seen + 1] = ctx.event:id() .. "/" .. tostring(ctx.claim.key) .. "/" .. ctx.line:sub(1, 1)
      return ev
    end, sink = gateway.sink.collect {} }, { store = store, input = gateway.source.lines { line("cx-1"), line("cx-2") } }))
  T.eq(seen[2], "cx-2/cx-2/{", "ctx.event, ctx.claim, ctx.line per event")
end

-- pipeline checks raise
T.raises(function() gateway.check(5) end, "pipeline table", "spec must be a table")
T.raises(function() gateway.check { transfrom = print } end, "unknown field", "typo in a step name")
T.raises(function() gateway.check { filter = 1 } end, "filter must be a function", "bad step type")
T.raises(function() gateway.check { sink = "stdout" } end, "sink must be", "bad sink")
T.raises(function() gateway.check { idempotence = { key = "id" } } end, "idempotence.key", "bad key fn")

store:close()
T.done()
