"""`qbb bench keys` measures real deliveries: a 1-s window over one hop."""

import trio

from qbb.bench import keys


def test_one_hop_window_delivers_identical_keys_and_counts_link_key() -> None:
    measured = trio.run(keys._case, 1, 256, 64, 1.0)
    assert measured["identical"] and not measured["reuse"]
    assert measured["keys"] > 0 and measured["bits"] == 256 * measured["keys"]
    # eq. 7 over one hop: key_out is about 0.83 key_in for 256-bit keys over seconds; in a
    # window this short, frames padded before it and established in it weigh heavily
    assert 0.3 * measured["used"] < measured["established_bits"] < 3 * measured["used"]
    assert measured["cpu"] > 0
    rows = list(keys._rows("1hop/256bit", 1, 256, measured))
    assert [r.metric for r in rows] == ["rate", "key_efficiency", "link_share"]
    assert rows[1].extra["ideal"] == 1.0 and rows[1].extra["key_out_bits"] > 0
    assert 0.3 < rows[1].value < 3 and rows[0].extra["cpu_s"] > 0
