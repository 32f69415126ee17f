"""The warm command server behind `somatize ask`, `tell` and `heartbeat` (client.py is its other half).

One process per user and installation, started in the background by the
first `ask`/`tell`/`heartbeat` that finds none, that has imported what those
commands import (the CLI, numpy, the study-file loader, and once a Bayesian
study was asked, scikit-optimize and scikit-learn). For each command it
forks: the child takes the client's working directory, environment, umask,
niceness, import path and stdin/stdout/stderr, runs the same typer command a
fresh process would, and exits; the server reports its exit status (or the
signal it died of) to the client. Nothing carries from one command to the
next: each child is a fresh copy of the server as it was after its imports.

It serves until it has been idle for `SOMATIZE_SERVER_IDLE` seconds (default
600), until the somatize code it was started from changes (it then refuses
the next command, which runs in its own process and starts a new server),
or until SIGTERM / `somatize server stop`; commands running then finish
first. Its socket and lock live in a directory only this user can enter
(client.runtime_dir), never beside the study: several machines sharing a
study each run their own server, and the journal's lock coordinates them.
"""

from __future__ import annotations

import contextlib
import fcntl
import gc
import importlib
import marshal
import os
import selectors
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field

from . import __version__
from .client import HEADER, idle_timeout, lock_path, private_dir, runtime_dir, server_key, socket_path

# A client sends its request at once after connecting; one that does not within this time is dropped
# (the server serves one connection's request at a time while it reads it).
REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 1 << 24
# A new server waits this long for the lock of one that is shutting down (its last commands finishing).
LOCK_WAIT = 10.0
STREAMS = ("stdin", "stdout", "stderr")
FORWARDED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


def code_stamp() -> tuple:
    """What changes when the installed somatize code does: its version and every module's mtime and size."""
    package = os.path.dirname(os.path.abspath(__file__))
    files = []
    for root, dirs, names in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(names):
            if name.endswith(".py"):
                with contextlib.suppress(OSError):
                    info = os.stat(os.path.join(root, name))
                    files.append((os.path.relpath(os.path.join(root, name), package), info.st_mtime_ns, info.st_size))
    return (__version__, tuple(files))


# The server -----------------------------------------------------------------------------------------------


@dataclass
class Running:
    """A command being served: its child, the client's connection, and what the child imported."""

    pid: int
    conn: socket.socket
    imports: int  # the read end of the pipe the child writes the names of its new modules to
    learned: bytearray = field(default_factory=bytearray)


class Server:
    def __init__(self, key: str, path: str, preload: list[str]):
        self.key, self.path = key, path
        self.preload = preload
        self.idle = idle_timeout(os.environ)
        self.stamp = code_stamp()
        self.started = time.time()
        self.served = 0
        self.running: dict[int, Running] = {}
        self.stopping = False
        self.last_active = time.monotonic()
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.lock_fd = -1
        self.wake_r, self.wake_w = socket.socketpair()
        self.tried: set[str] = set()
        self.command = None  # the click command of the CLI, built once (cli.prepared)

    # lifetime --------------------------------------------------------------------------------------

    def take_lock(self) -> bool:
        """Hold the installation's server lock for the server's whole life: one server per socket."""
        self.lock_fd = os.open(lock_path(self.path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            try:
                fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self.say("starting")
                return True
            except OSError:
                if time.monotonic() > deadline or os.path.exists(self.path):
                    return False  # another server runs (or is starting): it serves
                time.sleep(0.1)

    def listen(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a socket left by a server killed with kill -9: we hold the lock
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            listener.bind(self.path)
        finally:
            os.umask(old)
        listener.listen(64)
        listener.setblocking(False)
        self.say("serving")
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, "accept")

    def say(self, state: str) -> None:
        """What the lock file tells a client that finds it locked: `starting`, `serving` or `stopping` (then a
        new server may start at once: it waits for this one's lock)."""
        with contextlib.suppress(OSError):
            os.ftruncate(self.lock_fd, 0)
            os.pwrite(self.lock_fd, f"{state} {os.getpid()}\n".encode(), 0)

    def stop_listening(self) -> None:
        """New commands go to their own process from now on; the running ones finish."""
        self.say("stopping")
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        self.stopping = True

    def on_signal(self, signum, _frame) -> None:
        if signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self.stopping = True

    def serve(self) -> None:
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self.on_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            if self.stopping and self.listener is not None:
                self.stop_listening()
            if self.stopping and not self.running:
                return
            timeout = None if self.running else max(0.0, self.last_active + self.idle - time.monotonic())
            for key, _ in self.selector.select(timeout):
                if key.data == "accept":
                    self.accept()
                elif key.data == "wake":
                    with contextlib.suppress(OSError):
                        self.wake_r.recv(4096)
                elif isinstance(key.data, tuple):
                    self.from_child(*key.data)
                else:
                    self.from_client(key.data)
            self.reap()
            if not self.running and not self.stopping:
                if time.monotonic() >= self.last_active + self.idle:
                    self.stopping = True
                else:
                    self.learn()

    def close(self) -> None:
        self.stop_listening()
        with contextlib.suppress(OSError):
            os.close(self.lock_fd)

    # one command -------------------------------------------------------------------------------------

    def accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        if not same_user(conn):
            conn.close()
            return
        conn.setblocking(True)
        conn.settimeout(REQUEST_TIMEOUT)
        fds: list[int] = []
        try:
            request, fds = read_request(conn)
        except (OSError, ValueError, EOFError, TypeError):
            close_all(fds)
            conn.close()
            return
        op = request.get("op", "run")
        if request.get("key") != self.key:
            close_all(fds)
            self.reply(conn, "refused another installation")
            return
        if op == "status":
            self.reply(conn, "status " + repr(self.status()))
            return
        if op == "stop":
            self.stopping = True
            self.reply(conn, "stopping")
            return
        if self.stopping or code_stamp() != self.stamp:
            close_all(fds)
            self.reply(conn, "refused the code changed")
            self.stopping = True
            return
        self.start(conn, request, fds)

    def status(self) -> dict:
        return {
            "pid": os.getpid(), "socket": self.path, "started": self.started, "served": self.served,
            "running": len(self.running), "idle_timeout": self.idle, "version": __version__,
            "modules": len(sys.modules),
        }

    def start(self, conn: socket.socket, request: dict, fds: list[int]) -> None:
        learn_r, learn_w = os.pipe()
        # A signal forwarded to the child before it has dropped the server's handlers would be taken for one
        # meant for the server: held until then (pending signals are delivered when the child lets them in).
        signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
        try:
            pid = os.fork()
        except OSError:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            close_all([*fds, learn_r, learn_w])
            self.reply(conn, "refused cannot fork")
            return
        if pid == 0:  # the child: never returns
            os.close(learn_r)
            self.child_cleanup(conn)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
            run_command(request, fds, learn_w, self.command)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARDED)
        close_all([*fds, learn_w])  # the client's stdout must close when the child's copy does
        with contextlib.suppress(OSError):
            conn.sendall(b"started\n")  # from now on, the command may have run: the client must not run it again
        self.served += 1
        conn.settimeout(None)
        conn.setblocking(False)
        running = self.running[pid] = Running(pid, conn, learn_r)
        self.selector.register(conn, selectors.EVENT_READ, running)
        os.set_blocking(learn_r, False)
        self.selector.register(learn_r, selectors.EVENT_READ, (running,))

    def child_cleanup(self, conn: socket.socket) -> None:
        """In a fresh child: nothing of the server's (its socket, lock, selector, signal handlers) stays."""
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        with contextlib.suppress(OSError):
            self.selector.close()
        for sock in (self.listener, self.wake_r, self.wake_w, conn, *(r.conn for r in self.running.values())):
            if sock is not None:
                sock.close()
        close_all([self.lock_fd, *(r.imports for r in self.running.values())])
        die_with_the_server()

    def from_client(self, running: Running) -> None:
        """A forwarded signal, or the client gone (killed): then its command must not live on."""
        try:
            data = running.conn.recv(256)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            with contextlib.suppress(ProcessLookupError):
                os.kill(running.pid, signal.SIGKILL)
            self.selector.unregister(running.conn)
            return
        for line in data.decode(errors="replace").splitlines():
            word, _, value = line.partition(" ")
            if word == "signal" and value.isdigit() and int(value) in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(running.pid, int(value))

    def from_child(self, running: Running) -> None:
        try:
            chunk = os.read(running.imports, 1 << 16)
        except BlockingIOError:
            return
        if chunk:
            running.learned += chunk
        else:
            self.selector.unregister(running.imports)
            os.close(running.imports)
            running.imports = -1

    def reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            running = self.running.pop(pid, None)
            if running is None:
                continue
            if running.imports >= 0:
                with contextlib.suppress(OSError):
                    while chunk := os.read(running.imports, 1 << 16):
                        running.learned += chunk
                self.selector.unregister(running.imports)
                os.close(running.imports)
            self.preload += [n for n in bytes(running.learned).decode(errors="replace").split("\n") if n]
            if os.WIFSIGNALED(status):
                answer = f"signal {os.WTERMSIG(status)}"
            else:
                answer = f"exit {os.waitstatus_to_exitcode(status)}"
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(running.conn)
            self.reply(running.conn, answer)
            self.last_active = time.monotonic()

    def reply(self, conn: socket.socket, answer: str) -> None:
        with contextlib.suppress(OSError):
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(answer.encode() + b"\n")
        conn.close()

    def learn(self) -> None:
        """Import, between commands, the modules the last ones had to import themselves (and, at start,
        those of the command that started the server), so the next command finds them imported."""
        names = [name for name in self.preload if name not in self.tried]
        self.preload = []
        if not names and self.command is not None:
            return
        self.tried.update(names)  # a module that fails to import here is not tried after every command
        warm(names)
        from .cli import prepared

        self.command = prepared()
        # What is imported now stays out of the collector's sight, so a child's collections do not touch
        # (and copy) every page it shares with the server.
        gc.collect()
        gc.freeze()
        if threading.active_count() > 1:
            self.stopping = True  # an import started a thread; a fork would copy it half-way: serve nothing


def die_with_the_server() -> None:
    """A server killed with kill -9 takes its children along (Linux), as a client killed so would its command;
    its clients then say that the outcome is unknown."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def warm(names: list[str]) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in names:
            if name in sys.modules:
                continue
            with contextlib.suppress(Exception):
                importlib.import_module(name)


def same_user(conn: socket.socket) -> bool:
    """The socket's directory admits only this user; where the kernel says who connected, check it too."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:
        return True
    import struct

    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, option, struct.calcsize("3i")))
    return uid == os.getuid()


def read_request(conn: socket.socket) -> tuple[dict, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(data) < HEADER:
        raise ValueError("short request")
    size = int.from_bytes(data[:HEADER], "big")
    if size > MAX_REQUEST:
        raise ValueError("request too large")
    body = bytearray(data[HEADER:])
    while len(body) < size:
        chunk = conn.recv(min(1 << 16, size - len(body)))
        if not chunk:
            raise EOFError("request cut short")
        body += chunk
    request = marshal.loads(bytes(body))
    if not isinstance(request, dict):
        raise TypeError("not a request")
    return request, list(fds)


def close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            if fd >= 0:
                os.close(fd)


# The child: one command, as a fresh process would run it ---------------------------------------------------


def run_command(request: dict, fds: list[int], learn_w: int, command) -> None:
    """Become the client's process (cwd, environment, streams...), run its command, exit with its status."""
    code = 1
    try:
        before = set(sys.modules)
        take_over(request, fds)
        code = invoke(request["argv"], request["prog"], command)
        code = finish(code)
        with contextlib.suppress(OSError):
            from .client import preloadable

            new = preloadable({name: module for name, module in sys.modules.items() if name not in before})
            write_all(learn_w, "\n".join(new).encode())
    except KeyboardInterrupt:
        code = 130  # a Ctrl-C before the CLI's own handling began: as the CLI exits on one
    except BaseException:  # noqa: BLE001 - whatever happens, the child must not return into the server's loop
        with contextlib.suppress(BaseException):
            import traceback

            traceback.print_exc()
    finally:
        os._exit(code)


def take_over(request: dict, fds: list[int]) -> None:
    import locale

    os.setpgid(0, 0)  # its own process group: a signal meant for the server's group does not reach it
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    if hasattr(time, "tzset"):
        time.tzset()
    with contextlib.suppress(locale.Error):
        locale.setlocale(locale.LC_CTYPE, "")
    os.umask(request["umask"])
    with contextlib.suppress(OSError):
        if request["nice"] > os.getpriority(os.PRIO_PROCESS, 0):
            os.setpriority(os.PRIO_PROCESS, 0, request["nice"])
    sys.path[:] = request["path"]
    streams = request["streams"]
    given = dict(zip(request["fds"], fds, strict=True))  # the client's fd number -> the fd received here
    for fd in range(len(STREAMS)):
        if fd in given:
            os.dup2(given[fd], fd)
            os.close(given[fd])
        else:  # closed in the client, so closed here
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd, name in enumerate(STREAMS):
        setattr(sys, name, _stream(fd, name, streams.get(name) if fd in given else None))
        setattr(sys, f"__{name}__", getattr(sys, name))
    sys.argv = [request["prog"], *request["argv"]]
    # A fresh process seeds numpy's global generator from the OS; a forked child would repeat the server's
    # (scikit-optimize draws from it when a study has no seed). `random` reseeds itself after a fork.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None:
        numpy_random.seed()


def _stream(fd: int, name: str, spec: tuple | None):
    """The text stream Python would have made for this fd in the client: its encoding, errors, buffering."""
    if spec is None:
        return None
    encoding, errors, line_buffering = spec
    if name == "stdin":
        return open(fd, encoding=encoding, errors=errors, closefd=False)
    return open(fd, "w", buffering=1 if line_buffering else -1, encoding=encoding, errors=errors, closefd=False)


def invoke(argv: list[str], prog: str, command=None) -> int:
    from .cli import main

    try:
        main(argv, prog, command)
    except SystemExit as exc:
        return exit_status(exc.code)
    return 0


def exit_status(code: object) -> int:
    """What the interpreter makes of `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    with contextlib.suppress(Exception):
        print(code, file=sys.stderr)
    return 1


def finish(code: int) -> int:
    """What a fresh process does at exit: join its threads, run the exit functions, flush its streams."""
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            if stream is sys.stdout:
                code = code or 120  # as the interpreter exits when it cannot flush stdout at exit
    return code


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.close(fd)


# Entry points ------------------------------------------------------------------------------------------------


def main(boot: dict, boot_file: str) -> None:
    """`python -c ... main(BOOT)`, as client.start_server runs it: serve until idle, stopped, or the code changes."""
    with contextlib.suppress(OSError):
        os.unlink(boot_file)
    preload = list(boot.get("preload") or [])
    key, path = boot["key"], boot["socket"]
    server = Server(key, path, ["somatize.cli", "somatize.asktell", "ctypes", *preload])
    if not server.take_lock():
        return
    try:
        server.learn()  # before listening: the first command finds everything imported
        if server.stopping:
            return
        server.listen()
        server.last_active = time.monotonic()  # idle from now: the imports took their time
        server.serve()
    finally:
        server.close()


def query(op: str) -> str | None:
    """Ask this installation's server for `status` or to `stop`: its answer, or None when none runs."""
    directory = runtime_dir()
    if not private_dir(directory, create=False):
        return None
    key = server_key()
    path = socket_path(key, directory)
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(REQUEST_TIMEOUT)
    try:
        conn.connect(path)
        data = marshal.dumps({"key": key, "op": op})
        conn.sendall(len(data).to_bytes(HEADER, "big") + data)
        reply = b""
        while chunk := conn.recv(1 << 16):
            reply += chunk
    except OSError:
        return None
    finally:
        conn.close()
    return reply.decode().strip() or None


def status() -> dict | None:
    """The running server's pid, socket, start time, commands served and idle timeout; None when none runs."""
    import ast

    answer = query("status")
    if answer is None or not answer.startswith("status "):
        return None
    return ast.literal_eval(answer[len("status "):])


def describe(now: dict) -> str:
    """`somatize server status`: one `key: value` line each."""
    up = max(0.0, time.time() - float(now["started"]))
    return "\n".join([
        f"pid: {now['pid']}", f"socket: {now['socket']}", f"up: {up:.0f}s", f"served: {now['served']}",
        f"running: {now['running']}", f"idle timeout: {now['idle_timeout']:g}s", f"modules: {now['modules']}",
    ])


def stop() -> int | None:
    """Ask the server to exit (after its running commands); its pid, or None when none ran."""
    now = status()
    if now is None:
        return None
    query("stop")
    return int(now["pid"])


__all__ = ["main", "status", "stop"]
