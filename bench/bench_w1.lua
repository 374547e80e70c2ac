--[[
W1 of ../shared/bench/WORKLOAD.md (idempotent consume) through a Lua gateway:
identity transform, JSON lines sink to /dev/null, claims on the embedded SQLite
store, next to the same loop on the C API measured in the same run.

  build/bindings/lua/esg lua bench/bench_w1.lua [N] [RUNS]     (N = 100000, RUNS = 1)

Prints, per mode (durable: each claim and completion committed before the call
returns; grouped: group commit, 50 ms / 1000 writes) and pass (1 all new,
2 all duplicates), the median over RUNS of:
  RESULT label=lua-esg-<mode> pass=<p> n=<N> eps=<events/s> capi_eps=<events/s> overhead_us=<µs/event>
where capi_eps is libesg's C API on the same events and overhead_us is the
gateway's extra cost per event (1/eps - 1/capi_eps).
]]
local esg = require "esg"
local gateway = require "esg.gateway"
local ok_host, host = pcall(require, "esg.host")
if not ok_host then
  io.stderr:write("bench_w1.lua: run it with the esg command: esg lua bench/bench_w1.lua [N] [RUNS]\n")
  return 2
end

local N = tonumber(arg and arg[1]) or 100000
local RUNS = tonumber(arg and arg[2]) or 1
local GROUP = 0.05

local lines = {}
for i = 0, N - 1 do
  lines[#lines + 1] = string.format(
    '{"id":"evt-%d","type":"thing-updated","timestamp":%d,"partitionKey":"thing-%d","thing":{"id":"thing-%d","name":"name-%d","price":%d}}',
    i, 1700000000000 + i, i % 1000, i % 1000, i, i)
end

local tmp = os.getenv("TMPDIR") or "/tmp"
local dir = string.format("%s/esg-bench-w1-lua.%d.%d", tmp, os.time(), math.random(1 << 30))
assert(os.execute("mkdir -p '" .. dir .. "'"))

local function fresh(name)
  local p = dir .. "/" .. name .. ".db"
  os.remove(p); os.remove(p .. "-wal"); os.remove(p .. "-shm")
  return p
end

local spec = {
  name = "bench-w1",
  idempotence = { ttl = 3600 },
  transform = function(ev) return ev end,
  sink = gateway.sink.jsonl("/dev/null"),
}

local function lua_pass(store)
  local t0 = host.monotonic()
  local c = assert(gateway.run(spec, { store = store, input = gateway.source.lines(lines), output = "/dev/null" }))
  local dt = host.monotonic() - t0
  return dt, c
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

for _, mode in ipairs { "durable", "grouped" } do
  local group = mode == "grouped" and GROUP or 0
  local res = { { lua = {}, c = {} }, { lua = {}, c = {} } }
  for _ = 1, RUNS do
    local c1, c2 = host.w1_c(fresh("c-" .. mode), lines, group)
    res[1].c[#res[1].c + 1] = N / c1
    res[2].c[#res[2].c + 1] = N / c2
    local store = assert(esg.open(fresh("lua-" .. mode), { group_commit = group, group_max = 1000 }))
    local d1, k1 = lua_pass(store)
    local d2, k2 = lua_pass(store)
    store:close()
    assert(k1.delivered == N and k1.faults == 0, "pass 1 must deliver every event")
    assert(k2.duplicates == N, "pass 2 must see every event as a duplicate")
    res[1].lua[#res[1].lua + 1] = N / d1
    res[2].lua[#res[2].lua + 1] = N / d2
  end
  for pass = 1, 2 do
    local eps, ceps = median(res[pass].lua), median(res[pass].c)
    print(string.format("RESULT label=lua-esg-%s pass=%d n=%d eps=%.0f capi_eps=%.0f overhead_us=%.2f",
      mode, pass, N, eps, ceps, (1 / eps - 1 / ceps) * 1e6))
  end
end
os.execute("rm -rf '" .. dir .. "'")
return 0
