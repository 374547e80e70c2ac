--[[
Two-way sync, direction shop -> CRM. Every contact change the shop reports is
written to the CRM, except the echoes of what the CRM gateway wrote to the shop.

  latch.from = "shop"  a change from the shop whose content matches a latch the
                       other gateway set before writing it there is an echo:
                       suppressed (and the latch consumed);
  latch.to = "crm"     before writing to the CRM, latch the content the CRM will
                       report back, so its echo stops on the other gateway.
Both gateways share one store (the latches live there). See run.sh.
]]
local gateway = require "esg.gateway"

local function contact(ev) return { id = ev.contact.id, name = ev.contact.name, email = ev.contact.email } end

return {
  name = "shop->crm",
  latch = {
    key = function(ev) return "contact:" .. ev.contact.id end,
    from = "shop", to = "crm", ttl = 600,
    doc = contact,                                  -- the state as the shop reports it
    out_doc = function(out) return out.contact end, -- the state as the CRM will report it
  },
  transform = function(ev) return { op = "upsert", contact = contact(ev), cause = ev.id } end,
  sink = gateway.sink.stdout(), -- run.sh sends it to the CRM's inbox (-o)
}
