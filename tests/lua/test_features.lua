-- The module's cache, latches, resync and egress, and the gateway steps built on
-- them (enrich with the cache, the latch step, resync sources, the HTTP sink
-- with faults and resubmission). The HTTP receiver is examples/crm/mock_crm.py.
local T = require "testlib"
local esg = require "esg"
local gateway = require "esg.gateway"
local mock = require "mock"

local now = 1000.0
local dir = T.tmpdir("feat")
local store = assert(esg.open(dir .. "/f.db", { clock = function() return now end }))

-- cache: put/get, TTL, negatives, read-through with a Lua loader, stale-if-error, collect
local cache = assert(store:cache { ttl = 10, negative_ttl = 5, max_stale = 100 })
T.eq((cache:get("k")), "miss", "empty cache: miss")
T.ok(cache:put("k", { a = 1 }), "put a table")
local r, v = cache:get("k")
T.ok(r == "hit" and esg.json.decode(v).a == 1, "hit after put")
now = now + 11
T.eq((cache:get("k")), "stale", "past its TTL: stale")
local loads = 0
local function loader(key, deadline)
  loads = loads + 1
  T.ok(type(deadline) == "number", "the loader gets a deadline")
  if key == "absent" then return nil end
  if key == "down" then return nil, "service down" end
  return { key = key, n = loads }
end
r, v = cache:get_or_load("k", loader)
T.ok(r == "hit" and esg.json.decode(v).n == 1, "stale: reloaded")
r, v = cache:get_or_load("k", loader)
T.eq(loads, 1, "fresh: no second load")
r = cache:get_or_load("absent", loader)
T.eq(r, "negative", "loader nil: negative")
T.ok(cache:put("down", '"old"'), "put a JSON string")
now = now + 11
local _, _, _, _, loaded, lerr
r, v, _, _, loaded, lerr = cache:get_or_load("down", loader)
T.ok(r == "stale" and v == '"old"' and lerr:find("service down", 1, true), "failed load: the stale value, with the error")
local ok, msg, code = cache:get_or_load("never", function() error("boom") end)
T.ok(ok == nil and code == "ECALLBACK" and msg:find("boom", 1, true), "raising loader: a failure")
T.eq(select(3, cache:put("bad", "{not json")), "EJSON", "values must be JSON")
local st, key = cache:collect('{"id":"e1","type":"customer-updated","timestamp":5,"customer":{"id":"c9","name":"Zed"}}')
T.ok(st == "written" and key == "customer/c9", "collect: written under <field>/<id>")
T.eq((cache:collect('{"id":"e0","type":"customer-updated","timestamp":4,"customer":{"id":"c9","name":"Old"}}')), "stale",
  "collect: an older event is stale")
T.eq(esg.json.decode(select(2, cache:get("customer/c9"))).name, "Zed", "collected entity")
local stats = cache:stats()
T.ok(stats.loads >= 2 and stats.hits >= 1, "stats")
T.ok(cache:invalidate("k") and (cache:get("k")) == "miss", "invalidate")

-- latches: content latches (echo once, genuine passes) and flags
T.ok(store:latch_doc("c:1", "crm", { name = "Ada" }, 60), "latch")
T.eq(store:latch_pending("c:1", "crm"), 1, "pending")
T.eq(store:latch_check_doc("c:1", "crm", '{ "name" : "Ada" }'), "echo", "same content (any spacing): echo")
T.eq(store:latch_check_doc("c:1", "crm", { name = "Ada" }), "genuine", "consumed: the next is genuine")
T.ok(store:latch("c:2", "crm", "h1", 60), "latch by hash")
T.eq(store:latch_cancel("c:2", "crm", "h1"), true, "cancel")
T.eq(store:latch_cancel("c:2", "crm", "h1"), nil, "cancel again: nil")
T.eq(esg.latch.flagged('{"id":"x","contact":{"latched":true}}'), true, "flag in an entity")
T.eq(esg.latch.flagged(esg.latch.mark(esg.latch.mark('{"a":1}', true), false)), false, "mark and clear")

-- resync: cursor jobs, snapshots, replay
local pages = { { items = { { id = "a", version = "1", type = "thing", data = { x = 1 } } }, next = "p2" },
                { items = { { id = "b", version = "1", type = "thing", data = { x = 2 } } }, next = "p3", done = true } }
local sunk = {}
local rs = assert(store:cursor_run("job", "src", function(cursor) return cursor and pages[2] or pages[1] end,
  { sink = function(rec) sunk[#sunk + 1] = rec.event.entity.x end }))
T.ok(rs.pages == 2 and rs.emitted == 2 and rs.done, "cursor run")
T.eq(store:cursor("job"), "p3", "cursor stored")
T.eq(#sunk, 2, "sink saw the items")
T.raises(function() store:cursor_run("job2", "src", function() error("fetch broke") end) end, "fetch broke",
  "a fetch error is raised")
local sn = assert(store:snapshot("list", { type = "row" }))
sn:add("r1", { v = 1 })
sn:add("r2", { v = 2 })
rs = assert(sn:finish())
sn:close()
T.eq(rs.created, 2, "snapshot: created")
sn = assert(store:snapshot("list", { type = "row" }))
sn:add("r1", { v = 1 })
rs = assert(sn:finish())
sn:close()
T.ok(rs.unchanged == 1 and rs.deleted == 1, "snapshot: unchanged and deleted")
local types = {}
T.eq(store:replay({ type = "row-deleted" }, function(rec) types[#types + 1] = rec.type end), 1, "replay by type")
T.eq(types[1], "row-deleted", "replayed event")

-- gateway: enrich from the cache (collect + key), the latch step
local out = {}
local c = assert(gateway.run({
  enrich = { collect = function(ev) return ev.customer ~= nil end,
             key = function(ev) return ev.order and "customer/" .. ev.order.customer end, into = "customer" },
  transform = function(ev) if ev.order then return { order = ev.order.id, name = ev.customer and ev.customer.name } end end,
  sink = gateway.sink.collect(out),
}, { store = store, input = gateway.source.lines {
  '{"id":"g1","type":"customer-created","timestamp":10,"customer":{"id":"c1","name":"Ada"}}',
  '{"id":"g2","type":"order-placed","timestamp":11,"order":{"id":"o1","customer":"c1"}}',
  '{"id":"g3","type":"order-placed","timestamp":12,"order":{"id":"o2","customer":"zz"}}',
} }))
T.eq(c.delivered, 2, "enrich: delivered")
T.eq(out[1].name, "Ada", "enriched from the collected customer")
T.eq(out[2].name, nil, "unknown customer: not enriched")
c = gateway.run({ enrich = { key = function() return "customer/none" end, into = "x", required = true } },
                { store = store, input = gateway.source.lines { '{"id":"g4","type":"t","timestamp":1}' } })
T.eq(c.faults, 1, "required enrichment missing: a fault")
T.eq(store:purge_faults(), 1, "(cleared)")

local function contact(id, name) return esg.json.encode { id = id, type = "contact-changed", timestamp = 1,
  contact = { id = "c-1", name = name } } end
local to_crm = {}
local spec = {
  latch = { key = function(ev) return "contact:" .. ev.contact.id end, from = "shop", to = "crm",
            doc = function(ev) return ev.contact end, out_doc = function(o) return o end },
  transform = function(ev) return ev.contact end,
  sink = gateway.sink.collect(to_crm),
}
store:latch_doc("contact:c-1", "shop", { id = "c-1", name = "Echo" }, 60) -- the other gateway wrote this to the shop
c = assert(gateway.run(spec, { store = store, input = gateway.source.lines { contact("s1", "Echo"), contact("s2", "Real") } }))
T.eq(c.echoes, 1, "latch step: the echo is suppressed")
T.eq(c.delivered, 1, "latch step: the genuine change passes")
T.eq(store:latch_pending("contact:c-1", "crm"), 1, "latch step: marked on the way out")
T.eq(store:latch_check_doc("contact:c-1", "crm", { id = "c-1", name = "Real" }), "echo", "its echo will stop")
c = assert(gateway.run({ latch = { key = function(ev) return ev.id end, flag = true }, sink = gateway.sink.collect {} },
  { store = store, input = gateway.source.lines { '{"id":"f1","type":"t","timestamp":1,"latched":true}' } }))
T.eq(c.echoes, 1, "flag latch: suppressed")

-- gateway sources: snapshot and replay
local snap_out = {}
local listing = { { "k1", { v = 1 } }, { "k2", { v = 2 } } }
local snap_spec = {
  source = gateway.source.snapshot { source = "gw-list", type = "item", listing = function()
    local i = 0
    return function() i = i + 1; if listing[i] then return listing[i][1], listing[i][2] end end
  end },
  sink = gateway.sink.collect(snap_out),
}
c = assert(gateway.run(snap_spec, { store = store }))
T.ok(c.delivered == 2 and c.resync.created == 2, "snapshot source: created events delivered")
listing = { { "k1", { v = 9 } } }
c = assert(gateway.run(snap_spec, { store = store }))
T.ok(c.delivered == 2 and c.resync.updated == 1 and c.resync.deleted == 1, "snapshot source: changes only")
local rep = {}
c = assert(gateway.run({ source = gateway.source.replay { type = "item-created" }, idempotence = false,
                         sink = gateway.sink.collect(rep) }, { store = store }))
T.eq(c.delivered, 2, "replay source")

-- egress: the engine directly, then the HTTP sink with faults and resubmission
local m = mock.start()
local done = {}
local eg = assert(store:egress { max_attempts = 3, backoff_base = 0.01, backoff_cap = 0.02,
                                 on_done = function(res) done[res.event_id] = res end })
T.ok(eg:submit { event_id = "d1", url = m.url .. "/deals", body = { dealId = "x" } }, "submit")
T.ok(eg:submit { event_id = "d2", url = m.url .. "/deals", body = { crmFail = "permanent" } }, "submit a refused one")
T.ok(eg:submit { event_id = "d3", url = m.url .. "/deals", body = { crmFail = "flaky" } }, "submit a flaky one")
T.eq((eg:submit { url = m.url }), nil, "submit without event id: nil, msg")
T.ok(eg:drain(), "drain")
T.eq(done.d1.outcome, "delivered", "delivered")
T.ok(done.d2.outcome == "refused" and done.d2.http_status == 422 and done.d2.fault_id, "refused: a fault")
T.ok(done.d3.outcome == "delivered" and done.d3.attempts == 2, "retried after 503")
T.eq(eg:stats().delivered, 2, "egress stats")
eg:close()
local closer, seen = nil, {}
closer = assert(store:egress { on_done = function(res) seen[#seen + 1] = res.outcome; closer:close() end })
T.ok(closer:submit { event_id = "z1", url = m.url .. "/deals", body = { dealId = "z1" }, partition_key = "z" }, "submit")
T.ok(closer:submit { event_id = "z2", url = m.url .. "/deals", body = { dealId = "z2" }, partition_key = "z" }, "submit")
T.ok(closer:drain(), "closed from its own callback: drain returns")
T.eq(seen[1], "delivered", "the first delivery's callback closed the engine")
T.ok(not pcall(closer.stats, closer), "and the engine is closed")
local retries = 0
local eg1 = assert(store:egress { max_attempts = 1, on_retry = function() retries = retries + 1 end,
                                  on_done = function(res) done[res.event_id] = res end })
T.ok(eg1:submit { event_id = "d4", url = m.url .. "/deals", body = { crmFail = "flaky" } }, "submit, one attempt only")
eg1:drain()
eg1:close()
T.ok(done.d4.outcome == "exhausted" and done.d4.http_status == 503 and done.d4.fault_id, "exhausted: a fault")
T.eq(retries, 0, "no retry scheduled")
store:fault_delete(done.d4.fault_id)
T.ok(store:fault(done.d2.fault_id).stage == "deliver", "the fault record")
store:fault_delete(done.d2.fault_id)

local lines = {
  '{"id":"h1","type":"deal","timestamp":1,"partitionKey":"p","deal":{"id":"D1"}}',
  '{"id":"h2","type":"deal","timestamp":2,"partitionKey":"p","deal":{"id":"D2","crmFail":"permanent"}}',
  '{"id":"h1","type":"deal","timestamp":1,"partitionKey":"p","deal":{"id":"D1"}}',
}
local http_spec = {
  transform = function(ev) return { dealId = ev.deal.id, crmFail = ev.deal.crmFail } end,
  sink = gateway.sink.http { url = m.url .. "/deals", max_attempts = 2, backoff_base = 0.01, backoff_cap = 0.02 },
}
-- on_retry of the HTTP sink hears each retry the C gateway schedules
do
  local heard = {}
  local flaky = {
    transform = function(ev) return { dealId = ev.deal.id, crmFail = "flaky" } end,
    sink = gateway.sink.http { url = m.url .. "/deals", max_attempts = 3, backoff_base = 0.01, backoff_cap = 0.02,
                               on_retry = function(id, attempt, status, delay, err)
                                 heard[#heard + 1] = { id = id, attempt = attempt, status = status, delay = delay }
                               end },
  }
  local rc = assert(gateway.run(flaky, { store = store, input = gateway.source.lines {
    '{"id":"r1","type":"deal","timestamp":1,"deal":{"id":"R1"}}' } }))
  T.eq(rc.retries, #heard, "on_retry: called once per retry counted")
  T.ok(#heard >= 1 and heard[1].id == "r1" and heard[1].attempt == 1 and heard[1].status >= 500
       and type(heard[1].delay) == "number", "on_retry: event id, attempt, status, delay in seconds")
end
local before = m.requests()
c = assert(gateway.run(http_spec, { store = store, input = gateway.source.lines(lines) }))
T.eq(c.delivered, 1, "http sink: delivered")
T.eq(c.faults, 1, "http sink: the refused delivery is a fault")
T.eq(c.duplicates, 1, "http sink: the copy is a duplicate (held by its delivery)")
T.eq(c.faults_list[1].stage, "deliver", "fault stage deliver")
local st, held = store:claim("h1")
T.eq(st, "duplicate", "http sink: the delivered event's claim is completed")
T.match(held.result, '^{"status":201,"sha256":"' .. string.rep("%x", 64) .. '"}$',
  "its result: the status and the answer's digest")
local fid = c.faults_list[1].id
T.eq(store:fault(fid).event, lines[2], "the fault keeps the envelope for resubmission")
c = assert(gateway.run(http_spec, { store = store, input = gateway.source.lines(lines) }))
T.eq(c.duplicates, 3, "http sink rerun: all duplicates")
local after_rerun = m.requests()
T.eq(after_rerun - before, 2, "rerun sent nothing")
-- a fixed script resubmits the fault: delivered once, the fault deleted
local fixed = { transform = function(ev) return { dealId = ev.deal.id } end, sink = http_spec.sink }
-- by default the stored request goes again as it was: refused again, the fault replaced
c = assert(gateway.resubmit(fixed, { store = store }))
T.eq(c.delivered, 0, "resubmit without rerender: the stored request again")
fid = store:faults()[1].id
T.eq(store:fault(fid).attempts, 2, "the fault replaced, attempts + 1")
after_rerun = m.requests()
c = assert(gateway.resubmit(fixed, { store = store, rerender = true }))
T.eq(c.delivered, 1, "resubmit through the HTTP sink: delivered")
T.eq(c.resubmitted, 1, "resubmitted")
T.eq(store:fault(fid), nil, "fault deleted by the engine")
c = assert(gateway.resubmit(fixed, { store = store }))
T.eq(c.received, 0, "nothing left to resubmit")
T.eq(m.requests() - after_rerun, 1, "the CRM got the resubmitted deal once")
m.stop()

-- handles close before their store
local c2 = assert(store:cache())
store:close()
T.raises(function() c2:get("x") end, "closed cache", "a cache of a closed store raises")
-- callbacks cannot close the store (or cache) they run inside
do
  local fdir = T.tmpdir("feat-reenter")
  local rs = assert(esg.open(fdir .. "/r.db"))
  local eg = assert(rs:egress { max_in_flight = 1, max_attempts = 1, connect_timeout = 1,
    on_done = function() rs:close() end })
  local _, cl = rs:claim("ek1")
  T.ok(eg:submit { event_id = "ee1", url = "http://127.0.0.1:1/x", body = "{}", claim_key = "ek1", claim_token = cl.token },
    "submit to a closed port")
  T.raises(function() eg:run() end, "store:close called from inside one of its own callbacks",
    "on_done closing the store during run: refused")
  T.eq(rs:isclosed(), false, "the store stays open")
  eg:close()
  local rc = assert(rs:cache())
  local r, msg = rc:get_or_load("lk", function() rs:close(); return "{}" end)
  T.eq(r, nil, "a loader closing the store: a failed load")
  T.match(msg, "store:close called from inside", "with the reason")
  r, msg = rc:get_or_load("lk", function() rc:close(); return "{}" end)
  T.match(msg, "cache:close called from inside its own loader", "a loader closing its cache: refused")
  T.eq(rs:isclosed(), false, "store still open after the loaders")
  -- a loader returning a JSON string caches the value, not "absent"
  local res, val = rc:get_or_load("js", function() return '{"v":1}' end)
  T.eq(res, "hit", "loader JSON string: a value")
  T.eq(val, '{"v":1}', "loader JSON string: the value as is")
  res, val = rc:get_or_load("js2", function() return '{"v":2}', 60 end)
  T.eq(val, '{"v":2}', "loader JSON string with ttl")
  T.eq((rc:get("js")), "hit", "then cached")
  -- cursor_run: a fetch closing the store is refused; a bad item names itself
  T.raises(function() rs:cursor_run("j0", "src", function() rs:close() end) end,
    "store:close called from inside", "a fetch closing the store: refused")
  T.raises(function() rs:cursor_run("j1", "src", function() return { items = { 42 }, done = true } end) end,
    "page item 1 must be a table", "a non-table page item names itself")
  -- numeric ids and versions are converted and kept alive
  local items = {}
  for i = 1, 100 do
    items[i] = { id = 100000 + i, version = 7000000 + i, type = "thing", partition_key = 5000 + i,
                 data = { n = i, pad = string.rep("p", 100) } }
  end
  local st = assert(rs:cursor_run("jn", "src", function()
    return { items = items, next = "c1", done = true }
  end, { sink = function() collectgarbage() end }))
  T.eq(st.emitted, 100, "numeric ids: every item emitted")
  local seen = {}
  rs:replay({ type = "thing" }, function(rec) seen[rec.event.partitionKey] = true; seen[rec.event.tags.itemId] = true end)
  T.ok(seen["5001"] and seen["5100"] and seen["100001"] and seen["100100"], "numeric ids and partition keys arrive as strings")
  -- snapshot options outlive the options table
  local function mk()
    return assert(rs:snapshot("snap", { type = "widget" .. string.rep("x", 50) .. tostring(math.random(1e9)),
                                         entity_field = "ent" .. string.rep("y", 50) .. tostring(math.random(1e9)) }))
  end
  local sn = mk()
  collectgarbage(); collectgarbage()
  for i = 1, 200 do local _ = string.rep("z", 90) .. i end
  T.ok(sn:add("k1", { a = 1 }), "snapshot add after the options were collected")
  T.ok(sn:finish(), "snapshot finish")
  local types = {}
  rs:replay(nil, function(rec) if rec.type:find("^widget") then types[#types + 1] = rec.type end end)
  T.match(types[1], "^widgetxxxxxxxxxx.*%-created$", "the snapshot's type survived")
  -- a sink closing its snapshot is refused
  local sn2
  sn2 = assert(rs:snapshot("snap2", { sink = function() sn2:close() end }))
  T.raises(function() sn2:add("k", { a = 1 }) end, "snapshot:close called from inside its own sink",
    "a sink closing its snapshot: refused")
  sn2:close()
  -- an egress made in a dead coroutine: closing the store runs on_done on the closer
  local done, ceg
  local co = coroutine.create(function()
    ceg = assert(rs:egress { on_done = function(res) done = res.outcome end })
    assert(ceg:submit { event_id = "co1", url = "http://127.0.0.1:1/x", body = "{}" })
  end)
  assert(coroutine.resume(co))
  co = nil
  collectgarbage(); collectgarbage()
  rs:close()
  T.eq(done, "cancelled", "on_done of an egress from a dead coroutine runs on the closing state")
end

-- closing the store first: libesg detaches what is built on it. The engine's queued deliveries end
-- cancelled on the closer (their claims released); engine, cache and snapshot then raise as closed,
-- and their own close (or __gc) frees them once, running no callback
do
  local fdir = T.tmpdir("feat-detach")
  local ds = assert(esg.open(fdir .. "/d.db"))
  local outcomes = {}
  local eg = assert(ds:egress { on_done = function(r) outcomes[#outcomes + 1] = r.outcome .. ":" .. r.event_id end })
  local _, cl = ds:claim("dk1")
  assert(eg:submit { event_id = "dd1", url = "http://127.0.0.1:1/x", body = "{}", partition_key = "p",
                     claim_key = "dk1", claim_token = cl.token })
  assert(eg:submit { event_id = "dd2", url = "http://127.0.0.1:1/x", body = "{}", partition_key = "p" })
  local dc = assert(ds:cache())
  assert(dc:put("k", { v = 1 }))
  local res = dc:get_or_load("nan-ttl", function() return { v = 2 }, 0 / 0 end)
  T.eq(res, "hit", "a loader's NaN ttl: the cache's default ttl")
  local dsn = assert(ds:snapshot("dsrc"))
  assert(dsn:add("a", { v = 1 }))
  T.ok(ds:close(), "the store closes with an engine, a cache and a listing open")
  table.sort(outcomes)
  T.eq(table.concat(outcomes, " "), "cancelled:dd1 cancelled:dd2", "the engine's queued deliveries end cancelled")
  T.raises(function() eg:submit { event_id = "dd3", url = "http://127.0.0.1:1/x" } end, "closed egress engine",
    "then the engine raises on submit")
  T.raises(function() eg:run(0) end, "closed egress engine", "and on run")
  T.raises(function() dc:get("k") end, "closed cache", "the cache raises")
  T.raises(function() dsn:add("b", { v = 2 }) end, "closed snapshot", "the listing raises")
  eg:close(); eg:close(); dc:close(); dsn:close()
  T.eq(#outcomes, 2, "closing the detached engine runs no callback")
  local rs = assert(esg.open(fdir .. "/d.db"))
  T.eq((rs:claim("dk1")), "new", "the cancelled delivery released its claim")
  local late = {}
  local eg2 = assert(rs:egress { on_done = function(r) late[#late + 1] = r.outcome end })
  assert(eg2:submit { event_id = "dd4", url = "http://127.0.0.1:1/x", body = "{}" })
  local c2 = assert(rs:cache())
  rs:close()
  eg2, c2 = nil, nil
  collectgarbage(); collectgarbage()
  T.eq(table.concat(late, " "), "cancelled", "detached handles collected, their callbacks run once")
end

-- a memory error inside a loader does not leave the cache "in use by its loader"
do
  local ESG = os.getenv("ESG_BIN") or "esg"
  local fdir = T.tmpdir("feat-mem")
  T.write(fdir .. "/mem.lua", [[
local esg = require("esg")
local host = require("esg.host")
local s = assert(esg.open(]] .. string.format("%q", fdir .. "/m.db") .. [[))
local c = assert(s:cache({load_timeout = 0.5}))
local loader = function(k) return {v = 1} end
local failed = {}
for h = 0, 16000, 8 do -- run out of memory at every point of a load
  local key = string.rep("k", 900) .. h
  collectgarbage(); collectgarbage()
  host.memory_limit(host.memory() + h)
  local ok = host.pcall(0, c.get_or_load, c, key, loader) -- the limit holds in armed calls
  host.memory_limit(0)
  if not ok then failed[#failed + 1] = key end
end
local bad = 0
for _, key in ipairs(failed) do
  if c:get_or_load(key, loader) ~= "hit" then bad = bad + 1 end
end
print("failed", #failed > 0, "bad", bad)
]])
  local code, out, err = T.sh(T.q(ESG) .. " lua " .. T.q(fdir .. "/mem.lua"))
  T.eq(code, 0, "memory error script runs" .. (code ~= 0 and (": " .. err) or ""))
  T.match(out, "failed\ttrue\tbad\t0", "after a memory error in a load the cache loads that key again")
end

T.done()
