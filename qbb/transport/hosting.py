"""Run a node's QKDTL service and, optionally, its application key API (seed 002 §3.4).

One call for both run modes (:mod:`qbb.network`, :mod:`qbb.nodeproc`)::

    driver = await nursery.start(host_transport, node, relay, key_api=("127.0.0.1", 7400))

attaches a :class:`~qbb.transport.driver.TransportDriver` to ``node`` (protocol 253, and
ICMP unless the caller forwards ICMP itself: ``icmp=False``), runs it, and serves the
ETSI GS QKD 004-style key API (:mod:`qbb.keyapi.server`, docs/keyapi.md) on
``key_api`` when given, over the driver's :class:`~qbb.keyapi.model.KeyBackend`.
Everything stops when the enclosing scope is cancelled (a node stop); a restarted node
gets a new driver and binds the same API port again.
"""

from __future__ import annotations

import functools

import trio

from qbb.keyapi.server import KeyApiServer
from qbb.transport.connection import ConnectionConfig
from qbb.transport.driver import TransportDriver

__all__ = ["host_transport"]


async def host_transport(node, relay=None, *, config: ConnectionConfig | None = None,
                         key_api: tuple[str, int] | None = None, icmp: bool = True,
                         task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Attach and run the transport of ``node``; ``task_status.started(driver)``."""
    options = {} if config is None else {"config": config}
    driver = TransportDriver.attach(node, relay=relay, icmp=icmp, **options)
    async with trio.open_nursery() as nursery:
        await nursery.start(driver.run)
        if key_api is not None:
            server = KeyApiServer(driver.backend)
            driver.key_api = server
            await nursery.start(functools.partial(server.serve, *key_api))
        task_status.started(driver)
