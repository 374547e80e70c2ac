-- examples/webhooks end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local _, out = T.run_example("webhooks")
T.match(out, "rejected: no matching signature", "the forged webhook is a fault")
T.match(out, "too old", "the stale webhook is a fault")
T.done()
