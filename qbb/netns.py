"""Linux network namespaces, veth pairs, ``tc netem`` and tcpdump for emulated QBB networks.

The *emulated* mode of shared/DESIGN.md runs one OS process per QBB node, each in its own
network namespace, the classical channel of each QBB link being UDP over a veth pair (seed
002 §2.1: links are untrusted; here they are also lossy when asked to be).  This module is
the only place in qbb that touches the host's network configuration; ``docs/netns.md``
describes it for users.

Theory of operation
    :class:`NetLab` is a context manager that owns everything it creates: namespaces named
    ``qbb-<pid>-<n>`` (the project prefix, the creating process id and a counter, so runs
    never collide and stale ones are recognisable), veth pairs created directly inside two
    namespaces (``ip link add A netns NS1 type veth peer name B netns NS2``: nothing ever
    appears in the host namespace), processes started with ``ip netns exec``, and tcpdump
    captures.  ``close()`` -- run by ``__exit__`` on normal exit, on any exception and on
    ``KeyboardInterrupt``, by ``atexit`` and, while the lab is open in the main thread, on
    SIGTERM -- stops the captures (SIGINT, so the pcap is flushed), kills the processes it
    started (SIGTERM, then SIGKILL), kills any process left inside its namespaces and
    deletes the namespaces.  :func:`cleanup_stale` removes namespaces of crashed runs:
    only names starting with ``qbb-`` whose creating process is gone.

Addresses
    Veth pairs get /30 subnets carved from the documentation ranges of RFC 5737
    (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24; RFC 6890 lists them as not globally
    routable), so nothing can leak to a real network; they exist only inside the lab's
    namespaces.

Root (CAP_NET_ADMIN and CAP_SYS_ADMIN) is required; :func:`require_root` raises
:class:`NetnsError` with a clear message otherwise.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import re
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qbb.errors import QbbError

PREFIX = "qbb-"
ADDRESS_POOLS = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")  # RFC 5737
_NAME = re.compile(r"^qbb-(\d+)-(\d+)$")
_counter = itertools.count()
_counter_lock = threading.Lock()


class NetnsError(QbbError):
    """A namespace operation that failed (not root, a command error, a timeout)."""


def is_root() -> bool:
    return os.geteuid() == 0


def require_root() -> None:
    """Raise :class:`NetnsError` unless this process can create namespaces."""
    if not is_root():
        raise NetnsError("network namespaces need root (CAP_NET_ADMIN, CAP_SYS_ADMIN); "
                         "run as root, e.g. with sudo")
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            raise NetnsError(f"the {tool!r} command (iproute2) is not installed")


def unique_name() -> str:
    """A fresh namespace name ``qbb-<pid>-<n>``."""
    with _counter_lock:
        return f"{PREFIX}{os.getpid()}-{next(_counter)}"


def _run(argv: Sequence[str], *, timeout: float = 30.0, check: bool = True
         ) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        raise NetnsError(f"{' '.join(argv)}: timed out after {timeout} s") from error
    except OSError as error:
        raise NetnsError(f"{' '.join(argv)}: {error}") from error
    if check and done.returncode != 0:
        raise NetnsError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr.strip()}")
    return done


def list_namespaces() -> list[str]:
    """Names of all named network namespaces on the host."""
    out = _run(["ip", "netns", "list"]).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def namespace_pids(name: str) -> list[int]:
    done = _run(["ip", "netns", "pids", name], check=False)
    return [int(word) for word in done.stdout.split() if word.isdigit()]


def _pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _kill_pids(pids: Sequence[int], grace: float = 1.0) -> None:
    """SIGTERM ``pids`` (processes inside one of our namespaces), then SIGKILL survivors."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while any(_pid_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.02)


def delete_namespace(name: str, *, kill: bool = True) -> None:
    """Delete namespace ``name`` (must start with ``qbb-``), first killing what runs in it."""
    if not name.startswith(PREFIX):
        raise NetnsError(f"refusing to delete namespace {name!r}: not a {PREFIX}* namespace")
    if kill:
        _kill_pids(namespace_pids(name))
    _run(["ip", "netns", "del", name], check=False)


def cleanup_stale(prefix: str = PREFIX, *, kill: bool = True) -> list[str]:
    """Delete ``qbb-<pid>-<n>`` namespaces under ``prefix`` whose creating process is gone."""
    if not prefix.startswith(PREFIX):
        raise NetnsError(f"stale cleanup only touches {PREFIX}* namespaces, got {prefix!r}")
    require_root()
    removed = []
    for name in list_namespaces():
        match = _NAME.match(name)
        if not name.startswith(prefix) or match is None or _pid_alive(int(match.group(1))):
            continue
        delete_namespace(name, kill=kill)
        removed.append(name)
    return removed


def _netem(ns_name: str, dev: str, settings: Netem) -> None:
    done = _run(["tc", "-n", ns_name, "qdisc", "replace", "dev", dev, "root", "netem",
                 *settings.args()], check=False)
    if done.returncode != 0 and "qdisc kind is unknown" in done.stderr:
        raise NetnsError("this kernel has no netem qdisc (CONFIG_NET_SCH_NETEM / sch_netem); "
                         "use qbb.q3p.faults.FaultInjector for loss, duplication and reordering")
    if done.returncode != 0:
        raise NetnsError(f"tc netem on {dev} in {ns_name}: {done.stderr.strip()}")


_netem_probe: bool | None = None


def netem_supported() -> bool:
    """Whether ``tc netem`` works here (probed once, in a throwaway namespace)."""
    global _netem_probe
    if _netem_probe is None:
        require_root()
        name = unique_name()
        _run(["ip", "netns", "add", name])
        try:
            _netem(name, "lo", Netem(delay_ms=1))
            _netem_probe = True
        except NetnsError:
            _netem_probe = False
        finally:
            delete_namespace(name, kill=False)
    return _netem_probe


def _subnets() -> Iterator[ipaddress.IPv4Network]:
    for pool in ADDRESS_POOLS:
        yield from ipaddress.IPv4Network(pool).subnets(new_prefix=30)


@dataclass(frozen=True)
class Namespace:
    """A namespace of a lab; commands run in it through ``ip netns exec``."""

    name: str

    def argv(self, command: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *command]

    def run(self, command: Sequence[str], *, timeout: float = 30.0, check: bool = True
            ) -> subprocess.CompletedProcess:
        """Run ``command`` to completion inside the namespace (text output captured)."""
        return _run(self.argv(command), timeout=timeout, check=check)


@dataclass(frozen=True)
class VethPair:
    """Both ends of a veth pair: interface names and addresses (without prefix length)."""

    ns_a: Namespace
    dev_a: str
    addr_a: str
    ns_b: Namespace
    dev_b: str
    addr_b: str
    prefixlen: int = 30


@dataclass(frozen=True)
class Netem:
    """``tc netem`` settings; percentages 0..100, times in milliseconds."""

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0  # needs delay_ms > 0: reordered packets skip the delay
    corrupt: float = 0.0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    rate: str | None = None  # e.g. "100mbit"
    limit: int = 10000  # packets queued in netem

    def args(self) -> list[str]:
        out = ["limit", str(self.limit)]
        if self.delay_ms or self.reorder:
            out += ["delay", f"{self.delay_ms or 1}ms"]
            if self.jitter_ms:
                out.append(f"{self.jitter_ms}ms")
        for name in ("loss", "duplicate", "reorder", "corrupt"):
            value = getattr(self, name)
            if value:
                out += [name, f"{value}%"]
        if self.rate:
            out += ["rate", self.rate]
        return out


class NetLab:
    """Namespaces, veths, processes and captures that are always cleaned up (see module doc)."""

    def __init__(self) -> None:
        require_root()
        self.namespaces: list[Namespace] = []
        self.veths: list[VethPair] = []
        self._procs: list[subprocess.Popen] = []
        self._captures: list[subprocess.Popen] = []
        self._subnets = _subnets()
        self._closed = False
        self._old_sigterm = None
        atexit.register(self.close)

    # -- context manager -----------------------------------------------------------------

    def __enter__(self) -> NetLab:
        if threading.current_thread() is threading.main_thread():
            self._old_sigterm = signal.signal(signal.SIGTERM, _raise_exit)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- building ------------------------------------------------------------------------

    def add_namespace(self) -> Namespace:
        ns = Namespace(unique_name())
        _run(["ip", "netns", "add", ns.name])
        self.namespaces.append(ns)
        _run(["ip", "-n", ns.name, "link", "set", "lo", "up"])
        return ns

    def add_veth(self, ns_a: Namespace, ns_b: Namespace, *, mtu: int = 1500,
                 names: tuple[str, str] | None = None) -> VethPair:
        """A veth pair ``ns_a <-> ns_b`` with a fresh /30 from the RFC 5737 ranges."""
        try:
            net = next(self._subnets)
        except StopIteration:
            raise NetnsError("address pools exhausted") from None
        index = len(self.veths)
        dev_a, dev_b = names or (f"qv{index}a", f"qv{index}b")
        _run(["ip", "link", "add", dev_a, "netns", ns_a.name, "type", "veth",
              "peer", "name", dev_b, "netns", ns_b.name])
        host_a, host_b = list(net.hosts())[:2]
        pair = VethPair(ns_a, dev_a, str(host_a), ns_b, dev_b, str(host_b), net.prefixlen)
        self.veths.append(pair)
        for ns, dev, addr in ((ns_a, dev_a, host_a), (ns_b, dev_b, host_b)):
            _run(["ip", "-n", ns.name, "addr", "add", f"{addr}/{net.prefixlen}", "dev", dev])
            _run(["ip", "-n", ns.name, "link", "set", dev, "mtu", str(mtu), "up"])
        return pair

    def netem(self, ns: Namespace, dev: str, settings: Netem) -> None:
        """Replace the root qdisc of ``dev`` (egress) with netem ``settings``."""
        _netem(ns.name, dev, settings)

    def clear_netem(self, ns: Namespace, dev: str) -> None:
        _run(["tc", "-n", ns.name, "qdisc", "del", "dev", dev, "root"], check=False)

    # -- processes -----------------------------------------------------------------------

    def spawn(self, ns: Namespace, command: Sequence[str], **popen: object
              ) -> subprocess.Popen:
        """Start ``command`` inside ``ns``; it is killed by :meth:`close` if still running."""
        popen.setdefault("start_new_session", True)
        try:
            proc = subprocess.Popen(ns.argv(command), **popen)
        except OSError as error:
            raise NetnsError(f"cannot start {command[0]!r} in {ns.name}: {error}") from error
        self._procs.append(proc)
        return proc

    def capture(self, ns: Namespace, dev: str, path: str | os.PathLike,
                *, snaplen: int = 0, timeout: float = 5.0) -> subprocess.Popen:
        """Start tcpdump on ``dev`` writing ``path``; returns once it is listening."""
        if shutil.which("tcpdump") is None:
            raise NetnsError("tcpdump is not installed")
        proc = subprocess.Popen(
            ns.argv(["tcpdump", "-i", dev, "-w", str(Path(path)), "-U", "-n", "--immediate-mode",
                     "-s", str(snaplen)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        self._captures.append(proc)
        _wait_listening(proc, timeout)
        return proc

    def stop_capture(self, proc: subprocess.Popen, timeout: float = 5.0) -> None:
        """Stop one capture cleanly (SIGINT flushes the pcap)."""
        _stop(proc, signal.SIGINT, timeout)

    def kill(self, proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
        """Signal a process this lab started (e.g. SIGKILL for crash tests) and reap it."""
        if proc not in self._procs and proc not in self._captures:
            raise NetnsError("not a process of this lab")
        _stop(proc, sig, 5.0)

    # -- teardown ------------------------------------------------------------------------

    def close(self) -> None:
        """Stop captures and processes, delete namespaces; idempotent, never raises."""
        if self._closed:
            return
        self._closed = True
        try:
            for proc in self._captures:
                _stop(proc, signal.SIGINT, 5.0)
            for proc in self._procs:
                _stop(proc, signal.SIGTERM, 2.0)
            for ns in reversed(self.namespaces):
                try:
                    delete_namespace(ns.name)
                except NetnsError:
                    pass
        finally:
            atexit.unregister(self.close)
            if self._old_sigterm is not None:
                signal.signal(signal.SIGTERM, self._old_sigterm)


def _raise_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop(proc: subprocess.Popen, sig: int, timeout: float) -> None:
    """Send ``sig`` to ``proc``'s process group (a session it leads), then SIGKILL."""
    if proc.poll() is not None:
        return
    for signum, wait in ((sig, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            try:
                proc.send_signal(signum)
            except ProcessLookupError:
                pass
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _wait_listening(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stderr.fileno(), 4096)
            seen += chunk
            if b"listening on" in seen:
                return
            if not chunk:
                break
        if proc.poll() is not None:
            break
    _stop(proc, signal.SIGINT, 1.0)
    raise NetnsError(f"tcpdump did not start: {seen.decode(errors='replace').strip()}")


__all__ = ["ADDRESS_POOLS", "NetLab", "Namespace", "Netem", "NetnsError", "PREFIX",
           "VethPair", "cleanup_stale", "delete_namespace", "is_root", "list_namespaces",
           "namespace_pids", "netem_supported", "require_root", "unique_name"]
