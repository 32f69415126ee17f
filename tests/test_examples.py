"""The example studies in studies/ do what README and their own comments say."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from somatize.cli import app
from somatize.storage.results import read_results

STUDIES = Path(__file__).resolve().parent.parent / "studies"
cli = CliRunner()


def test_digits_stops_early_at_its_target_accuracy(tmp_path):
    pytest.importorskip("sklearn")
    study_file = STUDIES / "digits.yaml"
    declared = yaml.safe_load(study_file.read_text())
    out = tmp_path / "digits.json"
    outcome = cli.invoke(app, ["run", str(study_file), "-o", str(out), "-q"])
    assert outcome.exit_code == 0, outcome.output
    study = read_results(out)
    target = declared["target"]["value"]
    best = study.best_trial()
    assert study.stop_reason == "target"
    assert len(study.trials) < declared["strategy"]["n_trials"]
    assert best is not None and best.values["accuracy"] >= target
    # It stopped at the first trial that reached the target, not later.
    assert study.trials[-1].id == best.id
    assert all(t.values["accuracy"] < target for t in study.trials[:-1])
