-- The sandbox's budgeted pattern functions (bindings/lua/lpattern.c) give what Lua's own
-- string.find, match, gmatch and gsub give: a table of cases and random patterns, compared
-- by pattern_conformance.lua under `esg lua` (ESG_PATTERN_ROUNDS random rounds, default 3000).
local T = require "testlib"
local ESG = os.getenv("ESG_BIN") or "esg"
local rounds = os.getenv("ESG_PATTERN_ROUNDS") or "3000"
local rc, out, err = T.sh(T.q(ESG) .. " lua pattern_conformance.lua " .. os.time() .. " " .. rounds)
T.eq(rc, 0, "the comparison runs" .. (rc ~= 0 and (": " .. tostring(err)) or ""))
local checked, seed, diffs = out:match("checked (%d+) seed (%d+) differences (%d+)")
T.ok(tonumber(checked) and tonumber(checked) > 10000, "many cases compared (" .. tostring(checked) .. ")")
T.eq(diffs, "0", "no difference from Lua's string library (seed " .. tostring(seed) .. ")\n" .. out:sub(1, 2000))
T.done()
