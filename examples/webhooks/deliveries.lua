--[[
Makes the sample webhook deliveries for the example, as an ingress endpoint would
record them: one envelope per HTTP request received, the request under "raw"
(headers and body exactly as received). Signed now with the given secret, plus
the usual trouble: a redelivery of the first webhook, a forged one, a stale one.

  esg lua deliveries.lua SECRET payloads.jsonl > deliveries.jsonl
]]
local esg = require "esg"
local secret, path = arg[1], arg[2]
local now = math.floor(esg.now())
local out = {}
local function delivery(msg_id, ts, body, signature)
  signature = signature or assert(esg.webhook.sign(secret, msg_id, ts, body))
  out[#out + 1] = esg.json.encode {
    id = "whin-" .. #out + 1, type = "webhook-received", timestamp = now * 1000 + #out,
    raw = { headers = { ["webhook-id"] = msg_id, ["webhook-timestamp"] = tostring(ts), ["webhook-signature"] = signature },
            body = body },
  }
end
local n = 0
for body in io.lines(path) do
  n = n + 1
  delivery("msg_" .. n, now, body)
end
delivery("msg_1", now + 5, io.open(path):read("l"))                      -- the provider retried msg_1
delivery("msg_forged", now, '{"type":"payment.succeeded","data":{"payment":"pay_x","order":"o-9","amount":1}}',
         "v1,bm90IGEgc2lnbmF0dXJlIGF0IGFsbA==")                          -- not signed with our secret
delivery("msg_old", now - 3600, '{"type":"payment.succeeded","data":{"payment":"pay_y","order":"o-8","amount":2}}') -- replayed an hour later
for _, l in ipairs(out) do print(l) end
return 0
