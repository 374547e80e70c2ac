--[[
esg.resync: the gateway sources the C loop does not read itself: a snapshot's listing
(esg.Snapshot, libesg's diff), a cursor job (store:cursor_run) and a replay of stored
events. Each event goes through the gateway (gw:feed) inside the transaction that records
it; the listing, its iterator and fetch are script code, run under the budget.
]]
local esg = require "esg"
local sandbox = require "esg.sandbox"

local type, pairs, pcall, assert = type, pairs, pcall, assert
local fmt, sub = string.format, string.sub
local pack, unpack = table.pack, table.unpack
local json_encode, sha256 = esg.json.encode, esg.sha256
local call, text_of = sandbox.call, sandbox.text_of

local M = {}

local NEEDS = { snapshot = { source = "string", listing = "function", _ = "source and listing" },
                cursor = { name = "string", source = "string", fetch = "function", _ = "name, source and fetch" },
                replay = {} }

-- Whether a source of this kind is driven here.
function M.drives(kind) return NEEDS[kind] ~= nil end

-- The source's name in fault records and the run record, or nil, what it lacks.
function M.name(desc)
  local k, o, need = desc.kind, desc.opts, NEEDS[desc.kind]
  if k == "replay" then return "replay" end
  for f, t in pairs(need) do
    if f ~= "_" and (type(o) ~= "table" or type(o[f]) ~= t) then return nil, "gateway.source." .. k .. " needs " .. need._ end
  end
  return k .. " " .. (k == "cursor" and o.name or o.source)
end

-- A listing entry the snapshot refused: a fault of stage "resync" (no event to run).
local function resync_fault(r, key, msg)
  local line = json_encode { key = text_of(key, r.budget) }
  local event_id = "unparsed:" .. sub(sha256(line), 1, 16)
  local id = r.store:fault_record { event_id = event_id, stage = "resync", event = line,
                                    error = fmt("%s\nat %s (script %s, run %s)", msg, r.source, r.script, r.id) }
  r.extra = r.extra + 1
  r.on_fault { id = id, stage = "resync", error = msg, event_id = event_id }
end

-- Runs a resync or replay source (r: the run of esg.gateway): each event goes through
-- the gateway inside the transaction recording it.
function M.drive(r, gw, desc)
  local store, o = r.store, desc.opts
  local function feed(rec) assert(gw:feed(rec.json)) end
  if desc.kind == "snapshot" then
    local sn, err = store:snapshot(o.source, { type = o.type, entity_field = o.entity_field, log_ttl = o.log_ttl,
                                               batch = 1, sink = feed })
    if not sn then return nil, err end
    -- a listing that fails stops the snapshot before finish: a half listing would delete the rest
    local ok, it, state, key = call(r.budget, o.listing, r.ctx)
    local lerr = not ok and it
    while ok do
      local content
      ok, key, content = call(r.budget, it, state, key)
      if not ok then lerr = key end
      if not ok or key == nil then break end
      local added, aerr = sn:add(key, content)
      if not added then resync_fault(r, key, text_of(aerr)) end
    end
    if not ok then
      sn:close()
      return nil, fmt("snapshot %s: the listing failed: %s", o.source, text_of(lerr, r.budget))
    end
    local st, ferr = sn:finish()
    sn:close()
    r.resync = st
    return st, ferr
  elseif desc.kind == "cursor" then
    local fetch, ctx = o.fetch, r.ctx
    local function guarded(cursor)
      local r2 = pack(call(r.budget, fetch, cursor, ctx))
      if not r2[1] then return nil, text_of(r2[2], r.budget) end
      return unpack(r2, 2, r2.n)
    end
    local ok, st, err = pcall(store.cursor_run, store, o.name, o.source, guarded,
      { sink = feed, entity_field = o.entity_field, log_ttl = o.log_ttl, max_pages = o.max_pages })
    if not ok then return nil, fmt("cursor %s: %s", o.name, text_of(st)) end
    r.resync = st
    return st, err
  end
  return store:replay(o, feed)
end

return M
