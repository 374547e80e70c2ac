--[[
Two-way sync, direction CRM -> shop. Every contact change the CRM reports is
written to the shop, except the echoes of what the shop gateway wrote to the CRM.

  latch.from = "crm"   a change from the CRM whose content matches a latch the
                       other gateway set before writing it there is an echo:
                       suppressed (and the latch consumed);
  latch.to = "shop"    before writing to the shop, latch the content the shop will
                       report back, so its echo stops on the other gateway.
Both gateways share one store (the latches live there). See run.sh.
]]
local gateway = require "esg.gateway"

local function contact(ev) return { id = ev.contact.id, name = ev.contact.name, email = ev.contact.email } end

return {
  name = "crm->shop",
  latch = {
    key = function(ev) return "contact:" .. ev.contact.id end,
    from = "crm", to = "shop", ttl = 600,
    doc = contact,                                  -- the state as the CRM reports it
    out_doc = function(out) return out.contact end, -- the state as the shop will report it
  },
  transform = function(ev) return { op = "upsert", contact = contact(ev), cause = ev.id } end,
  sink = gateway.sink.stdout(), -- run.sh sends it to the shop's inbox (-o)
}
