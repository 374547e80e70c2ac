-- The esg module without a store: version, status codes, JSON, events, hashes, ids, webhooks.
local T = require "testlib"
local esg = require "esg"

-- module table
T.match(esg._VERSION, "^esg %d+%.%d+%.%d+$", "_VERSION")
T.eq(esg._VERSION, "esg " .. esg.version, "_VERSION matches the library")
T.eq(esg.status.OK, 0, "status OK")
T.eq(esg.status.DUPLICATE, 2, "status DUPLICATE")
T.eq(esg.status[-3], "EMISMATCH", "status by number")
T.match(esg.strerror("EMISMATCH"), "different payload", "strerror by name")
T.match(esg.strerror(-1), "invalid", "strerror by number")
T.raises(function() esg.strerror("NOPE") end, "unknown status", "strerror unknown name raises")
T.ok(type(esg.now()) == "number" and esg.now() > 1.6e9, "now is seconds")
T.ok(math.type(esg.KEY_MAX) == "integer" and esg.KEY_MAX > 0, "KEY_MAX")
T.eq(esg.EVENT_MAX_BYTES, 1048576, "EVENT_MAX_BYTES")
T.ok(esg.parse(esg.json.encode { id = ("k"):rep(esg.KEY_MAX + 1), type = "t", timestamp = 1 }) == nil,
     "an id one byte past KEY_MAX is refused")

-- JSON
local json = esg.json
T.eq(json.encode({ 1, 2, 3 }), "[1,2,3]", "array")
T.eq(json.encode({}), "{}", "empty table is an object")
T.eq(json.encode(json.array()), "[]", "marked empty array")
T.eq(json.encode({ a = esg.null }), '{"a":null}', "null sentinel")
T.eq(esg.null, json.null, "esg.null is esg.json.null")
T.eq(json.encode(9007199254740993), "9007199254740993", "integers exact")
T.eq(json.encode(0.1), "0.1", "shortest float")
T.eq(json.encode(1.5), "1.5", "float")
T.eq(json.encode("a\"b\n"), '"a\\"b\\n"', "string escapes")
T.eq(json.encode(true), "true", "boolean")
-- members in a stable order: sorted by name (bytewise), whatever the insertion order
do
  local a, b = {}, {}
  for i = 1, 40 do a["k" .. i] = i end
  for i = 40, 1, -1 do b["k" .. i] = i end
  T.eq(json.encode(a), json.encode(b), "same members, same text")
  T.eq(json.encode { b = 1, a = { z = 1, y = 2 }, B = 3, ["a b"] = 4 }, '{"B":3,"a":{"y":2,"z":1},"a b":4,"b":1}',
       "members sorted by name, nested too")
  T.eq(json.encode { ["\1"] = 1, ["é"] = 2, e = 3 }, '{"\\u0001":1,"e":3,"é":2}', "bytewise order, control characters escaped")
end
T.raises(function() json.encode({ [true] = 1 }) end, "key", "boolean key raises")
T.raises(function() json.encode(print) end, "cannot encode", "function raises")
T.raises(function() json.encode(0 / 0) end, "non-finite", "NaN raises")
local cyc = {}
cyc.self = cyc
T.raises(function() json.encode(cyc) end, "nested too deeply", "cycle raises")
local v = json.decode('{"a":[1,2.5,null,{"b":[]}],"c":"x"}')
T.eq(math.type(v.a[1]), "integer", "integral numbers decode as integers")
T.eq(v.a[2], 2.5, "float decodes")
T.eq(v.a[3], esg.null, "null decodes to esg.null")
T.ok(json.isarray(v.a[4].b), "empty array keeps its mark")
T.eq(json.encode(v.a[4]), '{"b":[]}', "round trip of an empty array")
T.ok(not json.isarray(v), "object is not an array")
-- the direct decoder and the cJSON path it falls back to agree
do
  local v = json.decode('{"s":"x\\n\\u00e9\\ud83d\\ude00","n":-0,"e":1e2,"f":1.0,"g":1.5,"big":12345678901234567890,' ..
                        '"a":[true,false,null,{}],"z":"\\u0000b"}')
  T.eq(v.s, "x\né\u{1F600}", "escapes and surrogate pairs")
  T.ok(math.type(v.n) == "integer" and math.type(v.e) == "integer" and v.e == 100 and math.type(v.f) == "integer",
       "integral numbers as integers")
  T.eq(v.g, 1.5, "a float")
  T.eq(math.type(v.big), "float", "beyond int64: a float")
  T.ok(json.isarray(v.a) and v.a[3] == esg.null and v.a[4] ~= nil, "arrays, null")
  T.eq(v.z, "", "\\u0000 ends the string (as cJSON does)")
  T.eq(json.decode('  {"a" : 1 }  trailing'), nil, "trailing text is refused (cJSON alone would ignore it)")
  local lz = json.lazy('{"a":1,')
  T.raises(function() return lz.a end, "not a JSON object", "a lazy object over bad text raises")
  T.ok(json.islazy(lz), "and stays lazy")
end
local d, err, code = json.decode("{x")
T.ok(d == nil and err:find("invalid JSON") and code == "EJSON", "bad JSON: nil, msg, EJSON")
T.raises(function() json.decode(nil) end, "string expected", "decode(nil) raises")
-- one value and nothing after it but white space (both decoders: fast and cJSON's)
for _, t in ipairs { '{"a":1} xyz', '[1,2] 3', '{"a":1}}', '"x" "y"', '1 2', '{"a":"\\u00e9"} x' } do
  local v, e, c = json.decode(t)
  T.ok(v == nil and e:find("invalid JSON", 1, true) and c == "EJSON", "trailing text refused: " .. t)
end
T.eq(json.decode(' {"a":1} \r\n\t').a, 1, "trailing white space is fine")
T.eq(select(2, json.decode('{"a":1} xyz')), "invalid JSON near byte 8", "names where the extra text starts")
T.raises(function() return json.lazy('{"a":1} xyz').a end, "not a JSON object", "a lazy object with trailing text raises")

-- events
local line = '{"id":"e-1","type":"thing-updated","timestamp":1700000000000,"partitionKey":"p-1","thing":{"n":1}}'
local ev = assert(esg.parse(line))
T.eq(ev:id(), "e-1", "id")
T.eq(ev:type(), "thing-updated", "type")
T.eq(ev:timestamp(), 1700000000000, "timestamp stays ms")
T.eq(ev:partition_key(), "p-1", "partitionKey")
T.eq(ev:json(), line, "json is the bytes as parsed")
T.eq(ev:hash(), esg.sha256(line), "hash is SHA-256 of the bytes")
T.eq(#ev:hash(true), 32, "raw hash")
T.eq(ev:decode().thing.n, 1, "decode")
T.match(tostring(ev), "esg.Event", "tostring")
local ev2 = assert(esg.parse({ id = "e-2", type = "t", timestamp = 5 }))
T.eq(ev2:partition_key(), nil, "no partitionKey")
local e, msg
e, msg, code = esg.parse('{"type":"t","timestamp":1}')
T.ok(e == nil and msg:find("id") and code == "EEVENT", "missing id names the field")
e, msg, code = esg.parse('{"id":"x","type":"t","timestamp":"soon"}')
T.ok(e == nil and msg:find("timestamp") and code == "EEVENT", "bad timestamp names the field")
e, msg, code = esg.parse("not json")
T.eq(code, "EJSON", "not JSON")
e, msg, code = esg.parse(('{"id":"x","type":"t","timestamp":1,"pad":"%s"}'):format(("x"):rep(1024 * 1024)))
T.eq(code, "ETOOBIG", "too big")
T.raises(function() esg.parse() end, "bad argument", "parse() raises")
T.raises(function() ev.id(42) end, "esg.Event expected", "method on a wrong object raises")

-- hashes and ids
T.eq(esg.sha256("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", "sha256 vector")
T.eq(esg.content_hash('{"a":1,"b":[1,2]}'), esg.content_hash('{ "b": [1, 2], "a": 1 }'), "content hash ignores order and space")
T.eq(esg.content_hash({ b = { 1, 2 }, a = 1 }), esg.content_hash('{"a":1,"b":[1,2]}'), "content hash of a table")
T.ok(esg.content_hash('{"a":1}') ~= esg.content_hash('{"a":2}'), "content hash differs")
local h
h, msg, code = esg.content_hash("{")
T.ok(h == nil and code == "EJSON", "content hash of bad JSON")
T.eq(esg.uuid5("x"), esg.uuid5("x", esg.NS_EVENT), "uuid5 default namespace")
T.match(esg.uuid5("x"), "^%x+%-%x+%-5%x+%-[89ab]%x+%-%x+$", "uuid5 is version 5")
-- RFC 4122 example: DNS namespace, "www.example.com"
T.eq(esg.uuid5("www.example.com", "6ba7b810-9dad-11d1-80b4-00c04fd430c8"), "2ed6657d-e927-568b-95e1-2665a8aea6a2", "uuid5 vector")
T.raises(function() esg.uuid5("x", "not-a-uuid") end, "namespace", "bad namespace raises")

-- webhooks
local secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
local sig = assert(esg.webhook.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}'))
T.eq(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", "Standard Webhooks test vector")
local headers = { ["webhook-id"] = "msg_p5jXN8AQM9LWM0D4loKWxJek", ["Webhook-Timestamp"] = "1614265330",
                  ["webhook-signature"] = "v1a,xxx " .. sig }
T.eq(esg.webhook.verify(secret, headers, '{"test": 2432232314}', { now = 1614265330 }), true, "verify genuine")
T.eq(esg.webhook.verify({ "whsec_b2xk", secret }, headers, '{"test": 2432232314}', { now = 1614265400 }), true, "verify with rotation")
local ok
ok, msg, code = esg.webhook.verify(secret, headers, '{"test": 1}', { now = 1614265330 })
T.ok(ok == nil and code == "ESIGNATURE", "tampered body refused")
ok, msg, code = esg.webhook.verify(secret, headers, '{"test": 2432232314}', { now = 1614265330 + 301 })
T.ok(ok == nil and code == "ETIMEDOUT", "old timestamp refused")
ok = esg.webhook.verify(secret, headers, '{"test": 2432232314}', { now = 1614265330 + 301, tolerance = 600 })
T.eq(ok, true, "tolerance option")
ok, msg, code = esg.webhook.verify(secret, { ["webhook-id"] = "m" }, "x")
T.eq(code, "EINVAL", "missing headers")
local s1, s2 = esg.webhook.secret(), esg.webhook.secret()
T.match(s1, "^whsec_", "new secret")
T.ok(s1 ~= s2, "secrets differ")
ok, msg, code = esg.webhook.sign("", "id", 1, "x")
T.ok(ok == nil and code == "EINVAL", "empty secret")
T.raises(function() esg.webhook.sign(secret, "id", "soon", "x") end, "bad argument", "bad timestamp type raises")
T.raises(function() esg.webhook.verify(secret, "headers", "x") end, "bad argument", "headers must be a table")

-- lazy objects: decoded on first access, encoded as the text while untouched
do
  local text = '{"id": "l1", "n": 2, "list": [1, 2], "nested": {"k": null}}'
  local t = esg.json.lazy(text)
  T.eq(esg.json.islazy(t), true, "lazy before access")
  T.eq(esg.json.encode(t), text, "untouched: encoded as the very text")
  T.eq(esg.json.encode { wrap = t }, '{"wrap":' .. text .. '}', "nested untouched lazy: as the text")
  T.eq(t.n, 2, "first access decodes")
  T.eq(esg.json.islazy(t), false, "a plain table after access")
  T.eq(getmetatable(t), nil, "no metatable left")
  T.eq(t.nested.k, esg.null, "null decoded")
  T.eq(esg.json.isarray(t.list), true, "arrays marked")
  T.eq(esg.json.encode(t.list), "[1,2]", "re-encoded once decoded")
  local u = esg.json.lazy('{"a":1}')
  u.b = 2
  T.eq(u.a, 1, "assignment decodes first")
  T.eq(u.b, 2, "assignment kept")
  local v = esg.json.lazy('{"a":1,"b":2}')
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  T.eq(n, 2, "pairs decodes")
  T.eq(#esg.json.lazy('{"a":1}'), 0, "# decodes")
  T.eq(esg.json.materialise(esg.json.lazy('{"z":true}')).z, true, "materialise")
  T.raises(function() return esg.json.lazy("[1]").x end, "not a JSON object", "lazy of a non-object raises on access")
end

-- hostile envelopes: one parser decides for every binding (issue 14)
do
  local ev, msg, code = esg.parse('{"id":"a","type":"t","timestamp":1,"id":"b"}')
  T.ok(ev == nil and code == "EEVENT" and msg:find('"id" twice', 1, true), "a duplicate member is refused, named")
  ev, msg, code = esg.parse('{"id":"a\\u0000b","type":"t","timestamp":1}')
  T.ok(ev == nil and code == "EEVENT" and msg:find("NUL", 1, true), "an escaped NUL is refused")
  ev, msg, code = esg.parse('{"id":"\192\175","type":"t","timestamp":1}')
  T.ok(ev == nil and code == "EJSON" and msg:find("UTF-8", 1, true), "invalid UTF-8 is refused")
end

T.done()
