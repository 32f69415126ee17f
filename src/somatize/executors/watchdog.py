"""The watchdog of one `somatize run`: ends the run's processes once somatize is gone.

`python -m somatize.executors.watchdog RUN_TAG` is started by processes.supervise()
in a session of its own, with a pipe on stdin whose only write end somatize holds.
End of file on it means somatize exited or died, `kill -9` included; then every
process whose environment carries SOMATIZE_PROCESS_TAG=RUN_TAG or RUN_TAG/... (trial
processes, worker processes and whatever they started, setsid or not) gets SIGTERM,
and SIGKILL after a grace. A trial's processes cannot escape that short of clearing
their environment.
"""

from __future__ import annotations

import os
import signal
import sys
import time

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL, as for a trial's process group
ROUNDS = 5  # scans after the SIGKILL, for processes forked while the first ones were ended


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m somatize.executors.watchdog RUN_TAG", file=sys.stderr)
        return 2
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)  # only the end of somatize ends this process
    while sys.stdin.buffer.read(4096):  # nothing is ever written; read() returns b"" at EOF
        pass
    end_run(argv[1])
    return 0


def end_run(run_tag: str) -> None:
    import psutil

    tagged = _tagged(psutil, run_tag)
    for process in tagged:
        _signal(psutil, process, signal.SIGTERM)
    _, alive = psutil.wait_procs(tagged, timeout=KILL_GRACE)
    for _ in range(ROUNDS):
        if not alive:
            break
        for process in alive:
            _signal(psutil, process, signal.SIGKILL)
        time.sleep(0.05)
        alive = _tagged(psutil, run_tag)


def _tagged(psutil, run_tag: str) -> list:
    me = os.getpid()
    found = []
    for process in psutil.process_iter():
        if process.pid == me:
            continue
        try:
            tag = process.environ().get("SOMATIZE_PROCESS_TAG", "")
        except (psutil.Error, OSError):  # gone, a zombie, or another user's
            continue
        if tag == run_tag or tag.startswith(run_tag + "/"):
            found.append(process)
    return found


def _signal(psutil, process, sig: signal.Signals) -> None:
    try:
        process.send_signal(sig)
    except psutil.Error:
        pass


if __name__ == "__main__":
    sys.exit(main(sys.argv))
