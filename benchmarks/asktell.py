"""Ask/tell latency and the throughput of many processes on one study (issue 19).

    nice -n 19 python benchmarks/asktell.py [--repeat 5] [--processes 8] [--trials 200]

1. Per-call wall time of `somatize ask` and `somatize tell` (each a fresh
   process, as a shell loop or a Slurm task runs them) on a study that
   already has 10, 100 or 1,000 trials asked and told, for random, grid and
   Bayesian search: "cold" with the command server off (each call imports
   everything itself), "warm" through the command server (somatize.server;
   started by a first call, then warmed by two more before timing); and the
   same calls through the Python API in one process (what a transaction
   costs without interpreter start and imports).
2. Throughput: `--processes` processes, each looping ask -> tell through the
   Python API (tests/test_asktell.py's worker), on one study of `--trials`
   random-search trials: trials told per second.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src"
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
       "SOMATIZE_SERVER": "off"}
sys.path.insert(0, str(SRC))

STRATEGIES = {
    "random": "{type: random, n_trials: 100000}",
    "grid": "{type: grid, points_per_dim: 100, n_trials: 100000}",
    "bayesian": "{type: bayesian, n_trials: 100000, n_initial: 10}",
}

WORKER = textwrap.dedent(
    """\
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from somatize.asktell import ask, tell, told_outcome, read_header
    from somatize.errors import NothingToAsk
    from somatize.studyfile import load_study

    config, results = load_study(sys.argv[1]), Path(sys.argv[2])
    while True:
        try:
            trial = ask(config, results)
        except NothingToAsk:
            break
        tell(results, trial.id, told_outcome(read_header(results), value=repr((trial.params["x"] - 1) ** 2)))
    """
)


def study_file(directory: Path, strategy: str, n_trials: int | None = None) -> Path:
    text = STRATEGIES[strategy]
    if n_trials is not None:
        text = text.replace("100000", str(n_trials))
    (directory / "objective.py").write_text("def objective(params):\n    return (params['x'] - 1) ** 2 + params['y'] ** 2\n")
    path = directory / f"{strategy}.yaml"
    path.write_text(
        f"name: bench-{strategy}\nseed: 1\nsearch_space:\n  x: {{type: float, low: -5, high: 5}}\n"
        f"  y: {{type: float, low: -5, high: 5}}\nstrategy: {text}\nobjective: {{metric: loss}}\n"
        "executor: {function: objective:objective}\n"
    )
    return path


def prefill(study: Path, results: Path, trials: int) -> None:
    """A study of `trials` asked and told trials: run them, then write the journal as ask/tell leaves it
    (for each trial a running record, then its outcome)."""
    from dataclasses import replace

    from somatize.storage.journal import header_record, journal_path
    from somatize.storage.results import read_results
    from somatize.study import TrialState

    subprocess.run([sys.executable, "-m", "somatize", "run", str(study), "-o", str(results), "-q",
                    "--n-trials", str(trials)], check=True, env=ENV)
    done = read_results(results)
    lines = [header_record(done)]
    for trial in done.trials:
        asked = replace(trial, state=TrialState.RUNNING, metrics=[], values={}, lease_seconds=7200.0,
                        lease_until=(trial.started_at or 0) + 7200.0)
        lines += [{"trial": asked.to_dict()}, {"trial": trial.to_dict()}]
    journal_path(results).write_text("".join(json.dumps(line) + "\n" for line in lines))


def cli_calls(study: Path, results: Path, repeat: int, env: dict[str, str] = ENV) -> tuple[float, float]:
    asks, tells = [], []
    base = [sys.executable, "-m", "somatize"]
    for _ in range(repeat):
        started = time.perf_counter()
        out = subprocess.run([*base, "ask", str(study), "-o", str(results)], capture_output=True, text=True,
                             check=True, env=env)
        asks.append(time.perf_counter() - started)
        trial = json.loads(out.stdout)["trial_id"]
        started = time.perf_counter()
        subprocess.run([*base, "tell", str(results), trial, "--value", "1.5"], check=True, env=env)
        tells.append(time.perf_counter() - started)
    return statistics.median(asks), statistics.median(tells)


def warm_calls(study: Path, results: Path, repeat: int) -> tuple[float, float]:
    """The same calls through a command server of their own (a private directory), stopped afterwards."""
    directory = tempfile.mkdtemp(prefix="smz-bench-")
    env = {**ENV, "SOMATIZE_SERVER": "on", "SOMATIZE_SERVER_DIR": directory}
    status = [sys.executable, "-m", "somatize", "server", "status"]
    try:
        cli_calls(study, results, 1, env)  # a cold call: it starts the server
        deadline = time.monotonic() + 300
        while subprocess.run(status, env=env, capture_output=True, check=False).returncode != 0:
            assert time.monotonic() < deadline, "the command server did not start"
            time.sleep(0.1)
        cli_calls(study, results, 2, env)  # what the first served calls imported, the server imports too
        return cli_calls(study, results, repeat, env)
    finally:
        subprocess.run([sys.executable, "-m", "somatize", "server", "stop"], env=env, capture_output=True,
                       check=False)
        deadline = time.monotonic() + 60
        while any(name.endswith(".sock") for name in os.listdir(directory)) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(directory, ignore_errors=True)


def api_calls(study: Path, results: Path, repeat: int) -> tuple[float, float]:
    from somatize.asktell import ask, read_header, tell, told_outcome
    from somatize.studyfile import load_study

    config = load_study(str(study))
    ask(config, results)  # imports (skopt for Bayesian) outside the timing; this trial stays running
    asks, tells = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        trial = ask(config, results)
        asks.append(time.perf_counter() - started)
        started = time.perf_counter()
        tell(results, trial.id, told_outcome(read_header(results), value="1.5"))
        tells.append(time.perf_counter() - started)
    return statistics.median(asks), statistics.median(tells)


def throughput(directory: Path, processes: int, trials: int) -> float:
    study, results = study_file(directory, "random", trials), directory / "throughput.json"
    worker = directory / "worker.py"
    worker.write_text(WORKER)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(worker), str(study), str(results), str(SRC)])
             for _ in range(processes)]
    for proc in procs:
        proc.wait()
    elapsed = time.perf_counter() - started
    told = sum(t["state"] == "completed" for t in json.loads(results.read_text())["trials"])
    assert told == trials, told
    return trials / elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--sizes", default="random:10,random:1000,grid:10,grid:1000,bayesian:10,bayesian:100")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()}")
    # The floor every CLI call pays on this machine at this load: an interpreter, then somatize's CLI.
    floors = []
    for argv in ([sys.executable, "-c", "pass"], [sys.executable, "-m", "somatize", "--version"],
                 [sys.executable, "-c", "import somatize.client"]):
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - started)
        floors.append(statistics.median(times))
    print(f"floor: python -c pass {floors[0] * 1000:.0f} ms, somatize --version {floors[1] * 1000:.0f} ms, "
          f"the warm client's imports (import somatize.client) {floors[2] * 1000:.0f} ms")
    print("| strategy | trials in the study | `ask` cold | `ask` warm | `tell` cold | `tell` warm | ask (API) "
          "| tell (API) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for item in args.sizes.split(","):
        strategy, size = item.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            study, results = study_file(directory, strategy), directory / "r.json"
            prefill(study, results, int(size))
            ask_cli, tell_cli = cli_calls(study, results, args.repeat)
            ask_warm, tell_warm = warm_calls(study, results, args.repeat)
            ask_api, tell_api = api_calls(study, results, args.repeat)
        print(f"| {strategy} | {size} | {ask_cli * 1000:.0f} ms | {ask_warm * 1000:.0f} ms | {tell_cli * 1000:.0f} ms "
              f"| {tell_warm * 1000:.0f} ms | {ask_api * 1000:.0f} ms | {tell_api * 1000:.0f} ms |", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        rate = throughput(Path(tmp), args.processes, args.trials)
    print(f"\n{args.processes} processes looping ask -> tell on {args.trials} random trials: {rate:.1f} trials/s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
