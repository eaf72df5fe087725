"""Several worker processes serving one Atom: `atom serve --workers N` (`server.workers`).

One Python process uses one core. With N workers, the `atom serve` process becomes a supervisor:

1. it checks that the platform can share a port between processes (SO_REUSEPORT with the kernel
   spreading connections over them: Linux) and that the port is fixed (port 0 cannot be shared);
2. it loads the component directory once (invalid components: the located errors are printed and
   it exits 1, starting no worker), checks that the ports are free and the TLS files load, and
   opens the store to mark executions an earlier stop left INPROCESS as ABORTED;
3. it starts N workers: the same interpreter, re-executed (no fork of a process that already has
   threads or an event loop), each in a process group of its own, given its configuration through
   a pipe on its standard input. The pipe stays open: a worker whose supervisor is gone sees end of
   file and stops. Each worker runs `runtime.serve` with a `WorkerRole`: the normal Runtime, bound
   with SO_REUSEPORT once ready; only worker 0 runs the schedules and the purge; no worker marks
   INPROCESS executions ABORTED at start (the others may be running them).

SIGTERM/SIGINT to the supervisor is forwarded (as SIGTERM) to every worker, which drains as a single
Atom does; a second signal is forwarded again (the workers abort what is still in flight). The
supervisor exits 0 once every worker stopped cleanly.

A worker that exits while the Atom is not stopping is logged with its exit status, the executions
it left INPROCESS (found by its node id) are marked ABORTED, and it is started again after a back-off
(0.5 s, doubling with every recent crash). After `MAX_CRASHES` exits within `CRASH_WINDOW` seconds
the supervisor gives up: it stops the other workers and exits 1.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pickle
import select
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from .config import Config
from .errors import LoadError

log = logging.getLogger("atom.workers")

#: worker exits (while not stopping) within CRASH_WINDOW seconds that make the supervisor give up
MAX_CRASHES = 5
CRASH_WINDOW = 30.0
#: the first restart delay; it doubles with every recent crash, up to BACKOFF_MAX
BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0

#: what a worker process runs: the supervisor's import path first, then the worker's payload
_BOOT = ("import pickle, sys; i = sys.stdin.buffer; sys.path[:] = pickle.load(i); "
         "from atom.workers import worker_main; worker_main(pickle.load(i))")


def reuse_port_available() -> bool:
    """Whether several processes can serve one port with the kernel spreading new connections over
    them (SO_REUSEPORT on Linux; other systems either lack it or do not balance)."""
    if not sys.platform.startswith("linux") or not hasattr(socket, "SO_REUSEPORT"):
        return False
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError:
        return False
    return True


def workers_problem(config: Config) -> str | None:
    """Why `config` cannot run with its `server.workers`, or None."""
    n = config.server.workers
    if n <= 1:
        return None
    if not reuse_port_available():
        return (f"server.workers is {n}, but worker processes share the port with SO_REUSEPORT, which this "
                "platform does not offer (with load balancing, as on Linux); run one worker "
                "(server.workers: 1, the default) and several Atoms behind a load balancer")
    if config.server.port == 0:
        return (f"server.workers is {n}, but port 0 (any free port) cannot be shared between worker processes: "
                "each would get a port of its own; set a fixed port (server.port or --port)")
    if config.server.tls_cert and config.server.https_port == 0:
        return (f"server.workers is {n}, but https_port 0 (any free port) cannot be shared between worker "
                "processes; set a fixed server.https_port")
    return None


def node_id_of(pid: int) -> str:
    """The node id (nodeId of the records) of the worker with process id `pid`."""
    return f"{socket.gethostname()}:{pid}"


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


# ------------------------------------------------------------------------------------------- worker


def worker_main(payload: tuple[Config, int, int]) -> None:
    """The body of a worker process: `(config, index, count)` from the supervisor."""
    from .runtime import WorkerRole, configure_logging, serve

    config, index, count = payload
    configure_logging(config.log, worker=index)
    role = WorkerRole(index, count, node_id=node_id_of(os.getpid()), lifeline=sys.stdin.fileno())
    sys.exit(asyncio.run(serve(config, role)))


# ------------------------------------------------------------------------------------------- supervisor


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes] | None = None
    #: when a worker that died is started again (monotonic time)
    restart_at: float | None = None


def _ignore(signum: int, frame: Any) -> None:
    """A handler that does nothing: the signal number reaches the supervisor's wake-up pipe."""


class Supervisor:
    """Starts and watches the worker processes of one Atom (see the module's description)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.count = config.server.workers
        self.workers = [_Worker(i) for i in range(self.count)]
        self.crashes: deque[float] = deque()
        self.stopping = False
        #: the supervisor gave up (workers kept dying) or a worker did not stop cleanly
        self.failed = False
        self._wake_r = -1
        self._wake_w = -1
        self._old_handlers: dict[int, Any] = {}
        self._old_wakeup = -1

    # ------------------------------------------------------------------------------ run
    def run(self) -> int:
        """Run the Atom until SIGTERM/SIGINT. Returns the exit status: 0 after a clean stop, 1 when it
        cannot start or its workers keep dying."""
        problem = workers_problem(self.config)
        if problem is not None:
            log.error("%s", problem)
            return 1
        status = self._prepare()
        if status:
            return status
        self._install_signals()
        try:
            for w in self.workers:
                self._spawn(w)
            pids = ", ".join(str(w.proc.pid) if w.proc is not None else "-" for w in self.workers)
            log.info("started %d workers (pids %s) on %s port %d", self.count, pids, self.config.server.host,
                     self.config.server.port)
            self._loop()
        finally:
            for w in self.workers:  # only after an error of the supervisor: their lifeline ends, they stop
                if w.proc is not None and w.proc.stdin is not None:
                    w.proc.stdin.close()
            self._restore_signals()
        if self.failed:
            log.error("Atom '%s' stopped (%d workers), not cleanly", self.config.name, self.count)
            return 1
        log.info("Atom '%s' stopped (%d workers)", self.config.name, self.count)
        return 0

    def _prepare(self) -> int:
        """Everything done once, before any worker starts. Returns 0, or the exit status of a failure."""
        from .loader import load_directory
        from .runtime import _ssl_context

        config = self.config
        try:
            load_directory(config.components)
        except LoadError as exc:
            for p in exc.problems:
                print(str(p), file=sys.stderr)
            print(f"{len(exc.problems)} error(s): the Atom did not start", file=sys.stderr)
            return 1
        # the ports first: an Atom already serving them may be using the same store, and the
        # recovery below would abort its executions
        try:
            _ssl_context(config)
            ports = [config.server.port]
            if config.server.tls_cert and config.server.tls_key:
                ports.append(config.server.https_port)
            for port in ports:
                probe_port(config.server.host, port)
        except (OSError, ssl.SSLError) as exc:
            log.error("cannot start the web server on %s: %s", config.server.host, exc)
            return 1
        try:
            asyncio.run(_recover(config))
        except (OSError, sqlite3.Error) as exc:
            log.error("cannot open the execution store %s: %s", config.store_path, exc)
            return 1
        return 0

    # ------------------------------------------------------------------------------ processes
    def _spawn(self, w: _Worker) -> None:
        cmd = [sys.executable, "-c", _BOOT, "atom-worker", str(w.index)]
        w.restart_at = None
        try:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, process_group=0)
        except OSError as exc:  # out of processes or memory: like a worker that died at once
            log.error("cannot start worker %d: %s", w.index, exc)
            self._crashed(w, None, None)
            return
        w.proc = proc
        assert proc.stdin is not None
        try:
            proc.stdin.write(pickle.dumps(sys.path) + pickle.dumps((self.config, w.index, self.count)))
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: the loop sees it exit

    def _forward(self, sig: int) -> None:
        for w in self.workers:
            if w.proc is not None:
                try:
                    w.proc.send_signal(sig)
                except ProcessLookupError:
                    pass
            w.restart_at = None

    def _loop(self) -> None:
        while True:
            now = time.monotonic()
            waits = [w.restart_at - now for w in self.workers if w.restart_at is not None]
            for sig in self._wait(max(0.0, min([1.0, *waits]))):
                if sig in (signal.SIGTERM, signal.SIGINT):
                    self._on_stop_signal(signal.Signals(sig).name)
            self._reap()
            if self.stopping:
                if all(w.proc is None for w in self.workers):
                    return
                continue
            now = time.monotonic()
            for w in self.workers:
                if w.proc is None and w.restart_at is not None and now >= w.restart_at:
                    self._spawn(w)
                    if w.proc is not None:
                        log.info("worker %d restarted (pid %d)", w.index, w.proc.pid)

    def _on_stop_signal(self, name: str) -> None:
        if not self.stopping:
            self.stopping = True
            log.info("%s received: stopping %d workers (in-flight executions may take up to %.0f s)", name,
                     self.count, self.config.shutdown_grace)
        else:
            log.warning("%s again: the workers abort the executions still in flight", name)
        self._forward(signal.SIGTERM)

    def _reap(self) -> None:
        for w in self.workers:
            proc = w.proc
            if proc is None:
                continue
            rc = proc.poll()
            if rc is None:
                continue
            w.proc = None
            if proc.stdin is not None:
                proc.stdin.close()
            if self.stopping:
                if rc in (0, -signal.SIGTERM):
                    log.info("worker %d (pid %d) stopped", w.index, proc.pid)
                else:
                    log.warning("worker %d (pid %d) stopped with %s", w.index, proc.pid, describe_exit(rc))
                    self.failed = True
                continue
            self._crashed(w, proc.pid, rc)

    def _crashed(self, w: _Worker, pid: int | None, rc: int | None) -> None:
        """Account for a worker that exited while the Atom was not stopping (`pid` None: it could not
        be started), then schedule its restart or give up."""
        now = time.monotonic()
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - CRASH_WINDOW:
            self.crashes.popleft()
        what = f"worker {w.index} could not be started"
        if pid is not None and rc is not None:
            what = f"worker {w.index} (pid {pid}) exited unexpectedly ({describe_exit(rc)})"
            try:
                from .store import abort_in_process

                n = abort_in_process(self.config.store_path, node_id_of(pid))
            except (OSError, sqlite3.Error) as exc:
                log.error("cannot mark the executions of worker %d ABORTED: %s", w.index, exc)
                n = 0
            if n:
                what += f"; {n} execution(s) it left INPROCESS are marked ABORTED"
        if len(self.crashes) >= MAX_CRASHES:
            log.error("%s. Workers failed %d times within %.0f s: giving up, stopping the Atom", what,
                      len(self.crashes), CRASH_WINDOW)
            self.failed = True
            self.stopping = True
            self._forward(signal.SIGTERM)
            return
        delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2 ** (len(self.crashes) - 1))
        w.restart_at = now + delay
        log.error("%s; restarting it in %.1f s", what, delay)

    # ------------------------------------------------------------------------------ signals
    def _install_signals(self) -> None:
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            self._old_handlers[sig] = signal.signal(sig, _ignore)

    def _restore_signals(self) -> None:
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers.clear()
        signal.set_wakeup_fd(self._old_wakeup)
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)
        self._wake_r = self._wake_w = -1

    def _wait(self, timeout: float) -> list[int]:
        """Wait up to `timeout` seconds for a signal (a worker's exit sends SIGCHLD); the signals seen."""
        try:
            ready, _, _ = select.select([self._wake_r], [], [], timeout)
        except InterruptedError:
            ready = []
        got: list[int] = []
        if ready:
            while True:
                try:
                    data = os.read(self._wake_r, 512)
                except (BlockingIOError, InterruptedError):
                    break
                if not data:
                    break
                got += list(data)
        return got


async def _recover(config: Config) -> int:
    """Open the store once (creating it), marking executions an earlier stop left INPROCESS ABORTED."""
    from .store import SqliteStore

    store = SqliteStore(config.store_path, atom_name=config.name, node_id=node_id_of(os.getpid()))
    try:
        return await store.open(recover=True)
    finally:
        await store.close()


def probe_port(host: str, port: int) -> None:
    """Raise OSError when something listens on host:port already. The workers bind with SO_REUSEPORT,
    which would let them join another server that does; this bind (without it) fails instead."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            s = socket.socket(family, kind, proto)
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
                s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                s.bind(addr)
            except OSError as exc:
                raise OSError(exc.errno, f"port {port}: {exc.strerror}") from None
    finally:
        for s in socks:
            s.close()


def serve_workers(config: Config) -> int:
    """`atom serve` with `server.workers` > 1: run the supervisor (from the main thread). Returns the
    exit status."""
    return Supervisor(config).run()
