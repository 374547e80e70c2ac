--[[
What a Lua gateway left in its store, as run.py compares it (tests/README.md, "Scenarios"):

  esg lua dump.lua config.json store.db > result.json

Read through the Lua binding: the run records ("esg.runs"), every fault record, the
claims, entities and latches the config's "dump" names. A claim is read by claiming it
without a payload check: "new" means there was none (the claim is released again).
]]
local esg = require "esg"
local gateway = require "esg.gateway"

local config, path = ...
local f = assert(io.open(config))
local want = assert(esg.json.decode(f:read("a"))).dump
f:close()
local store = assert(esg.open(path))

local function claim_of(key)
  local st, c = store:claim(key, nil, { lease = 1, ttl = 1 })
  assert(st, c)
  if st == "new" then assert(c:release()); return "absent" end
  if st == "busy" then return "busy" end
  return { result = c.result or esg.null }
end

local out = { runs = {}, faults = {}, claims = {}, entities = {}, latches = {} }
esg.json.array(out.runs)
esg.json.array(out.faults)
for _, rec in ipairs(assert(store:events(gateway.RUN_KEY, { decode = true }))) do
  local run, counters = rec.event.run, {}
  for _, k in ipairs(gateway.COUNTERS) do counters[k] = run[k] end
  out.runs[#out.runs + 1] = { kind = run.kind, counters = counters }
end
for _, flt in ipairs(assert(store:faults())) do
  out.faults[#out.faults + 1] = { id = flt.id, event_id = flt.event_id, stage = flt.stage, error = flt.error,
                                  http_status = flt.http_status, attempts = flt.attempts, event = flt.event or esg.null,
                                  first_attempt = flt.first_attempt, last_attempt = flt.last_attempt }
end
for _, key in ipairs(want.claims) do out.claims[key] = claim_of(key) end
for _, key in ipairs(want.entities) do
  local e = store:get(key, { raw = true })
  out.entities[key] = e and { version = e.version, doc = e.doc } or esg.null
end
for _, kv in ipairs(want.latches) do out.latches[kv[1] .. " " .. kv[2]] = assert(store:latch_pending(kv[1], kv[2])) end
assert(store:close())
io.stdout:write(assert(esg.json.encode(out)))
