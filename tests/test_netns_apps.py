"""Applications in node namespaces obtain identical keys across a 5-node network (root).

Every node runs as its own process in its own network namespace (qbb.emulated), with
its key API on that namespace's loopback; the applications are `qbb key` processes
started inside the client's and the server's namespaces (SECOQC §3.4 phases:
register, connect, secure communication).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qbb import netns
from qbb.emulated import EmulatedNetwork
from qbb.topology import load_topology

pytestmark = [pytest.mark.netns,
              pytest.mark.skipif(not netns.is_root(), reason="network namespaces need root")]
RING5 = Path(__file__).resolve().parent.parent / "topologies" / "ring5.json"


def test_applications_in_namespaces_get_identical_keys_across_ring5() -> None:
    topology = load_topology(RING5)
    with EmulatedNetwork(topology, RING5, key_api_port=7400) as net:
        assert net.wait_converged(timeout=30) is not None
        across = net.app_stream("A", "C", "vpn-c", keys=24, bits=512)   # two hops
        other = net.app_stream("D", "A", "vpn-a", keys=8, bits=256)     # two hops, other way
        unknown = net.key_cli("B", "open", "nobody", "--timeout", "5")
        _, err = unknown.communicate(timeout=30)
        net.close()
        assert net.key_reuse_detected() is False
    assert across["status"] == "SUCCESSFUL" and across["identical"] and across["keys"] == 24
    assert other["status"] == "SUCCESSFUL" and other["identical"] and other["keys"] == 8
    assert across["ksid"] != other["ksid"]
    assert unknown.returncode == 2 and "UNKNOWN_APPLICATION" in err
