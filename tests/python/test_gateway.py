"""esg.Gateway (docs/python.md "Gateway"): each outcome with its counters, claim results and
fault records; the sinks (a JSON lines file, the event log, a callback, stdout, HTTP against
a real http.server on 127.0.0.1); sources (a file, a pipe, an iterable, replay, resync);
resubmission; ctx; the GIL released while the C loop runs."""
import http.server
import json
import os
import re
import threading
import time

import pytest

import esg
from conftest import event


def line(i, **extra):
    return json.dumps(event(i, **extra), separators=(",", ":")).encode()


def claim_result(store, key):
    """The stored result of a completed claim (decoded), or the claim's status otherwise."""
    c = store.claim(key, None, lease=1)
    if c.status == "new":
        store.release(key, c.token)
        return "new"
    if c.status == "busy":
        return "busy"
    return json.loads(c.result) if c.result else None


class Collect:
    """A callback sink that keeps what it gets."""

    def __init__(self):
        self.outs, self.ctxs = [], []

    def __call__(self, out, ctx):
        self.outs.append(out)


@pytest.fixture
def got():
    return Collect()


# ---------------------------------------------------------------- outcomes --

def test_delivered_then_duplicate(store, got):
    with esg.Gateway(store, sink=got) as gw:
        assert gw.push(line(1)) == "delivered"
        assert gw.push(line(1)) == "duplicate"
        assert gw.push(b"  \r") == "blank"
        st = gw.stats
    assert got.outs == [line(1)]  # no transform: the bytes as received
    assert (st["received"], st["delivered"], st["duplicates"], st["faults"]) == (2, 1, 1, 0)
    assert claim_result(store, "evt-1") is None  # delivered: completed without a result


def test_filtered_dropped_stale_echo(store, got):
    def entity(ev, ctx):
        return ("thing:" + ev["thing"]["id"], ev["thing"]["price"])

    gw = esg.Gateway(store, filter=lambda ev, ctx: ev["type"] != "skip", entity=entity,
                     latch={"flag": True}, transform=lambda ev, ctx: None if ev.get("drop") else ev, sink=got)
    assert gw.push(line(1, type="skip")) == "filtered"
    assert gw.push(line(2, drop=True)) == "dropped"
    assert gw.push(line(3)) == "delivered"                      # thing-3 at version 3
    assert gw.push(line(4, thing={"id": "thing-3", "price": 2})) == "stale"
    assert gw.push(line(5, latched=True)) == "echo"
    st = gw.stats
    assert (st["filtered"], st["dropped"], st["delivered"], st["stale"], st["echoes"]) == (1, 1, 1, 1, 1)
    gw.close()
    assert claim_result(store, "evt-1") == "new"                 # filtered before anything is stored
    assert claim_result(store, "evt-2") == {"status": "dropped"}
    assert claim_result(store, "evt-4") == {"status": "stale"}
    assert claim_result(store, "evt-5") == {"status": "echo"}
    assert store.get_entity("thing:thing-3").version == 3       # written once delivered
    assert gw.stats["delivered"] == 1                           # still readable once closed


def test_a_step_raising_is_a_fault_of_its_stage(store, got):
    faults = []

    def transform(ev, ctx):
        if ev["id"] == "evt-2":
            raise ValueError("cannot map " + ev["id"])
        return {"dealId": ev["id"]}

    with esg.Gateway(store, name="deals", transform=transform, sink=got, on_fault=faults.append) as gw:
        assert gw.push(line(1)) == "delivered"
        assert gw.push(line(2)) == "fault"
        assert gw.push(line(2)) == "duplicate"  # a rerun never repeats a fault
    [f] = faults
    assert isinstance(f, esg.GatewayFault)
    assert (f.event_id, f.stage, f.error, f.http_status, f.attempts, f.line) == (
        "evt-2", "transform", "ValueError: cannot map evt-2", 0, 1, None)
    [rec] = store.faults()
    assert rec.id == f.id and rec.stage == "transform" and rec.event == line(2)
    assert rec.error.splitlines() == ["ValueError: cannot map evt-2", "(gateway deals)"]
    assert claim_result(store, "evt-2") == {"status": "fault", "fault": f.id}
    assert got.outs == [{"dealId": "evt-1"}]


@pytest.mark.parametrize("step", ["filter", "key", "hash", "entity", "echo", "transform"])
def test_each_hook_raising_names_its_stage(store, step):
    def boom(*args):
        raise RuntimeError("no " + step)

    stage = {"filter": "filter", "key": "idempotence", "hash": "idempotence", "entity": "idempotence",
             "echo": "latch", "transform": "transform"}[step]
    with esg.Gateway(store, sink=lambda out, ctx: None, **{step: boom}) as gw:
        assert gw.push(line(1)) == "fault"
    [f] = store.faults()
    assert (f.stage, f.error.splitlines()[0]) == (stage, f"RuntimeError: no {step}")


def test_hook_results_of_the_wrong_type_are_faults(store):
    with esg.Gateway(store, key=lambda ev, ctx: 42, sink=lambda o, c: None) as gw:
        assert gw.push(line(1)) == "fault"
    assert store.faults()[0].error.startswith("TypeError: key must return str or None, not int")


def test_parse_faults(store, got):
    with esg.Gateway(store, sink=got) as gw:
        assert gw.push(b"not json") == "fault"
        assert gw.push(b'{"id":"p1","timestamp":1}') == "fault"  # no type
    a, b = store.faults()
    assert a.stage == "parse" and a.event_id.startswith("unparsed:") and a.event == b"not json"
    assert b.stage == "parse" and b.event_id == "p1"
    assert got.outs == []


def test_idempotence_options(store, got):
    with esg.Gateway(store, idempotence=False, sink=got) as gw:
        assert [gw.push(line(1)), gw.push(line(1))] == ["delivered", "delivered"]
    assert claim_result(store, "evt-1") == "new"
    with esg.Gateway(store, key=lambda ev, ctx: "k/" + ev["id"], hash=lambda ev, ctx: ev["type"], sink=got) as gw:
        assert gw.push(line(1)) == "delivered"
        assert gw.push(line(1, extra=1)) == "duplicate"            # same key, same hash (the type)
        assert gw.push(line(1, type="other")) == "fault"           # same key, other payload
    assert store.faults()[-1].stage == "idempotence" and "payload" in store.faults()[-1].error
    with esg.Gateway(store, key=lambda ev, ctx: "h/" + ev["id"], hash=False, sink=got) as gw:
        assert gw.push(line(9)) == "delivered"
        assert gw.push(line(9, changed=True)) == "duplicate"       # no payload check at all


# ------------------------------------------------------------------- ctx --

def test_ctx_contents(store, capsys):
    seen = []

    def transform(ev, ctx):
        seen.append((ctx.store is store, ctx.name, ctx.line, ctx.event_id, ctx.event.id, ctx.event.hash,
                     ctx.now()))
        ctx.log("mapped", ev["id"], 1)
        # the store is usable in a step, as in a C step
        ctx.store.upsert("seen:" + ev["id"], 1, {"ok": True})
        return {"id": ev["id"]}

    raw = line(1) + b"\r"
    with esg.Gateway(store, name="ctxgw", transform=transform, sink=lambda o, c: None) as gw:
        assert gw.push(raw) == "delivered"
    [(same, name, ln, eid, evid, evhash, now)] = seen
    assert same and name == "ctxgw" and ln == line(1) and eid == evid == "evt-1"
    assert evhash == esg.sha256(line(1)) and now == store.now()
    assert "[ctxgw] mapped evt-1 1\n" in capsys.readouterr().err
    assert store.get_entity("seen:evt-1").doc == {"ok": True}


def test_ctx_is_for_the_current_event_only(store):
    kept = []
    with esg.Gateway(store, filter=lambda ev, ctx: kept.append(ctx) or True, sink=lambda o, c: None) as gw:
        gw.push(line(1))
        ctx = kept[0]
        assert ctx.name == "gateway" and ctx.store is store  # the gateway's, any time
        with pytest.raises(esg.StateError):
            ctx.line
        with pytest.raises(esg.StateError):
            ctx.event_id


def test_ev_is_one_dict_per_event_shared_by_the_steps(store, got):
    def filt(ev, ctx):
        ev["seen_by_filter"] = True
        return True

    with esg.Gateway(store, filter=filt, transform=lambda ev, ctx: ev, sink=got) as gw:
        gw.push(line(1))
    assert got.outs[0]["seen_by_filter"] is True


def test_a_step_may_not_call_its_gateway(store):
    holder = {}

    def transform(ev, ctx):
        holder["gw"].push(line(99))

    with esg.Gateway(store, transform=transform, sink=lambda o, c: None) as gw:
        holder["gw"] = gw
        assert gw.push(line(1)) == "fault"
    assert store.faults()[0].error.startswith("StateError: the gateway is running this step")
    assert claim_result(store, "evt-99") == "new"


def test_the_store_cannot_be_closed_from_a_step(store):
    with esg.Gateway(store, transform=lambda ev, ctx: ctx.store.close(), sink=lambda o, c: None) as gw:
        assert gw.push(line(1)) == "fault"
    assert not store.closed
    assert "cannot be closed from a gateway step" in store.faults()[0].error


# ---------------------------------------------------------------- output --

def test_transform_results(store, got):
    outs = {1: {"b": 1, "a": [1, 2]}, 2: "text as is", 3: b"bytes as is", 4: None, 5: False, 6: [1, "x"]}
    written = []
    with esg.Gateway(store, transform=lambda ev, ctx: outs[ev["thing"]["price"]],
                     sink=esg.sink.callback(got)) as gw:
        assert [gw.push(line(i)) for i in range(1, 7)] == ["delivered"] * 3 + ["dropped"] * 2 + ["delivered"]
    assert got.outs == [outs[1], outs[2], outs[3], outs[6]]  # the objects transform returned


def test_jsonl_sink_encodes_compactly_sorted_by_name(store, tmp_path):
    # members sorted at every depth, as Lua writes a table: one output, the same bytes in both
    out = tmp_path / "out.jsonl"
    gw = esg.Gateway(store, transform=lambda ev, ctx: {"z": ev["id"], "a": "é", "m": [1, {"y": 2, "b": 3}]},
                     sink=esg.sink.jsonl(out))
    gw.push(line(1))
    gw.push(line(2))
    gw.close()
    assert out.read_bytes() == ('{"a":"é","m":[1,{"b":3,"y":2}],"z":"evt-1"}\n'
                                '{"a":"é","m":[1,{"b":3,"y":2}],"z":"evt-2"}\n').encode()


def test_stdout_sink_writes_fd_1(store, capfd):
    with esg.Gateway(store) as gw:  # the default sink
        gw.push(line(1))
    assert capfd.readouterr().out == line(1).decode() + "\n"


def test_eventlog_sink(store):
    def transform(ev, ctx):
        return {"id": "out-" + ev["id"], "type": "deal-created", "timestamp": ev["timestamp"],
                "partitionKey": "deals", "deal": ev["id"]}

    with esg.Gateway(store, transform=transform, sink=esg.sink.eventlog(key="all-deals", ttl=60)) as gw:
        assert gw.push(line(1)) == "delivered"
        assert gw.push(line(2)) == "delivered"
    assert [e["id"] for e in store.events("all-deals")] == ["out-evt-1", "out-evt-2"]
    with esg.Gateway(store, transform=lambda ev, ctx: {"not": "an envelope"}, sink=esg.sink.eventlog()) as gw:
        assert gw.push(line(3)) == "fault"
    assert store.faults()[0].stage == "sink" and "envelope" in store.faults()[0].error


def test_sink_raising_is_a_sink_fault(store):
    def sink(out, ctx):
        raise OSError("disk full")

    with esg.Gateway(store, sink=sink) as gw:
        assert gw.push(line(1)) == "fault"
    assert (store.faults()[0].stage, store.faults()[0].error.splitlines()[0]) == ("sink", "OSError: disk full")


# ---------------------------------------------------------------- enrich --

def test_enrich_collect_lookup_into_and_output(store, got):
    cust = {"id": "c-1", "type": "customer-updated", "timestamp": 1, "customer": {"id": "c-1", "name": "Ada"}}
    order = {"id": "o-1", "type": "order-placed", "timestamp": 2, "order": {"id": "o1", "customer": "c-1"}}
    seen = []

    def transform(ev, ctx):
        seen.append(ev.get("cust"))
        return None if ev["type"] == "customer-updated" else {"order": ev["order"]["id"], "name": ev["cust"]["name"]}

    enrich = {"collect": True, "cache": {"ttl": 300, "collect_field": "customer"},
              "key": lambda ev, ctx: "customer/" + ev["order"]["customer"] if "order" in ev else None,
              "into": "cust"}
    with esg.Gateway(store, enrich=enrich, transform=transform, sink=got) as gw:
        assert gw.push(json.dumps(cust)) == "dropped"
        assert gw.push(json.dumps(order)) == "delivered"
    assert got.outs == [{"order": "o1", "name": "Ada"}]
    assert seen == [None, {"id": "c-1", "name": "Ada"}]


def test_enrich_load_required_and_fn(store, got):
    calls = []

    def load(key):
        calls.append(key)
        return esg.ABSENT if key.endswith("nobody") else {"name": key.split("/")[1]}

    def fn(ev, ctx):
        ev["extra"] = ev["who"]["name"].upper()  # in place, None returned: ev is the event

    def filt(ev, ctx):
        ev["kept"] = True  # what a step before the lookup did to ev stays
        return True

    enrich = {"key": lambda ev, ctx: "person/" + ev["person"], "load": load, "into": "who", "required": True,
              "fn": fn}
    with esg.Gateway(store, filter=filt, enrich=enrich, sink=got) as gw:
        assert gw.push(line(1, person="ada")) == "delivered"
        assert gw.push(line(2, person="ada")) == "delivered"     # cached: loaded once
        assert gw.push(line(3, person="nobody")) == "fault"      # required, known absent
    assert calls == ["person/ada", "person/nobody"]
    out = got.outs[0]  # no transform: the enriched event (a dict)
    assert out["who"] == {"name": "ada"} and out["extra"] == "ADA" and out["kept"] is True
    f = store.faults()[0]
    assert f.stage == "enrich" and "no value for person/nobody (known absent)" in f.error


def test_enrich_function_replaces_the_event_and_loader_errors_are_faults(store, tmp_path):
    out = tmp_path / "o.jsonl"
    with esg.Gateway(store, enrich=lambda ev, ctx: dict(ev, enriched=1), sink=esg.sink.jsonl(out)) as gw:
        gw.push(line(1))
    assert json.loads(out.read_bytes())["enriched"] == 1

    def load(key):
        raise ConnectionError("crm down")

    with esg.Gateway(store, enrich={"key": lambda ev, ctx: "k/" + ev["id"], "load": load},
                     sink=lambda o, c: None) as gw:
        assert gw.push(line(2)) == "fault"
    f = store.faults()[0]
    assert f.stage == "enrich" and "ConnectionError: crm down" in f.error


# ----------------------------------------------------------------- latch --

def test_two_way_sync_with_content_latches(store):
    shop, crm = [], []
    a_to_b = esg.Gateway(store, name="shop->crm", latch={"key": lambda ev, ctx: "contact:" + ev["contact"]["id"],
                                                         "from": "shop", "to": "crm"},
                         transform=lambda ev, ctx: {"contact": ev["contact"]}, sink=lambda o, c: crm.append(o),
                         key=lambda ev, ctx: "a:" + ev["id"])
    b_to_a = esg.Gateway(store, name="crm->shop", latch={"key": lambda ev, ctx: "contact:" + ev["contact"]["id"],
                                                         "from_": "crm", "to": "shop"},
                         transform=lambda ev, ctx: {"contact": ev["contact"]}, sink=lambda o, c: shop.append(o),
                         key=lambda ev, ctx: "b:" + ev["id"])
    change = {"id": "s1", "type": "contact-updated", "timestamp": 1, "contact": {"id": "1", "name": "Ada"}}
    assert a_to_b.push(json.dumps(change)) == "delivered"      # the genuine change crosses
    echo = dict(change, id="c1", timestamp=2)                   # the CRM reports our write back
    assert b_to_a.push(json.dumps(echo)) == "echo"              # and it stops
    edit = dict(change, id="c2", timestamp=3, contact={"id": "1", "name": "Grace"})
    assert b_to_a.push(json.dumps(edit)) == "delivered"         # a CRM user's edit crosses back
    assert a_to_b.push(json.dumps(dict(edit, id="s2", timestamp=4))) == "echo"
    assert crm == [{"contact": {"id": "1", "name": "Ada"}}] and shop == [{"contact": {"id": "1", "name": "Grace"}}]
    a_to_b.close()
    b_to_a.close()


def test_echo_function(store, got):
    with esg.Gateway(store, echo=lambda ev, ctx: ev.get("origin") == "us", sink=got) as gw:
        assert [gw.push(line(1, origin="us")), gw.push(line(2))] == ["echo", "delivered"]


def test_bad_options(store):
    with pytest.raises(esg.InvalidArgumentError, match="from, to or flag"):
        esg.Gateway(store, latch={"key": lambda ev, ctx: "k"})
    with pytest.raises(TypeError, match="unknown key 'frm'"):
        esg.Gateway(store, latch={"key": lambda ev, ctx: "k", "frm": "a"})
    with pytest.raises(TypeError, match="unknown key"):
        esg.Gateway(store, enrich={"keys": None})
    with pytest.raises(esg.InvalidArgumentError, match="enrich_required needs enrich_key"):
        esg.Gateway(store, enrich={"required": True})
    with pytest.raises(TypeError):
        esg.Gateway(store, transform="not callable")
    with pytest.raises(TypeError):
        esg.Gateway(store, sink=42)
    with pytest.raises(TypeError, match="unexpected keyword argument 'retries'"):
        esg.sink.http("http://127.0.0.1:9/", retries=3)
    with pytest.raises(esg.InputOutputError):
        esg.Gateway(store, sink=esg.sink.jsonl("/nonexistent/dir/out.jsonl"))
    with pytest.raises(TypeError):
        esg.Gateway("not a store")


# --------------------------------------------------------------- sources --

def test_run_over_a_file_twice(store, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_bytes(b"\n".join(line(i) for i in range(20)) + b"\n\nnot json\n" + line(20))  # last line: no newline
    faults = []
    gw = esg.Gateway(store, transform=lambda ev, ctx: {"id": ev["id"], "price": ev["thing"]["price"]},
                     sink=esg.sink.jsonl(out), on_fault=faults.append)
    st = gw.run(str(src))
    assert (st["received"], st["delivered"], st["faults"]) == (22, 21, 1)
    assert faults[0].stage == "parse" and faults[0].line == 22  # the blank line counts as a line
    assert store.faults()[0].error.splitlines()[1] == "at line 22 (gateway gateway)"
    st = gw.run(esg.source.jsonl(src))
    assert (st["received"], st["delivered"], st["duplicates"]) == (44, 21, 21)
    gw.close()
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0] == {"id": "evt-0", "price": 0} and len(rows) == 21


def test_run_over_lines_and_the_gateway_source(store, got, tmp_path):
    gw = esg.Gateway(store, source=esg.source.lines([line(1), line(2).decode(), event(3), esg.parse_event(line(4))]),
                     sink=got)
    assert gw.run()["delivered"] == 4
    assert gw.run(iter([line(5)]))["delivered"] == 5
    gw.close()
    assert got.outs[2] == json.dumps(event(3), separators=(",", ":"), ensure_ascii=False).encode()


def test_an_iterable_raising_stops_the_run(store, got):
    def gen():
        yield line(1)
        raise LookupError("feed broken")

    with esg.Gateway(store, sink=got) as gw:
        with pytest.raises(LookupError, match="feed broken"):
            gw.run(gen())
        assert gw.stats["delivered"] == 1


def test_keyboard_interrupt_in_a_step_stops_the_run(store, got):
    def transform(ev, ctx):
        if ev["id"] == "evt-2":
            raise KeyboardInterrupt
        return ev

    with esg.Gateway(store, transform=transform, sink=got) as gw:
        with pytest.raises(KeyboardInterrupt):
            gw.run([line(i) for i in range(1, 10)])
        assert gw.stats["delivered"] == 1  # the run stopped at the interrupted event (a fault)
    assert store.faults()[0].error.startswith("KeyboardInterrupt")


def test_progress_is_called(store, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(line(i) for i in range(300)))
    calls = []
    with esg.Gateway(store, sink=esg.sink.jsonl(tmp_path / "o.jsonl")) as gw:
        gw.run(src, progress=calls.append)
    assert calls and isinstance(calls[0], dict) and "received" in calls[0]


def test_replay_source(store, got):
    for i in range(3):
        store.put_event(event(i, partitionKey="k"))
    with esg.Gateway(store, sink=got) as gw:
        assert gw.run(esg.source.replay(corr_key="k"))["delivered"] == 3
        assert gw.run(esg.source.replay(corr_key="k"))["duplicates"] == 3
    assert [json.loads(o)["id"] for o in got.outs] == ["evt-0", "evt-1", "evt-2"]


def test_gateway_as_the_sink_of_a_cursor_job_and_a_snapshot(store, got):
    def fetch(cursor):
        if cursor is None:
            return [{"id": "inv-1", "version": 1, "type": "invoice-seen", "data": {"n": 1}}], "p2", False
        return [{"id": "inv-2", "version": 1, "type": "invoice-seen", "data": {"n": 2}}], "p3", True

    faults = []
    with esg.Gateway(store, transform=lambda ev, ctx: {"t": ev["type"], "ctx": ctx.event_id == ev["id"]},
                     sink=got, on_fault=faults.append) as gw:
        st = store.cursor_run("invoices", "legacy", fetch, sink=gw)
        assert (st.pages, st.emitted) == (2, 2)
        assert gw.stats["delivered"] == 2
        with store.snapshot("crm", sink=gw, type="customer") as sn:
            sn.add("c1", {"name": "Ada"})
            sn.finish()
        assert gw.stats["delivered"] == 3
        assert gw.push(line(1)) == "delivered"  # usable again after the resync
    assert got.outs[:3] == [{"t": "invoice-seen", "ctx": True}] * 2 + [{"t": "customer-created", "ctx": True}]
    other = esg.Store(":memory:")
    with esg.Gateway(other, sink=got) as gw2, pytest.raises(esg.InvalidArgumentError, match="another store"):
        store.cursor_run("x", "y", fetch, sink=gw2)
    other.close()


# ------------------------------------------------------------- resubmit --

def test_resubmit_after_fixing_the_step(store, got):
    def broken(ev, ctx):
        raise KeyError("price")

    with esg.Gateway(store, transform=broken, sink=got) as gw:
        assert gw.push(line(1)) == "fault"
        assert gw.push(line(2)) == "fault"
    f1, f2 = store.faults()
    fixed = esg.Gateway(store, transform=lambda ev, ctx: {"id": ev["id"]}, sink=got)
    assert fixed.resubmit(f1.id) == "delivered"
    assert fixed.resubmit(f1.id) == "not_found"
    assert fixed.push(line(1)) == "duplicate"   # handled: a rerun sends nothing again
    assert [f.id for f in store.faults()] == [f2.id]
    assert fixed.stats["resubmitted"] == 1
    fixed.close()
    again = esg.Gateway(store, transform=broken, sink=got)
    assert again.resubmit(f2.id) == "fault"     # failed again: a new fault replaces it
    [f3] = store.faults()
    assert f3.id != f2.id and f3.attempts == 2 and f3.first_attempt == f2.first_attempt
    again.close()
    assert got.outs == [{"id": "evt-1"}]


# ------------------------------------------------------------------ HTTP --

class Receiver(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        srv = self.server
        key = self.headers.get("Idempotency-Key")
        with srv.lock:
            srv.requests.append((self.command, self.path, key, body, dict(self.headers)))
            srv.seen[key] = n = srv.seen.get(key, 0) + 1
        path = self.path.split("?")[0]
        if path == "/bad":
            self.answer(422, b'{"error":"bad"}')
        elif path == "/flaky" and n == 1:
            self.answer(503)
        else:
            self.answer(201 if path == "/created" else 204)

    do_PUT = do_POST

    def answer(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    srv.daemon_threads = True
    srv.lock = threading.Lock()
    srv.requests, srv.seen = [], {}
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


FAST = dict(backoff_base=0.001, backoff_cap=0.01, timeout=5.0, connect_timeout=2.0)


def test_http_sink_2xx(store, server):
    with esg.Gateway(store, transform=lambda ev, ctx: {"deal": ev["id"]},
                     sink=esg.sink.http(server.url + "/created", headers={"X-Test": "1"}, **FAST)) as gw:
        assert gw.push(line(1)) == "submitted"
        assert gw.push(line(1)) in ("duplicate",)    # its own delivery in flight, or done
        gw.drain()
        st = gw.stats
        assert (st["delivered"], st["in_flight"], st["faults"]) == (1, 0, 0)
        assert gw.push(line(1)) == "duplicate"
    [(method, path, key, body, headers)] = server.requests
    assert (method, path, key, body, headers["X-Test"]) == ("POST", "/created", "evt-1", b'{"deal":"evt-1"}', "1")
    assert json.loads(store.claim("evt-1").result)["status"] == 201


def test_http_sink_4xx_is_a_deliver_fault(store, server):
    faults = []
    with esg.Gateway(store, sink=esg.sink.http(server.url + "/bad", **FAST), on_fault=faults.append) as gw:
        st = gw.run([line(1)])
        assert (st["delivered"], st["faults"]) == (0, 1)
    [f] = faults
    assert (f.stage, f.http_status, f.attempts, f.event_id, f.line) == ("deliver", 422, 1, "evt-1", 1)
    [rec] = store.faults()
    assert rec.id == f.id and rec.http_status == 422 and rec.event == line(1)
    r = claim_result(store, "evt-1")
    assert r["status"] == "fault" and r["fault"] == f.id and r["http_status"] == 422


def test_http_sink_503_then_200(store, server):
    with esg.Gateway(store, sink=esg.sink.http(server.url + "/flaky", **FAST)) as gw:
        st = gw.run([line(1), line(2)])
        assert (st["delivered"], st["faults"], st["retries"]) == (2, 0, 2)
    assert [k for _, _, k, _, _ in server.requests].count("evt-1") == 2


def test_http_sink_url_body_and_method_per_event(store, server):
    sink = esg.sink.http(lambda out, ctx: f"{server.url}/items/{out['id']}?e={ctx.event_id}", method="PUT",
                         body=lambda out, ctx: {"wrapped": out}, **FAST)
    with esg.Gateway(store, transform=lambda ev, ctx: {"id": ev["thing"]["id"]}, sink=sink) as gw:
        gw.run([line(1)])
    [(method, path, key, body, _)] = server.requests
    assert (method, path, body) == ("PUT", "/items/thing-1?e=evt-1", b'{"wrapped":{"id":"thing-1"}}')


def test_http_resubmit_after_a_refusal(store, server):
    with esg.Gateway(store, sink=esg.sink.http(server.url + "/bad", **FAST)) as gw:
        gw.run([line(1)])
    [f] = store.faults()
    # by default a resubmission sends the request its first attempt stored (the outbox)
    with esg.Gateway(store, sink=esg.sink.http(server.url + "/created", **FAST)) as same:
        assert same.resubmit(f.id) == "fault"
    [f] = store.faults()
    assert f.attempts == 2
    # rerender: the fixed pipeline renders it again, to its own url
    with esg.Gateway(store, sink=esg.sink.http(server.url + "/created", rerender=True, **FAST)) as fixed:
        assert fixed.resubmit(f.id) == "delivered"
    assert store.faults() == []
    assert [p for _, p, _, _, _ in server.requests] == ["/bad", "/bad", "/created"]


# ------------------------------------------------------- threads, close --

def test_the_gil_is_released_while_the_loop_waits(store, tmp_path):
    r, w = os.pipe()
    out = tmp_path / "o.jsonl"
    gw = esg.Gateway(store, transform=lambda ev, ctx: {"id": ev["id"]}, sink=esg.sink.jsonl(out))
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("st", gw.run(r)))
    t.start()
    try:
        os.write(w, line(1) + b"\n")
        # pure Python work on this thread while run() waits for more input on the other
        n, deadline = 0, time.monotonic() + 0.3
        while time.monotonic() < deadline:
            n += 1
        assert t.is_alive() and n > 1000
        os.write(w, line(2) + b"\n")
    finally:
        os.close(w)
    t.join(10)
    os.close(r)
    assert result["st"]["delivered"] == 2
    gw.close()


def test_other_threads_run_during_a_run(db, tmp_path):
    # a real clock: a Python clock would take the GIL back for every store call
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(line(i) for i in range(3000)))
    ticks = [0]
    stop = threading.Event()

    def tick():
        while not stop.is_set():
            ticks[0] += 1

    t = threading.Thread(target=tick)
    with esg.Store(db) as store, esg.Gateway(store, sink=esg.sink.jsonl(tmp_path / "o.jsonl")) as gw:
        t.start()
        before = ticks[0]
        gw.run(src)
        during = ticks[0] - before
        stop.set()
    t.join()
    assert during > 1000


def test_closing_the_store_first_detaches_the_gateway(db, got):
    s = esg.Store(db)
    gw = esg.Gateway(s, sink=got)
    gw.push(line(1))
    s.close()
    assert gw.closed
    with pytest.raises(esg.StateError):
        gw.push(line(2))
    assert gw.stats["delivered"] == 1
    gw.close()
    gw.close()


def test_calls_after_close_raise(store, got):
    gw = esg.Gateway(store, sink=got)
    gw.close()
    assert gw.closed
    for call in (lambda: gw.push(line(1)), lambda: gw.run([]), gw.drain, lambda: gw.poll(0), lambda: gw.resubmit(1)):
        with pytest.raises(esg.StateError):
            call()


def test_poll_commits_a_due_group(db, clock, got):
    with esg.Store(db, clock=clock, group_commit=1.0) as s, esg.Gateway(s, sink=got) as gw:
        gw.push(line(1))
        clock.advance(2)
        gw.poll(0)
        with esg.Store(db, clock=clock) as other:  # another connection sees the committed group
            assert other.claim("evt-1", None).status == "duplicate"


# --------------------------------------------------------- python -m esg --

SCRIPT = '''
import esg

def transform(ev, ctx):
    if ev["id"] == "evt-3":
        raise ValueError("no price for " + ev["id"])
    return {"id": ev["id"], "price": ev["thing"]["price"]}

gateway = dict(name="prices", transform=transform, filter=lambda ev, ctx: ev["type"] != "skip")
'''


def esg_cmd(*args, cwd=None, stdin=None):
    import subprocess
    import sys
    pkg = os.path.dirname(os.path.dirname(esg.__file__))
    env = dict(os.environ, PYTHONPATH=pkg)
    return subprocess.run([sys.executable, "-m", "esg", *args], cwd=cwd, env=env, input=stdin,
                          capture_output=True, timeout=60)


def test_python_m_esg_run_twice(tmp_path):
    script, src, out, db = tmp_path / "prices.py", tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "p.db"
    script.write_text(SCRIPT)
    src.write_bytes(b"\n".join([line(1), line(2), line(3), line(4, type="skip"), line(5)]) + b"\n")
    r = esg_cmd("run", str(script), "-i", str(src), "-o", str(out), "--db", str(db))
    assert r.returncode == 1, r.stderr  # a fault was recorded
    err = r.stderr.decode().splitlines()
    assert err[0].startswith("prices: 5 received in ") and err[0].endswith(" s")
    assert err[1:7] == ["  delivered                 3", "  duplicates                0",
                        "  echoes suppressed         0", "  stale                     0",
                        "  faults                    1", "  (filtered 1)"]
    # what the store wrote, and what the commit mode trades
    written = re.fullmatch(r"  store writes       [0-9.]+ (bytes|KiB|MiB), (\d+) bytes per event", err[7])
    assert written and int(written.group(2)) > 1000, err[7]  # each claim committed: whole pages
    assert err[8].startswith("  commits            each claim at once: a crash loses nothing (--group-commit S")
    assert err[9:] == ["  fault 1: line 3 (evt-3), transform: ValueError: no price for evt-3"]
    assert r.stdout == b""
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows == [{"id": "evt-1", "price": 1}, {"id": "evt-2", "price": 2}, {"id": "evt-5", "price": 5}]
    r = esg_cmd("run", str(script), "-i", str(src), "-o", str(out), "--db", str(db))
    assert r.returncode == 0, r.stderr  # the second run: all duplicates (the fault's claim included)
    assert "  duplicates                4" in r.stderr.decode().splitlines()
    assert len(out.read_text().splitlines()) == 3
    with esg.Store(str(db)) as s:
        [f] = s.faults()
        assert f.stage == "transform" and f.event == line(3)
        runs = s.events("esg.runs")
        assert [r["run"]["delivered"] for r in runs] == [3, 0] and runs[0]["type"] == "esg.run"


def test_python_m_esg_run_defaults_stdin_stdout_and_a_function(tmp_path):
    script = tmp_path / "gw.py"
    script.write_text("def gateway():\n    return {'transform': lambda ev, ctx: {'id': ev['id']}}\n")
    r = esg_cmd("run", "gw.py", "-q", cwd=str(tmp_path), stdin=line(1) + b"\n" + line(2) + b"\n")
    assert (r.returncode, r.stdout, r.stderr) == (0, b'{"id":"evt-1"}\n{"id":"evt-2"}\n', b"")
    assert (tmp_path / "gw.db").exists()  # the script's path with .db


def test_python_m_esg_run_script_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "in.jsonl").write_bytes(line(1) + b"\n")
    (tmp_path / "sub" / "gw.py").write_text(
        "import esg\ngateway = dict(source=esg.source.jsonl('in.jsonl'), sink=esg.sink.jsonl('out.jsonl'))\n")
    r = esg_cmd("run", "sub/gw.py", "-q", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "sub" / "out.jsonl").read_bytes() == line(1) + b"\n"


@pytest.mark.parametrize("text,args,msg", [
    ("x = 1\n", [], "define gateway = dict(...)"),
    ("raise RuntimeError('broken')\n", [], "RuntimeError: broken"),
    ("gateway = dict(transfrom=None)\n", [], "unexpected keyword argument 'transfrom'"),
    ("gateway = {}\n", ["--group-commit", "x"], "invalid float value"),
])
def test_python_m_esg_run_setup_errors_exit_2(tmp_path, text, args, msg):
    (tmp_path / "gw.py").write_text(text)
    r = esg_cmd("run", "gw.py", *args, cwd=str(tmp_path), stdin=b"")
    assert r.returncode == 2 and msg in r.stderr.decode(), r.stderr


# ------------------------------------------------------------ and more --

def test_on_fault_raising_is_raised_when_the_call_ends(store):
    def on_fault(f):
        raise RuntimeError("reporting failed for " + f.event_id)

    with esg.Gateway(store, transform=lambda ev, ctx: 1 / 0, sink=lambda o, c: None, on_fault=on_fault) as gw:
        with pytest.raises(RuntimeError, match="reporting failed for evt-1"):
            gw.push(line(1))
        assert gw.stats["faults"] == 1
    assert store.faults()[0].error.startswith("ZeroDivisionError: division by zero")


def test_resubmit_busy_while_another_resubmitter_holds_the_fault(store, db, clock):
    with esg.Gateway(store, transform=lambda ev, ctx: 1 / 0, sink=lambda o, c: None) as gw:
        gw.push(line(1))
    [f] = store.faults()
    with esg.Store(db, clock=clock) as other:
        c = other.claim(f"esg.resubmit/{f.id}", None)
        with esg.Gateway(store, sink=lambda o, c: None) as fixed:
            assert fixed.resubmit(f.id) == "busy"
            other.release(f"esg.resubmit/{f.id}", c.token)
            assert fixed.resubmit(f.id) == "delivered"


def test_a_long_hash_is_taken_as_its_sha256(store):
    with esg.Gateway(store, hash=lambda ev, ctx: "x" * 100 + ev["type"], sink=lambda o, c: None) as gw:
        assert gw.push(line(1)) == "delivered"
        assert gw.push(line(1, other=True)) == "duplicate"
        assert gw.push(line(1, type="t2")) == "fault"  # another payload hash


def test_http_headers_as_a_list(store, server):
    sink = esg.sink.http(server.url + "/created", headers=["X-A: 1", ("X-B", "2")], idempotency_header="X-Key",
                         content_type="application/x-test", **FAST)
    with esg.Gateway(store, sink=sink) as gw:
        gw.run([line(1)])
    [(_, _, _, _, headers)] = server.requests
    assert (headers["X-A"], headers["X-B"], headers["X-Key"], headers["Content-Type"]) == (
        "1", "2", "evt-1", "application/x-test")


def test_stats_from_another_thread_wait_for_the_running_call(db, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(line(i) for i in range(2000)))
    with esg.Store(db) as s, esg.Gateway(s, sink=esg.sink.jsonl(tmp_path / "o.jsonl")) as gw:
        seen = []
        t = threading.Thread(target=lambda: seen.append(gw.run(src)))
        t.start()
        time.sleep(0.01)
        st = gw.stats  # waits for the store's lock, the GIL released
        t.join()
        assert st["received"] in (0, 2000) and seen[0]["delivered"] == 2000


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_gateway_does_not_cross_fork(store, got):
    gw = esg.Gateway(store, sink=got)
    gw.push(line(1))
    pid = os.fork()
    if pid == 0:  # the child: every call refuses, closing touches nothing of the parent's
        code = 1
        try:
            gw.push(line(2))
        except esg.StateError as e:
            code = 0 if "opened by process" in str(e) else 3
        gw.close()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert gw.push(line(2)) == "delivered"  # the parent's goes on
    gw.close()


def test_busy_while_another_worker_holds_the_claim(store, db, clock, got):
    with esg.Store(db, clock=clock) as other:
        c = other.claim("evt-1", None)
        with esg.Gateway(store, hash=False, sink=got) as gw:
            assert gw.push(line(1)) == "busy"
            assert gw.stats["busy"] == 1
            other.release("evt-1", c.token)
            assert gw.push(line(1)) == "delivered"


def test_the_store_is_lent_one_call_deep(store):
    def transform(ev, ctx):
        ctx.store.put_event(ev)  # one call from the step: fine
        # a callback of a call made from a step cannot use the store again
        return ctx.store.correlate(ev["id"], "r", lambda evs: ctx.store.now())

    with esg.Gateway(store, transform=transform, sink=lambda o, c: None) as gw:
        assert gw.push(line(1)) == "fault"
    assert store.faults()[0].error.startswith("StateError: the store is in use by this thread")
    assert store.get_event("evt-1")["id"] == "evt-1"


def test_the_loader_and_on_fault_must_not_use_the_store(store):
    seen = []

    def load(key):
        store.now()

    def on_fault(f):
        try:
            store.now()
        except esg.StateError as e:
            seen.append(str(e))

    with esg.Gateway(store, enrich={"key": lambda ev, ctx: "k", "load": load}, sink=lambda o, c: None,
                     on_fault=on_fault) as gw:
        assert gw.push(line(1)) == "fault"
    assert "StateError" in store.faults()[0].error and seen and "in use" in seen[0]


def test_progress_raising_stops_the_run(store, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(line(i) for i in range(200)))

    def progress(stats):
        raise RuntimeError("stop")

    with esg.Gateway(store, sink=esg.sink.jsonl(tmp_path / "o.jsonl")) as gw:
        with pytest.raises(RuntimeError, match="stop"):
            gw.run(src, progress=progress)
        assert gw.stats["received"] < 200


def test_the_documented_resync_example(store, tmp_path):
    pages = {None: ([{"id": "A-1", "version": 3, "type": "invoice-updated", "data": {"total": 5}}], "p2", False),
             "p2": ([{"id": "A-2", "version": 1, "type": "invoice-updated", "data": {"total": 7}}], "p3", True)}
    out = tmp_path / "out.jsonl"
    gw = esg.Gateway(store, transform=lambda ev, ctx: {"invoice": ev["entity"]}, sink=esg.sink.jsonl(out))
    store.cursor_run("invoices", "legacy-erp", lambda cursor: pages[cursor], sink=gw)
    st = gw.run(esg.source.replay(type="invoice-updated"))
    assert (st["delivered"], st["duplicates"]) == (2, 2)
    gw.close()
    assert [json.loads(x) for x in out.read_text().splitlines()] == [{"invoice": {"total": 5}},
                                                                     {"invoice": {"total": 7}}]


def test_enrich_without_a_value_keeps_the_bytes(store, got, tmp_path):
    # no value found: the event's JSON is unchanged, so without transform the bytes go as received
    out = tmp_path / "o.jsonl"
    with esg.Gateway(store, enrich={"key": lambda ev, ctx: "missing"}, sink=esg.sink.jsonl(out)) as gw:
        gw.push(line(1) + b" ")
    assert out.read_bytes() == line(1) + b" \n"
    with esg.Gateway(store, enrich={"key": lambda ev, ctx: "missing"}, sink=got) as gw:
        gw.push(line(2))
    assert got.outs == [json.loads(line(2))]  # out: the event as a dict after an enrich step


def test_entity_with_an_enriched_event(store, got):
    with esg.Gateway(store, entity=lambda ev, ctx: ("e:" + ev["id"], 1), enrich=lambda ev, ctx: dict(ev, more="x" * 50),
                     sink=got) as gw:
        assert gw.push(line(1)) == "delivered"
    assert store.get_entity("e:evt-1").doc["more"] == "x" * 50


# ------------------------------------------- as the Lua pipeline has them --

def test_entity_doc_and_loader_values_are_sorted_like_the_outputs(store, got):
    # (key, version, doc): doc is what is stored at that version, as Lua's third result; a dict
    # a step or the loader returns is JSON with its members sorted by name, as Lua writes tables
    gw = esg.Gateway(store, entity=lambda ev, ctx: ("thing:" + ev["id"], 2, {"z": 1, "a": {"y": 2, "b": 3}}),
                     enrich={"key": lambda ev, ctx: "c/1", "load": lambda key: {"name": "n", "id": key},
                             "into": "c"},
                     sink=got)
    assert gw.push(line(1)) == "delivered"
    gw.close()
    assert store.get_entity("thing:evt-1", raw=True).doc == b'{"a":{"b":3,"y":2},"z":1}'
    with esg.Cache(store) as cache:
        assert cache.get("c/1", raw=True).value == b'{"id":"c/1","name":"n"}'
    with esg.Gateway(store, entity=lambda ev, ctx: ("k", 1, {}, "extra")) as bad:
        assert bad.push(line(2)) == "fault"
    assert store.faults()[-1].error.startswith("TypeError: entity must return (key, version), (key, version, doc)")


def test_collect_with_a_function_picks_the_events(store, got):
    gw = esg.Gateway(store, enrich={"collect": lambda ev, ctx: ev["thing"]["price"] > 1,
                                    "cache": {"collect_field": "thing"}}, sink=got)
    gw.run([line(1), line(2)])
    gw.close()
    with esg.Cache(store) as cache:
        assert cache.get("thing/thing-1").result == "miss"   # price 1: not collected
        assert cache.get("thing/thing-2").result == "hit"
    with pytest.raises(TypeError):
        esg.Gateway(store, enrich={"collect": "yes"})


def test_http_sink_on_retry(store, server):
    retries = []
    sink = esg.sink.http(server.url + "/flaky", on_retry=lambda *a: retries.append(a), **FAST)
    with esg.Gateway(store, sink=sink) as gw:
        st = gw.run([line(1)])
    assert st["retries"] == 1
    [(event_id, attempt, status, delay, error)] = retries
    assert (event_id, attempt, status) == ("evt-1", 1, 503) and delay >= 0 and isinstance(error, str)
    with pytest.raises(TypeError):
        esg.sink.http(server.url, on_retry=1)


def test_fault_records_name_the_source_and_the_note(store, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"not json\n")
    with esg.Gateway(store, source=esg.source.jsonl(str(src))) as gw:
        gw.run()
    with esg.Gateway(store, fault_note="script s.py, run 1") as gw:
        gw.run([b"[]"])
    first, second = store.faults()
    assert first.error.split("\n")[1] == "at line 1 of %s (gateway gateway)" % src
    assert second.error.split("\n")[1] == "at line 1 (script s.py, run 1)"


def test_max_line_makes_a_longer_line_a_stored_fault(store, tmp_path):
    at = b'{"id":"at","type":"t","timestamp":1,"x":"' + b"0" * 100 + b'"}'
    over = b'{"id":"over","type":"t","timestamp":1,"x":"' + b"0" * 300 + b'"}'
    src = tmp_path / "in.jsonl"
    src.write_bytes(at + b"\n" + over + b"\n" + line(3) + b"\n")
    out = []
    gw = esg.Gateway(store, max_line=len(at), sink=esg.sink.callback(lambda o, ctx: out.append(o)))
    st = gw.run(str(src))
    gw.close()
    assert st["received"] == 3 and st["delivered"] == 2 and st["faults"] == 1
    [f] = store.faults()
    assert f.stage == "parse" and f.event == over[:len(at)]
    assert "a line of %d bytes is over the limit of %d" % (len(over), len(at)) in f.error
    with pytest.raises(ValueError, match="max_line"):
        esg.Gateway(store, max_line=esg.EVENT_MAX_BYTES + 1)


def test_python_m_esg_run_max_line(tmp_path):
    script, src, db = tmp_path / "g.py", tmp_path / "in.jsonl", tmp_path / "g.db"
    script.write_text("gateway = dict(idempotence=False)\n")
    src.write_bytes(line(1) + b"\n" + b'{"id":"big","type":"t","timestamp":1,"x":"' + b"y" * 5000 + b'"}\n' + line(2) + b"\n")
    r = esg_cmd("run", str(script), "-i", str(src), "--db", str(db), "--max-line", "1000")
    assert r.returncode == 1, r.stderr
    assert b"over the limit of 1000" in r.stderr and r.stdout.count(b"\n") == 2
    r = esg_cmd("run", str(script), "-i", str(src), "--db", str(db), "--max-line", str(esg.EVENT_MAX_BYTES + 1))
    assert r.returncode == 2 and b"--max-line" in r.stderr


def test_python_m_esg_run_group_commit_summary(tmp_path):
    script, src, db = tmp_path / "g.py", tmp_path / "in.jsonl", tmp_path / "g.db"
    script.write_text("gateway = dict()\n")
    src.write_bytes(b"\n".join(line(i) for i in range(200)) + b"\n")
    r = esg_cmd("run", str(script), "-i", str(src), "--db", str(db), "--group-commit", "0.5")
    assert r.returncode == 0, r.stderr
    err = r.stderr.decode().splitlines()
    per = int(re.search(r"store writes .*, (\d+) bytes per event", r.stderr.decode()).group(1))
    assert 0 < per < 1000, err  # grouped: many claims share each page written
    assert "  commits            grouped, up to 0.5 s: a crash repeats the last 0.5 s of events " \
           "(the sink may see them twice)" in err


def test_python_m_esg_run_progress_when_not_a_terminal(tmp_path):
    import subprocess
    import sys
    script, db = tmp_path / "g.py", tmp_path / "g.db"
    script.write_text("gateway = dict(name='prog')\n")
    pkg = os.path.dirname(os.path.dirname(esg.__file__))
    p = subprocess.Popen([sys.executable, "-m", "esg", "run", str(script), "--db", str(db), "--progress", "0.3"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         env=dict(os.environ, PYTHONPATH=pkg))
    time.sleep(1.0)  # the input pauses: the progress lines still come
    out, err = p.communicate(line(1) + b"\n", timeout=30)
    assert p.returncode == 0, err
    lines = re.findall(rb"prog: received \d+, delivered \d+, duplicates \d+, faults \d+ \([\d.]+ s\)\n", err)
    assert len(lines) >= 2 and b"\r" not in err, err
