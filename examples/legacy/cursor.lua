--[[
Resync of a paged legacy API with a durable cursor: each page after the stored
cursor is fetched, its items become invoice-synced events with deterministic
ids, and the new cursor is stored in the same transaction as the page (and the
pipeline's claims). A second run resumes after the last page: nothing again.

  PAGES=examples/legacy/pages.json esg run examples/legacy/cursor.lua
]]
local esg = require "esg"
local gateway = require "esg.gateway"

local pages -- the "API": pages.json, page i follows cursor "p<i>"
local function fetch(cursor)
  if not pages then
    local f = assert(io.open(os.getenv("PAGES") or "pages.json", "r"))
    pages = esg.json.decode(f:read("a"))
    f:close()
  end
  local i = cursor and tonumber(cursor:match("^p(%d+)$")) or 1
  local p = pages[i]
  if not p then return { items = {}, next = cursor, done = true } end
  local items = {}
  for k, it in ipairs(p.items) do
    items[k] = { id = it.id, version = it.rev, type = "invoice-synced", data = it }
  end
  return { items = items, next = p.next, done = p.done }
end

return {
  name = "legacy-invoices",
  source = gateway.source.cursor { name = "legacy-invoices", source = "legacy-billing", fetch = fetch },
  transform = function(ev) return { invoice = ev.entity.id, amount = ev.entity.amount, eventId = ev.id } end,
  sink = gateway.sink.stdout(),
}
