"""Random search's first draws made a block of trials at a time (samplers/random.py FirstDraws, issue 18):
a seeded study proposes exactly what it proposed one trial at a time, and a resumed one continues the
same streams."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from somatize.cli import app
from somatize.samplers import make_sampler
from somatize.samplers import random as random_search
from somatize.samplers.streams import TrialStreams
from somatize.studyfile.loader import load_study

cli = CliRunner()

SPACES = {
    "every kind of dimension": """\
  lr: {type: float, low: 1.0e-4, high: 0.1, scale: log}
  dropout: {type: float, low: 0.0, high: 0.5, step: 0.1}
  x: {type: float, low: -3, high: 7}
  y: {type: float, low: 0.001, high: 1.0e+6}
  layers: {type: int, low: 1, high: 4}
  units: {type: int, low: 16, high: 1024, scale: log}
  stride: {type: int, low: -10, high: 20, step: 3}
  act: {type: categorical, choices: [relu, 1, true, 2.5, -0.0]}
  epochs: 20
""",
    "conditions and constraints": """\
  optimizer: [adam, sgd, rmsprop]
  momentum: {type: float, low: 0.5, high: 0.9, when: {optimizer: [sgd, rmsprop]}}
  nesterov: {type: categorical, choices: [true, false], when: {optimizer: sgd}}
  layers: {type: int, low: 1, high: 6}
constraints:
  - layers <= 4 or optimizer == "adam"
""",
    # 40 points for 40 trials: draws that hit a point already run, redraws, then the pick among the last
    "a small finite space filled up": """\
  a: {type: int, low: 0, high: 7}
  b: [p, q, r, s, t]
""",
}


def _config(tmp_path: Path, space: str, n_trials: int, seed: int = 3):
    path = tmp_path / "s.yaml"
    path.write_text(
        f"name: blocks\nseed: {seed}\nsearch_space:\n{space}"
        f"strategy: {{type: random, n_trials: {n_trials}}}\nobjective: {{metric: y}}\n"
        "executor: {function: f:objective}\n"
    )
    return load_study(path)


def _proposals(config, count: int, seed: int) -> list:
    sampler = make_sampler(config.strategy, config.space, config.primary, seed)
    proposals = [sampler.propose(number) for number in range(count)]
    # what it noted as run is each proposal's key as the space makes it (a finite space's remainder reads them)
    assert sampler.seen == {config.space.key(p) for p in proposals if p is not None}
    return proposals


@pytest.mark.parametrize("space", list(SPACES))
@pytest.mark.parametrize("seed", [0, 3, 2**32 - 1])
def test_a_seeded_study_proposes_with_blocks_what_it_proposed_one_trial_at_a_time(tmp_path, monkeypatch, space, seed):
    finite = "finite" in space
    config = _config(tmp_path, SPACES[space], 40 if finite else 3000, seed)
    count = 40 if finite else 3000
    monkeypatch.setattr(random_search, "BLOCK_AFTER", 10**9)
    one_by_one = _proposals(config, count, seed)
    monkeypatch.setattr(random_search, "BLOCK_AFTER", 0)
    monkeypatch.setattr(random_search, "BLOCK", 700)  # trials past the first block too
    in_blocks = _proposals(config, count, seed)
    assert in_blocks == one_by_one
    assert [[(k, type(v)) for k, v in p.items()] for p in in_blocks] == [
        [(k, type(v)) for k, v in p.items()] for p in one_by_one
    ]  # the same Python types: no numpy value reaches the parameters
    if not finite and not config.space.conditions:  # and what numpy's Generator of each trial's stream gives
        streams = TrialStreams(seed)
        expected = [config.space.from_unit(streams.at(n).random(len(config.space)).tolist()) for n in range(50)]
        assert in_blocks[:50] == expected


QUICK = """\
name: resumed
seed: 11
search_space:
  x: {type: float, low: 0.0, high: 1.0}
  lr: {type: float, low: 1.0e-5, high: 1.0, scale: log}
  act: [relu, tanh, gelu]
  layers: {type: int, low: 1, high: 8}
strategy: {type: random, n_trials: 900}
objective: {metric: value}
executor: {function: "quick:objective"}
"""


def test_a_resumed_seeded_study_continues_the_same_streams_with_blocks(tmp_path, monkeypatch):
    (tmp_path / "quick.py").write_text("def objective(params):\n    return params['x'] * params['layers']\n")
    (tmp_path / "s.yaml").write_text(QUICK)
    monkeypatch.chdir(tmp_path)

    def params(*args: str, name: str) -> list:
        result = cli.invoke(app, ["run", "s.yaml", "-o", name, "-q", *args])
        assert result.exit_code == 0, result.output
        return [(t["number"], t["params"]) for t in json.loads((tmp_path / name).read_text())["trials"]]

    monkeypatch.setattr(random_search, "BLOCK_AFTER", 10**9)
    one_by_one = params(name="one.json")
    monkeypatch.setattr(random_search, "BLOCK_AFTER", 16)
    monkeypatch.setattr(random_search, "BLOCK_IMPORT_TRIALS", 0)  # blocks whether numpy is imported or not
    monkeypatch.setattr(random_search, "BLOCK", 256)
    whole = params(name="whole.json")
    params("--n-trials", "300", name="resumed.json")  # stopped at 300 (a block and a part of one) ...
    resumed = params("--resume", name="resumed.json")  # ... and resumed to the 900 planned
    assert whole == one_by_one
    assert resumed == one_by_one
    assert [number for number, _ in resumed] == list(range(900))
