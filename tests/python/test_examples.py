"""The worked integration example (examples/python/egress_gateway.py) runs end to end."""
import esg


def test_egress_gateway_demo(examples_path, db, capsys):
    import egress_gateway

    counts = egress_gateway.main(["--db", db, "--demo"])
    assert counts["received"] == 12           # 1 customer event, 9 orders, a redelivery, an echo
    assert counts["dropped"] == 1             # the customer event: collected into the cache, not sent
    assert counts["echoes"] == 1              # the "latched" order was not sent back
    assert counts["duplicates"] == 1          # the redelivery
    assert counts["faults"] == 1              # the negative amount: refused (400)
    assert counts["retries"] == 3             # orders 3, 6 and 9: a 503 first
    assert counts["resubmitted"] == 1 and counts["faults-left"] == 0
    assert counts["delivered"] == 9           # 8 at once (3 after a 503) + the resubmission
    assert counts["cache-loads"] == 2         # c2 and c9 (absent) loaded once each; c1 was collected
    assert "fault 1: order-evt-5 at deliver: HTTP 400" in capsys.readouterr().err
    with esg.Store(db) as s:
        assert s.faults() == []
        assert s.claim("order-evt-3", None).status == "duplicate"  # completed by the delivery
