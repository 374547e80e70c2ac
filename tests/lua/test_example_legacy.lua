-- examples/legacy end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local SRC = os.getenv("ESG_SOURCE_DIR") or "../.."
local BUILD = os.getenv("ESG_BUILD_DIR") or (SRC .. "/build")
local rc, out, err = T.sh(T.q(SRC .. "/examples/legacy/run.sh") .. " " .. T.q(BUILD))
if rc ~= 0 then io.stderr:write(out or "", err or "") end
T.eq(rc, 0, "examples/legacy/run.sh")
T.match(out, "listing: created 1, updated 1, deleted 1, unchanged 3", "the second listing: changes only")
T.match(out, "pages 1, emitted 0", "the cursor job resumes")
T.done()
