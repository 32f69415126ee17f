"""somatize on a real terminal: stderr is a pseudo-terminal of a known size, as a person's would be."""

from __future__ import annotations

import fcntl
import os
import re
import select
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


def in_terminal(args: list[str], cwd: Path, columns: int = 80, rows: int = 30, timeout: float = 60) -> tuple[int, str]:
    """Run `somatize ARGS` with stderr on a pseudo-terminal; its exit code and what the terminal got, as text."""
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
