--[[
The scenario pipeline in Lua, run by the real command (tests/README.md, "Scenarios"):

  SCEN_CONFIG=config.json esg run gateway.lua -i events.jsonl --db store.db

The same steps as gateway_c.c and gateway.py: only order-* events; claim "evt:<id>"; the
order as an entity at its version (its document: the order); content latches of
"order:<id>" (read from "shop", written to "crm"); the customer enriched from a fixed table
by a loader (its value counts the loads of this process, so a cache hit shows as an older
count); a transform that refuses orders marked fail = "transform" and drops those marked
drop; PUT to the receiver.
]]
local esg = require "esg"
local gateway = require "esg.gateway"

local path = assert(os.getenv("SCEN_CONFIG"), "SCEN_CONFIG is not set")
local f = assert(io.open(path))
local cfg = assert(esg.json.decode(f:read("a")))
f:close()

local loads, renders = 0, 0

return {
  name = "scenarios",
  filter = function(ev) return ev.type:sub(1, 6) == "order-" end,
  idempotence = {
    key = function(ev) return "evt:" .. ev.id end,
    lease = cfg.lease,
    entity = function(ev) return "order:" .. ev.order.id, ev.order.version, ev.order end,
  },
  latch = {
    key = function(ev) return "order:" .. ev.order.id end,
    from = "shop",
    to = "crm",
    doc = function(ev) return ev.order end,
  },
  enrich = {
    key = function(ev) return "customer/" .. ev.order.customer end,
    load = function(key)
      local c = cfg.customers[key:match("^customer/(.*)$")]
      if not c then return nil end -- known absent
      loads = loads + 1
      return { name = c.name, tier = c.tier, loads = loads }
    end,
    into = "customer",
    required = true,
  },
  transform = function(ev)
    if ev.order.fail == "transform" then error("transform refused: " .. ev.id) end
    if ev.order.drop then return nil end
    renders = renders + 1
    return { event = ev.id, order = ev.order.id, version = ev.order.version, amount = ev.order.amount,
             customer = ev.customer, n = renders, reply = ev.reply }
  end,
  sink = gateway.sink.http {
    url = cfg.url,
    method = "PUT",
    headers = { "X-Gateway: scenarios" },
    timeout = cfg.timeout,
    max_attempts = cfg.max_attempts,
    backoff_base = cfg.backoff_base,
    backoff_cap = cfg.backoff_cap,
  },
}
