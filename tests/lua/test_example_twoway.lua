-- examples/twoway end to end: its run.sh checks its own outcome (exit 0 when right).
local T = require "testlib"
local SRC = os.getenv("ESG_SOURCE_DIR") or "../.."
local BUILD = os.getenv("ESG_BUILD_DIR") or (SRC .. "/build")
local rc, out, err = T.sh(T.q(SRC .. "/examples/twoway/run.sh") .. " " .. T.q(BUILD))
if rc ~= 0 then io.stderr:write(out or "", err or "") end
T.eq(rc, 0, "examples/twoway/run.sh")
T.match(out, "echoes suppressed%s+2", "the CRM's echoes of the shop's writes stop")
T.match(out, "the loop ended", "nothing is left to send")
T.done()
