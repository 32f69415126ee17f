"""Where a process's main thread waited, from a `perf record -e sched:sched_switch` of it.

    perf record -o /tmp/run.data -e sched:sched_switch -g -- python benchmarks/stall_trace.py
    python benchmarks/offcpu.py /tmp/run.data

Each time the main thread (the trial loop) is switched out, until it runs again, is one wait, by its
state: R (preempted: the machine's load), S (asleep: the GIL, a lock) or D (in the kernel: a file
system lock, I/O). An S or D wait is put down to the thread of the process that ran last before the
main thread ran again: for the GIL, the thread that held it (threads are numbered by their first
appearance; in a `stall_trace.py` run thread1 is the journal's fsync thread, the later ones the results
writer's). The longest waits of each state are printed with the kernel frames they slept in.
"""

from __future__ import annotations

import argparse
import re
import subprocess
from collections import defaultdict

HEAD = re.compile(r"(\d+)/(\d+)\s+([\d.]+):.*prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=\S* next_pid=(\d+)")
SKIP = ("__schedule", "schedule", "schedule_timeout", "io_schedule", "__cond_resched", "do_syscall_64",
        "entry_SYSCALL_64_after_hwframe", "[unknown]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data")
    parser.add_argument("--longest", type=int, default=5)
    args = parser.parse_args()
    text = subprocess.run(["perf", "script", "-i", args.data, "-F", "comm,pid,tid,time,trace,ip,sym"],
                          capture_output=True, text=True, check=True).stdout
    switches = []  # time, process, thread switched out, its state, thread switched in, its frames
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        match = HEAD.search(lines[0]) if lines else None
        if match:
            frames = [f.split()[1].split("+")[0] for f in lines[1:] if len(f.split()) > 1]
            switches.append((float(match[3]), int(match[1]), int(match[4]), match[5][0], int(match[6]),
                             [f for f in frames if f not in SKIP]))
    count: dict[int, int] = defaultdict(int)
    for _, process, out, *_ in switches:
        count[process] += process == out
    main_thread = max(count, key=count.__getitem__)  # the process whose main thread switched most: the study's
    first: dict[int, float] = {}
    for when, process, out, *_ in switches:
        if process == main_thread:
            first.setdefault(out, when)
    names = {tid: f"thread{i}" for i, tid in enumerate(sorted(first, key=first.__getitem__))}
    waits: dict[str, list[tuple[float, float, str, list[str]]]] = defaultdict(list)
    left = None  # (time, state, frames) of the main thread's last switch out
    ran = "none"
    start = switches[0][0] if switches else 0.0
    for when, process, out, state, into, frames in switches:
        if out == main_thread:
            left, ran = (when, state, frames), "none"
        elif process == main_thread:
            ran = names.get(out, "none")
        if into == main_thread and left is not None:
            waits[left[1]].append((when - left[0], left[0] - start, ran, left[2]))
            left = None
    for state, chosen in sorted(waits.items()):
        chosen.sort(reverse=True)
        print(f"state {state}: {len(chosen)} waits, {sum(w for w, *_ in chosen) * 1e3:.1f} ms")
        if state == "R":
            continue
        by: dict[str, list[float]] = defaultdict(list)
        for wait, _, thread, _ in chosen:
            by[thread].append(wait)
        for thread, values in sorted(by.items()):
            values.sort(reverse=True)
            print(f"  last ran before the loop: {thread:9s} {len(values):4d} waits, {sum(values) * 1e3:7.1f} ms, "
                  f"longest {', '.join(f'{v * 1e3:.2f}' for v in values[:4])} ms")
        for wait, at, thread, frames in chosen[: args.longest]:
            print(f"  {wait * 1e3:7.2f} ms at {at:7.2f} s ({thread}): {' < '.join(frames[:8])}")


if __name__ == "__main__":
    main()
