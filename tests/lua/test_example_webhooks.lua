-- examples/webhooks end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local SRC = os.getenv("ESG_SOURCE_DIR") or "../.."
local BUILD = os.getenv("ESG_BUILD_DIR") or (SRC .. "/build")
local rc, out, err = T.sh(T.q(SRC .. "/examples/webhooks/run.sh") .. " " .. T.q(BUILD))
if rc ~= 0 then io.stderr:write(out or "", err or "") end
T.eq(rc, 0, "examples/webhooks/run.sh")
T.match(out, "rejected: no matching signature", "the forged webhook is a fault")
T.match(out, "too old", "the stale webhook is a fault")
T.done()
