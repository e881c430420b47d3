#!/usr/bin/env python3
"""Write pcaps/synthetic-stack.pcap: one Q3P frame of every kind qbb puts on a link.

The capture is synthetic (built from ``qbb.samples``, not recorded on a running
network) and reproducible byte for byte; ``tests/test_dissect.py`` checks that the
committed file equals what this script writes.
"""

import argparse
from pathlib import Path

from scapy.utils import wrpcap

from qbb.samples import sample_capture

DEFAULT = Path(__file__).resolve().parent.parent / "pcaps" / "synthetic-stack.pcap"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output", nargs="?", default=str(DEFAULT), help=f"default: {DEFAULT}")
    args = parser.parse_args()
    packets = sample_capture()
    wrpcap(args.output, packets)
    print(f"wrote {len(packets)} packets to {args.output}")


if __name__ == "__main__":
    main()
