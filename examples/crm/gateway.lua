--[[
The CRM gateway: internal shop events become deals in an external CRM, over HTTP.

  CRM_URL=http://127.0.0.1:PORT esg run examples/crm/gateway.lua -i examples/crm/events.jsonl

(examples/crm/run.sh starts the mock CRM, runs this twice and stops it.)

  idempotence  each event id is claimed once: a redelivered event is a duplicate,
               and a second run of the same input sends nothing;
  enrich       customer-* events are collected into the enrichment cache (the
               customer as of its newest event, inverse optimistic lock), and each
               order is enriched with its customer from the cache: no call to
               anyone; an order of an unknown customer goes without;
  transform    customers only feed the cache (dropped); an order becomes a deal;
  sink         HTTP POST to the CRM through libesg's egress engine: the event id
               as Idempotency-Key (the CRM dedupes too), retries with backoff and
               Retry-After on 503, a fault record when the CRM refuses (422) or the
               retries run out; `esg faults resubmit` sends a fault again.
]]
local gateway = require "esg.gateway"

local CRM = os.getenv("CRM_URL") or "http://127.0.0.1:8765"

return {
  name = "crm",

  idempotence = { ttl = 7 * 24 * 3600 },

  enrich = {
    cache = { ttl = 24 * 3600 },
    collect = function(ev) return ev.type:match("^customer%-") ~= nil end,
    key = function(ev) return ev.order and ("customer/" .. ev.order.customerId) end,
    into = "customer",
  },

  transform = function(ev)
    if not ev.order then return nil end -- customer events only feed the cache
    local o = ev.order
    return {
      dealId = o.id,
      amount = o.total,
      currency = o.currency,
      contact = ev.customer and { name = ev.customer.name, email = ev.customer.email } or nil,
      sourceEvent = ev.id,
      crmFail = o.crmFail, -- the mock CRM misbehaves on request
    }
  end,

  sink = gateway.sink.http {
    url = CRM .. "/deals",
    max_in_flight = 8,
    max_attempts = 4,
    backoff_base = 0.02,
    backoff_cap = 0.2,
    timeout = 5,
  },
}
