"""Domain records: objectives, metric records, trials and the study, with their JSON form (SPEC §4)."""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from .constraints import Constraint, parse_constraint
from .space import SearchSpace

RESULTS_FORMAT = "somatize.results"
RESULTS_VERSION = 1


def iso(timestamp: float | None) -> str | None:
    """UTC ISO 8601 with microseconds, e.g. 2026-11-29T06:40:01.123456+00:00."""
    if timestamp is None:
        return None
    whole = math.floor(timestamp)
    micros = round((timestamp - whole) * 1e6)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    return f"{_iso_seconds(whole)}.{micros:06d}+00:00"


@functools.lru_cache(maxsize=64)
def _iso_seconds(whole: int) -> str:
    # Journal lines carry two timestamps per trial and fast trials share their
    # second, so the datetime formatting is done once per second.
    return datetime.fromtimestamp(whole, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def from_iso(text: str | None) -> float | None:
    # datetime's C parser, read back twice for every trial of a resumed study: 0.5 µs a time,
    # where slicing iso()'s form by hand (with the seconds cached) took 1.2 µs, 2.6 µs when
    # every time fell in a second of its own (issue 18).
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def trial_id(number: int) -> str:
    return f"trial_{number:04d}"


class TrialState(str, Enum):
    RUNNING = "running"
    COMPLETED = "completed"
    PRUNED = "pruned"
    FAILED = "failed"
    # Asked (`somatize ask`) and never told while its lease lasted: its slot went back to the
    # budget, and a late tell still records its outcome (SPEC §8).
    STALE = "stale"

    def is_finished(self) -> bool:
        """Completed, pruned or failed: an outcome the sampler learns from and the budget counts."""
        # A set made once: looking up TrialState.RUNNING and STALE at each call (an Enum's class attributes)
        # took 1.7 µs where this takes 0.2, twice for each of a resumed study's 100,000 trials (issue 18).
        return self not in _UNFINISHED


_UNFINISHED = frozenset({TrialState.RUNNING, TrialState.STALE})


class Direction(str, Enum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"

    def better(self, a: float, b: float) -> bool:
        """True when a is strictly better than b."""
        return a < b if self is Direction.MINIMIZE else a > b

    def best(self, values: Iterable[float]) -> float:
        return min(values) if self is Direction.MINIMIZE else max(values)

    def reached(self, value: float, target: float) -> bool:
        return value <= target if self is Direction.MINIMIZE else value >= target


REDUCES = ("best", "last")


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: Direction = Direction.MINIMIZE
    reduce: str = "best"

    def __post_init__(self) -> None:
        object.__setattr__(self, "direction", Direction(self.direction))
        if self.reduce not in REDUCES:
            raise ValueError(f"reduce must be best or last, got {self.reduce!r}")

    def reduce_records(self, records: Iterable[MetricRecord]) -> float | None:
        values = [r.value for r in records if r.name == self.metric and not math.isnan(r.value)]
        if not values:
            return None
        return values[-1] if self.reduce == "last" else self.direction.best(values)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "direction": self.direction.value}
        if self.reduce != "best":
            out["reduce"] = self.reduce
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Objective:
        return cls(data["metric"], Direction(data.get("direction", "minimize")), data.get("reduce", "best"))


@dataclass(frozen=True, init=False)
class MetricRecord:
    name: str
    value: float
    step: int | None = None
    timestamp: float = field(default_factory=time.time)

    def __init__(self, name: str, value: float, step: int | None = None, timestamp: float | None = None):
        # Frozen, but filled in one step: the dataclass's own __init__ (an object.__setattr__ per field and
        # the default's factory) cost twice as much, and every trial makes one (issue 18). No timestamp: now.
        self.__dict__.update(name=name, value=value, step=step,
                             timestamp=time.time() if timestamp is None else timestamp)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": _json_number(self.value), "step": self.step,
                "timestamp": iso(self.timestamp)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricRecord:
        name, value = str(data["name"]), data["value"]  # a float read back is taken as it is: no _number call
        return cls(name, value if type(value) is float else _number(value), data.get("step"),
                   from_iso(data["timestamp"]) or 0.0)


def _json_number(value: float) -> float | str:
    # JSON has no NaN/Infinity; keep them readable and reversible as strings.
    return value if math.isfinite(value) else str(value)


def _number(value: Any) -> float:
    if isinstance(value, str) and value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"not a number: {value!r}")
    return float(value)


class _kept_in_instance:  # lower case: used as a decorator, like functools.cached_property
    """functools.cached_property without the lock Python 3.11's takes at each first read (a trial's id is
    first read on the trial loop, for every trial: issue 18). Two threads reading it at once both compute
    the same value, so nothing needs the lock."""

    def __init__(self, function: Any):
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        value = instance.__dict__[self.name] = self.function(instance)
        return value


@dataclass
class Trial:
    number: int
    params: dict[str, Any]
    state: TrialState = TrialState.RUNNING
    metrics: list[MetricRecord] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    started_at: float | None = None
    duration_ms: int | None = None
    error: str | None = None
    pruned_step: int | None = None
    reason: str | None = None
    trial_seed: int | None = None
    attempts: int = 1
    truncated: dict[str, Any] | None = None  # what of the trial's output was cut (somatize.bounds); None: nothing
    log_dir: str | None = None  # its directory, relative to the results file's (executors/artifacts.py)
    slot: str | None = None  # the devices or slot it ran on (executors/slots.py)
    # An asked trial's lease (SPEC §8): its length in seconds and when it runs out (unix time); None for
    # trials a `run` holds, and once the trial is told.
    lease_seconds: float | None = None
    lease_until: float | None = None
    # Whether a completed trial satisfied the constraints on metrics (SPEC §9); None when the study has none.
    feasible: bool | None = None
    violated: list[str] | None = None  # the metric constraints an infeasible trial broke, each as written

    @property
    def is_feasible(self) -> bool:
        """False only for a trial judged infeasible: one that may be best, recommended or on the front."""
        return self.feasible is not False

    @_kept_in_instance
    def id(self) -> str:
        return trial_id(self.number)

    def best_metric(self, metric: str, direction: Direction | str = Direction.MINIMIZE) -> float | None:
        return Objective(metric, Direction(direction)).reduce_records(self.metrics)

    def value(self, metric: str) -> float | None:
        return self.values.get(metric)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "number": self.number,
            "state": self.state.value,
            "params": self.params,
            "values": {k: _json_number(v) for k, v in self.values.items()},
            "metrics": [m.to_dict() for m in self.metrics],
            "started_at": iso(self.started_at),
            "duration_ms": self.duration_ms,
            "error": self.error,
            "pruned_step": self.pruned_step,
            "reason": self.reason,
            "trial_seed": self.trial_seed,
            "attempts": self.attempts,
        }
        if self.truncated is not None:  # only when something was cut: files without it stay as they were
            out["truncated"] = self.truncated
        if self.log_dir is not None:
            out["log_dir"] = self.log_dir
        if self.slot is not None:
            out["slot"] = self.slot
        if self.lease_until is not None:  # asked trials only
            out["lease"] = {"seconds": self.lease_seconds, "until": iso(self.lease_until)}
        if self.feasible is not None:  # only in studies with constraints on metrics
            out["feasible"] = self.feasible
            if not self.feasible:
                out["violated"] = list(self.violated or [])
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Trial:
        # Built for every trial of a resumed 100,000-trial study: positional arguments, and the usual
        # values (floats) taken as they are; each field converted in the order of Trial's, as ever.
        number = data["number"]
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            raise ValueError(f"trial number must be a non-negative integer, got {number!r}")
        params = data["params"]
        if not isinstance(params, dict):
            raise ValueError("trial params must be a mapping")
        get = data.get
        state = _state(data["state"])
        record = MetricRecord.from_dict
        metrics = [record(m) for m in get("metrics") or []]
        values = get("values") or {}
        values = {str(k): v if type(v) is float else _number(v) for k, v in values.items()}
        started_at = from_iso(get("started_at"))
        log_dir, slot = get("log_dir"), get("slot")
        return cls(
            number,
            dict(params),
            state,
            metrics,
            values,
            started_at,
            get("duration_ms"),
            get("error"),
            get("pruned_step"),
            get("reason"),
            get("trial_seed"),
            get("attempts", 1),
            get("truncated"),
            log_dir if isinstance(log_dir, str) else None,
            slot if isinstance(slot, str) else None,
            **_lease(get("lease")),
            feasible=_feasible(get("feasible")),
            violated=[str(v) for v in get("violated") or []] or None,
        )


class _read_later:  # lower case: used like functools.cached_property
    """A field of a trial adopted from its decoded record (Trial.adopt) kept in the record's form until
    first read, then built as from_dict builds it and kept: `metrics` (a MetricRecord and two timestamps
    parsed for each record) and `started_at` (a timestamp parsed). A resumed 100,000-trial study reads
    them for almost none of its trials (issue 18). Set on Trial after the dataclass is made, so the
    dataclass keeps its own defaults and __init__; a trial made by __init__ has both fields in its
    __dict__ and never comes here (a non-data descriptor: the instance's own value wins)."""

    def __init__(self, name: str, raw: str, build: Callable[[Any], Any]):
        self.name, self.raw, self.build = name, raw, build

    def __get__(self, instance: Any, owner: Any = None) -> Any:
        if instance is None:
            return self
        state = instance.__dict__
        if self.raw not in state:  # another thread has just built it, or the field was deleted
            if self.name in state:
                return state[self.name]
            raise AttributeError(self.name)
        # Not popped before it is built: a second thread reading it meanwhile builds an equal value.
        value = state[self.name] = self.build(state[self.raw])
        state.pop(self.raw, None)
        return value


def _metric_records(raw: list[dict[str, Any]]) -> list[MetricRecord]:
    return [MetricRecord(m["name"], m["value"], m["step"], from_iso(m["timestamp"]) or 0.0) for m in raw]


Trial.metrics = _read_later("metrics", "_metrics_read", _metric_records)  # type: ignore[assignment]
Trial.started_at = _read_later("started_at", "_started_at_read", from_iso)  # type: ignore[assignment]


def adopt_trials(records: list[dict[str, Any]]) -> list[Trial]:
    """Trials made from decoded trial records that are plainly valid (storage/bulkread.py checked them:
    what from_dict would build, with nothing to convert), each record taken over as the trial's
    __dict__ (no copy), its metrics and start time left as read until first read (_read_later).

    A resumed 100,000-trial study built every trial by from_dict: 0.5-0.9 s, half of it the metric
    records and their timestamps (issue 18); this is a few dictionary operations a trial.
    """
    states, new = _STATES, Trial.__new__
    trials = []
    append = trials.append
    for record in records:
        record["state"] = states[record["state"]]
        record["_metrics_read"] = record.pop("metrics")
        record["_started_at_read"] = record.pop("started_at")
        del record["id"]  # the id is the number's, as from_dict has it (Trial.id)
        trial = new(Trial)
        trial.__dict__ = record
        append(trial)
    return trials


# By value: TrialState(value) goes through Enum's machinery, a tenth of building a trial read back.
_STATES = {state.value: state for state in TrialState}


def _state(value: Any) -> TrialState:
    state = _STATES.get(value) if isinstance(value, str) else None
    return TrialState(value) if state is None else state  # ValueError for one that is not a state


def _lease(data: Any) -> dict[str, float | None]:
    """A trial record's `lease` object as Trial fields; ValueError/TypeError when it is not one."""
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise TypeError("a trial's lease must be an object")
    return {"lease_seconds": _number(data["seconds"]), "lease_until": from_iso(data["until"])}


def _feasible(value: Any) -> bool | None:
    if value is not None and not isinstance(value, bool):
        raise ValueError(f"trial feasible must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Recommendation:
    """The trial a model-based sampler recommends (SPEC §9): its number, and the model's
    predicted mean and standard deviation of the primary metric there, in its units.

    `noise` is the model's observation noise as a standard deviation in the same
    units, when it has one.
    """

    number: int
    mean: float
    sd: float
    noise: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recommendation:
        number = data["number"]
        if not isinstance(number, int) or isinstance(number, bool):
            raise ValueError(f"recommended_trial number must be an integer, got {number!r}")
        noise = data.get("noise")
        return cls(number, _number(data["mean"]), _number(data["sd"]), None if noise is None else _number(noise))


def new_study_id(name: str) -> str:
    import secrets  # here: hmac and hashlib are a tenth of a cold `ask`'s imports otherwise

    return f"{name}-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


class ParetoFront:
    """The Pareto front of a study kept up as trials finish, in any order: the non-dominated vectors of
    the completed feasible trials so far (every objective's value known and not NaN), each vector with
    its lowest-numbered trial. Study.pareto_front is this over the study's trials.

    The periodic results writer keeps one beside the run, since it names the front in the head that
    the loop encodes; walking every trial for it took 1.9 s at 100,000 trials of two objectives
    (issue 18). Here a finished trial costs a comparison with each member of the front.
    """

    def __init__(self, study: Study):
        # (metric, sign): each objective as one to minimise; none with one objective (no front then)
        self._objectives = [(o.metric, 1.0 if o.direction is Direction.MINIMIZE else -1.0) for o in study.objectives]
        if len(self._objectives) < 2:
            self._objectives = []
        self._members: list[tuple[tuple[float, ...], Trial]] = []
        for trial in study.trials if self._objectives else ():  # one objective: no call per trial of a resume
            self.add(trial)

    def add(self, trial: Trial) -> None:
        if not self._objectives or trial.state is not TrialState.COMPLETED or not trial.is_feasible:
            return
        vector = []
        for metric, sign in self._objectives:
            value = trial.values.get(metric)
            if value is None or math.isnan(value):
                return
            vector.append(sign * value)
        point = tuple(vector)
        kept = []
        for index, member in enumerate(self._members):
            other = member[0]
            if other == point:  # the same vector: the earliest trial stands for it
                if trial.number < member[1].number:
                    self._members[index] = (point, trial)
                return
            if all(a <= b for a, b in zip(other, point)):
                return  # dominated
            if not all(b <= a for a, b in zip(other, point)):
                kept.append(member)  # not dominated by the new trial
        kept.append((point, trial))
        self._members = kept

    def trials(self) -> list[Trial]:
        """The front, by trial number (as Study.pareto_front gives it)."""
        return sorted((trial for _, trial in self._members), key=lambda t: t.number)


@dataclass
class Study:
    """A study's definition and its trials. `spec` is the whole normalised study file."""

    name: str
    space: SearchSpace
    objectives: list[Objective]
    strategy: dict[str, Any] = field(default_factory=lambda: {"type": "random"})
    spec: dict[str, Any] = field(default_factory=dict)
    id: str = ""
    trials: list[Trial] = field(default_factory=list)
    status: str = "running"
    started_at: float | None = None
    finished_at: float | None = None
    stop_reason: str | None = None
    # Set by the runner from its sampler at the end of a run (Bayesian studies).
    recommended: Recommendation | None = None
    # `metrics:` (recorded, not optimised) and the constraints naming a metric, judged after each trial (SPEC §9).
    metrics: tuple[str, ...] = ()
    outcome_constraints: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        if not self.objectives:
            raise ValueError("a study needs at least one objective")
        if not self.id:
            self.id = new_study_id(self.name)
        if not self.spec:
            self.spec = {
                "name": self.name,
                "search_space": self.space.to_spec(),
                "strategy": dict(self.strategy),
                "objectives": [o.to_dict() for o in self.objectives],
            }
            constraints = [c.text for c in (*self.space.constraints, *self.outcome_constraints)]
            if constraints:
                self.spec["constraints"] = constraints
            if self.metrics:
                self.spec["metrics"] = list(self.metrics)

    @property
    def primary(self) -> Objective:
        return self.objectives[0]

    def objective(self, metric: str | None) -> Objective:
        if metric is None:
            return self.primary
        for objective in self.objectives:
            if objective.metric == metric:
                return objective
        raise KeyError(metric)

    def completed(self) -> list[Trial]:
        return [t for t in self.trials if t.state is TrialState.COMPLETED]

    def feasible(self) -> list[Trial]:
        """Completed trials that satisfied every constraint on metrics: the only ones that may be best."""
        # Trial.is_feasible written out, and the state looked up once: a property call and a class attribute
        # per trial were half of the summary at the end of a 100,000-trial resume, which asks twice (issue 18).
        completed = TrialState.COMPLETED
        return [t for t in self.trials if t.state is completed and t.feasible is not False]

    def judge(self, trial: Trial) -> None:
        """Set a completed trial's feasibility from its metrics (a study without metric constraints leaves it None)."""
        if not self.outcome_constraints or trial.state is not TrialState.COMPLETED:
            return
        values = self.outcome_values(trial)
        broken = [why for c in self.outcome_constraints if (why := c.judge(trial.params, values)) is not None]
        trial.feasible, trial.violated = not broken, broken or None

    def outcome_values(self, trial: Trial) -> dict[str, float]:
        """The metric values constraints see: each objective's value, and each `metrics:` entry's last report."""
        values = dict(trial.values)
        for name in self.metrics:
            if name not in values:
                last = Objective(name, reduce="last").reduce_records(trial.metrics)
                if last is not None:
                    values[name] = last
        return values

    def best_trial(self, metric: str | None = None) -> Trial | None:
        """Best completed feasible trial for an objective (primary by default); ties go to the earliest."""
        objective = self.objective(metric)
        name, minimize = objective.metric, objective.direction is Direction.MINIMIZE
        best: Trial | None = None
        best_value = math.nan
        completed = TrialState.COMPLETED
        # In any order: an equal value goes to the lower number (no sort of 100,000). The comparisons
        # written out, not Direction.better: a resumed 100,000-trial study looks for its best twice.
        for trial in self.trials:
            if trial.state is not completed or trial.feasible is False:
                continue
            value = trial.values.get(name)
            if value is None or value != value:  # NaN
                continue
            if (
                best is None
                or (value < best_value if minimize else value > best_value)
                or (value == best_value and trial.number < best.number)
            ):
                best, best_value = trial, value
        return best

    def recommended_trial(self) -> Trial | None:
        """The trial the sampler recommended, when it did and the trial is here, completed and feasible."""
        if self.recommended is None:
            return None
        for trial in self.trials:
            if trial.number == self.recommended.number and trial.state is TrialState.COMPLETED and trial.is_feasible:
                return trial
        return None

    def pareto_front(self) -> list[Trial]:
        """Non-dominated completed feasible trials over all objectives, by trial number (empty with one objective)."""
        return ParetoFront(self).trials()

    def to_dict(self) -> dict[str, Any]:
        return {**self.head_dict(), "trials": [t.to_dict() for t in self.trials]}

    def head_dict(self, best: Trial | None | str = "compute", front: list[Trial] | None = None) -> dict[str, Any]:
        """The results document without its trials (which to_dict adds last): what a writer
        that encodes each trial once (storage/results.py) puts before them. `best`: the best
        trial when the caller kept track of it (best_trial walks every trial); `front`: the
        Pareto front likewise (pareto_front's order)."""
        if isinstance(best, str):
            best = self.best_trial()
        return {
            "format": RESULTS_FORMAT,
            "version": RESULTS_VERSION,
            "study": {
                "name": self.name,
                "id": self.id,
                "spec": self.spec,
                "objectives": [o.to_dict() for o in self.objectives],
            },
            "status": self.status,
            "stop_reason": self.stop_reason,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "best_trial": None
            if best is None
            else {
                "id": best.id,
                "number": best.number,
                "value": _json_number(best.values[self.primary.metric]),
                "params": best.params,
            },
            "pareto_front": [t.id for t in (self.pareto_front() if front is None else front)],
            **self._recommended_dict(),
        }

    def _recommended_dict(self) -> dict[str, Any]:
        trial = self.recommended_trial()
        if trial is None or self.recommended is None:
            return {}
        value = trial.values.get(self.primary.metric)
        return {
            "recommended_trial": {
                "id": trial.id,
                "number": trial.number,
                "value": None if value is None else _json_number(value),
                "params": trial.params,
                "mean": _json_number(self.recommended.mean),
                "sd": _json_number(self.recommended.sd),
                "noise": None if self.recommended.noise is None else _json_number(self.recommended.noise),
            }
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Study:
        """Rebuild a study from its results JSON; raises ValueError/KeyError/TypeError on bad input."""
        if data.get("format") != RESULTS_FORMAT:
            raise ValueError(f"not a somatize results file (format is {data.get('format')!r})")
        if data.get("version") != RESULTS_VERSION:
            raise ValueError(f"unsupported results version {data.get('version')!r}")
        header = data["study"]
        spec = header["spec"]
        study = cls(
            name=str(header["name"]),
            space=SearchSpace.from_spec(spec["search_space"]),
            objectives=[Objective.from_dict(o) for o in header["objectives"]],
            strategy=dict(spec.get("strategy") or {}),
            spec=dict(spec),
            id=str(header["id"]),
            trials=[Trial.from_dict(t) for t in data["trials"]],
            status=str(data["status"]),
            started_at=from_iso(data.get("started_at")),
            finished_at=from_iso(data.get("finished_at")),
            stop_reason=data.get("stop_reason"),
        )
        study.metrics, study.outcome_constraints = _outcome_constraints(spec, study)
        recommended = data.get("recommended_trial")  # absent from files before SPEC §9, and for other strategies
        if recommended is not None:
            if not isinstance(recommended, Mapping):
                raise ValueError("recommended_trial must be an object")
            study.recommended = Recommendation.from_dict(recommended)
            if study.recommended_trial() is None:
                raise ValueError(f"recommended_trial names no completed trial (number {study.recommended.number})")
        return study


def _outcome_constraints(spec: Mapping[str, Any], study: Study) -> tuple[tuple[str, ...], tuple[Constraint, ...]]:
    """`metrics:` and the constraints on metrics of a results file's spec (ValueError when one is malformed)."""
    metrics = spec.get("metrics") or []
    if not isinstance(metrics, list) or not all(isinstance(m, str) for m in metrics):
        raise ValueError("spec metrics must be a list of names")
    texts = spec.get("constraints") or []
    if not isinstance(texts, list):
        raise ValueError("spec constraints must be a list of expressions")
    known = [*study.space.names, *study.space.constants]
    outcome = [*(o.metric for o in study.objectives), *metrics]
    parsed = [parse_constraint(text, known, outcome) for text in texts]
    return tuple(metrics), tuple(c for c in parsed if c.on_outcome)
