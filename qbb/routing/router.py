"""The sans-IO OSPF-derived router of a QBB node (seed 002 §2.5.1-2.5.2, Appendices A-C).

:class:`Router` composes the routing module's parts (RFC 2328 with point-to-point QBB
links only): interfaces (:mod:`~qbb.routing.interface`), the neighbour FSM table
(:mod:`~qbb.routing.neighbor`), Hellos (:mod:`~qbb.routing.hello`), database exchange
(:mod:`~qbb.routing.dbexchange`), flooding (:mod:`~qbb.routing.flooding`), per-area
LSDBs with aging (:mod:`~qbb.routing.lsdb`) and origination of its own LSAs
(:mod:`~qbb.routing.origination`).  It never reads a clock and does no I/O:

* inputs: :meth:`Router.receive` (OSPF packet bytes from an interface),
  :meth:`Router.handle_timer`, :meth:`Router.interface_up` / ``interface_down``,
  :meth:`Router.set_cost`, each with the current time ``now`` (seconds, any epoch);
* output of each input: a list of ``(interface address, packet bytes)`` to send; every
  packet is built with :func:`~qbb.routing.packet.encode_packet` and every received one
  parsed with :func:`~qbb.routing.packet.decode_packet`;
* :meth:`Router.next_timer`: when to call ``handle_timer`` next (None: no timer).

A bad packet is dropped and counted in ``drops`` by reason (``decode_error``,
``area_mismatch``, ``hello_interval_mismatch``, ``lsu_unknown_neighbor`` ...); nothing
from the wire raises.  ``stats`` counts packets sent by type, ``lsas_sent`` (LSAs carried
in LS Updates), retransmissions, originations and flushes.

Interfaces are named by their own address.  ``database(now)`` is the whole LSDB
(``{area id: {lsa_key: LSA}}``, MaxAge instances left out) and ``tables(now)`` the
routing tables from :func:`qbb.routing.spf.compute_tables` (None while that module is
absent).  An area border router re-computes its tables whenever an LSDB changes and
originates the Summary-LSAs returned by
:func:`qbb.routing.interarea.summaries_to_originate` (when present).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from qbb.errors import ConfigError, DecodeError
from qbb.routing import dbexchange, flooding, hello
from qbb.routing.common import Options
from qbb.routing.interface import Interface, InterfaceConfig
from qbb.routing.lsa import Lsa, lsa_key
from qbb.routing.lsdb import AreaLsdb, with_age
from qbb.routing.neighbor import Action, Neighbor, NeighborEvent, NeighborState, transition
from qbb.routing.origination import LS_REFRESH_TIME, MIN_LS_INTERVAL, Originator, router_lsa
from qbb.routing.packet import (
    DatabaseDescription, Hello, LinkStateAck, LinkStateRequest, LinkStateUpdate, OspfPacket,
    decode_packet, encode_packet)

from qbb.routing.interarea import FeasibilityState, summaries_to_originate
from qbb.routing.spf import compute_tables

__all__ = ["Router", "RouterConfig", "Output"]

Output = list[tuple[str, bytes]]
S = NeighborState


@dataclass(frozen=True, kw_only=True)
class RouterConfig:
    """Router-wide settings (RFC 2328 Appendix B constants made configurable).

    ``home_area``: the area whose Router-LSA carries the stub for the node's own /30
    (its node address); None - or an area the node has no interface in - advertises
    it in every area the node belongs to.
    """

    home_area: str | None = None
    node_mask: str = "255.255.255.252"
    min_ls_interval: float = MIN_LS_INTERVAL
    min_ls_arrival: float = 1.0
    ls_refresh_time: float = LS_REFRESH_TIME
    max_dd_headers: int = 50
    max_requests: int = 50
    max_update_lsas: int = 20
    options: Options = Options.E
    dd_sequence_seed: int | None = None
    #: seconds an ABR holds a destination whose preferred route is not feasible
    #: before resetting its feasible distance (qbb.routing.interarea); None: 3 x
    #: MinLSInterval, at least 5 s
    feasibility_hold: float | None = None


class Router:
    """One QBB node's routing protocol machine (see the module docstring)."""

    def __init__(self, router_id: str, config: RouterConfig | None = None,
                 interfaces: Iterable[InterfaceConfig] = ()) -> None:
        self.router_id = router_id
        self.config = config or RouterConfig()
        self.interfaces: dict[str, Interface] = {}
        self._lsdbs: dict[str, AreaLsdb] = {}
        self.originator = Originator(router_id, min_ls_interval=self.config.min_ls_interval,
                                     refresh_time=self.config.ls_refresh_time)
        self.drops: Counter[str] = Counter()
        self.stats: Counter[str] = Counter()
        self.last_decode_error: DecodeError | None = None
        self.content_version = 0
        self._out: Output = []
        self._dirty = True
        self._now = 0.0
        self._tables: tuple[int, Any] | None = None
        hold = self.config.feasibility_hold
        self.feasibility = FeasibilityState(
            max(5.0, 3 * self.config.min_ls_interval) if hold is None else hold)
        seed = self.config.dd_sequence_seed
        self._dd_sequence = seed if seed is not None else hash_id(router_id)
        for iface in interfaces:
            self.add_interface(iface)

    # -- commands ------------------------------------------------------------------

    def add_interface(self, config: InterfaceConfig) -> Interface:
        """Configure an interface (state Down until :meth:`interface_up`)."""
        if config.address in self.interfaces:
            raise ConfigError(f"interface {config.address} configured twice")
        iface = self.interfaces[config.address] = Interface(config)
        self.lsdb(config.area)
        self._dirty = True
        return iface

    def interface_up(self, address: str, now: float) -> Output:
        """Lower layer up (InterfaceUp, §9.3): first Hello goes out at once."""
        self._now = now
        iface = self._iface(address)
        if not iface.is_up:
            iface.up(now)
            hello.send_hello(self, iface, now)
            self._dirty = True
        return self._finish(now)

    def interface_down(self, address: str, now: float) -> Output:
        """Lower layer down (InterfaceDown, §9.3): the neighbour is killed."""
        self._now = now
        iface = self._iface(address)
        self.neighbor_event(iface, NeighborEvent.KILL_NBR, now)
        iface.down()
        self._dirty = True
        return self._finish(now)

    def set_cost(self, address: str, cost: int, now: float) -> Output:
        """Change an interface's output cost (e.g. from :class:`qbb.routing.cost.LinkCost`)."""
        self._now = now
        if not 1 <= cost <= 0xFFFF:
            raise ConfigError(f"cost {cost} outside 1..65535")
        self._iface(address).cost = cost
        self._dirty = True
        return self._finish(now)

    def receive(self, address: str, data: bytes, now: float) -> Output:
        """An OSPF packet arrived on interface ``address``."""
        self._now = now
        iface = self.interfaces.get(address)
        if iface is None or not iface.is_up:
            self.drop("interface_unknown_or_down")
            return self._finish(now)
        try:
            packet = decode_packet(data)
        except DecodeError as error:
            self.last_decode_error = error
            self.drop("decode_error")
            return self._finish(now)
        if packet.area_id != iface.area:
            self.drop("area_mismatch")
        elif packet.router_id == self.router_id:
            self.drop("own_router_id")
        elif packet.au_type != iface.config.au_type:
            self.drop("au_type_mismatch")
        else:
            _DISPATCH[type(packet.body)](self, iface, packet, packet.body, now)
        return self._finish(now)

    def handle_timer(self, now: float) -> Output:
        """Run every timer due at ``now``."""
        self._now = now
        for iface in list(self.interfaces.values()):
            self._interface_timers(iface, now)
        for area, lsdb in self._lsdbs.items():
            for key in lsdb.newly_expired(now):
                self.lsdb_changed(area)
                flooding.flood(self, area, lsdb.get(key).current(now), now)
        due = self.originator.next_due(self._lsdbs.values())
        if due is not None and due <= now + 1e-9:
            self._dirty = True
        if self.feasibility.expire(now):
            self.stats["feasibility_resets"] += 1
            self.content_version += 1  # the same LSDB now gives other tables
        return self._finish(now)

    def _interface_timers(self, iface: Interface, now: float) -> None:
        if iface.hello_due is not None and iface.hello_due <= now + 1e-9:
            hello.send_hello(self, iface, now)
        nbr = iface.neighbor
        if nbr is None:
            return
        if nbr.inactivity_due is not None and nbr.inactivity_due <= now + 1e-9:
            self.neighbor_event(iface, NeighborEvent.INACTIVITY_TIMER, now)
            return
        if nbr.dd_rxmt_due is not None and nbr.dd_rxmt_due <= now + 1e-9:
            dbexchange.on_dd_timer(self, iface, nbr, now)
        if nbr.request_due is not None and nbr.request_due <= now + 1e-9:
            dbexchange.on_request_timer(self, iface, nbr, now)
        if nbr.retransmission:
            flooding.on_retransmit_timer(self, iface, nbr, now)

    def next_timer(self) -> float | None:
        """The time of the next timer (call :meth:`handle_timer` then), or None."""
        times = [t for t in (self.originator.next_due(self._lsdbs.values()),
                             self.feasibility.next_due()) if t is not None]
        for iface in self.interfaces.values():
            if iface.hello_due is not None:
                times.append(iface.hello_due)
            due = iface.neighbor.next_due() if iface.neighbor is not None else None
            if due is not None:
                times.append(due)
        times += [t for t in (lsdb.next_expiry() for lsdb in self._lsdbs.values()) if t]
        return min(times) if times else None

    # -- observation ----------------------------------------------------------------

    def database(self, now: float | None = None) -> dict[str, dict[tuple, Lsa]]:
        """``{area: {lsa_key: LSA}}`` with ages as of ``now``, MaxAge instances left out."""
        when = self._now if now is None else now
        return {area: lsdb.snapshot(when) for area, lsdb in self._lsdbs.items()}

    def tables(self, now: float | None = None) -> Any:
        """Routing tables from :func:`qbb.routing.spf.compute_tables` (cached), or None."""
        if compute_tables is None:
            return None
        if self._tables is None or self._tables[0] != self.content_version:
            self.stats["spf_runs"] += 1
            when = self._now if now is None else now
            feasible = self.feasibility
            if not self.is_border():
                feasible.clear()
            tables = compute_tables(self.router_id, self.database(when), feasible.fd)
            if self.is_border():
                feasible.observe(tables, when)
            self._tables = (self.content_version, tables)
        return self._tables[1]

    def neighbors(self) -> dict[str, Neighbor]:
        """``{interface address: neighbour}`` for interfaces that have one."""
        return {a: i.neighbor for a, i in self.interfaces.items() if i.neighbor is not None}

    def is_border(self) -> bool:
        return len({i.area for i in self.interfaces.values()}) > 1

    def pending(self) -> bool:
        """True while LSAs await acknowledgement or request, an origination waits, or a
        destination is held by the feasibility condition."""
        return bool(self.originator.deferred or self.feasibility.held) or any(
            n.retransmission or n.request_list for n in self.neighbors().values())

    # -- context used by hello, dbexchange, flooding ---------------------------------

    @property
    def options(self) -> Options:
        return self.config.options

    def lsdb(self, area: str) -> AreaLsdb:
        if area not in self._lsdbs:
            self._lsdbs[area] = AreaLsdb(area)
        return self._lsdbs[area]

    def interfaces_in(self, area: str) -> list[Interface]:
        return [i for i in self.interfaces.values() if i.area == area]

    def exchanging(self, area: str) -> bool:
        """Some neighbour of ``area`` is in Exchange or Loading."""
        return any(i.neighbor is not None and i.neighbor.state in (S.EXCHANGE, S.LOADING)
                   for i in self.interfaces_in(area))

    def send(self, iface: Interface, body: Any) -> bytes:
        raw = encode_packet(OspfPacket(router_id=self.router_id, area_id=iface.area,
                                       body=body, au_type=iface.config.au_type))
        self.send_raw(iface, raw)
        self.stats[f"sent_{type(body).__name__}"] += 1
        return raw

    def send_raw(self, iface: Interface, raw: bytes) -> None:
        self._out.append((iface.address, raw))

    def send_update(self, iface: Interface, lsas: list[Lsa], now: float) -> None:
        """LS Update(s) carrying ``lsas``, each aged by InfTransDelay (§13.3)."""
        delay, size = iface.config.inf_trans_delay, self.config.max_update_lsas
        aged = [with_age(lsa, lsa.ls_age + delay) for lsa in lsas]
        for start in range(0, len(aged), size):
            self.send(iface, LinkStateUpdate(tuple(aged[start:start + size])))
        self.stats["lsas_sent"] += len(aged)

    def drop(self, reason: str) -> None:
        self.drops[reason] += 1

    def count(self, name: str, amount: int = 1) -> None:
        self.stats[name] += amount

    def neighbor_of(self, iface: Interface, packet: OspfPacket, kind: str) -> Neighbor | None:
        nbr = iface.neighbor
        if nbr is None or nbr.router_id != packet.router_id:
            self.drop(f"{kind}_unknown_neighbor")
            return None
        return nbr

    def exchanging_neighbor(self, iface: Interface, packet: OspfPacket,
                            kind: str) -> Neighbor | None:
        """The sender if known and at least in Exchange (RFC 2328 §10.7, §13, §13.7)."""
        nbr = self.neighbor_of(iface, packet, kind)
        if nbr is not None and nbr.state < NeighborState.EXCHANGE:
            self.drop(f"{kind}_neighbor_state")
            return None
        return nbr

    def new_dd_sequence(self) -> int:
        self._dd_sequence = (self._dd_sequence + 0x10001) & 0xFFFFFFFF
        return self._dd_sequence

    def lsdb_changed(self, area: str) -> None:
        self.content_version += 1

    def self_originated_received(self, area: str, key: tuple) -> None:
        self.originator.force(area, key)
        self._dirty = True

    def neighbor_event(self, iface: Interface, event: NeighborEvent, now: float) -> None:
        """Run the neighbour FSM (:data:`~qbb.routing.neighbor.TABLE`) and its actions."""
        nbr = iface.neighbor
        if nbr is None:
            return
        actions, nbr.state = transition(nbr.state, event)
        self.stats[f"nbr_{event.name}"] += 1
        for action in actions:
            _ACTIONS[action](self, iface, nbr, now)
        if nbr.state is S.DOWN and iface.neighbor is nbr:
            iface.neighbor = None

    # -- internals -------------------------------------------------------------------

    def _iface(self, address: str) -> Interface:
        if address not in self.interfaces:
            raise ConfigError(f"no interface {address} on router {self.router_id}")
        return self.interfaces[address]

    def _finish(self, now: float) -> Output:
        for _ in range(4):  # flush -> removal -> re-origination settles in a few rounds
            if self.is_border() and summaries_to_originate is not None:
                if self._tables is None or self._tables[0] != self.content_version:
                    self.tables(now)
                    self._dirty = True
            if self._dirty:
                self._originate(now)
            self._collect_maxage(now)
            if not self._dirty:
                break
        out, self._out = self._out, []
        return out

    def _originate(self, now: float) -> None:
        self._dirty = False
        configured = {i.area for i in self.interfaces.values()}
        for area in sorted(set(self._lsdbs) | configured):
            desired = self._desired(area, configured, now) if area in configured else {}
            for lsa in self.originator.reconcile(area, self.lsdb(area), desired, now):
                self.stats["lsas_originated"] += 1
                flooding.install(self, area, lsa, now)

    def _desired(self, area: str, configured: set[str], now: float) -> dict[tuple, Lsa]:
        home = self.config.home_area if self.config.home_area in configured else None
        node_mask = self.config.node_mask if home in (None, area) else None
        border = len(configured) > 1
        own = router_lsa(self.router_id, area, self.interfaces.values(),
                         node_mask=node_mask, border=border)
        desired: dict[tuple, Lsa] = {lsa_key(own): own}
        if border and summaries_to_originate is not None:
            wanted = summaries_to_originate(self.router_id, self.database(now), self.tables(now))
            desired.update((lsa_key(s), s) for s in wanted.get(area, ()))
        return desired

    def _collect_maxage(self, now: float) -> None:
        """Remove MaxAge LSAs nobody still has to acknowledge (§14)."""
        for area, lsdb in self._lsdbs.items():
            expired = lsdb.maxage_keys(now)
            if not expired or self.exchanging(area):
                continue
            held = set()
            for iface in self.interfaces_in(area):
                if iface.neighbor is not None:
                    held |= iface.neighbor.retransmission.keys()
            for key in expired:
                if key not in held and not self.originator.holds(area, key):
                    lsdb.remove(key)
                    self._dirty = self._dirty or key[2] == self.router_id


def hash_id(router_id: str) -> int:
    """A deterministic starting DD sequence number derived from the router ID."""
    value = 0
    for part in router_id.split("."):
        value = (value * 257 + int(part)) & 0xFFFFFFFF
    return (value * 2654435761) & 0xFFFFFFFF


def _start_loading(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    if nbr.request_list:
        dbexchange.request_more(router, iface, nbr, now)
    else:
        router.neighbor_event(iface, NeighborEvent.LOADING_DONE, now)


def _set_inactivity(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    nbr.inactivity_due = now + iface.config.router_dead_interval


def _stop_inactivity(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    nbr.inactivity_due = None


def _mark_dirty(router: Router, iface: Interface, nbr: Neighbor, now: float) -> None:
    router._dirty = True


_ACTIONS = {
    Action.START_INACTIVITY_TIMER: _set_inactivity,
    Action.STOP_INACTIVITY_TIMER: _stop_inactivity,
    Action.START_EXSTART: dbexchange.start_exstart,
    Action.START_EXCHANGE: dbexchange.start_exchange,
    Action.START_LOADING: _start_loading,
    Action.CLEAR_LISTS: lambda router, iface, nbr, now: nbr.clear_lists(),
    Action.ORIGINATE_ROUTER_LSA: _mark_dirty,
}
_DISPATCH = {
    Hello: hello.on_hello,
    DatabaseDescription: dbexchange.on_dd,
    LinkStateRequest: dbexchange.on_request,
    LinkStateUpdate: flooding.on_update,
    LinkStateAck: flooding.on_ack,
}
