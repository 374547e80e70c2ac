-- Run by test_pattern.lua under `esg lua`: the sandbox's budgeted pattern functions
-- (esg.host.string) against Lua's own string library, on a table of cases and on random
-- patterns and subjects. Prints one line per difference and "checked N" at the end.
local host = require "esg.host"
local H, S = host.string, string
local seed = tonumber(arg[1]) or os.time()
local rounds = tonumber(arg[2]) or 20000
local pack, unpack = table.pack, table.unpack

local function show(r)
  local t = {}
  for i = 1, r.n do t[i] = type(r[i]) == "string" and string.format("%q", r[i]) or tostring(r[i]) end
  return table.concat(t, ", ")
end

local checked, bad = 0, 0
local function same(what, a, b)
  checked = checked + 1
  if a[1] ~= b[1] then -- one raised, the other did not
    bad = bad + 1
    print("DIFF " .. what .. ": lua " .. show(a) .. " | ours " .. show(b))
    return
  end
  if not a[1] then return end -- both raised
  if a.n ~= b.n then bad = bad + 1; print("DIFF " .. what .. ": lua " .. show(a) .. " | ours " .. show(b)); return end
  for i = 1, a.n do
    if a[i] ~= b[i] then bad = bad + 1; print("DIFF " .. what .. ": lua " .. show(a) .. " | ours " .. show(b)); return end
  end
end

local function gm(f, s, p, init)
  local out = {}
  for a, b, c in f(s, p, init) do out[#out + 1] = tostring(a) .. "|" .. tostring(b) .. "|" .. tostring(c) end
  return table.concat(out, ";")
end

local repls = { "<%0>", "%1-%1", "%%", "x", 7, { a = "A", b = false, ab = "AB" }, function(a, b) return b and (a .. b) or nil end }

local function check(s, p, init)
  local what = string.format("(%q, %q, %s)", s, p, tostring(init))
  same("find" .. what, pack(pcall(S.find, s, p, init)), pack(pcall(H.find, s, p, init)))
  same("find plain" .. what, pack(pcall(S.find, s, p, init, true)), pack(pcall(H.find, s, p, init, true)))
  same("match" .. what, pack(pcall(S.match, s, p, init)), pack(pcall(H.match, s, p, init)))
  same("gmatch" .. what, pack(pcall(gm, S.gmatch, s, p, init)), pack(pcall(gm, H.gmatch, s, p, init)))
  for i, r in ipairs(repls) do
    same("gsub" .. i .. what, pack(pcall(S.gsub, s, p, r)), pack(pcall(H.gsub, s, p, r)))
    same("gsub n" .. i .. what, pack(pcall(S.gsub, s, p, r, 2)), pack(pcall(H.gsub, s, p, r, 2)))
  end
end

local cases = {
  { "hello world", "o" }, { "hello world", "o", 6 }, { "hello world", "o", -3 }, { "hello", "l+" }, { "hello", "l*" },
  { "hello", "l-" }, { "hello", "l?" }, { "hello", "^h" }, { "hello", "^e" }, { "hello", "o$" }, { "hel$lo", "$l" },
  { "key = value", "(%w+)%s*=%s*(%w+)" }, { "  trim  ", "^%s*(.-)%s*$" }, { "a,b,,c", "([^,]*)" },
  { "THE (quick) fox", "%((%a+)%)" }, { "f(a(b)c)d", "%b()" }, { "THE (quick) fox", "%f[%a]%a+" },
  { "hello", "()ll()" }, { "abcabc", "(abc)%1" }, { "x", "%1" }, { "abc", "[a-b]+" }, { "a]b", "[]]" },
  { "a^b", "[%^]" }, { "a-b", "[a%-]+" }, { "abc", "[^a]+" }, { "", "" }, { "", "x*" }, { "abc", "" },
  { "abc", "", 10 }, { "abc", "", 4 }, { "abc", "b", -10 }, { "a.b", "." }, { "a.b", "%." }, { "a+b", "a+b" },
  { "a%", "%" }, { "a[", "[" }, { "abc", "(" }, { "abc", ")" }, { "abc", "%b" }, { "abc", "%f" }, { "abc", "%fa" },
  { "1.5e10 x", "%d+%.?%d*e?%d*" }, { "\0a\0", "%z" }, { "\0a\0", "a" }, { "a\0b", "\0" }, { "été", "é" },
  { "aaa", "a-b" }, { "aaab", "a-b" }, { "[[x]]", "%[(.-)%]" }, { "((((a))))", string.rep("%(", 4) },
  { string.rep("a", 50), string.rep("(a)", 33) }, { "abc", "%w%W" }, { "A1 b2", "%u%d" }, { "x", "[%a-z]" },
  { "hello", "(h)(e)(l)(l)(o)" }, { "abc", "((a)(b))" }, { "aXb", "%A" }, { "tab\there", "%c" }, { "abc", "[a-]" },
}
for _, c in ipairs(cases) do check(c[1], c[2], c[3]) end

-- random patterns over a small alphabet, where backtracking and captures interact
math.randomseed(seed)
local atoms = { "a", "b", ".", "%a", "%d", "[ab]", "[^a]", "%s", "x", "(", ")", "()", "%1", "%b()", "%f[a]", "-" }
local quant = { "", "", "*", "+", "-", "?" }
local subj = { "a", "b", "1", " ", "(", ")", "x", "ab" }
for _ = 1, rounds do
  local p = {}
  if math.random(6) == 1 then p[1] = "^" end
  for _ = 1, math.random(0, 5) do
    p[#p + 1] = atoms[math.random(#atoms)] .. quant[math.random(#quant)]
  end
  if math.random(6) == 1 then p[#p + 1] = "$" end
  local s = {}
  for _ = 1, math.random(0, 10) do s[#s + 1] = subj[math.random(#subj)] end
  local init = math.random(4) == 1 and math.random(-4, 6) or nil
  check(table.concat(s), table.concat(p), init)
end
print(string.format("checked %d seed %d differences %d", checked, seed, bad))
