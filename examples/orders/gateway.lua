--[[
The orders gateway: order events from the shop become deal records for a CRM.

  esg run examples/orders/gateway.lua -i examples/orders/events.jsonl

Every step of a pipeline is shown once (see docs/gateway.md):
  filter       only order-* events pass;
  idempotence  each event id is claimed once (SHA-256 of its bytes as the payload
               hash); the order is also kept as an entity with an inverse
               optimistic lock, so a late, older update counts as stale;
  latch        placeholder: an update that carries tags.origin == "crm" is the
               echo of a change the CRM made itself, and is suppressed;
  enrich       adds the customer's tier (a static table standing in for a lookup);
  transform    builds the CRM's deal record; an item whose price is not a number
               makes it fail, which becomes a fault record for that one event;
  sink         JSON lines on stdout (or -o FILE).
]]
local gateway = require "esg.gateway"

local TIERS = { ["ada@example.com"] = "gold", ["grace@example.com"] = "silver" }
local STAGES = { ["order-created"] = "open", ["order-updated"] = "open", ["order-cancelled"] = "lost" }

return {
  name = "orders",

  filter = function(ev)
    return ev.type:match("^order%-") ~= nil
  end,

  idempotence = {
    ttl = 7 * 24 * 3600, -- seconds a processed event id is remembered
    entity = function(ev)
      return "order:" .. ev.order.id, ev.order.version
    end,
  },

  latch = function(ev)
    return type(ev.tags) == "table" and ev.tags.origin == "crm"
  end,

  enrich = function(ev)
    ev.tier = TIERS[ev.order.customer] or "standard"
    return ev
  end,

  transform = function(ev)
    local amount = 0
    for _, item in ipairs(ev.order.items) do
      amount = amount + item.qty * item.price
    end
    return {
      dealId = ev.order.id,
      stage = STAGES[ev.type],
      amount = amount,
      currency = ev.order.currency or "EUR",
      contact = ev.order.customer,
      tier = ev.tier,
      version = ev.order.version,
      sourceEvent = ev.id,
    }
  end,

  sink = gateway.sink.stdout(),
}
