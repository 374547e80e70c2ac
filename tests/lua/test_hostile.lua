-- Hostile gateway scripts run by `esg run`: every way out of the instruction budget, the
-- deadline and the memory limit that a script could try ends as a fault of its event (the
-- message naming why), and the events after it are still delivered.
local T = require "testlib"
local esg = require "esg"

local ESG = os.getenv("ESG_BIN") or "esg"
local q = T.q
local dir = T.tmpdir("hostile")

local function ev(id, extra)
  local t = { id = id, type = "job", timestamp = 1700000000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return esg.json.encode(t)
end

-- Runs body (a transform's statements, `ev` in scope) over two events: the first with
-- bad = true runs the hostile part, the second must still be delivered. Returns the exit
-- code, the faults by event id and the summary, within a hard timeout (a hang fails).
local n = 0
local function run(body, flags, prelude)
  n = n + 1
  local script = ("%s/s%d.lua"):format(dir, n)
  T.write(script, (prelude or "") .. "\nreturn { name = 'hostile', idempotence = false,\n" ..
    "  transform = function(ev) if ev.bad then " .. body .. " end return { ok = ev.id } end }\n")
  local input = ("%s/s%d.jsonl"):format(dir, n)
  T.write(input, ev("bad", { bad = true }) .. "\n" .. ev("good") .. "\n")
  local db = ("%s/s%d.db"):format(dir, n)
  local rc, out, err = T.sh("timeout 60 " .. q(ESG) .. " run " .. q(script) .. " -i " .. q(input) .. " --db " .. q(db) ..
                            " " .. (flags or "--budget 2000000") .. " </dev/null")
  local faults = {}
  local _, fo = T.sh(q(ESG) .. " faults list --json --db " .. q(db))
  for l in (fo or ""):gmatch("[^\n]+") do
    local r = esg.json.decode(l)
    faults[r.event_id] = r.error
  end
  return rc, faults, out, err
end

local function escapes(what, body, want, flags, prelude)
  local rc, faults, out, err = run(body, flags, prelude)
  T.ok(rc == 1, what .. ": the run ends (exit 1, not a hang: " .. tostring(rc) .. ")")
  T.ok(faults.bad and faults.bad:find(want, 1, true), what .. ": the event is a fault naming why (" ..
       tostring(faults.bad or err) .. ")")
  T.ok(out:find('"ok":"good"', 1, true) and not out:find('"ok":"bad"', 1, true), what .. ": the next event is delivered")
end

local BUDGET = "instruction budget exceeded"
-- Lua runs a message handler for an error the budget's hook raised with hooks off
escapes("an endless xpcall message handler", "xpcall(error, function() while true do end end)", BUDGET)
escapes("an endless handler that catches its own errors",
        "xpcall(error, function() while true do pcall(function() while true do end end) end end)", BUDGET)
-- finalisers also run with hooks off: refused where they are set
escapes("a __gc finaliser", "setmetatable({}, { __gc = function() while true do end end }); collectgarbage()",
        "__gc: finalisers are not allowed")
escapes("a __gc set later through a placeholder",
        "local mt = { __gc = true }; setmetatable({}, mt); mt.__gc = function() while true do end end; collectgarbage()",
        "__gc: finalisers are not allowed")
escapes("an error object whose __tostring loops",
        "error(setmetatable({}, { __tostring = function() while true do end end }))", BUDGET)
escapes("an error object whose __tostring raises", "error(setmetatable({}, { __tostring = function() error('tostring boom') end }))",
        "tostring boom")
-- coroutines: made at the top level, before any step's arming; wrapped and plain
escapes("a coroutine.wrap made at the top level", "spin()", BUDGET, nil,
        "local spin = coroutine.wrap(function() while true do end end)")
escapes("a coroutine made at the top level, its error caught", "coroutine.resume(co); return { caught = true }", BUDGET,
        nil, "co = coroutine.create(function() while true do end end)")
escapes("a coroutine that yields in a loop", "while true do coroutine.resume(co) end", BUDGET, nil,
        "co = coroutine.create(function() while true do coroutine.yield() end end)")
escapes("the deadline stops what the budget does not count", "while true do end", "deadline exceeded",
        "--budget 0 --deadline 0.5")

-- string patterns backtrack inside C: the sandbox's matcher charges its steps to the budget
escapes("string.find with a pathological pattern", "string.find(('a'):rep(40), ('a*'):rep(40) .. 'b')", BUDGET)
escapes("a method call s:match", "local s = ('a'):rep(30); s:match(('a?'):rep(30) .. ('a'):rep(30) .. 'b')", BUDGET)
escapes("gsub with a quadratic pattern", "string.gsub(('x'):rep(200000), '.-y', '')", BUDGET)
escapes("gmatch with a quadratic pattern", "for _ in ('x'):rep(200000):gmatch('.-y') do end", BUDGET)
escapes("a nested gateway.run", "require('esg.gateway').run({ transform = function() while true do end end }, {})",
        "gateway.run: a run is in progress")

-- script code outside any step: the top level, a snapshot's listing, a cursor's fetch
local function setup_error(what, script_text, want)
  n = n + 1
  local script = ("%s/s%d.lua"):format(dir, n)
  T.write(script, script_text)
  local rc, _, err = T.sh("timeout 60 " .. q(ESG) .. " run " .. q(script) .. " --db " .. q(script .. ".db") ..
                          " --budget 2000000 </dev/null")
  T.ok(rc == 2 and err:find(want, 1, true) and err:find(BUDGET, 1, true),
       what .. ": stopped by the budget, the error names it (" .. tostring(rc) .. ": " .. tostring(err) .. ")")
end
setup_error("the script's top level", "while true do end", "esg run:")
setup_error("a snapshot's listing", [[local g = require "esg.gateway"
return { source = g.source.snapshot { source = "s", listing = function() while true do end end } }]],
            "snapshot s: the listing failed")
setup_error("a snapshot listing's iterator", [[local g = require "esg.gateway"
return { source = g.source.snapshot { source = "s", listing = function() return function() while true do end end end } }]],
            "snapshot s: the listing failed")
setup_error("a cursor's fetch", [[local g = require "esg.gateway"
return { source = g.source.cursor { name = "c", source = "s", fetch = function() while true do end end } }]],
            "cursor c: fetch failed")

-- a step that changes what the runner uses: globals, library tables, metatables
do
  local script = dir .. "/tamper.lua"
  T.write(script, [[
local esg, gateway = require "esg", require "esg.gateway"
return { name = "tamper", idempotence = false,
  transform = function(ev)
    if ev.id == "t1" then
      ipairs, pairs, type, tostring, tonumber, error, pcall, select, next, assert = nil
      string.format, string.sub, string.find, string.match, string.gsub, string.rep = nil
      table.concat, table.insert, table.unpack, table.pack, math.floor, os.date = nil
      esg.json.encode, esg.json.decode, esg.uuid5, esg.sha256, gateway.run, gateway.text_of = nil
      io.stderr, io.stdout, io.write = nil
    end
    if ev.id == "t2" then getmetatable("").__index = function() return nil end end
    if ev.id == "t3" then return setmetatable({}, { __tostring = function() while true do end end }) end
    return { ok = ev.id }
  end }]])
  local lines = {}
  for i = 1, 5 do lines[i] = ev("t" .. i) end
  T.write(dir .. "/tamper.jsonl", table.concat(lines, "\n") .. "\n")
  local rc, out, err = T.sh("timeout 60 " .. q(ESG) .. " run " .. q(script) .. " -i " .. q(dir .. "/tamper.jsonl") ..
                            " --db " .. q(dir .. "/tamper.db") .. " </dev/null")
  T.ok(rc == 1 and err:find("5 received", 1, true), "tampering: the run ends with its summary (" .. tostring(rc) .. ")")
  T.ok(out:find('"ok":"t1"', 1, true) and out:find('"ok":"t4"', 1, true) and out:find('"ok":"t5"', 1, true),
       "tampering: the events after it are delivered")
  local _, fo = T.sh(q(ESG) .. " faults list --json --db " .. q(dir .. "/tamper.db"))
  T.ok(fo:find('"event_id":"t2"', 1, true), "tampering: changing the string metatable is a fault")
  T.ok(out:find("\n{}\n", 1, true), "an output whose __tostring loops is encoded without running it")
end

-- the pipeline table's own metamethods do not run in the runner
local function spec_runs(what, text, want_rc)
  n = n + 1
  local script = ("%s/s%d.lua"):format(dir, n)
  T.write(script, text)
  T.write(script .. ".jsonl", ev("m1") .. "\n")
  local rc, _, err = T.sh("timeout 60 " .. q(ESG) .. " run " .. q(script) .. " -i " .. q(script .. ".jsonl") .. " --db " ..
                          q(script .. ".db") .. " </dev/null")
  T.ok(rc == want_rc, what .. " (" .. tostring(rc) .. ": " .. tostring(err):sub(1, 200) .. ")")
end
spec_runs("a pipeline table whose __index loops", "return setmetatable({}, { __index = function() while true do end end })", 0)
spec_runs("a pipeline table whose __pairs loops",
          "return setmetatable({ idempotence = false }, { __pairs = function() while true do end end })", 0)
spec_runs("a name whose __concat loops",
          "return { name = setmetatable({}, { __concat = function() while true do end end }) }", 2)
spec_runs("an error object whose __tostring loops, at the top level",
          "error(setmetatable({}, { __tostring = function() while true do end end }))", 2)

-- --max-line: a longer line is a stored fault (kept as its first max-line bytes), the run goes on
do
  local script = dir .. "/ml.lua"
  T.write(script, "return { idempotence = false }")
  local big = ev("big", { x = ("y"):rep(5000) })
  T.write(dir .. "/ml.jsonl", ev("m1") .. "\n" .. big .. "\n" .. ev("m2") .. "\n")
  local rc, out, err = T.sh(q(ESG) .. " run " .. q(script) .. " -i " .. q(dir .. "/ml.jsonl") .. " --db " ..
                            q(dir .. "/ml.db") .. " --max-line 1000 </dev/null")
  T.ok(rc == 1 and select(2, out:gsub("\n", "")) == 2, "--max-line: the lines around it are delivered")
  T.ok(err:find(("a line of %d bytes is over the limit of 1000"):format(#big), 1, true), "--max-line: the fault says so")
  local _, fo = T.sh(q(ESG) .. " faults list --json --db " .. q(dir .. "/ml.db"))
  T.eq(#(esg.json.decode(fo:match("^[^\n]+")).event), 1000, "--max-line: the stored event is its first 1000 bytes")
  rc, _, err = T.sh(q(ESG) .. " run " .. q(script) .. " -i " .. q(dir .. "/ml.jsonl") .. " --db " .. q(dir .. "/ml2.db") ..
                    " --max-line 2000000 </dev/null")
  T.ok(rc == 2 and err:find("--max-line is at most " .. esg.EVENT_MAX_BYTES, 1, true), "--max-line: over an event's limit is refused")
end

-- the memory limit: C memory made for the script counts; a hoarding script fails fast
escapes("JSON encoding a huge value", "local t = {} for i = 1, 400000 do t[i] = ('x'):rep(60) end; esg.json.encode({ t, t, t, t })",
        "not enough memory", "--memory 24", "local esg = require 'esg'")
escapes("JSON decoding through cJSON's tree",
        "local t, e = esg.json.decode(BIG); if not t then error(e) end", "not enough memory (decoding",
        "--memory 40", "local esg = require 'esg'\nBIG = '[' .. ('1,'):rep(1000000) .. '1.' .. ('0'):rep(300) .. ']'")
do
  local script = dir .. "/hoard.lua"
  T.write(script, [[
local keep = {}
return { name = "hoard", idempotence = false,
  transform = function(ev) for i = 1, 200000 do keep[#keep + 1] = { i } end return { ok = ev.id } end }]])
  local lines = {}
  for i = 1, 60 do lines[i] = ev("h" .. i) end
  T.write(dir .. "/hoard.jsonl", table.concat(lines, "\n") .. "\n")
  local t0 = os.time()
  local rc, _, err = T.sh("timeout 120 " .. q(ESG) .. " run " .. q(script) .. " -i " .. q(dir .. "/hoard.jsonl") ..
                          " --db " .. q(dir .. "/hoard.db") .. " --memory 64 </dev/null")
  T.ok(rc == 1 and tonumber(err:match("faults%s+(%d+)")) >= 50, "hoarding: the events past the limit are faults")
  local _, fo = T.sh(q(ESG) .. " faults list --json --db " .. q(dir .. "/hoard.db"))
  T.ok(fo:find("the script holds", 1, true), "hoarding: the fault says the script holds its memory")
  T.ok(os.time() - t0 < 60, "hoarding: the run ends")
end

T.done()
