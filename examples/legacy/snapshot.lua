--[[
Resync of a slow legacy listing: the legacy CRM has no change feed, only a full
export of its customers (one JSON object per line). Each run lists it again;
libesg's snapshot diff turns the listing into customer-created, -updated and
-deleted events for what changed since the previous listing, and only those
run through the pipeline (to stdout here: the internal events).

  LISTING=examples/legacy/listing-1.jsonl esg run examples/legacy/snapshot.lua

A change is emitted and processed in the transaction that records it, so a crash
in the middle of a listing loses nothing: run it again.
]]
local esg = require "esg"
local gateway = require "esg.gateway"

local function listing()
  local path = os.getenv("LISTING") or "listing-1.jsonl"
  local f = assert(io.open(path, "r"))
  local lines = f:lines()
  return function()
    local line = lines()
    if not line then f:close(); return nil end
    local c = esg.json.decode(line)
    return c.id, c
  end
end

return {
  name = "legacy-customers",
  source = gateway.source.snapshot { source = "legacy-crm", type = "customer", listing = listing },
  transform = function(ev)
    local kind = ev.type:match("%-(%a+)$")
    return { id = ev.id, type = "customer-" .. kind, timestamp = ev.timestamp, partitionKey = ev.partitionKey,
             customer = ev.entity }
  end,
  sink = gateway.sink.stdout(),
}
