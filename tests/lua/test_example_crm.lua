-- examples/crm end to end (the demo): run.sh, then by hand against a mock CRM:
-- the refused deal's fault resubmitted by a fixed script reaches the CRM once.
local T = require "testlib"
local esg = require "esg"
local mock = require "mock"
local SRC = os.getenv("ESG_SOURCE_DIR") or "../.."
local BUILD = os.getenv("ESG_BUILD_DIR") or (SRC .. "/build")
local ESG = os.getenv("ESG_BIN") or (BUILD .. "/bindings/lua/esg")
local q = T.q

local rc, out, err = T.run_example("crm")
T.match(out, "delivered%s+6", "run 1 delivers six deals")
T.match(out, "duplicates%s+12", "run 2: every event a duplicate")
T.match(out, "Ada King", "orders are enriched from the collected customer")
T.match(out, "run 2 sent none", "run 2 sends nothing")

local m = mock.start()
local dir = T.tmpdir("crm")
local db = dir .. "/crm.db"
local env = "CRM_URL=" .. q(m.url) .. " "
local run = env .. q(ESG) .. " run " .. q(SRC .. "/examples/crm/gateway.lua") .. " -i " ..
  q(SRC .. "/examples/crm/events.jsonl") .. " --db " .. q(db) .. " --no-progress"
rc, out, err = T.sh(run)
T.eq(rc, 1, "one fault: exit 1")
local n1 = m.requests()
T.eq(n1, 8, "eight requests (a 503 retried, a 422)")
rc, out = T.sh(q(ESG) .. " faults list --json --db " .. q(db))
local f = esg.json.decode(out:match("^[^\n]+"))
T.ok(f.stage == "deliver" and f.http_status == 422 and f.event_id == "evt-2008", "the deliver fault")
-- the fixed script: the CRM rejected negative totals; send them as refunds
T.write(dir .. "/fixed.lua", ([[
local spec = dofile(%q)
local transform = spec.transform
spec.transform = function(ev)
  local deal = transform(ev)
  if deal and deal.amount < 0 then deal.amount, deal.kind, deal.crmFail = -deal.amount, "refund", nil end
  return deal
end
return spec]]):format(SRC .. "/examples/crm/gateway.lua"))
rc, out, err = T.sh(env .. q(ESG) .. " faults resubmit --all --rerender --script " .. q(dir .. "/fixed.lua") .. " --db " .. q(db))
T.eq(rc, 0, "resubmit --all with the fixed script: exit 0")
T.match(err, "resubmitted 1", "one fault resubmitted")
local n2, log = m.requests()
T.eq(n2, n1 + 1, "the CRM got it once")
T.match(log[n2], '"status": 201', "and created the deal")
rc, out, err = T.sh(env .. q(ESG) .. " faults resubmit --all --rerender --script " .. q(dir .. "/fixed.lua") .. " --db " .. q(db))
T.eq(rc, 0, "resubmit again: nothing to do")
rc, out, err = T.sh(run)
T.eq(rc, 0, "rerun after the fix: exit 0")
T.eq((m.requests()), n2, "nothing sent twice")
m.stop()
T.done()
