-- The esg command: run (summary, exit status, faults), the sandbox (each forbidden
-- call refused unless allowed), the instruction budget and memory limit, faults,
-- events, stats, webhook, help and version, and the example end to end.
local T = require "testlib"
local esg = require "esg"

local ESG = os.getenv("ESG_BIN") or "esg"
local SRC = os.getenv("ESG_SOURCE_DIR") or "../.."
local q = T.q
local dir = T.tmpdir("cli")

local function esgcmd(args, stdin)
  return T.sh(q(ESG) .. " " .. args .. (stdin and (" <" .. q(stdin)) or " </dev/null"))
end

local function count(summary, what)
  return tonumber(summary:match(what .. "%s+(%d+)"))
end

local function ev(id, extra)
  local t = { id = id, type = "job", timestamp = 1700000000000 }
  for k, v in pairs(extra or {}) do t[k] = v end
  return esg.json.encode(t)
end

-- version and help
local rc, out, err = esgcmd("--version")
T.eq(rc, 0, "--version exits 0")
T.match(out, "^esg %d+%.%d+%.%d+", "--version prints the version")
rc, out = esgcmd("--help")
T.eq(rc, 0, "--help")
T.match(out, "commands:", "--help lists commands")
for _, cmd in ipairs { "run", "faults", "events", "stats", "webhook", "lua" } do
  rc, out = esgcmd(cmd .. " --help")
  T.ok(rc == 0 and out:find("usage: esg " .. cmd, 1, true), cmd .. " --help")
  rc, out = esgcmd("help " .. cmd)
  T.ok(rc == 0 and out:find("usage: esg " .. cmd, 1, true), "help " .. cmd)
end
rc, out, err = esgcmd("")
T.eq(rc, 2, "no command: usage, exit 2")
rc, out, err = esgcmd("frobnicate")
T.ok(rc == 2 and err:find("unknown command"), "unknown command")
rc, out, err = esgcmd("run")
T.ok(rc == 2 and err:find("SCRIPT"), "run without script")
rc, out, err = esgcmd("run " .. q(dir .. "/missing.lua"))
T.ok(rc == 2 and err:find("cannot read"), "missing script")
rc, out, err = esgcmd("run x.lua --bogus")
T.ok(rc == 2 and err:find("unknown option"), "unknown option")
rc, out, err = esgcmd("run x.lua --budget lots")
T.ok(rc == 2 and err:find("budget"), "bad number option")
rc, out, err = esgcmd("stats")
T.ok(rc == 2 and err:find("no store"), "stats without a store")

-- script errors at load time: exit 2
T.write(dir .. "/syntax.lua", "return {")
rc, out, err = esgcmd("run " .. q(dir .. "/syntax.lua") .. " --db " .. q(dir .. "/x.db"))
T.ok(rc == 2 and err:find("syntax.lua"), "syntax error: exit 2")
T.write(dir .. "/notable.lua", "return 42")
rc, out, err = esgcmd("run " .. q(dir .. "/notable.lua") .. " --db " .. q(dir .. "/x.db"))
T.ok(rc == 2 and err:find("pipeline table"), "script must return a table")
T.write(dir .. "/typo.lua", "return { transfrom = function() end }")
rc, out, err = esgcmd("run " .. q(dir .. "/typo.lua") .. " --db " .. q(dir .. "/x.db"))
T.ok(rc == 2 and err:find("unknown field"), "unknown step name")

-- a clean run: exit 0, the sink on stdout, the summary on stderr, default db next to the script
T.write(dir .. "/id.lua", [[
local gateway = require "esg.gateway"
return { name = "ident", transform = function(ev) return { seen = ev.id } end }]])
T.write(dir .. "/in.jsonl", ev("a") .. "\n" .. ev("b") .. "\n" .. ev("a") .. "\n")
rc, out, err = esgcmd("run " .. q(dir .. "/id.lua") .. " -i " .. q(dir .. "/in.jsonl"))
T.eq(rc, 0, "clean run exits 0")
T.eq(out, '{"seen":"a"}\n{"seen":"b"}\n', "sink output")
T.match(err, "ident: 3 received", "summary: received")
T.eq(count(err, "delivered"), 2, "summary: delivered")
T.eq(count(err, "duplicates"), 1, "summary: duplicates")
-- --progress S: plain lines while the input pauses, also when stderr is not a terminal
do
  local prc, _, perr = T.sh("(sleep 1; cat " .. q(dir .. "/in.jsonl") .. ") | " .. q(ESG) .. " run " ..
                            q(dir .. "/id.lua") .. " --db " .. q(dir .. "/progress.db") .. " --progress 0.3")
  local n = select(2, perr:gsub("ident: received %d+, delivered %d+, duplicates %d+, faults %d+ %([%d.]+ s%)\n", ""))
  T.ok(prc == 0 and n >= 2 and not perr:find("\r", 1, true), "--progress: plain lines while waiting (" .. n .. ")")
  prc, _, perr = esgcmd("run " .. q(dir .. "/id.lua") .. " -i " .. q(dir .. "/in.jsonl") .. " --progress 0")
  T.ok(prc == 2 and perr:find("--progress needs", 1, true), "--progress 0 is refused")
end
-- -o redirects a stdout/jsonl sink only: an event log sink stays where it is
T.write(dir .. "/evlog.lua", [[
local gateway = require "esg.gateway"
return { name = "evlog", sink = gateway.sink.eventlog { key = "copies" } }]])
do
  local orc, oout = esgcmd("run " .. q(dir .. "/evlog.lua") .. " -i " .. q(dir .. "/in.jsonl") .. " -o " ..
                           q(dir .. "/never.jsonl") .. " --db " .. q(dir .. "/evlog.db"))
  T.ok(orc == 0 and oout == "" and T.read(dir .. "/never.jsonl") == nil, "-o leaves an event log sink alone")
  local _, eout = esgcmd("events copies --db " .. q(dir .. "/evlog.db"))
  T.ok(eout:find("a", 1, true) and eout:find("b", 1, true), "-o: the events went to the event log")
end
-- what the store wrote and what the commit mode trades, in the summary and in --help
local per = tonumber(err:match("store writes +[%d.]+ %a+, (%d+) bytes per event"))
T.ok(per and per > 1000, "summary: bytes written per event (each claim committed: whole pages) " .. tostring(per))
T.ok(err:find("commits            each claim at once: a crash loses nothing (--group-commit S", 1, true),
     "summary: the durable mode's trade")
do
  local lines = {}
  for i = 1, 200 do lines[i] = ev("g" .. i) end
  T.write(dir .. "/many.jsonl", table.concat(lines, "\n") .. "\n")
  local grc, _, gerr = esgcmd("run " .. q(dir .. "/id.lua") .. " -i " .. q(dir .. "/many.jsonl") .. " --db " ..
                              q(dir .. "/grouped.db") .. " --group-commit 0.5")
  local gper = tonumber(gerr:match("store writes +[%d.]+ %a+, (%d+) bytes per event"))
  T.ok(grc == 0 and gper and gper < per / 4, "summary: group commit writes less per event " .. tostring(gper))
  T.ok(gerr:find("grouped, up to 0.5 s: a crash repeats the last 0.5 s of events (the sink may see them twice)", 1, true),
       "summary: the grouped mode's trade")
  local _, hout = esgcmd("run --help")
  T.ok(hout:find("1/80 of the bytes", 1, true) and hout:find("may see up to", 1, true), "run --help: the trade")
end
T.eq(count(err, "echoes suppressed"), 0, "summary: echoes")
T.eq(count(err, "stale"), 0, "summary: stale")
T.eq(count(err, "faults"), 0, "summary: faults")
T.ok(T.read(dir .. "/id.db") ~= nil, "default db next to the script")
T.ok(not err:find("\r"), "no progress line when stderr is not a terminal")
rc, out, err = esgcmd("run " .. q(dir .. "/id.lua") .. " --quiet", dir .. "/in.jsonl")
T.ok(rc == 0 and out == "" and err == "", "stdin source, all duplicates, quiet")
rc, out, err = esgcmd("run " .. q(dir .. "/id.lua") .. " -i - -o " .. q(dir .. "/out.jsonl") .. " --db " .. q(dir .. "/o.db"), dir .. "/in.jsonl")
T.ok(rc == 0 and out == "", "-o: nothing on stdout")
T.eq(T.read(dir .. "/out.jsonl"), '{"seen":"a"}\n{"seen":"b"}\n', "-o file")

-- faults from script errors: exit 1, the run goes on
T.write(dir .. "/faulty.lua", [[
return {
  name = "faulty",
  transform = function(ev)
    if ev.bad then error("bad event " .. ev.id) end
    return ev
  end,
}]])
T.write(dir .. "/faulty.jsonl", ev("f1") .. "\n" .. ev("f2", { bad = true }) .. "\nnot json\n" .. ev("f3") .. "\n")
local fdb = dir .. "/faulty.db"
rc, out, err = esgcmd("run " .. q(dir .. "/faulty.lua") .. " -i " .. q(dir .. "/faulty.jsonl") .. " --db " .. q(fdb))
T.eq(rc, 1, "faults recorded: exit 1")
T.eq(count(err, "delivered"), 2, "the run went on after the fault")
T.eq(count(err, "faults"), 2, "two faults")
T.match(err, "bad event f2", "summary names the fault")
rc, out, err = esgcmd("faults list --db " .. q(fdb))
T.eq(rc, 0, "faults list")
T.match(out, "transform%s+f2", "faults list shows the event")
T.match(out, "parse%s+unparsed:", "faults list shows the unparsable line")
rc, out = esgcmd("faults list --json --db " .. q(fdb))
local first = esg.json.decode(out:match("^[^\n]+"))
T.ok(first.error:find(dir .. "/faulty.lua", 1, true), "fault names the script")
local fid
for l in out:gmatch("[^\n]+") do
  local r = esg.json.decode(l)
  if r.event_id == "f2" then fid = r.id end
end
T.ok(math.type(fid) == "integer", "fault id")
rc, out = esgcmd("faults show " .. fid .. " --db " .. q(fdb))
T.ok(rc == 0 and out:find("stage%s+transform") and out:find("bad event f2") and out:find('"bad":true'), "faults show")
rc, out = esgcmd("faults show " .. fid .. " --json --db " .. q(fdb))
T.eq(esg.json.decode(out).event_id, "f2", "faults show --json")
rc, out, err = esgcmd("faults show 999 --db " .. q(fdb))
T.eq(rc, 1, "faults show of an unknown id: exit 1")
rc, out, err = esgcmd("run " .. q(dir .. "/faulty.lua") .. " -i " .. q(dir .. "/faulty.jsonl") .. " --db " .. q(fdb))
T.eq(rc, 1, "rerun: the unparsable line faults again")
T.eq(count(err, "duplicates"), 3, "rerun: the faulted event is a duplicate")
-- resubmit: with the script still broken the fault stays; fixed, the event is delivered once
rc, out, err = esgcmd("faults resubmit " .. fid .. " --script " .. q(dir .. "/faulty.lua") .. " --db " .. q(fdb))
T.eq(rc, 1, "resubmit to an unfixed script: exit 1")
T.match(err, "still faulted 1", "resubmit summary")
T.write(dir .. "/fixed.lua", [[
return { name = "fixed", transform = function(ev) return { fixed = ev.id } end }]])
rc, out, err = esgcmd("faults resubmit --script " .. q(dir .. "/fixed.lua") .. " --db " .. q(fdb))
T.eq(rc, 2, "resubmit needs IDs or --all")
rc, out, err = esgcmd("faults resubmit --all --script " .. q(dir .. "/fixed.lua") .. " --db " .. q(fdb))
T.eq(rc, 1, "resubmit --all: the unparsable lines stay faults")
T.eq(out, '{"fixed":"f2"}\n', "resubmit --all delivers the fixed event")
T.match(err, "resubmitted 1", "resubmit --all summary")
rc, out, err = esgcmd("faults resubmit --all --script " .. q(dir .. "/fixed.lua") .. " --db " .. q(fdb))
T.eq(out, "", "resubmit --all again: nothing delivered twice")
rc, out, err = esgcmd("run " .. q(dir .. "/fixed.lua") .. " -i " .. q(dir .. "/faulty.jsonl") .. " --db " .. q(fdb))
T.eq(out, "", "rerun after resubmit: nothing delivered twice")
rc, out = esgcmd("faults purge --db " .. q(fdb))
T.ok(rc == 0 and out:find("purged 3"), "faults purge")
rc, out, err = esgcmd("faults list --db " .. q(fdb))
T.ok(rc == 0 and out == "", "no faults after purge")
rc, out, err = esgcmd("faults frob --db " .. q(fdb))
T.eq(rc, 2, "unknown faults subcommand")

-- events and stats
rc, out = esgcmd("events --db " .. q(fdb))
T.ok(rc == 0 and out:find("esg.runs%s+6") and out:find("faults%s+0 open"), "events without KEY")
rc, out = esgcmd("events esg.runs --db " .. q(fdb))
T.eq(select(2, out:gsub("esg.run ", "")), 6, "events KEY lists events")
rc, out = esgcmd("events esg.runs --json --db " .. q(fdb))
T.eq(esg.json.decode(out:match("^[^\n]+")).type, "esg.run", "events --json")
rc, out = T.sh("ESG_DB=" .. q(fdb) .. " " .. q(ESG) .. " stats")
T.ok(rc == 0 and out:find("runs%s+6") and out:find("open faults%s+0"), "stats via ESG_DB")
rc, out = esgcmd("stats --json --db " .. q(fdb))
local st = esg.json.decode(out)
T.eq(st.totals.received, 4 + 4 + 1 + 3 + 2 + 4, "stats totals")
T.eq(st.last_run.faults, 1, "stats last run")

-- the sandbox: each forbidden call is refused, and allowed with its flag
local probe = dir .. "/written.txt"
local so = (os.getenv("ESG_BUILD_DIR") or "") .. "/bindings/lua/esg.so"
-- a module file and a chunk file that hold bytecode (crafted bytecode can crash the VM)
T.write(dir .. "/bcmod.lua", string.dump(function() return { one = 1 } end))
T.write(dir .. "/sandbox.lua", ([[
local PROBE, SO = %q, %q
local DIR = PROBE:gsub("/written.txt$", "")
package.path = DIR .. "/?.lua;" .. package.path
local function reader(s) local done; return function() if not done then done = true; return s end end end
local actions = {
  execute = function() return os.execute("true") end,
  popen = function() return io.popen("echo hi"):read("a") end,
  exit = function() os.exit(0) end,
  open_write = function() return io.open(PROBE, "w"):write("x") end,
  open_append = function() return io.open(PROBE, "a+") end,
  output = function() return io.output(PROBE) end,
  tmpfile = function() return io.tmpfile() end,
  remove = function() return os.remove(PROBE .. ".none") end,
  rename = function() return os.rename(PROBE, PROBE .. ".2") end,
  esg_open = function() return require("esg").open(PROBE .. ".db") end,
  loadlib = function() return package.loadlib(SO, "luaopen_esg") end,
  require_c = function() return assert(package.searchers[3] and package.cpath ~= "", "no C searchers") end,
  binary = function() return assert(load(string.dump(function() return 1 end), "b", "b"))() end,
  binary_t = function() return assert(load(string.dump(function() return 1 end)))() end,
  binary_reader = function() return assert(load(reader(string.dump(function() return 1 end))))() end,
  require_bc = function() return require("bcmod").one end,
  loadfile_bc = function() return assert(loadfile(DIR .. "/bcmod.lua"))().one end,
  dofile_bc = function() return dofile(DIR .. "/bcmod.lua").one end,
  host = function() return require("esg.host").budget(0) end,
  sethook = function() return debug.sethook() end,
  read = function() return io.open(PROBE:gsub("written.txt$", "in.jsonl"), "r"):read("l") end,
}
return {
  name = "sandbox",
  idempotence = false,
  transform = function(ev)
    local ok = actions[ev.action]()
    return { action = ev.action, ok = ok ~= nil }
  end,
}]]):format(probe, so))
local all = { "execute", "popen", "exit", "open_write", "open_append", "output", "tmpfile", "remove", "rename",
              "esg_open", "loadlib", "require_c", "binary", "binary_t", "binary_reader", "require_bc", "loadfile_bc",
              "dofile_bc", "host", "sethook", "read" }
local function run_actions(actions, flags)
  local lines = {}
  for i, a in ipairs(actions) do lines[i] = ev("s-" .. a, { action = a }) end
  T.write(dir .. "/actions.jsonl", table.concat(lines, "\n") .. "\n")
  local db = T.tmpdir("sbx") .. "/s.db"
  local code, o, e = esgcmd("run " .. q(dir .. "/sandbox.lua") .. " -i " .. q(dir .. "/actions.jsonl") ..
                            " --db " .. q(db) .. " " .. (flags or ""))
  local faults = {}
  local _, fo = esgcmd("faults list --json --db " .. q(db))
  for l in (fo or ""):gmatch("[^\n]+") do
    local r = esg.json.decode(l)
    faults[r.event_id:sub(3)] = r.error
  end
  local delivered = {}
  for l in (o or ""):gmatch("[^\n]+") do delivered[esg.json.decode(l).action] = true end
  return code, faults, delivered, e
end
local code, faults, delivered = run_actions(all)
T.eq(code, 1, "sandbox violations are faults: exit 1")
local expect_flag = { execute = "--allow-exec", popen = "--allow-exec", exit = "--allow-exec",
                      open_write = "--allow-io", open_append = "--allow-io", output = "--allow-io",
                      tmpfile = "--allow-io", remove = "--allow-io", rename = "--allow-io", esg_open = "--allow-io",
                      loadlib = "--allow-native", binary = "--allow-native", binary_t = "--allow-native",
                      binary_reader = "--allow-native", require_bc = "--allow-native", loadfile_bc = "--allow-native",
                      dofile_bc = "--allow-native" }
for _, a in ipairs(all) do
  if a == "read" then
    T.ok(delivered.read, "reading files is allowed")
  elseif expect_flag[a] then
    T.ok(faults[a] and faults[a]:find("not allowed in the esg sandbox", 1, true)
         and faults[a]:find(expect_flag[a], 1, true), "sandbox refuses " .. a)
  else
    T.ok(faults[a] ~= nil and not delivered[a], "sandbox refuses " .. a .. " (" .. tostring(faults[a]) .. ")")
  end
end
T.ok(T.read(probe) == nil, "nothing was written")
code, faults, delivered = run_actions({ "execute", "popen" }, "--allow-exec")
T.ok(code == 0 and delivered.execute and delivered.popen, "--allow-exec allows os.execute and io.popen")
code, faults, delivered = run_actions({ "open_write", "tmpfile" }, "--allow-io")
T.ok(code == 0 and delivered.open_write and delivered.tmpfile, "--allow-io allows writing")
T.eq(T.read(probe), "x", "--allow-io wrote the file")
code, faults, delivered = run_actions({ "loadlib", "binary", "require_c", "require_bc", "dofile_bc" }, "--allow-native")
T.ok(code == 0 and delivered.loadlib and delivered.binary and delivered.require_c and delivered.require_bc
     and delivered.dofile_bc, "--allow-native allows C modules and binary chunks")
code, faults = run_actions({ "host", "sethook" }, "--allow-io --allow-exec --allow-native")
T.ok(faults.host and faults.sethook, "the budget controls stay out of reach with every flag")

-- the instruction budget and the memory limit: a runaway transform is one fault, the run goes on
T.write(dir .. "/runaway.lua", [[
return {
  name = "runaway",
  transform = function(ev)
    if ev.spin then while true do end end
    if ev.spin_pcall then while true do pcall(function() while true do end end) end end
    if ev.hog then local t = {} for i = 1, 1e9 do t[i] = ("x"):rep(100000) .. i end end
    if ev.hog_string then local s = "x" for i = 1, 64 do s = s .. s end end
    return { ok = ev.id }
  end,
}]])
T.write(dir .. "/runaway.jsonl", table.concat({ ev("r1", { spin = true }), ev("r2"), ev("r3", { hog = true }), ev("r4"),
  ev("r5", { spin_pcall = true }), ev("r6", { hog_string = true }), ev("r7") }, "\n") .. "\n")
local rdb = dir .. "/runaway.db"
rc, out, err = esgcmd("run " .. q(dir .. "/runaway.lua") .. " -i " .. q(dir .. "/runaway.jsonl") ..
                      " --db " .. q(rdb) .. " --budget 2000000 --memory 64")
T.eq(rc, 1, "runaway: exit 1")
T.eq(count(err, "delivered"), 3, "the other events were delivered")
T.eq(count(err, "faults"), 4, "four runaway faults")
local _, fo = esgcmd("faults list --json --db " .. q(rdb))
local ferr = {}
for l in fo:gmatch("[^\n]+") do
  local r = esg.json.decode(l)
  ferr[r.event_id] = r.error
end
T.match(ferr.r1, "instruction budget exceeded", "budget stops an endless loop")
T.match(ferr.r5, "instruction budget exceeded", "budget stops a loop that catches errors")
T.match(ferr.r3, "not enough memory", "memory limit stops a hog")
T.match(ferr.r6, "not enough memory", "memory limit stops a string hog")

-- the webhook command
local secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
T.write(dir .. "/body.json", '{"test": 2432232314}')
rc, out = esgcmd("webhook sign --secret " .. secret .. " --id msg_p5jXN8AQM9LWM0D4loKWxJek --timestamp 1614265330 " .. q(dir .. "/body.json"))
T.ok(rc == 0 and out:find("webhook-signature: v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", 1, true), "webhook sign")
local verify = "webhook verify --secret whsec_b2xk --secret " .. secret ..
  " --id msg_p5jXN8AQM9LWM0D4loKWxJek --timestamp 1614265330 --signature v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= --now 1614265331"
rc, out = esgcmd(verify, dir .. "/body.json")
T.ok(rc == 0 and out:find("genuine"), "webhook verify genuine (stdin, rotation)")
T.write(dir .. "/tampered.json", '{"test": 1}')
rc, out, err = esgcmd(verify .. " " .. q(dir .. "/tampered.json"))
T.ok(rc == 1 and err:find("not genuine"), "webhook verify tampered: exit 1")
rc, out, err = esgcmd(verify:gsub("%-%-now 1614265331", "--now 1714265331") .. " " .. q(dir .. "/body.json"))
T.ok(rc == 1 and err:find("not genuine"), "webhook verify stale: exit 1")
rc, out = esgcmd("webhook secret")
T.ok(rc == 0 and out:find("^whsec_"), "webhook secret")
rc, out, err = esgcmd("webhook sign --id x")
T.eq(rc, 2, "webhook sign without secret")

-- esg lua: a trusted script with the module, arguments and exit code
T.write(dir .. "/t.lua", "local esg = require 'esg'; print(esg._VERSION, ...); return tonumber(arg[2]) or 0")
rc, out = esgcmd("lua " .. q(dir .. "/t.lua") .. " a 3")
T.ok(rc == 3 and out:find("^esg %S+\ta\t3"), "esg lua")

-- the example end to end, and the demo
local ex = SRC .. "/examples/orders"
local xdb = dir .. "/orders.db"
rc, out, err = esgcmd("run " .. q(ex .. "/gateway.lua") .. " -i " .. q(ex .. "/events.jsonl") .. " --db " .. q(xdb))
T.eq(rc, 1, "example: one fault, exit 1")
T.eq(select(2, out:gsub("\n", "")), 6, "example: six deal records")
T.eq(count(err, "delivered"), 6, "example: delivered")
T.eq(count(err, "duplicates"), 3, "example: duplicates")
T.eq(count(err, "echoes suppressed"), 1, "example: echo suppressed")
T.eq(count(err, "stale"), 1, "example: stale")
T.eq(count(err, "faults"), 1, "example: fault")
T.match(err, "evt%-1004", "example: the failing event")
rc, out, err = esgcmd("run " .. q(ex .. "/gateway.lua") .. " -i " .. q(ex .. "/events.jsonl") .. " --db " .. q(xdb))
T.eq(rc, 0, "example rerun: exit 0")
T.eq(count(err, "duplicates"), 12, "example rerun: every event a duplicate")
T.eq(out, "", "example rerun: nothing delivered")
local build = os.getenv("ESG_BUILD_DIR")
if build then
  rc, out, err = T.sh(q(SRC .. "/examples/demo.sh") .. " " .. q(build))
  T.eq(rc, 0, "demo.sh succeeds")
  T.match(out, "duplicates%s+12", "demo shows the all-duplicate rerun")
end

-- commands that only read refuse a store that does not exist, and create none (issue 15)
do
  local missing = dir .. "/nothere.db"
  for _, cmd in ipairs({ "faults list", "events", "stats" }) do
    local rc, _, err = esgcmd(cmd .. " --db " .. q(missing))
    T.eq(rc, 2, cmd .. " on a missing store: exit 2")
    T.match(err, "no store at " .. missing:gsub("%p", "%%%0"), cmd .. " names the missing store")
    T.ok(io.open(missing, "rb") == nil, cmd .. " created no file")
  end
  local rc, _, err = esgcmd("stats --db " .. q("/nonexistent-esg/x.db"))
  T.eq(rc, 2, "a store in a missing folder: exit 2")
  T.ok(not err:find("cannot open the store .*cannot open the store"), "the cause said once")
end

T.done()
