-- examples/twoway end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local _, out = T.run_example("twoway")
T.match(out, "echoes suppressed%s+2", "the CRM's echoes of the shop's writes stop")
T.match(out, "the loop ended", "nothing is left to send")
T.done()
