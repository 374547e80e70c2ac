--[[
W1 of ../shared/bench/WORKLOAD.md (idempotent consume) through a Lua gateway:
identity transform, JSON lines sink to /dev/null, claims on the embedded SQLite
store, next to the same loop on the C API measured in the same run.

  build/bindings/lua/esg lua bench/bench_w1.lua [N] [RUNS]     (N = 100000, RUNS = 1)

Prints, per mode (durable: each claim and completion committed before the call
returns; grouped: group commit, 50 ms / 1000 writes) and pass (1 all new,
2 all duplicates), the median over RUNS of:
  RESULT label=lua-esg-<mode> pass=<p> n=<N> eps=<events/s> capi_eps=<events/s> overhead_us=<µs/event> cpu_overhead_us=<µs/event>
where capi_eps is libesg's C API on the same events, overhead_us is the
gateway's extra wall-clock time per event (1/eps - 1/capi_eps) and
cpu_overhead_us its extra process CPU time per event (the durable pass 1 is
bound by WAL writes, whose wall-clock noise on a shared machine is several µs
per event; CPU time shows the gateway's own cost). Runs alternate which of the
two goes first. Each event runs under the instruction budget of `esg run`
(10,000,000; ESG_BENCH_BUDGET=0 runs without it).

Then W5 (WORKLOAD.md): the same events as a JSON lines file through the Lua gateway
(gateway.run, transform function(ev) return {id = ev.id, price = ev.thing.price} end,
a JSON lines file sink) beside the C gateway with a C transform (host.w5_c) in the same
run, durable and grouped (group commit as bench_w1.c's: 1 s / 1000 writes):
  RESULT label=gw-lua-<mode> pass=<p> n=<N> eps=<events/s> gwc_eps=<events/s> overhead_us=<µs/event> cpu_overhead_us=<µs/event>
where gwc_eps is the C gateway's rate (bench_w1's gw-c-<mode>) and the overheads are the
Lua gateway's extra time per event over it.
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
local BUDGET = tonumber(os.getenv("ESG_BENCH_BUDGET") or "") or 10000000 -- esg run's default

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
  local t0, c0 = host.monotonic(), os.clock()
  local c = assert(gateway.run(spec, { store = store, input = gateway.source.lines(lines), output = "/dev/null",
                                         budget = BUDGET }))
  return host.monotonic() - t0, os.clock() - c0, c
end

local function median(t)
  table.sort(t)
  local n = #t
  return n % 2 == 1 and t[(n + 1) // 2] or (t[n // 2] + t[n // 2 + 1]) / 2
end

for _, mode in ipairs { "durable", "grouped" } do
  local group = mode == "grouped" and GROUP or 0
  local res = {}
  for pass = 1, 2 do res[pass] = { lua = {}, c = {}, over = {}, cpu = {} } end
  for run = 1, RUNS do
    local w, cpu = {}, {}
    local function c_side()
      local c1, c2, u1, u2 = host.w1_c(fresh("c-" .. mode), lines, group)
      w.c, cpu.c = { c1, c2 }, { u1, u2 }
    end
    local function lua_side()
      local store = assert(esg.open(fresh("lua-" .. mode), { group_commit = group, group_max = 1000 }))
      local d1, u1, k1 = lua_pass(store)
      local d2, u2, k2 = lua_pass(store)
      store:close()
      assert(k1.delivered == N and k1.faults == 0, "pass 1 must deliver every event")
      assert(k2.duplicates == N, "pass 2 must see every event as a duplicate")
      w.lua, cpu.lua = { d1, d2 }, { u1, u2 }
    end
    if run % 2 == 1 then c_side(); lua_side() else lua_side(); c_side() end
    for pass = 1, 2 do
      local r = res[pass]
      r.lua[#r.lua + 1] = N / w.lua[pass]
      r.c[#r.c + 1] = N / w.c[pass]
      r.over[#r.over + 1] = (w.lua[pass] - w.c[pass]) / N * 1e6
      r.cpu[#r.cpu + 1] = (cpu.lua[pass] - cpu.c[pass]) / N * 1e6
    end
  end
  for pass = 1, 2 do
    local r = res[pass]
    print(string.format("RESULT label=lua-esg-%s pass=%d n=%d eps=%.0f capi_eps=%.0f overhead_us=%.2f cpu_overhead_us=%.2f",
      mode, pass, N, median(r.lua), median(r.c), median(r.over), median(r.cpu)))
  end
end
-- W5: the gateway, Lua steps against C steps
local input, output = dir .. "/w5.jsonl", dir .. "/w5-out.jsonl"
do
  local f = assert(io.open(input, "w"))
  f:write(table.concat(lines, "\n"), "\n")
  f:close()
end
local w5 = {
  name = "bench-w5",
  transform = function(ev) return { id = ev.id, price = ev.thing.price } end,
  sink = gateway.sink.jsonl(output),
}
for _, mode in ipairs { "durable", "grouped" } do
  local group, gmax = (mode == "grouped" and 1 or 0), (mode == "grouped" and 1000 or nil)
  local res = {}
  for pass = 1, 2 do res[pass] = { lua = {}, c = {}, over = {}, cpu = {} } end
  for run = 1, RUNS do
    local w, cpu = {}, {}
    local function c_side()
      os.remove(output)
      local c1, c2, u1, u2 = host.w5_c(fresh("w5c-" .. mode), input, output, group, gmax)
      w.c, cpu.c = { c1, c2 }, { u1, u2 }
    end
    local function lua_side()
      os.remove(output)
      local store = assert(esg.open(fresh("w5lua-" .. mode), { group_commit = group, group_max = gmax }))
      local function pass()
        local t0, c0 = host.monotonic(), os.clock()
        local k = assert(gateway.run(w5, { store = store, input = input, budget = BUDGET }))
        return host.monotonic() - t0, os.clock() - c0, k
      end
      local d1, u1, k1 = pass()
      local d2, u2, k2 = pass()
      store:close()
      assert(k1.delivered == N and k1.faults == 0, "W5 pass 1 must deliver every event")
      assert(k2.duplicates == N, "W5 pass 2 must see every event as a duplicate")
      w.lua, cpu.lua = { d1, d2 }, { u1, u2 }
    end
    if run % 2 == 1 then c_side(); lua_side() else lua_side(); c_side() end
    for pass = 1, 2 do
      local r = res[pass]
      r.lua[#r.lua + 1] = N / w.lua[pass]
      r.c[#r.c + 1] = N / w.c[pass]
      r.over[#r.over + 1] = (w.lua[pass] - w.c[pass]) / N * 1e6
      r.cpu[#r.cpu + 1] = (cpu.lua[pass] - cpu.c[pass]) / N * 1e6
    end
  end
  for pass = 1, 2 do
    local r = res[pass]
    print(string.format("RESULT label=gw-lua-%s pass=%d n=%d eps=%.0f gwc_eps=%.0f overhead_us=%.2f cpu_overhead_us=%.2f",
      mode, pass, N, median(r.lua), median(r.c), median(r.over), median(r.cpu)))
  end
end
os.execute("rm -rf '" .. dir .. "'")
return 0
