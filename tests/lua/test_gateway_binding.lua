-- esg.Gateway (store:gateway, bindings/lua/lgateway.c) directly: libesg's gateway with
-- Lua steps. Each step's values and results, the lazy ev, ctx, the outputs' encoding,
-- faults with tracebacks, errors of non-step callbacks, resync feeding and resubmission.
local T = require "testlib"
local esg = require "esg"
local mock = require "mock"
local json = esg.json

local function ev(id, extra)
  local t = { id = id, type = "thing", timestamp = 1, partitionKey = "p", thing = { id = "t-" .. id, v = 1 } }
  for k, v in pairs(extra or {}) do t[k] = v end
  return json.encode(t)
end

local store = assert(esg.open(":memory:"))
local dir = T.tmpdir("gwb")

-- a file sink: an untouched ev as the bytes received; a table sorted by member name
do
  local raw = '{"type": "t",  "id": "r1", "timestamp": 1}'
  local gw = assert(store:gateway { sink_path = dir .. "/o1.jsonl", transform = function(e) return e end })
  T.eq(gw:push(raw), "handled", "push: handled")
  T.ok(gw:close(), "close")
  T.eq(T.read(dir .. "/o1.jsonl"), raw .. "\n", "an untouched ev is written as received")
  gw = assert(store:gateway { sink_path = dir .. "/o2.jsonl",
                              transform = function(e) return { z = e.id, a = e.thing.v, m = { y = 1, b = 2 } } end })
  T.eq(gw:push(ev("r2")), "handled", "push")
  gw:close()
  T.eq(T.read(dir .. "/o2.jsonl"), '{"a":1,"m":{"b":2,"y":1},"z":"r2"}\n', "members sorted by name")
  T.eq(gw:stats().delivered, 1, "stats after close: as they ended")
  T.raises(function() gw:push(ev("r3")) end, "closed gateway", "a closed gateway raises")
end

-- every step with its values; ctx's fields per event
do
  local seen, out = {}, {}
  local ctx = { mine = true }
  local gw = assert(store:gateway {
    name = "steps", ctx = ctx,
    filter = function(e, c) seen.filter = c.mine; return e.type == "thing" end,
    key = function(e) return "k/" .. e.id end,
    hash = function(e) return e.thing.id end,
    entity = function(e) return "ent/" .. e.thing.id, e.thing.v, { own = e.id } end,
    echo = function(e) return e.echo == true end,
    latch_key = function(e) return "l/" .. e.id end, latch_to = "other",
    latch_out_doc = function(o, e, c) seen.out_doc = o.id .. "/" .. e.id .. "/" .. tostring(c.mine); return o end,
    transform = function(e, c)
      seen[#seen + 1] = c.line:sub(1, 8) .. "|" .. c.event:id() .. "|" .. c.claim.key
      return { id = e.id }
    end,
    sink = "callback", write = function(o, c) out[#out + 1] = o.id .. "/" .. tostring(c.mine) end,
  })
  T.eq(gw:push(ev("s1")), "handled", "s1")
  T.eq(gw:push(ev("s2", { echo = true })), "handled", "s2: an echo")
  T.eq(gw:push(ev("s3", { type = "other" })), "handled", "s3: filtered")
  T.eq(gw:push(ev("s1")), "handled", "s1 again: a duplicate")
  local st = gw:stats()
  T.ok(st.delivered == 1 and st.echoes == 1 and st.filtered == 1 and st.duplicates == 1, "counters")
  T.eq(seen.filter, true, "ctx is the caller's table")
  T.eq(seen[1], '{"id":"s|s1|k/s1', "ctx.line, ctx.event, ctx.claim (the custom key)")
  T.eq(seen.out_doc, "s1/s1/true", "latch_out_doc(out, ev, ctx)")
  T.eq(out[1], "s1/true", "write(out, ctx)")
  T.eq((store:claim("k/s1")), "duplicate", "claimed under the key step's key")
  T.eq(store:get("ent/t-s1").doc.own, "s1", "the entity's own document")
  T.eq(store:latch_pending("l/s1", "other"), 1, "latched before the write")
  gw:close()
end

-- faults: the message, where, the traceback; other callbacks' errors are raised
do
  local faults = {}
  local gw = assert(store:gateway {
    source_name = "list", fault_note = "t",
    transform = function(e) if e.bad then error("no good " .. e.id) end return e end,
    sink = "callback", write = function() end,
    on_fault = function(f) faults[#faults + 1] = f end,
  })
  T.ok(gw:run { ev("f1"), ev("f2", { bad = true }), "", "{oops" }, "run a list")
  T.eq(#faults, 2, "two faults")
  T.match(faults[1].error, "no good f2$", "the message")
  T.match(faults[1].traceback, "stack traceback", "its traceback")
  T.eq(faults[1].line, 2, "its line")
  T.eq(faults[1].event_type, "thing", "its event's type")
  T.eq(faults[2].stage, "parse", "a parse fault")
  local rec = store:fault(faults[1].id)
  T.match(rec.error, "^[^\n]*no good f2\nat line 2 of list %(t%)\nstack traceback:", "the record: message, where, traceback")
  -- resubmission
  T.eq(gw:resubmit(faults[1].id), "faulted", "resubmit: faulted again")
  T.eq(gw:resubmit(987654), nil, "resubmit an unknown fault: nil")
  gw:close()
  gw = assert(store:gateway { sink = "callback", write = function() end,
                              on_fault = function() error("on_fault broke") end })
  T.raises(function() gw:run { "{nope" } end, "on_fault broke", "an error of on_fault is raised by run")
  T.raises(function() gw:run { 42 } end, "not a string", "a line that is no string")
  T.raises(function() gw:run(function() error("source broke") end) end, "source broke", "a source function's error")
  local n = 0
  T.ok(gw:run(function() n = n + 1; if n <= 2 then return ev("it" .. n) end end), "a source function")
  T.eq(gw:stats().delivered, 2, "its lines")
  local r, err = gw:run(dir .. "/missing.jsonl")
  T.ok(r == nil and err:find("cannot open the source"), "a missing file: nil, msg")
  gw:close()
  store:purge_faults()
end

-- enrich: ev catches up with the value libesg puts into the event's JSON
do
  local cache = assert(store:cache())
  cache:put("cust/c1", { name = "Ann" })
  cache:close()
  local out = {}
  local gw = assert(store:gateway {
    filter = function(e) return e.thing ~= nil end, -- ev decoded before the lookup
    collect = function(e) return e.type == "customer" end,
    enrich_key = function(e) return e.cust and "cust/" .. e.cust end, enrich_into = "customer",
    transform = function(e) return { name = e.customer and e.customer.name } end,
    sink = "callback", write = function(o) out[#out + 1] = o end,
  })
  gw:push(ev("e1", { cust = "c1" }))
  gw:push(ev("e2", { cust = "c9" }))
  T.eq(out[1].name, "Ann", "a decoded ev gets the enriched value")
  T.eq(out[2].name, nil, "unknown key: nothing")
  gw:close()
  -- without a transform the output is the enriched event
  out = {}
  gw = assert(store:gateway { enrich = function(e) e.extra = 1; return e end, no_idempotence = true,
                              sink_path = dir .. "/o3.jsonl" })
  gw:push(ev("e3"))
  gw:close()
  T.eq(json.decode(T.read(dir .. "/o3.jsonl")).extra, 1, "the enrich function's ev is the output")
end

-- read-through: a Lua loader, and ctx.cache (the gateway's own cache)
do
  local out, calls = {}, 0
  local gw = assert(store:gateway {
    enrich_key = function(e) return "c/" .. e.cid end, enrich_into = "cust", enrich_required = true,
    load = function(key) calls = calls + 1; if key ~= "c/none" then return { name = key } end end,
    enrich = function(e, c) e.cached = (c.cache:get("c/x1")); return e end,
    transform = function(e) return { n = e.cust.name, cached = e.cached } end,
    sink = "callback", write = function(o) out[#out + 1] = o end,
  })
  gw:push(ev("l1", { cid = "x1" }))
  gw:push(ev("l2", { cid = "x1" }))
  T.eq(gw:push(ev("l3", { cid = "none" })), "fault", "required and absent: a fault")
  T.eq(calls, 2, "loaded once per key")
  T.ok(out[1].n == "c/x1" and out[2].cached == "hit", "the loaded value, and ctx.cache sees it")
  gw:close()
  store:purge_faults()
end

-- the gateway as a resync sink
do
  local got = {}
  local gw = assert(store:gateway { no_idempotence = true, sink = "callback", write = function(o) got[#got + 1] = o end })
  local sn = assert(store:snapshot("gwb-list", { type = "row", sink = function(rec) assert(gw:feed(rec)) end }))
  sn:add("k1", { v = 1 })
  sn:add("k2", { v = 2 })
  assert(sn:finish())
  sn:close()
  T.eq(#got, 2, "fed by a snapshot")
  T.match(got[1], '"type":"row%-created"', "its events, as the bytes")
  gw:close()
end

-- the HTTP sink with url and body functions
do
  local m = mock.start()
  local gw = assert(store:gateway {
    sink = "http", http_url = function(o) return m.url .. "/deals/" .. o.id end,
    http_body = function(o) return { dealId = "D-" .. o.id } end,
    transform = function(e) return { id = e.id } end, egress = { max_attempts = 1 },
  })
  T.eq(gw:push(ev("h1")), "handled", "handed to the engine")
  T.ok(gw:drain(), "drain")
  T.eq(gw:stats().delivered, 1, "delivered")
  local n, log = m.requests()
  T.eq(n, 1, "one request")
  local entry = json.decode(log[1])
  T.ok(entry.path == "/deals/h1" and entry.deal == "D-h1", "url and body from the functions")
  gw:close()
  m.stop()
end

T.raises(function() store:gateway { sink = "callback" } end, "needs write", "a callback sink needs write")
T.raises(function() store:gateway { filter = 5 } end, "must be a function", "a step must be a function")
local bad, msg = store:gateway { sink_path = "/nonexistent/dir/x.jsonl" }
T.ok(bad == nil and msg:find("cannot open the sink"), "a sink that cannot be opened: nil, msg")
store:close()
T.done()
