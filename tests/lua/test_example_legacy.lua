-- examples/legacy end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local _, out = T.run_example("legacy")
T.match(out, "listing: created 1, updated 1, deleted 1, unchanged 3", "the second listing: changes only")
T.match(out, "pages 1, emitted 0", "the cursor job resumes")
T.done()
