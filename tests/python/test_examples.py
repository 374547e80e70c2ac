"""The worked integration example (examples/python/egress_gateway.py) runs end to end."""
import esg


def test_egress_gateway_demo(examples_path, db, capsys):
    import egress_gateway

    counts = egress_gateway.main(["--db", db, "--demo"])
    assert counts["collected"] == 1           # the customer event went to the cache
    assert counts["skipped-latched"] == 1     # the echo was not sent back
    assert counts["submitted"] == 9
    assert counts["faulted"] == 1             # the negative amount: refused (400)
    assert counts["resubmitted"] == 1 and counts["faults-left"] == 0
    assert counts["delivered"] == 9           # 8 at once (3 after a 503) + the resubmission
    assert counts["cache-loads"] == 2         # c2 and c9 (absent) loaded once each; c1 was collected
    with esg.Store(db) as s:
        assert s.faults() == []
        assert s.claim("order-evt-3", None).status == "duplicate"  # completed by the delivery
