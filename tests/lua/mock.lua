-- Starts examples/crm/mock_crm.py (python3, 127.0.0.1, a free port) for a test; stop() ends it.
local T = require "testlib"
local M = {}

function M.start()
  local src = os.getenv("ESG_SOURCE_DIR") or "../.."
  local dir = T.tmpdir("mock")
  local pidf, portf, logf = dir .. "/pid", dir .. "/port", dir .. "/log"
  assert(os.execute(string.format("python3 %s --port-file %s --log %s >/dev/null 2>&1 & echo $! > %s",
    T.q(src .. "/examples/crm/mock_crm.py"), T.q(portf), T.q(logf), T.q(pidf))))
  local port
  for _ = 1, 200 do
    port = T.read(portf)
    if port and port ~= "" then break end
    os.execute("sleep 0.05")
  end
  assert(port and port ~= "", "the mock CRM did not start")
  local pid = assert(tonumber(T.read(pidf)))
  local m = { url = "http://127.0.0.1:" .. port, log = logf, pid = pid }
  function m.stop() os.execute("kill " .. pid .. " 2>/dev/null") end
  function m.requests()
    local n, list = 0, {}
    for l in (T.read(logf) or ""):gmatch("[^\n]+") do n = n + 1; list[n] = l end
    return n, list
  end
  return m
end

return M
