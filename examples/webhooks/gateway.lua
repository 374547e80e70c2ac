--[[
Ingress of signed webhooks (Standard Webhooks) into internal events.

  WEBHOOK_SECRET=whsec_... esg run examples/webhooks/gateway.lua -i deliveries.jsonl

Each input line is a webhook delivery as received (envelope type
"webhook-received", the HTTP request under raw.headers and raw.body):
  idempotence  claimed by the webhook-id header with the body's SHA-256 as the
               payload hash, so a redelivery of the same webhook (providers retry)
               is a duplicate, whatever its envelope;
  transform    verifies the signature over the raw body (HMAC-SHA256, several
               secrets for rotation, 5 minutes of timestamp tolerance): a forged
               or stale delivery raises, which makes it a fault record to inspect;
               a genuine one becomes an internal event with a deterministic id
               (UUID v5 of the webhook id: a replay yields the same id);
  sink         the store's event log (the internal events, once per id).
]]
local esg = require "esg"
local gateway = require "esg.gateway"

local SECRETS = { os.getenv("WEBHOOK_SECRET") or "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" }
local TYPES = { ["payment.succeeded"] = "payment-received", ["payment.refunded"] = "payment-refunded" }

return {
  name = "webhooks",
  filter = function(ev) return ev.type == "webhook-received" end,
  idempotence = {
    key = function(ev) return "webhook:" .. tostring(ev.raw.headers["webhook-id"]) end,
    -- a redelivery is another request (its envelope differs): the payload is its body
    hash = function(ev) return esg.sha256(ev.raw.body, true) end,
    ttl = 7 * 24 * 3600,
  },
  transform = function(ev)
    local ok, err = esg.webhook.verify(SECRETS, ev.raw.headers, ev.raw.body)
    if not ok then error("webhook " .. tostring(ev.raw.headers["webhook-id"]) .. " rejected: " .. err, 0) end
    local p = esg.json.decode(ev.raw.body)
    local msg_id = ev.raw.headers["webhook-id"]
    return {
      id = esg.uuid5("payments-webhook/" .. msg_id),
      type = TYPES[p.type] or ("payment-" .. p.type),
      timestamp = tonumber(ev.raw.headers["webhook-timestamp"]) * 1000,
      partitionKey = p.data.order,
      payment = p.data,
      tags = { source = "payments-provider", webhookId = msg_id },
    }
  end,
  sink = gateway.sink.eventlog { ttl = 30 * 24 * 3600 },
}
