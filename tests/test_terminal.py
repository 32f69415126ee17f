"""somatize on a real terminal: stderr is a pseudo-terminal of a known size, as a person's would be."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from pathlib import Path

SHELL_STUDY = """\
name: quad
seed: 3
search_space:
  x: {type: float, low: -2.0, high: 2.0}
  k: [a, b]
strategy: {type: random, n_trials: 6}
objective: {metric: y, direction: minimize}
executor:
  command: python -c "import sys; x=float(sys.argv[1]); print('y=' + repr((x - 0.5) ** 2))" {x}
"""
_ESCAPES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def in_terminal(
    args: list[str], cwd: Path, columns: int = 80, rows: int = 30, timeout: float = 60, interrupt_at: Path | None = None
) -> tuple[int, str]:
    """Run `somatize ARGS` with stderr on a pseudo-terminal; its exit code and what the terminal got, as text.

    With `interrupt_at`, send one SIGINT (a Ctrl-C) once that file exists.
    """
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    env = {**os.environ, "NO_COLOR": "1", "TERM": "xterm", "COLUMNS": str(columns), "LINES": str(rows)}
    process = subprocess.Popen(
        ["somatize", *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=slave, cwd=cwd, env=env
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the child closed its end
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
            if interrupt_at is not None and interrupt_at.exists():
                time.sleep(0.3)  # a few refreshes of the live table first
                process.send_signal(signal.SIGINT)
                interrupt_at = None
        code = process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
        os.close(master)
    return code, _ESCAPES.sub("", b"".join(chunks).decode("utf-8", errors="replace"))


def test_the_top_trials_are_listed_once_at_the_end_of_a_run(tmp_path):
    (tmp_path / "s.yaml").write_text(SHELL_STUDY)
    code, screen = in_terminal(["run", "s.yaml", "-o", "r.json"], tmp_path)
    assert code == 0, screen
    end = screen[screen.index("study quad completed") :]
    assert len(re.findall(r"^top \d", end, flags=re.MULTILINE)) == 1, end
    assert "best y so far:" in end and "results: r.json" in end


RETRIED_STUDY = """\
name: retried
seed: 1
search_space:
  x: {type: float, low: 0.0, high: 1.0}
strategy: {type: random, n_trials: 3}
objective: {metric: y}
retries: 2
executor:
  command: "if [ -e m_{trial_number} ]; then echo y={x}; else touch m_{trial_number}; exit 1; fi"
"""


def test_the_live_table_shows_the_attempt_of_a_retried_trial(tmp_path):
    (tmp_path / "s.yaml").write_text(RETRIED_STUDY)
    code, screen = in_terminal(["run", "s.yaml", "-o", "r.json"], tmp_path)
    assert code == 0, screen
    rows = [line for line in screen.splitlines() if line.startswith("trial_0002")]
    assert rows and "│ completed │" in rows[-1] and rows[-1].rstrip().endswith("│ attempt 2 of 3"), rows


def test_the_first_ctrl_c_says_what_it_waits_for_on_the_live_table(tmp_path):
    (tmp_path / "s.yaml").write_text(
        SHELL_STUDY.replace("command: python -c", "command: touch started; sleep 30; python -c")
    )
    code, screen = in_terminal(["run", "s.yaml", "-o", "r.json"], tmp_path, interrupt_at=tmp_path / "started")
    assert code == 130, screen
    assert "interrupted: waiting for 1 running trial (Ctrl-C again to stop at once)" in screen
