-- The gateway `esg run` runs in the kill sweep (run_kill.py): every event to the receiver
-- at $ESG_KILL_URL. The transform renders differently at every call (the run's id and a
-- counter, in the body and the path), so a request rendered twice would show at the
-- receiver; the short leases let the next run take a killed run's claims over soon.
local gateway = require "esg.gateway"

local url = assert(os.getenv("ESG_KILL_URL"), "ESG_KILL_URL is not set")
local renders = 0

return {
  name = "kill-lua",
  idempotence = { lease = 0.15 },
  transform = function(ev, ctx)
    renders = renders + 1
    return { id = ev.id, render = ctx.run .. "-" .. renders, reply = ev.reply }
  end,
  sink = gateway.sink.http {
    url = function(out) return url .. "/in/" .. out.render end,
    headers = { "X-Kill-Runner: lua" },
    backoff_base = 0.005, backoff_cap = 0.05, max_attempts = 50, max_elapsed = 120,
    timeout = 10, claim_lease = 0.15,
  },
}
