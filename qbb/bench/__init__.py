"""Benchmarks: ``qbb bench NAME`` (shared/DESIGN.md, "Interfaces that scripts rely on").

Every benchmark yields :class:`Result` rows, one per measured case, with at least
``bench``, ``case``, ``metric``, ``value`` and ``unit`` (plus the anchor it is compared
to, where there is one). Benchmarks bound their own run time; ``quick`` shortens them.
Comparisons are made inside one run, as ratios, because the machines are shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Result:
    bench: str
    case: str
    metric: str
    value: float
    unit: str
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        row = asdict(self)
        row.update(row.pop("extra"))
        return row


def time_per_call(func: Callable[[], Any], budget_s: float) -> float:
    """Seconds per call of ``func``: the best of several batches within ``budget_s``."""
    batch = 1
    start = time.perf_counter()
    while True:  # grow the batch until one batch takes >= 1/20 of the budget
        t0 = time.perf_counter()
        for _ in range(batch):
            func()
        elapsed = time.perf_counter() - t0
        if elapsed >= budget_s / 20 or batch >= 1 << 22:
            break
        batch *= 2
    best = elapsed / batch
    while time.perf_counter() - start < budget_s:
        t0 = time.perf_counter()
        for _ in range(batch):
            func()
        best = min(best, (time.perf_counter() - t0) / batch)
    return best


def registry() -> dict[str, Callable[[bool], Iterator[Result]]]:
    """Benchmark name -> function(quick) yielding results."""
    from qbb.bench import codecs, keys, keystore, link, relay, routing

    return {"codecs": codecs.run, "keys": keys.run, "keystore": keystore.run, "link": link.run,
            "relay": relay.run, "routing": routing.run}
