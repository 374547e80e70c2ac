-- The store binding: claims (every outcome), event log, entities, batches, group
-- commit, closed handles, misuse, the injectable clock (no sleeps).
local T = require "testlib"
local esg = require "esg"

local now = 1000.0
local function clock() return now end
local dir = T.tmpdir("store")

local s = assert(esg.open(dir .. "/s.db", { clock = clock }))
T.match(tostring(s), "esg.Store", "tostring")
T.eq(s:backend(), "sqlite", "backend")
T.ok(s:schema_version() >= 1, "schema version")
T.eq(s:now(), 1000.0, "store clock in seconds")
T.eq(s:path(), dir .. "/s.db", "path")

-- claims: new, busy, duplicate with result, mismatch
local st, c = s:claim("k1", "hash-1", { lease = 30, ttl = 3600 })
T.eq(st, "new", "first claim is new")
T.eq(c.status, "new", "claim.status")
T.eq(math.type(c.token), "integer", "token")
T.eq(c.attempts, 1, "attempts")
T.eq(c.lease_until, 1030.0, "lease_until in seconds")
T.eq(c.key, "k1", "claim.key")
local st2, c2 = s:claim("k1", "hash-1")
T.eq(st2, "busy", "second claim while leased is busy")
T.eq(c2.lease_until, 1030.0, "busy tells until when")
T.eq(c2.token, nil, "busy has no token")
T.raises(function() c2:complete() end, "not owned", "completing a busy claim raises")
local r, msg, code = s:claim("k1", "other-hash")
T.ok(r == nil and code == "EMISMATCH" and msg:find("different payload"), "mismatch is an error value")
T.eq(c:complete({ out = 42 }), true, "complete")
st, c2 = s:claim("k1", "hash-1")
T.eq(st, "duplicate", "completed claim is a duplicate")
T.eq(esg.json.decode(c2.result).out, 42, "duplicate returns the stored result")
r, msg, code = c:complete("again")
T.ok(r == nil and code == "ETOKEN", "completing twice: stale token")

-- no hash: no mismatch check; string results; release; extend
st, c = s:claim("k2")
T.eq(st, "new", "claim without hash")
T.eq(c:release(), true, "release")
st, c = s:claim("k2")
T.eq(st, "new", "released claim can be taken again")
T.eq(c:extend(100), true, "extend")
now = now + 50
st = s:claim("k2")
T.eq(st, "busy", "extended lease still holds")
T.eq(s:complete("k2", c.token, "plain"), true, "store:complete with a string")
st, c2 = s:claim("k2")
T.eq(c2.result, "plain", "string result kept as is")
st, c = s:claim("k3", nil, { lease = 1 })
T.eq(s:complete("k3", c.token), true, "complete without result")
st, c2 = s:claim("k3")
T.ok(st == "duplicate" and c2.result == nil, "duplicate without result")

-- lease takeover with the clock: the old owner is fenced off
st, c = s:claim("k4", "h", { lease = 10 })
now = now + 11
local st3, c3 = s:claim("k4", "h", { lease = 10 })
T.eq(st3, "new", "expired lease is taken over")
T.eq(c3.attempts, 2, "takeover raises attempts")
r, msg, code = c:complete("late")
T.eq(code, "ETOKEN", "old owner refused after takeover")
T.eq(c3:complete(), true, "new owner completes")
r, msg, code = s:release("k4", 12345)
T.eq(code, "ETOKEN", "release with a foreign token")

-- ttl: expired records count as absent; purge
st, c = s:claim("k5", nil, { ttl = 5 })
c:complete()
now = now + 6
st = s:claim("k5", nil, { ttl = 5 })
T.eq(st, "new", "expired record counts as absent")
now = now + 10000
T.ok(s:purge_claims() >= 1, "purge_claims deletes expired records")

-- wait option with the clock: a busy claim answered at once when wait = 0
st, c = s:claim("k6")
st2 = s:claim("k6", nil, { wait = 0 })
T.eq(st2, "busy", "wait 0 while busy")

-- claim misuse raises
T.raises(function() s:claim() end, "bad argument #1", "claim without key")
T.raises(function() s:claim("") end, "key must be", "empty key")
T.raises(function() s:claim("k", ("h"):rep(65)) end, "hash longer", "hash too long")
T.raises(function() s:claim("k", nil, { lease = -1 }) end, "lease", "negative lease")
T.raises(function() s:claim("k", nil, { ttl = "soon" }) end, "ttl", "bad ttl type")
T.raises(function() s:claim("k", nil, 5) end, "table expected", "opts must be a table")
T.raises(function() s:complete("k", "token") end, "integer token", "token type")
T.raises(function() s.claim(42, "k") end, "esg.Store expected", "method on a wrong object")

-- event log
local function ev(id, ts, pk, extra)
  local t = { id = id, type = "thing-updated", timestamp = ts, partitionKey = pk }
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end
T.eq(s:put(ev("e2", 2, "p")), "stored", "put a table")
T.eq(s:put(esg.json.encode(ev("e1", 1, "p"))), "stored", "put a JSON string")
T.eq(s:put(assert(esg.parse(esg.json.encode(ev("e3", 3, "p"))))), "stored", "put an esg.Event")
T.eq(s:put(ev("e1", 1, "p")), "duplicate", "same id is a duplicate")
T.eq(s:put(ev("e4", 4, "p"), { key = "other", ttl = 10 }), "stored", "explicit key and ttl")
T.eq(s:put(ev("e5", 5)), "stored", "no partitionKey: keyed by id")
local list = s:events("p")
T.eq(#list, 3, "events by key")
T.eq(list[1].id .. list[2].id .. list[3].id, "e1e2e3", "(timestamp, id) order")
T.eq(list[1].timestamp, 1, "timestamp in ms as in the envelope")
T.eq(list[1].key, "p", "record key")
T.eq(list[1].expires, nil, "no expiry")
T.eq(list[1].event, nil, "not decoded by default")
list = s:events("p", { decode = true })
T.eq(list[2].event.partitionKey, "p", "decoded envelope")
T.eq(#s:events("e5"), 1, "keyed by id when no partitionKey")
local other = s:events("other")
T.eq(other[1].expires, now + 10, "expires in seconds")
T.eq(#s:events("nobody"), 0, "unknown key: empty list")
T.eq(s:event("e2").id, "e2", "event by id")
T.eq(s:event("nope"), nil, "absent event: nil")
r, msg, code = s:put({ id = "x", type = "t" })
T.ok(r == nil and code == "EEVENT" and msg:find("timestamp"), "bad envelope: nil, msg, EEVENT")
r, msg, code = s:put("{oops")
T.eq(code, "EJSON", "bad JSON")
now = now + 11
T.eq(#s:events("other"), 0, "expired events are not listed")
local seen = {}
local n = s:purge_events(function(rec)
  seen[#seen + 1] = rec
  return false -- keep it this time
end)
T.eq(n, 0, "callback returning false keeps the event")
T.eq(#seen, 1, "callback called with the expired event")
T.eq(seen[1].type, "thing-updated-expired", "expired event type")
T.eq(seen[1].event.expired.id, "e4", "expired event carries the original")
T.eq(seen[1].id, esg.uuid5("e4/expired"), "expired event id is deterministic")
T.raises(function() s:purge_events(function() error("emit failed") end) end, "emit failed", "callback error raised")
T.eq(s:purge_events(function() return true end), 1, "purge deletes")
T.eq(s:purge_events(), 0, "nothing left to purge")

-- entities: inverse optimistic lock
T.eq(s:upsert("thing-1", 2, { name = "b" }), "applied", "upsert applies")
T.eq(s:upsert("thing-1", 2, { name = "again" }), "stale", "equal version is stale")
T.eq(s:upsert("thing-1", 1, '{"name":"a"}'), "stale", "older version is stale")
local got = s:get("thing-1")
T.eq(got.version, 2, "entity version")
T.eq(got.doc.name, "b", "entity doc decoded")
T.eq(got.deleted, false, "not deleted")
T.eq(s:get("thing-1", { raw = true }).doc, '{"name":"b"}', "raw doc")
T.eq(s:get("thing-9"), nil, "absent entity: nil")
T.eq(s:delete("thing-1", 3), "applied", "delete")
got = s:get("thing-1")
T.ok(got.deleted and got.doc == nil and got.version == 3, "tombstone")
T.eq(s:upsert("thing-1", 2, { name = "late" }), "stale", "late update cannot revive")
T.eq(s:delete("thing-1", 3), "stale", "delete at the same version is stale")
T.eq(s:upsert("thing-1", 4, { name = "back" }), "applied", "newer update after the tombstone")
r, msg, code = s:upsert("thing-2", 1, "[1,2]")
T.eq(code, "EJSON", "doc must be an object")
T.raises(function() s:upsert("thing-2", 1.5, {}) end, "integer version", "version must be an integer")

-- batches
T.eq(s:begin(), true, "begin")
r, msg, code = s:begin()
T.eq(code, "ESTATE", "nested begin is ESTATE")
s:put(ev("b1", 1, "batch"))
T.eq(s:rollback(), true, "rollback")
T.eq(s:event("b1"), nil, "rolled back")
s:begin()
s:put(ev("b2", 1, "batch"))
T.eq(s:commit(), true, "commit")
T.eq(s:event("b2").id, "b2", "committed")
local ok, a, b = s:batch(function(x, y)
  s:put(ev("b3", 1, "batch"))
  return x + y, "two"
end, 1, 2)
T.ok(ok == true and a == 3 and b == "two", "batch returns true and fn's results")
T.raises(function() s:batch(function() s:put(ev("b4", 1, "batch")); error("boom") end) end, "boom", "batch re-raises")
T.eq(s:event("b4"), nil, "batch rolled back on error")
T.eq(#s:events("batch"), 2, "batch contents")
T.eq(s:flush(), true, "flush with nothing open")

-- faults: record, list, get, delete, purge (times in seconds on the store clock)
do
  local fs = assert(esg.open(":memory:", { clock = function() return 100.0 end }))
  local id1 = assert(fs:fault_record { event_id = "e1", stage = "deliver", error = "503", http_status = 503,
                                       attempts = 5, first_attempt = 90, event = '{"id":"e1"}' })
  local id2 = assert(fs:fault_record { event_id = "e2", stage = "transform", error = "boom", event = { id = "e2" } })
  T.ok(math.type(id1) == "integer" and id2 > id1, "fault ids increase")
  local list = assert(fs:faults())
  T.eq(#list, 2, "faults listed")
  T.eq(list[1].http_status, 503, "http status")
  T.eq(list[1].attempts, 5, "attempts")
  T.eq(list[1].first_attempt, 90.0, "first attempt (s)")
  T.eq(list[1].last_attempt, 100.0, "last attempt defaults to now")
  T.eq(list[2].event, '{"id":"e2"}', "a table event is stored as JSON")
  T.eq(#fs:faults { limit = 1 }, 1, "limit")
  T.eq(fs:fault(id2).stage, "transform", "fault by id")
  T.eq(fs:fault(12345), nil, "unknown fault: nil")
  T.eq(fs:fault_delete(id2), true, "delete")
  T.eq(fs:fault_delete(id2), nil, "delete again: nil")
  T.raises(function() fs:fault_record { stage = "x", error = "y" } end, "event_id", "event_id required")
  T.raises(function() fs:fault_record { event_id = "x", stage = 1, error = "y" } end, "stage", "stage must be a string")
  T.eq(fs:purge_faults(50), 0, "purge before 50 s: none")
  T.eq(fs:purge_faults(), 1, "purge all")
  T.eq(#fs:faults(), 0, "none left")
  fs:close()
  T.raises(function() fs:faults() end, "closed store", "faults on a closed store raises")
end

-- the clock function failing or returning nonsense raises from the call
local bad = assert(esg.open(":memory:", { clock = function() error("tick") end }))
T.raises(function() bad:now() end, "clock function failed", "clock error raised")
bad:close()
bad = assert(esg.open(":memory:", { clock = function() return "noon" end }))
T.raises(function() bad:claim("x") end, "clock function must return", "clock must return seconds")
bad:close()

-- group commit: claims accumulate, flush commits; another handle sees them after
local g = assert(esg.open(dir .. "/g.db", { group_commit = 60, group_max = 1000, clock = clock }))
st, c = g:claim("gk")
c:complete()
T.eq(g:flush(), true, "group flush")
local g2 = assert(esg.open(dir .. "/g.db", { clock = clock }))
T.eq((g2:claim("gk")), "duplicate", "flushed group is visible to another handle")
g2:close()
g:close()

-- flush_due: when the open group is due (seconds), 0 when none; any read commits a due group
g = assert(esg.open("sqlite:" .. dir .. "/fd.db", { group_commit = 60, group_max = 1000, clock = clock }))
T.eq(g:backend(), "sqlite", "a sqlite: URI opens the SQLite backend")
T.eq(g:flush_due(), 0, "flush_due with no group open")
local t0 = g:now()
st, c = g:claim("fk")
c:complete()
T.ok(math.abs(g:flush_due() - (t0 + 60)) < 0.002, "flush_due: the open group is due 60 s after its first write")
g2 = assert(esg.open(dir .. "/fd.db", { clock = clock, busy_timeout = 0.05 }))
T.eq((g2:claim("fk")), nil, "the group is not committed yet: its lock holds another writer")
now = now + 61
T.eq((g:claim("fk")), "duplicate", "a duplicate claim made once the group is due")
T.eq((g2:claim("fk")), "duplicate", "... committed the group")
T.eq(g:flush_due(), 0, "no group open after the commit")
g2:close()
g:close()
r, msg, code = esg.open("nosuch://x")
T.ok(r == nil and msg:match('unknown store scheme "nosuch"') and msg:match("sqlite") and code == "EINVAL",
     "an unknown scheme is refused, naming the schemes built in")
local d = assert(esg.open(dir .. "/d.db", { durability = "full", busy_timeout = 1 }))
d:close()
T.raises(function() esg.open(":memory:", { durability = "sometimes" }) end, "durability", "bad durability")
T.raises(function() esg.open(":memory:", { clock = 5 }) end, "clock", "clock must be a function")
T.raises(function() esg.open() end, "bad argument #1", "open without path")
r, msg, code = esg.open(dir .. "/no/such/dir/x.db")
T.ok(r == nil and type(msg) == "string" and code:match("^E"), "open failure: nil, msg, code")

-- close: idempotent, __close, closed handles raise
T.eq(s:isclosed(), false, "open")
s:close()
s:close()
T.eq(s:isclosed(), true, "closed")
T.match(tostring(s), "closed", "tostring of a closed store")
T.raises(function() s:claim("k") end, "closed store", "claim on a closed store raises")
T.raises(function() s:events("p") end, "closed store", "events on a closed store raises")
T.raises(function() c:complete() end, "closed store", "claim of a closed store raises")
do
  local scoped <close> = assert(esg.open(":memory:"))
  scoped:put(ev("s1", 1, "p"))
  s = scoped
end
T.eq(s:isclosed(), true, "<close> closes the store")
local gc = assert(esg.open(":memory:"))
gc = nil
collectgarbage()
T.ok(true, "garbage-collected store")

-- a callback cannot close the store it runs inside (the clock, a purge function)
do
  local rs, closing = nil, false
  rs = assert(esg.open(dir .. "/reenter.db", { clock = function()
    if closing then closing = false; rs:close() end
    return now
  end }))
  closing = true
  T.raises(function() rs:claim("rk") end, "store:close called from inside one of its own callbacks",
    "a clock that closes its store: refused")
  T.eq(rs:isclosed(), false, "the store stays open")
  T.eq((rs:claim("rk2")), "new", "and usable")
  T.eq(rs:put({ id = "x1", type = "t", timestamp = 1, data = {} }, { ttl = 1 }), "stored", "an event to expire")
  now = now + 10
  T.raises(function() rs:purge_events(function() rs:close(); return true end) end,
    "store:close called from inside one of its own callbacks", "a purge function that closes its store: refused")
  T.eq(rs:isclosed(), false, "still open after the purge function")
  T.eq(rs:purge_events(), 1, "the expired event purged later")
  rs:close()
  T.eq(rs:isclosed(), true, "closes outside its callbacks")
end

-- number conversions: out-of-range durations raise, naming the option and the value
T.raises(function() esg.open(dir .. "/bt.db", { busy_timeout = 4294968 }) end, "option 'busy_timeout'",
  "busy_timeout beyond an int of ms raises")
T.raises(function() esg.open(dir .. "/bt.db", { group_commit = 1e300 }) end, "option 'group_commit'",
  "group_commit 1e300 raises")
T.raises(function() esg.open(dir .. "/bt.db", { busy_timeout = math.huge }) end, "got inf",
  "busy_timeout math.huge raises, with the value")
do
  local hs = assert(esg.open(dir .. "/huge.db", { clock = clock }))
  local ev = assert(esg.parse('{"id":"h1","type":"t","timestamp":1,"data":{}}'))
  T.eq((hs:claim_event(ev, math.huge, 3600)), "new", "claim_event lease math.huge (forever)")
  local st3, until_ = hs:claim_event(ev, 30, 3600)
  T.eq(st3, "busy", "a forever lease stays busy")
  T.ok(until_ > 1e15, "until far in the future, not in the past")
  T.raises(function() hs:claim_event(assert(esg.parse('{"id":"h2","type":"t","timestamp":1,"data":{}}')), 30, 1e300) end,
    "ttl must be a number of seconds", "claim_event ttl 1e300 raises")
  local _, hc = hs:claim("hk", nil, { lease = 30, ttl = math.huge })
  T.ok(hc.expires > 1e15, "claim ttl math.huge: forever")
  T.ok(hs:extend("hk", hc.token, math.huge), "extend by math.huge")
  T.eq((hs:claim("hk")), "busy", "extended forever: busy")
  T.raises(function() hs:claim("hk2", nil, { lease = 1e300 }) end, "option 'lease'", "claim lease 1e300 raises")
  -- error messages name the argument
  T.raises(function() hs:put({ id = "p1", type = "t", timestamp = 1, data = {} }, { key = "" }) end,
    "option 'key'", "put with an empty key names the option")
  -- strings from an __index metamethod stay alive while libesg reads them
  local proxy = setmetatable({}, { __index = function(_, k)
    if k == "event_id" or k == "stage" or k == "error" then
      collectgarbage()
      return k .. "-" .. string.rep("v", 60) .. tostring(math.random(1e9))
    end
  end })
  local fid = assert(hs:fault_record(proxy))
  local f = hs:fault(fid)
  T.match(f.event_id, "^event_id%-vvvv", "fault_record through __index: event_id")
  T.match(f.stage, "^stage%-vvvv", "fault_record through __index: stage")
  T.match(f.error, "^error%-vvvv", "fault_record through __index: error")
  hs:close()
end

-- seconds to milliseconds is libesg's esg_ms_from_seconds: NaN, infinities, negative and huge
-- values raise (math.huge only where it means forever), naming the option and the value
do
  local ns = assert(esg.open(":memory:", { clock = clock }))
  local nan = 0 / 0
  for _, v in ipairs({ nan, -math.huge, -1, -0.001, 9.1e15, 1e300 }) do
    T.raises(function() ns:claim("nk", nil, { lease = v }) end, "option 'lease' must be a number of seconds",
      "claim lease " .. tostring(v) .. " raises")
    T.raises(function() ns:put({ id = "n1", type = "t", timestamp = 1, data = {} }, { ttl = v }) end, "option 'ttl'",
      "put ttl " .. tostring(v) .. " raises")
  end
  T.raises(function() ns:put({ id = "n1", type = "t", timestamp = 1, data = {} }, { ttl = math.huge }) end,
    "got inf", "put ttl math.huge raises: forever only for claims")
  T.raises(function() ns:extend("nk", 1, nan) end, "lease", "extend by NaN raises")
  T.raises(function() ns:purge_faults(nan) end, "before must be seconds since the epoch", "purge_faults(NaN) raises")
  T.raises(function() ns:purge_faults(1e300) end, "before must be seconds since the epoch", "purge_faults(1e300) raises")
  local _, c = ns:claim("rk", nil, { lease = 0.0015, ttl = 10 })
  T.eq(c.lease_until, now + 0.002, "1.5 ms rounds to the nearest ms, halves away from zero")
  ns:close()
  for _, v in ipairs({ nan, math.huge, -math.huge, 1e300 }) do
    local bs = assert(esg.open(":memory:", { clock = function() return v end }))
    T.raises(function() bs:now() end, "clock function must return a number of seconds",
      "a clock returning " .. tostring(v) .. " raises")
    bs:close()
  end
  local past = assert(esg.open(":memory:", { clock = function() return -86400.25 end }))
  T.eq(past:now(), -86400.25, "a clock before the epoch converts")
  past:close()
end

T.done()
