"""The emulated QBB network: one process per node, one namespace per node, veth links.

shared/DESIGN.md's *emulated* mode of ``qbb run`` (docs/emulated.md).  :class:`EmulatedNetwork`
builds, with :class:`qbb.netns.NetLab`, one network namespace per node of a
:class:`~qbb.topology.Topology` and one veth pair per QBB link (RFC 5737 /30 underlay
addresses), optionally starts tcpdump on every link and applies ``tc netem`` (where the
kernel has it), then starts ``python -m qbb.nodeproc`` in each namespace: the same
:class:`~qbb.node.QBBNode` as the embedded network, its Q3P links on UDP port 7355 over
the veths (seed 002 §2.1, §2.5).  All processes share one *epoch*, so both ends of every
link draw the same emulated QKD key stream.

Control: each node process reads JSON requests on stdin and writes replies and events on
stdout (:mod:`qbb.nodeproc`); a reader thread per process files them.  The schedule of the
topology is applied from the launcher: ``link_down`` / ``link_up`` by ``ip link set``
on both veth ends, ``key_rate`` by a request to both ends naming the instant of the
change, ``node_stop`` / ``node_start`` by a request to the node (its process, and so its
key stores, stay alive).  :func:`run_emulated` returns the embedded summary's fields with
``mode: "netns"``.

Cleanup: :class:`~qbb.netns.NetLab` kills every process and deletes every namespace on
any exit (normal, exception, SIGINT, SIGTERM); a node process also exits when its stdin
closes, so it cannot outlive a launcher killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qbb.errors import ConfigError, QbbError
from qbb.netns import Netem, NetLab, NetnsError, netem_supported
from qbb.network import IntervalSet, all_pairs
from qbb.run_cli import app_pairs_option, check_app_options
from qbb.topology import ScheduledEvent, Topology, load_topology

__all__ = ["EmulatedNetwork", "EmulationError", "NodeProcess", "add_arguments", "main",
           "parse_netem", "run_emulated", "run_from_cli"]

STARTUP_TIMEOUT = 20.0
REQUEST_TIMEOUT = 10.0
RATE_LEAD_S = 0.5  # a key rate change takes effect this far in the future at both ends
DEFAULT_KEY_API_PORT = 7400  # each node namespace has its own loopback


class EmulationError(QbbError):
    """A node process failed, did not answer, or the emulated network could not be built."""


class NodeProcess:
    """One node process: its control pipe, replies by request id, and events."""

    def __init__(self, name: str, proc: subprocess.Popen, log_path: Path,
                 events: queue.Queue) -> None:
        self.name, self.proc, self.log_path = name, proc, log_path
        self._events = events
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        self._next_id = 0
        self.eof = False
        self.ready: dict | None = None
        self._reader = threading.Thread(target=self._read, daemon=True, name=f"qbb-{name}")
        self._reader.start()

    def _read(self) -> None:
        for raw in self.proc.stdout:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            with self._cond:
                if "reply" in message:
                    self._replies[message["reply"]] = message
                elif message.get("event") == "ready":
                    self.ready = message
                else:
                    self._events.put((self.name, message))
                self._cond.notify_all()
        with self._cond:
            self.eof = True
            self._cond.notify_all()

    def failure(self) -> str:
        code = self.proc.poll()
        tail = ""
        try:
            tail = self.log_path.read_text(errors="replace")[-1500:].strip()
        except OSError:
            pass
        return f"node {self.name} process exited (status {code}){': ' + tail if tail else ''}"

    def wait_ready(self, deadline: float) -> dict:
        with self._cond:
            while self.ready is None:
                if self.eof or not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    if self.ready is None:
                        raise EmulationError(self.failure() if self.eof else
                                             f"node {self.name} did not start in time")
        return self.ready

    def request(self, op: str, timeout: float = REQUEST_TIMEOUT, **fields: Any) -> dict:
        """Send one request and wait for its reply (EmulationError if the process died)."""
        with self._cond:
            if self.eof:
                raise EmulationError(self.failure())
            ident = self._next_id = self._next_id + 1
        try:
            self.proc.stdin.write((json.dumps({"id": ident, "op": op, **fields}) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise EmulationError(self.failure()) from None
        deadline = time.monotonic() + timeout
        with self._cond:
            while ident not in self._replies:
                if self.eof:
                    raise EmulationError(self.failure())
                if not self._cond.wait(max(0.0, deadline - time.monotonic())):
                    raise EmulationError(f"node {self.name}: no reply to {op!r} in {timeout} s")
            return self._replies.pop(ident)


def parse_netem(text: str | None) -> Netem | None:
    """``'loss=1,delay_ms=2,...'`` (fields of :class:`qbb.netns.Netem`) or None."""
    if not text:
        return None
    fields: dict[str, Any] = {}
    for item in text.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep or key not in Netem.__dataclass_fields__:
            raise ConfigError(f"--netem: expected NAME=VALUE with NAME one of "
                              f"{', '.join(Netem.__dataclass_fields__)}, got {item!r}")
        try:
            fields[key] = value if key == "rate" else (int(value) if key == "limit"
                                                       else float(value))
        except ValueError:
            raise ConfigError(f"--netem: {key} needs a number, got {value!r}") from None
    return Netem(**fields)


class EmulatedNetwork:
    """The emulated network of ``topology`` (see the module docstring); a context manager."""

    def __init__(self, topology: Topology, topology_path: str | os.PathLike, *,
                 capture_dir: str | os.PathLike | None = None, netem: Netem | None = None,
                 reveal_keys: bool = False, python: str = sys.executable,
                 key_api_port: int | None = None) -> None:
        self.topology, self.path = topology, str(Path(topology_path).resolve())
        self.key_api_port = key_api_port
        self.plan = topology.address_plan()
        self.capture_dir = Path(capture_dir) if capture_dir else None
        self.netem, self.reveal, self.python = netem, reveal_keys, python
        self.netem_note: str | None = None
        self.last_converged = False
        self.lab: NetLab | None = None
        self.epoch = 0.0
        self.procs: dict[str, NodeProcess] = {}
        self.namespaces: dict[str, Any] = {}
        self.veths: dict[tuple[str, str], Any] = {}
        self.captures: dict[str, str] = {}
        self.stopped: set[str] = set()
        self.events: list[dict] = []
        self.sent: dict[tuple[str, int], dict] = {}
        self.received: list[dict] = []
        self.icmp: list[dict] = []
        self.keys: Counter[str] = Counter()
        self.summaries: dict[str, dict] = {}
        self._inbox: queue.Queue = queue.Queue()
        self._schedule = sorted(topology.schedule, key=lambda e: e.at_s)
        self._logdir = tempfile.TemporaryDirectory(prefix="qbb-emulated-")

    # -- building --------------------------------------------------------------------

    def __enter__(self) -> EmulatedNetwork:
        self.lab = NetLab().__enter__()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _build(self) -> None:
        for node in self.topology.nodes:
            ns = self.namespaces[node.name] = self.lab.add_namespace()
            ns.run(["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1"], check=False)  # quiet captures
        for spec in self.topology.links:
            ns_a, ns_b = self.namespaces[spec.a], self.namespaces[spec.b]
            pair = self.lab.add_veth(ns_a, ns_b, mtu=max(1500, spec.mtu + 28))
            self.veths[(spec.a, spec.b)] = pair
            self._faults_and_capture(spec, pair)
        self.epoch = time.time()
        for node in self.topology.nodes:
            self._spawn(node.name)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        for proc in self.procs.values():
            proc.wait_ready(deadline)

    def _faults_and_capture(self, spec, pair) -> None:
        if self.netem is not None:
            if netem_supported():
                self.lab.netem(pair.ns_a, pair.dev_a, self.netem)
                self.lab.netem(pair.ns_b, pair.dev_b, self.netem)
            else:
                self.netem_note = "skipped: this kernel has no sch_netem"
        if self.capture_dir is not None:
            self.capture_dir.mkdir(parents=True, exist_ok=True)
            path = self.capture_dir / f"link-{spec.a}-{spec.b}.pcap"
            self.lab.capture(pair.ns_a, pair.dev_a, path)
            self.captures[f"{spec.a}-{spec.b}"] = str(path)

    def _spawn(self, name: str) -> None:
        argv = [self.python, "-m", "qbb.nodeproc", "--topology", self.path, "--node", name,
                "--epoch", repr(self.epoch)]
        for (a, b), pair in self.veths.items():
            if name == a:
                argv += ["--link", f"{b},{pair.addr_a},{pair.addr_b}"]
            elif name == b:
                argv += ["--link", f"{a},{pair.addr_b},{pair.addr_a}"]
        if self.reveal:
            argv.append("--reveal-keys")
        if self.key_api_port is not None:
            argv += ["--key-api", str(self.key_api_port)]
        log_path = Path(self._logdir.name) / f"{name}.log"
        with open(log_path, "wb") as log:
            proc = self.lab.spawn(self.namespaces[name], argv, stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=log)
        self.procs[name] = NodeProcess(name, proc, log_path, self._inbox)

    # -- time and schedule -----------------------------------------------------------

    def clock(self) -> float:
        """Seconds since the shared epoch (the nodes' clock)."""
        return time.time() - self.epoch

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``, applying due schedule events and filing node events."""
        self.sleep_until(self.clock() + seconds)

    def sleep_until(self, t: float) -> None:
        while True:
            self.poll()
            left = t - self.clock()
            if left <= 0:
                return
            due = self._schedule[0].at_s if self._schedule else t
            time.sleep(max(0.0, min(left, due - self.clock(), 0.05)))

    def poll(self) -> None:
        """Apply due schedule events and file events from the node processes."""
        while self._schedule and self._schedule[0].at_s <= self.clock():
            self.apply(self._schedule.pop(0))
        while True:
            try:
                name, message = self._inbox.get_nowait()
            except queue.Empty:
                return
            self._on_event(name, message)

    def apply(self, event: ScheduledEvent) -> None:
        if event.action in ("link_down", "link_up"):
            self.set_link(*event.link_ends(), event.action == "link_up")
        elif event.action == "key_rate":
            self.set_key_rate(*event.link_ends(), event.value)
        elif event.action == "node_stop":
            self.stop_node(event.target)
        elif event.action == "node_start":
            self.start_node(event.target)
        self.events.append({"at_s": round(self.clock(), 6), "action": event.action,
                            "target": event.target})

    # -- actions ---------------------------------------------------------------------

    def _pair(self, a: str, b: str):
        pair = self.veths.get((a, b)) or self.veths.get((b, a))
        if pair is None:
            raise ConfigError(f"no link between {a!r} and {b!r}")
        return pair

    def set_link(self, a: str, b: str, up: bool) -> None:
        """Take both veth ends of link a-b down or up."""
        pair = self._pair(a, b)
        for ns, dev in ((pair.ns_a, pair.dev_a), (pair.ns_b, pair.dev_b)):
            ns.run(["ip", "link", "set", "dev", dev, "up" if up else "down"])

    def set_key_rate(self, a: str, b: str, rate_bps: float) -> None:
        """Both ends change their devices' rate at the same future instant."""
        at = self.clock() + RATE_LEAD_S
        for me, peer in ((a, b), (b, a)):
            self._checked(me, "key_rate", peer=peer, value=rate_bps, at=at)

    def stop_node(self, name: str) -> None:
        self._checked(name, "stop")
        self.stopped.add(name)

    def start_node(self, name: str) -> None:
        self._checked(name, "start")
        self.stopped.discard(name)

    def _checked(self, name: str, op: str, **fields: Any) -> dict:
        reply = self.procs[name].request(op, **fields)
        if not reply.get("ok"):
            raise EmulationError(f"node {name}: {op} failed: {reply.get('error')}")
        return reply

    def status(self, name: str) -> dict:
        return self.procs[name].request("status")["status"]

    def converged(self) -> bool:
        """Every running node has a route to every other running node."""
        live = [n.name for n in self.topology.nodes if n.name not in self.stopped]
        reachable = {name: set(self.status(name)["reachable"]) for name in live}
        self.last_converged = all(other in reachable[name]
                                  for name in live for other in live if other != name)
        return self.last_converged

    def wait_converged(self, timeout: float, poll: float = 0.1) -> float | None:
        """Network time at which :meth:`converged` first held, or None after ``timeout``."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            if self.converged():
                return self.clock()
            self.sleep(poll)
        return None

    def relay_key(self, source: str, destination: str, bits: int = 256) -> dict | None:
        """Ask ``source`` to relay one session key to ``destination``; its report or None."""
        if source in self.stopped:
            self.keys["not_sent"] += 1
            return None
        reply = self.procs[source].request("relay", to=destination, bits=bits)
        if not reply.get("ok"):
            self.keys["not_sent"] += 1
            return None
        self.sent[(reply["source"], reply["key_id"])] = reply
        self.keys["sent"] += 1
        return reply

    def key_cli(self, node: str, *args: str) -> subprocess.Popen:
        """Start ``qbb key --api 127.0.0.1:PORT ARGS`` inside ``node``'s namespace (an
        application of that node; needs ``key_api_port``)."""
        if self.key_api_port is None:
            raise EmulationError("the key API is off: start the network with key_api_port")
        argv = [self.python, "-m", "qbb", "key", "--api", f"127.0.0.1:{self.key_api_port}",
                *args]
        return self.lab.spawn(self.namespaces[node], argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)

    def app_stream(self, client: str, server: str, name: str, keys: int = 16,
                   bits: int = 256, timeout: float = 20.0) -> dict[str, Any]:
        """SECOQC's three phases by applications in the two nodes' namespaces, through
        their key APIs (`qbb key` processes): register + accept at ``server``, open at
        ``client``, ``keys`` GET_KEYs at both; keys compared by SHA-256 digest."""
        result: dict[str, Any] = {"client": client, "server": server, "name": name,
                                  "keys": 0, "identical": False, "status": "SUCCESSFUL"}

        def finish(proc: subprocess.Popen) -> str:
            out, err = proc.communicate(timeout=timeout + 10)
            if proc.returncode != 0:
                raise EmulationError(err.strip() or f"qbb key exited {proc.returncode}")
            return out
        try:
            finish(self.key_cli(server, "register", name))
            deadline = time.monotonic() + timeout
            accept = self.key_cli(server, "accept", name, "--timeout", str(timeout))
            while True:  # the directory needs a moment to reach the client's node
                opened = self.key_cli(client, "open", name, "--chunk-bits", str(bits),
                                      "--timeout", str(timeout))
                out, err = opened.communicate(timeout=timeout + 10)
                if opened.returncode == 0 or "UNKNOWN_APPLICATION" not in err \
                        or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if opened.returncode != 0:
                accept.kill()
                raise EmulationError(err.strip())
            ksid, server_ksid = out.strip(), finish(accept).strip()
            get = ("get", ksid, "--count", str(keys), "--timeout", str(timeout), "--json")
            procs = [self.key_cli(client, *get), self.key_cli(server, *get)]
            digests = [[(item["index"], hashlib.sha256(item["key"].encode()).hexdigest())
                        for item in map(json.loads, finish(p).splitlines())] for p in procs]
            finish(self.key_cli(client, "close", ksid))
            result.update(ksid=ksid, keys=len(digests[0]),
                          identical=ksid == server_ksid and digests[0] == digests[1])
        except (EmulationError, subprocess.TimeoutExpired, ValueError, KeyError) as error:
            result["status"] = str(error).split(":")[0] or type(error).__name__
        return result

    def probe(self, source: str, address: str, ttl: int = 64, seq: int = 0) -> bool:
        """ICMP Echo Request from ``source`` to ``address`` with ``ttl``."""
        return bool(self.procs[source].request("probe", address=address, ttl=ttl,
                                               seq=seq).get("ok"))

    def _on_event(self, name: str, message: dict) -> None:
        if message.get("event") == "icmp":
            self.icmp.append({"node": name, **message})
        elif message.get("event") == "key":
            self.received.append({"node": name, **message})
            sent = self.sent.get((message["source"], message["key_id"]))
            if sent is None or sent["digest"] != message["digest"] \
                    or sent["destination"] != message["destination"]:
                self.keys["mismatched"] += 1
                return
            self.keys["delivered"] += 1
            self.keys["delivered_bits"] += message["bits"]

    # -- teardown and summary --------------------------------------------------------

    def close(self) -> None:
        """Collect the nodes' final summaries (best effort), then tear everything down."""
        try:
            for name, proc in self.procs.items():
                if name not in self.summaries and not proc.eof and proc.proc.poll() is None:
                    try:
                        self.summaries[name] = proc.request("exit", timeout=3.0)["summary"]
                    except (EmulationError, KeyError):
                        pass
            self.poll()
        finally:
            if self.lab is not None:
                self.lab.close()
            for proc in self.procs.values():
                for stream in (proc.proc.stdin, proc.proc.stdout):
                    try:
                        stream.close()
                    except OSError:
                        pass
            self._logdir.cleanup()

    def key_reuse_detected(self) -> bool:
        """Reuse inside a store, or a receiver used key its peer's sender never took."""
        for name, summary in self.summaries.items():
            for peer, store in summary["stores"].items():
                if store["reuse"]:
                    return True
                other = self.summaries.get(peer, {}).get("stores", {}).get(name)
                if other is None:
                    continue
                taken = IntervalSet()
                for lo, hi in other["taken"]:
                    taken.add(lo, hi)
                if any(not taken.covers(lo, hi) for lo, hi in store["used"]):
                    return True
        return False

    def summary(self, convergence_s: float | None, converged_at_end: bool) -> dict[str, Any]:
        counters: Counter[str] = Counter()
        drops: Counter[str] = Counter()
        for summary in self.summaries.values():
            counters.update(summary["counters"])
            drops.update(summary["drops"])
        return {
            "mode": "netns", "topology": self.topology.name,
            "nodes": len(self.topology.nodes), "links": len(self.topology.links),
            "converged": convergence_s is not None, "convergence_s": convergence_s,
            "converged_at_end": converged_at_end, "elapsed_s": round(self.clock(), 6),
            "keys_sent": self.keys["sent"], "keys_delivered": self.keys["delivered"],
            "keys_delivered_bits": self.keys["delivered_bits"],
            "keys_mismatched": self.keys["mismatched"], "keys_not_sent": self.keys["not_sent"],
            "drops": dict(sorted(drops.items())),
            "key_reuse_detected": self.key_reuse_detected(),
            "forwarded": counters["forwarded"], "icmp_sent": counters["icmp_sent"],
            "alternate_used": counters["alternate_used"],
            "lfa_rejected": counters["lfa_rejected"], "events": list(self.events),
            "captures": dict(self.captures), "netem": self.netem_note or
            ("applied" if self.netem is not None else None),
        }


def run_emulated(topology_path: str | os.PathLike, duration_s: float, *,
                 pairs: Sequence[tuple[str, str]] | None = None, keys_per_pair: int = 1,
                 key_bits: int = 256, relay_interval: float = 1.0,
                 capture_dir: str | os.PathLike | None = None, netem: Netem | None = None,
                 on_progress: Callable[[dict], None] | None = None,
                 key_api_port: int | None = None, app_pairs: Sequence[tuple[str, str]] = (),
                 app_keys: int = 16, app_key_bits: int = 256) -> dict[str, Any]:
    """Run the topology at ``topology_path`` in namespaces for ``duration_s`` seconds.

    Same course as :func:`qbb.network.run_network`: wait for convergence, then every
    ``relay_interval`` one key per pair, ``keys_per_pair`` rounds, while time allows."""
    topology = load_topology(topology_path)
    pairs = list(pairs) if pairs is not None else all_pairs(topology)
    if app_pairs and key_api_port is None:
        key_api_port = DEFAULT_KEY_API_PORT
    apps: list[dict[str, Any]] = []
    with EmulatedNetwork(topology, topology_path, capture_dir=capture_dir,
                         netem=netem, key_api_port=key_api_port) as net:
        report = _reporter(net, on_progress)
        convergence = None
        while convergence is None and net.clock() < duration_s:
            convergence = net.wait_converged(timeout=min(1.0, duration_s - net.clock()))
            report()
        if convergence is not None:
            for _ in range(keys_per_pair):
                if net.clock() + relay_interval > duration_s:
                    break
                for a, b in pairs:
                    net.relay_key(a, b, key_bits)
                net.sleep(relay_interval)
                report()
            for index, (client, server) in enumerate(app_pairs):
                apps.append(net.app_stream(client, server, f"demo-{server}-{index}",
                                           keys=app_keys, bits=app_key_bits))
        while net.clock() < duration_s:
            net.sleep(min(1.0, duration_s - net.clock()))
            report()
        at_end = net.converged()
        net.close()
        summary = net.summary(None if convergence is None else round(convergence, 6), at_end)
        summary.update(app_summary(apps, len(app_pairs), app_key_bits))
        return summary


def app_summary(results: list[dict[str, Any]], wanted: int, bits: int) -> dict[str, Any]:
    """The ``app_*`` fields of a run summary (as qbb.keydemo.run_app_streams gives)."""
    failures = Counter(r["status"] for r in results if r["status"] != "SUCCESSFUL")
    if wanted > len(results):
        failures["unfinished"] += wanted - len(results)
    good = sum(r["keys"] for r in results if r["identical"])
    return {"app_streams": wanted, "app_keys": good, "app_key_bits": good * bits,
            "app_keys_identical": all(r["identical"] for r in results) if results else None,
            "app_failures": dict(sorted(failures.items()))}


def _reporter(net: EmulatedNetwork, on_progress: Callable[[dict], None] | None):
    last = [0.0]

    def report() -> None:
        if on_progress is not None and net.clock() - last[0] >= 1.0:
            last[0] = net.clock()
            on_progress({"t": round(net.clock(), 3), "converged": net.converged(),
                         "keys_delivered": net.keys["delivered"],
                         "running": len(net.topology.nodes) - len(net.stopped)})
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options emulated mode adds to ``qbb run`` (after qbb.run_cli.add_arguments)."""
    parser.add_argument("--capture", metavar="DIR", default=None,
                        help="netns mode: tcpdump every link into DIR/link-A-B.pcap")
    parser.add_argument("--netem", metavar="SPEC", default=None,
                        help="netns mode: tc netem on every veth, e.g. 'loss=1,delay_ms=2' "
                        "(skipped, with a note in the summary, if the kernel has no sch_netem)")


def run_from_cli(args: argparse.Namespace, out=None) -> int:
    """``qbb run --mode netns``: exit status 0 if the network converged."""
    from qbb.run_cli import parse_pairs, print_progress, print_summary

    out = out or sys.stdout
    if getattr(args, "virtual_time", False):
        raise ConfigError("--virtual-time is for embedded mode; netns mode runs in real time")
    topology = load_topology(args.topology)
    pairs = parse_pairs(args.pairs)
    names = {node.name for node in topology.nodes}
    for a, b in pairs or ():
        if a not in names or b not in names or a == b:
            raise ConfigError(f"--pairs: {a}:{b} does not name two nodes of {topology.name}")
    check_app_options(args)
    summary = run_emulated(args.topology, args.duration, pairs=pairs, keys_per_pair=args.relay,
                           key_bits=args.key_bits, capture_dir=getattr(args, "capture", None),
                           netem=parse_netem(getattr(args, "netem", None)),
                           on_progress=None if args.json else print_progress,
                           key_api_port=args.key_api,
                           app_pairs=app_pairs_option(args.apps, topology),
                           app_keys=args.app_keys, app_key_bits=args.app_key_bits)
    return print_summary(summary, args.json, out)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m qbb.emulated TOPOLOGY ...``: the same as ``qbb run --mode netns``."""
    from qbb.run_cli import add_arguments as common_arguments

    parser = argparse.ArgumentParser(prog="python -m qbb.emulated",
                                     description="Run a topology in network namespaces.")
    common_arguments(parser)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_cli(args)
    except (QbbError, NetnsError) as error:
        print(f"qbb run: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qbb run: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
