"""Ask/tell latency and the throughput of many processes on one study (issue 19).

    nice -n 19 python benchmarks/asktell.py [--repeat 5] [--processes 8] [--trials 200]
        [--src OLD/src --src src] [--bytecode]

1. Per-call wall time of `somatize ask` and `somatize tell` (each a fresh
   process, as a shell loop or a Slurm task runs them) on a study that
   already has 10, 100 or 1,000 trials asked and told, for random, grid and
   Bayesian search: "cold" with the command server off (each call imports
   everything itself), with the CPU time (user + system) of those processes,
   which a loaded machine inflates less than wall time; "warm" through the
   command server (somatize.server; started by a first call, then warmed by two
   more before timing); and the same calls through the Python API in one process
   (what a transaction costs without interpreter start and imports).
2. Throughput: `--processes` processes, each looping ask -> tell through the
   Python API (tests/test_asktell.py's worker), on one study of `--trials`
   random-search trials: trials told per second.

`--src` (repeatable) names the somatize source trees to measure, e.g. an earlier
commit's from `git archive <commit> src | tar -x -C /tmp/old`: each row is measured
for each tree in turn, on copies of one study, so a before/after comparison shares
the machine's load. `--bytecode` lets Python keep compiled bytecode (in a temporary
directory), as an installed package has it; without it the environment decides
(PYTHONDONTWRITEBYTECODE=1 makes every process compile somatize from source).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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
sys.path.insert(0, str(SRC))  # prefill's own imports: the newest tree


def environment(src: Path, bytecode: Path | None = None) -> dict[str, str]:
    """The environment of a process that runs somatize from `src`."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")]),
           "SOMATIZE_SERVER": "off"}
    if bytecode is not None:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode)
    return env


ENV = environment(SRC)

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


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall and CPU (user + system) seconds of one process, and its standard output."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, out.stdout


def cli_calls(study: Path, results: Path, repeat: int, env: dict[str, str] = ENV) -> dict[str, float]:
    """Medians of `repeat` ask -> tell rounds in fresh processes: wall and CPU seconds of each."""
    times: dict[str, list[float]] = {"ask": [], "tell": [], "ask_cpu": [], "tell_cpu": []}
    base = [sys.executable, "-m", "somatize"]
    for _ in range(repeat):
        wall, cpu, out = timed([*base, "ask", str(study), "-o", str(results)], env)
        times["ask"].append(wall)
        times["ask_cpu"].append(cpu)
        wall, cpu, _ = timed([*base, "tell", str(results), json.loads(out)["trial_id"], "--value", "1.5"], env)
        times["tell"].append(wall)
        times["tell_cpu"].append(cpu)
    return {name: statistics.median(values) for name, values in times.items()}


def warm_calls(study: Path, results: Path, repeat: int, env: dict[str, str] = ENV) -> dict[str, float]:
    """The same calls through a command server of their own (a private directory), stopped afterwards."""
    directory = tempfile.mkdtemp(prefix="smz-bench-")
    env = {**env, "SOMATIZE_SERVER": "on", "SOMATIZE_SERVER_DIR": directory}
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


API = textwrap.dedent(
    """\
    import json, statistics, sys, time
    from pathlib import Path
    from somatize.asktell import ask, read_header, tell, told_outcome
    from somatize.studyfile import load_study

    config, results, repeat = load_study(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    ask(config, results)  # imports (skopt for Bayesian) outside the timing; this trial stays running
    asks, tells = [], []
    for _ in range(repeat):
        started = time.perf_counter()
        trial = ask(config, results)
        asks.append(time.perf_counter() - started)
        started = time.perf_counter()
        tell(results, trial.id, told_outcome(read_header(results), value="1.5"))
        tells.append(time.perf_counter() - started)
    print(json.dumps([statistics.median(asks), statistics.median(tells)]))
    """
)


def api_calls(study: Path, results: Path, repeat: int, env: dict[str, str] = ENV) -> tuple[float, float]:
    """Medians of `repeat` ask -> tell rounds through the Python API, in one process that has imported
    everything (a process of its own, so that each source tree is measured with its own code)."""
    out = subprocess.run([sys.executable, "-c", API, str(study), str(results), str(repeat)], capture_output=True,
                         text=True, check=True, env=env)
    ask_time, tell_time = json.loads(out.stdout)
    return ask_time, tell_time


def throughput(directory: Path, processes: int, trials: int, src: Path = SRC) -> float:
    study, results = study_file(directory, "random", trials), directory / "throughput.json"
    worker = directory / "worker.py"
    worker.write_text(WORKER)
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, str(worker), str(study), str(results), str(src)])
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
    parser.add_argument("--src", type=Path, action="append", default=None,
                        help="a somatize source tree to measure (repeatable; default: this checkout's src)")
    parser.add_argument("--bytecode", action="store_true", help="let Python keep compiled bytecode, as installed")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-warm", action="store_true", help="leave out the calls through the command server")
    args = parser.parse_args()
    sources = [src.resolve() for src in args.src or [SRC]]
    with tempfile.TemporaryDirectory() as cache:
        envs = {src: environment(src, Path(cache) / str(i) if args.bytecode else None) for i, src in enumerate(sources)}
        measure(args, sources, envs)


def measure(args: argparse.Namespace, sources: list[Path], envs: dict[Path, dict[str, str]]) -> None:
    print(f"load average before: {os.getloadavg()}")
    print(f"bytecode kept: {'yes' if args.bytecode else os.environ.get('PYTHONDONTWRITEBYTECODE') != '1'}")
    # The floor every CLI call pays on this machine at this load: an interpreter, then somatize's CLI.
    for src in sources:
        env = envs[src]
        subprocess.run([sys.executable, "-m", "somatize", "--version"], check=True, env=env,
                       stdout=subprocess.DEVNULL)  # compiles the bytecode, with --bytecode
        floors = []
        for argv in ([sys.executable, "-c", "pass"], [sys.executable, "-m", "somatize", "--version"]):
            runs = [timed(argv, env) for _ in range(args.repeat)]
            floors.append((statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)))
        print(f"floor ({src}): python -c pass {floors[0][0] * 1000:.0f} ms (CPU {floors[0][1] * 1000:.0f}), "
              f"somatize --version {floors[1][0] * 1000:.0f} ms (CPU {floors[1][1] * 1000:.0f})")
    print("| strategy | trials in the study | source | `ask` cold | `tell` cold | ask CPU | tell CPU "
          "| `ask` warm | `tell` warm | ask (API) | tell (API) |")
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for item in args.sizes.split(","):
        strategy, size = item.split(":")
        with tempfile.TemporaryDirectory() as tmp:
            directory = Path(tmp)
            template = directory / "template"
            template.mkdir()
            study = study_file(template, strategy)
            prefill(study, template / "r.json", int(size))
            for i, src in enumerate(sources):
                copy = directory / f"copy{i}"
                shutil.copytree(template, copy)
                cli = cli_calls(copy / study.name, copy / "r.json", args.repeat, envs[src])
                warm = None if args.no_warm else warm_calls(copy / study.name, copy / "r.json", args.repeat, envs[src])
                ask_api, tell_api = api_calls(copy / study.name, copy / "r.json", args.repeat, envs[src])
                name = src.parent.name if src.name == "src" else src.name
                print(f"| {strategy} | {size} | {name} | {cli['ask'] * 1000:.0f} ms | {cli['tell'] * 1000:.0f} ms "
                      f"| {cli['ask_cpu'] * 1000:.0f} ms | {cli['tell_cpu'] * 1000:.0f} ms "
                      + ("| - | - " if warm is None else f"| {warm['ask'] * 1000:.0f} ms | {warm['tell'] * 1000:.0f} ms ")
                      + f"| {ask_api * 1000:.0f} ms | {tell_api * 1000:.0f} ms |", flush=True)
    if not args.no_throughput:
        for src in sources:
            with tempfile.TemporaryDirectory() as tmp:
                rate = throughput(Path(tmp), args.processes, args.trials, src)
            print(f"\n{args.processes} processes looping ask -> tell on {args.trials} random trials ({src}): "
                  f"{rate:.1f} trials/s")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
