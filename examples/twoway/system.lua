--[[
A stand-in for an external system with a change feed (for the two-way example):

  esg lua system.lua apply NAME STATE INBOX FEED   apply the writes in INBOX to STATE and
                                                   report each as a change on FEED (the echo)
  esg lua system.lua edit NAME STATE FEED ID FIELD VALUE   a user edits a contact: a genuine change

STATE is a JSON file {contacts = {id -> contact}}; FEED and INBOX are JSON lines.
Change events: {"id":"<name>-<seq>","type":"contact-changed","timestamp":...,
"partitionKey":"<contact id>","contact":{...}}.
]]
local esg = require "esg"
local json = esg.json
local cmd, name, state_path = arg[1], arg[2], arg[3]

local function read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local state = json.decode(read(state_path) or '{"contacts":{},"seq":0}')
local function save()
  local f = assert(io.open(state_path, "w"))
  f:write(json.encode(state))
  f:close()
end

local function report(feed, c)
  state.seq = state.seq + 1
  local f = assert(io.open(feed, "a"))
  f:write(json.encode { id = name .. "-" .. state.seq, type = "contact-changed", timestamp = 1700000000000 + state.seq,
                       partitionKey = c.id, contact = c }, "\n")
  f:close()
end

if cmd == "apply" then
  local inbox, feed = arg[4], arg[5]
  local n = 0
  for line in (read(inbox) or ""):gmatch("[^\n]+") do
    local w = json.decode(line)
    state.contacts[w.contact.id] = w.contact
    report(feed, w.contact) -- every write comes back as a change notification
    n = n + 1
  end
  save()
  print(string.format("%s applied %d write(s)", name, n))
elseif cmd == "edit" then
  local feed, id, field, value = arg[4], arg[5], arg[6], arg[7]
  local c = state.contacts[id] or { id = id }
  c[field] = value
  state.contacts[id] = c
  report(feed, c)
  save()
  print(string.format("%s: a user set %s.%s = %s", name, id, field, value))
else
  io.stderr:write("usage: esg lua system.lua apply|edit ...\n")
  return 2
end
return 0
