"""The program's entry point: `ask`, `tell` and `heartbeat` through a warm command server when one runs.

A fresh Python process spends most of a `somatize ask` importing (typer, numpy,
the study-file loader, and for a Bayesian study scikit-optimize and
scikit-learn: about 2 s), while the journal transaction itself takes a few
milliseconds. So, as Mercurial's `chg` does, this entry point first looks
(with the standard library only) for a command server of this installation
(server.py): a process that has imported all of that already and forks a
fresh copy of itself for each command. The client hands it argv, the working
directory, the environment, the umask and its own stdin/stdout/stderr (file
descriptors, over a Unix socket), forwards Ctrl-C and SIGTERM/SIGHUP, and
exits with the status the command ended with. With no server, the command
runs in this process exactly as before, and a server is started in the
background for the next call.

A server is started by the second call run without one within its idle time
(a loop of asks), so a single `somatize ask` leaves no process behind;
`SOMATIZE_SERVER=on` starts it at the first. `SOMATIZE_SERVER=off` (or `0`,
`no`, `false`) turns all of it off; `SOMATIZE_SERVER_IDLE` sets how long an
idle server stays (seconds, default 600); `SOMATIZE_SERVER_DIR` the private
directory of its socket.

This module must stay cheap to import: standard library only, and only
modules that cost well under a millisecond or two (no json, no pathlib).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
import time

# The commands that go through a server: the ones a shell loop or a batch job calls once per
# trial. `run` keeps its own process (it runs for minutes, and owns the terminal and its signals).
WARM_COMMANDS = frozenset({"ask", "tell", "heartbeat"})
OFF_VALUES = frozenset({"off", "0", "no", "false"})
VARIABLES = ("SOMATIZE_SERVER", "SOMATIZE_SERVER_IDLE", "SOMATIZE_SERVER_DIR")  # documented in docs/asktell.md
# Variables that modules read when they are imported, so a server's children would not see a
# client's own value: a client that differs in one of them gets a server of its own.
IMPORT_TIME_VARIABLES = (
    "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "PYTHONWARNINGS", "PYTHONHASHSEED",
)
# Ten minutes: a shell loop or a batch job whose trials take a few minutes finds the server warm at
# every ask; an idle server holds about 200 MB (measured: RSS of a server with the Bayesian stack
# imported) and no CPU. SOMATIZE_SERVER_IDLE changes it.
DEFAULT_IDLE = 600.0
HEADER = 4  # a request is a 4-byte big-endian length, then a marshal'd dict
_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def main() -> None:
    """`somatize ...`: through a warm server when one runs (ask/tell/heartbeat), else the CLI in this process."""
    argv = sys.argv[1:]
    warm = bool(argv) and argv[0] in WARM_COMMANDS and enabled(os.environ)
    if warm:
        try:
            code = served(argv)
        except KeyboardInterrupt:  # Ctrl-C before the command was handed over: it did not run
            sys.exit(130)
        if code is not None:
            sys.exit(code)
    from .cli import main as cli_main

    try:
        cli_main()
    finally:
        if warm:
            start_server()


def enabled(environ: os._Environ[str] | dict[str, str]) -> bool:
    """On unless SOMATIZE_SERVER says off; only on Linux, where fork, SCM_RIGHTS and PR_SET_PDEATHSIG are as
    server.py needs them (macOS forbids many frameworks in a forked child; Windows has no fork)."""
    return sys.platform.startswith("linux") and environ.get("SOMATIZE_SERVER", "").strip().lower() not in OFF_VALUES


def idle_timeout(environ: os._Environ[str] | dict[str, str]) -> float:
    text = environ.get("SOMATIZE_SERVER_IDLE", "").strip()
    try:
        seconds = float(text) if text else DEFAULT_IDLE
    except ValueError:
        return DEFAULT_IDLE
    return seconds if seconds > 0 else DEFAULT_IDLE


# Where the server of this installation listens ---------------------------------------------------------


def runtime_dir(environ: os._Environ[str] | dict[str, str] | None = None) -> str:
    """The private directory of this user's servers: never the study's (maybe shared) file system."""
    environ = os.environ if environ is None else environ
    if environ.get("SOMATIZE_SERVER_DIR"):
        return environ["SOMATIZE_SERVER_DIR"]
    runtime = environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        return os.path.join(runtime, "somatize")
    return os.path.join("/tmp", f"somatize-{os.getuid()}")


def private_dir(path: str, create: bool) -> bool:
    """True when `path` is a directory of ours that nobody else can enter (made so, with `create`)."""
    if create:
        try:
            os.makedirs(path, mode=0o700, exist_ok=True)
        except OSError:
            return False
    try:
        info = os.lstat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def server_key() -> str:
    """What a server must share with this client to run its commands as this process would: the same
    interpreter and flags, the same somatize code, the same import path and import-time variables."""
    return repr((
        sys.executable, sys.version, _PACKAGE, sys.path[1:], tuple(sys.flags), sys.warnoptions,
        sorted(sys._xoptions.items()), [(name, os.environ.get(name)) for name in IMPORT_TIME_VARIABLES],
    ))


def socket_path(key: str, directory: str | None = None) -> str:
    import zlib

    data = key.encode("utf-8", "surrogateescape")
    name = f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"
    return os.path.join(runtime_dir() if directory is None else directory, f"server-{name}.sock")


def lock_path(socket_file: str) -> str:
    return socket_file[: -len(".sock")] + ".lock"


# Running a command through the server ---------------------------------------------------------------------


def served(argv: list[str]) -> int | None:
    """Run `argv` in the server; its exit status, or None when no server could take it (run it here)."""
    import socket

    directory = runtime_dir()
    if not private_dir(directory, create=False):
        return None
    key = server_key()
    path = socket_path(key, directory)
    if len(path.encode()) >= 100:  # the limit of a Unix socket's path (108 on Linux, 104 elsewhere)
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        _remove_if_stale(path)
        return None
    try:
        request = _request(key, argv)
        if request is None:
            return None
        fds = request["fds"] = [fd for fd in (0, 1, 2) if _open_fd(fd)]
        data = marshal.dumps(request)
        socket.send_fds(conn, [len(data).to_bytes(HEADER, "big") + data], fds)
        return _wait(conn)
    except OSError:
        return None  # the server went away before it took the command: nothing ran
    finally:
        conn.close()


def _request(key: str, argv: list[str]) -> dict | None:
    try:
        cwd = os.getcwd()
    except OSError:
        return None  # a removed working directory: let the CLI say what it says about that
    mask = os.umask(0o022)
    os.umask(mask)
    streams = {}
    for name in ("stdin", "stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None:
            streams[name] = (stream.encoding, stream.errors, stream.line_buffering)
    return {
        "key": key, "argv": argv, "prog": _program_name(), "cwd": cwd, "env": dict(os.environ),
        "umask": mask, "path": list(sys.path), "streams": streams, "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def _program_name() -> str:
    """The name usage lines give the program, as click derives it: `python -m somatize` or `somatize`."""
    main_module = sys.modules.get("__main__")
    package = getattr(main_module, "__package__", None)
    if package:
        return f"python -m {package}"
    return os.path.basename(sys.argv[0]) or "somatize"


def _open_fd(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _wait(conn) -> int | None:
    """Forward the signals that would interrupt this process; return the command's exit status, or die of
    the signal that killed it."""
    import signal

    def forward(signum, _frame):
        with contextlib.suppress(OSError):  # the server is gone: its answer (none) says so below
            conn.sendall(f"signal {signum}\n".encode())

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:
            signal.signal(signum, forward)
    replies, buffer = [], b""
    while not replies or replies[-1] == "started":
        try:
            chunk = conn.recv(256)
        except OSError:
            chunk = b""  # as a close: before "started" nothing ran; after it, the outcome is unknown
        if not chunk:
            if not replies:
                return None  # closed before an answer: the server did not take the command
            replies.append("lost")  # it took the command, then went away
            break
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        replies += [line.decode() for line in lines]
    word, _, value = replies[-1].partition(" ")
    if word == "exit":
        return int(value)
    if word == "signal":
        signum = int(value)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return 128 + signum  # a signal this process does not die of (it was caught elsewhere)
    if word == "lost":
        sys.stderr.write("somatize: the command server stopped while the command ran; its outcome is unknown\n")
        return 1
    return None  # "refused": another installation, or its code changed; nothing ran


def _remove_if_stale(path: str) -> None:
    """A socket left by a server that is gone: remove it, unless a server (holding the lock) is starting."""
    if not os.path.exists(path):
        return
    import fcntl

    try:
        fd = os.open(lock_path(path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return
    with contextlib.suppress(OSError):
        os.unlink(path)
    os.close(fd)  # releases the lock


# Starting one -----------------------------------------------------------------------------------------------


def start_server() -> None:
    """Start this installation's server in the background, detached, unless one runs (or is starting).

    Called after a command ran in this process, so the command itself pays nothing; the modules it
    imported are what the server imports first.
    """
    if not enabled(os.environ):
        return
    directory = runtime_dir()
    if not private_dir(directory, create=True):
        return
    key = server_key()
    path = socket_path(key, directory)
    if len(path.encode()) >= 100 or os.path.exists(path) or _locked(lock_path(path)):
        return
    if not _loop_of_calls(path):
        return
    import subprocess

    boot = {"key": key, "socket": path, "sys_path": [os.path.dirname(_PACKAGE), *sys.path[1:]],
            "preload": preloadable(sys.modules)}
    boot_file = os.path.join(directory, f"boot-{os.getpid()}.bin")
    code = (
        "import marshal, sys; boot = marshal.load(open(sys.argv[1], 'rb')); sys.path[:] = boot['sys_path']; "
        "from somatize.server import main; main(boot, sys.argv[1])"
    )
    try:
        with open(boot_file, "wb") as f:
            marshal.dump(boot, f)
        argv = [sys.executable, *subprocess._args_from_interpreter_flags(), "-c", code, boot_file]
        # Its stderr (nothing, unless it fails) goes to a log beside its socket: a server that cannot start
        # leaves the reason there, and every call still runs (by itself).
        log_fd = os.open(path[: -len(".sock")] + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(log_fd, "wb") as log:
            subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log,
                             cwd="/", close_fds=True, start_new_session=True)
    except (OSError, ValueError):
        return  # no server: every call stays as fast as it was


def _loop_of_calls(socket_file: str) -> bool:
    """Whether this call is the second without a server within the idle time (a loop of asks, which the
    server is for), or SOMATIZE_SERVER=on asks for one at once. A single call only leaves the time of
    its call (an empty file), not a process."""
    if os.environ.get("SOMATIZE_SERVER", "").strip().lower() == "on":
        return True
    stamp = socket_file[: -len(".sock")] + ".called"
    try:
        recent = time.time() - os.stat(stamp).st_mtime < idle_timeout(os.environ)
    except OSError:
        recent = False
    try:
        os.close(os.open(stamp, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.utime(stamp)
    except OSError:
        return False
    return recent


def _locked(path: str) -> bool:
    """True when a server holds this lock and is starting or serving (not when it is stopping: a new one,
    started now, waits for its lock)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return not os.pread(fd, 64, 0).startswith(b"stopping")
    finally:
        os.close(fd)
    return False


def preloadable(modules: dict) -> list[str]:
    """The imported modules a server may import again: somatize's own and installed libraries, in the order
    they were imported, not scripts, tests or a user's objective modules."""
    roots = tuple({os.path.join(os.path.realpath(p), "") for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)})
    package = os.path.join(_PACKAGE, "")
    names = []
    for name, module in list(modules.items()):
        if "__main__" in name or name.startswith(("somatize.client", "somatize.server")):
            continue
        where = getattr(module, "__file__", None)
        if where is None:
            if name in sys.builtin_module_names:
                names.append(name)
            continue
        where = os.path.realpath(where)
        if where.startswith(package) or where.startswith(roots):
            names.append(name)
    return names


__all__ = ["main", "runtime_dir", "server_key", "socket_path"]
