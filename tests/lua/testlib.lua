-- A tiny test helper: checks count, never stop at the first failure; done() prints
-- "N passed, N failed" last and exits non-zero on failure.
local T = { passed = 0, failed = 0 }
local fmt = string.format

local function where()
  local info = debug.getinfo(3, "Sl")
  return info and fmt("%s:%d", info.short_src, info.currentline) or "?"
end

local function report(ok, name, detail)
  if ok then
    T.passed = T.passed + 1
  else
    T.failed = T.failed + 1
    io.stderr:write(fmt("FAIL %s: %s%s\n", where(), name or "", detail and (" -- " .. detail) or ""))
  end
  return ok
end

function T.ok(cond, name) return report(cond and true or false, name) end

local function show(v)
  if type(v) == "string" then return fmt("%q", v) end
  return tostring(v)
end

function T.eq(got, want, name)
  return report(got == want, name, got ~= want and fmt("got %s, want %s", show(got), show(want)) or nil)
end

function T.match(s, pattern, name)
  local ok = type(s) == "string" and s:find(pattern) ~= nil
  return report(ok, name, not ok and fmt("%s does not match %q", show(s), pattern) or nil)
end

-- fn must raise an error whose message matches pattern (plain find).
function T.raises(fn, pattern, name)
  local ok, err = pcall(fn)
  if ok then return report(false, name, "did not raise") end
  local ok2 = pattern == nil or tostring(err):find(pattern, 1, true) ~= nil
  return report(ok2, name, not ok2 and fmt("raised %s, want %q", show(tostring(err)), pattern) or nil)
end

-- A fresh directory under ESG_TEST_TMP (or /tmp).
local seq = 0
-- A fresh directory of its own: mktemp makes the name unique across the test
-- processes ctest runs in parallel (a time and a counter are not).
function T.tmpdir(tag)
  seq = seq + 1
  local base = os.getenv("ESG_TEST_TMP") or "/tmp"
  os.execute(fmt("mkdir -p '%s'", base))
  local p = assert(io.popen(fmt("mktemp -d '%s/%s-%d-XXXXXX'", base, tag or "t", seq)))
  local dir = p:read("l")
  p:close()
  assert(dir and dir ~= "", "mktemp -d failed under " .. base)
  return dir
end

function T.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

function T.read(path)
  local f = io.open(path, "r")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a shell command; returns exit code, stdout, stderr.
function T.sh(cmd)
  local dir = T.tmpdir("sh")
  local ok, how, code = os.execute(fmt("%s >'%s/out' 2>'%s/err'", cmd, dir, dir))
  if how == "signal" then code = 128 + code end
  local out, err = T.read(dir .. "/out"), T.read(dir .. "/err")
  os.execute(fmt("rm -rf '%s'", dir))
  return ok and 0 or code, out, err
end

function T.q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

-- Runs examples/NAME/run.sh on the build (it checks its own outcome) and checks it
-- exits 0, showing its output when not. Returns exit code, stdout, stderr.
function T.run_example(name)
  local src = os.getenv("ESG_SOURCE_DIR") or "../.."
  local build = os.getenv("ESG_BUILD_DIR") or (src .. "/build")
  local script = "examples/" .. name .. "/run.sh"
  local rc, out, err = T.sh(T.q(src .. "/" .. script) .. " " .. T.q(build))
  if rc ~= 0 then io.stderr:write(out or "", err or "") end
  T.eq(rc, 0, script)
  return rc, out, err
end

function T.done()
  print(fmt("%d passed, %d failed", T.passed, T.failed))
  os.exit(T.failed == 0 and 0 or 1)
end

return T
