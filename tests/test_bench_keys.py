"""`qbb bench keys` measures real deliveries: a short window over one hop."""

import trio

from qbb.bench import keys


def test_one_hop_window_delivers_identical_keys_and_counts_link_key() -> None:
    measured = trio.run(keys._case, 1, 256, 64, 0.3)
    assert measured["identical"] and not measured["reuse"]
    assert measured["keys"] > 0 and measured["bits"] == 256 * measured["keys"]
    assert 0 < measured["bits"] <= measured["used"]  # eq. 7: key_out <= key_in on one hop
    rows = list(keys._rows("1hop/256bit", 1, 256, measured))
    assert [r.metric for r in rows] == ["rate", "key_efficiency", "link_share"]
    assert rows[1].extra["ideal"] == 1.0
