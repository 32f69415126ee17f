"""Study events and the EventBus that carries them to subscribers.

Two kinds of subscriber:
- a *handler* (`subscribe`) runs inline in the publishing thread. It is for
  work that must finish before the runner goes on (the journal's flush) and
  must be quick.
- a *queue* (`subscribe_queue`) is a bounded buffer the publisher never waits
  on: when it is full the oldest event is dropped and `missed` counts it, so a
  slow consumer (the live table) can tell that it lost events.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from .study import Trial, iso


# Events are plain (not frozen) dataclasses: frozen ones cost twice as much to build,
# and five are built per trial on the runner's hot path. Treat them as read-only.
@dataclass
class Event:
    kind: ClassVar[str] = "event"
    time: float = field(default_factory=time.time, init=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.kind, "time": iso(self.time)}
        for f in fields(self):
            if f.name != "time":
                out[f.name] = _jsonable(getattr(self, f.name))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, Trial):
        return value.to_dict()
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else str(value)
    return value


@dataclass
class StudyStarted(Event):
    kind: ClassVar[str] = "study_started"
    study_id: str = ""
    study_name: str = ""
    strategy: str = ""
    total_trials: int | None = None
    objectives: tuple[str, ...] = ()
    directions: tuple[str, ...] = ()
    resumed_trials: int = 0
    retries: int = 0  # re-runs a failed trial gets: a trial has up to retries + 1 attempts


@dataclass
class TrialStarted(Event):
    kind: ClassVar[str] = "trial_started"
    trial_id: str = ""
    number: int = 0
    params: dict[str, Any] = field(default_factory=dict)
    slot: str | None = None  # the devices or slot it holds, when the study declares resources


@dataclass
class TrialMetric(Event):
    kind: ClassVar[str] = "trial_metric"
    trial_id: str = ""
    name: str = ""
    value: float = math.nan
    step: int | None = None


@dataclass
class TrialCompleted(Event):
    kind: ClassVar[str] = "trial_completed"
    trial_id: str = ""
    values: dict[str, float] = field(default_factory=dict)
    trial: Trial | None = None


@dataclass
class TrialPrunedEvent(Event):
    kind: ClassVar[str] = "trial_pruned"
    trial_id: str = ""
    step: int | None = None
    reason: str = ""
    trial: Trial | None = None


@dataclass
class TrialFailed(Event):
    kind: ClassVar[str] = "trial_failed"
    trial_id: str = ""
    error: str = ""
    trial: Trial | None = None


@dataclass
class BestUpdated(Event):
    kind: ClassVar[str] = "best_updated"
    trial_id: str = ""
    value: float = math.nan
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyProgress(Event):
    kind: ClassVar[str] = "study_progress"
    completed: int = 0
    total: int | None = None
    best_value: float = math.nan
    pruned: int = 0
    failed: int = 0


@dataclass
class StudyCompleted(Event):
    kind: ClassVar[str] = "study_completed"
    status: str = "completed"
    reason: str = ""
    best_trial_id: str | None = None
    best_value: float = math.nan


FINISHED_TRIAL_EVENTS = (TrialCompleted, TrialPrunedEvent, TrialFailed)

Handler = Callable[[Event], None]


class Subscription:
    """A bounded, non-blocking buffer of events for one consumer."""

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self.missed = 0
        self._events: deque[Event] = deque()
        self._ready = threading.Condition()

    def offer(self, event: Event) -> None:
        with self._ready:
            if len(self._events) >= self.maxsize:
                self._events.popleft()
                self.missed += 1
            self._events.append(event)
            self._ready.notify()

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when none arrives within timeout."""
        with self._ready:
            if not self._events and not self._ready.wait_for(lambda: bool(self._events), timeout):
                return None
            return self._events.popleft()

    def drain(self) -> list[Event]:
        with self._ready:
            events = list(self._events)
            self._events.clear()
            return events


class EventBus:
    """Events to handlers and queues. A handler may say which event classes it wants (`subscribe`'s
    `events`, else its own `events` attribute); the bus calls it for those only, and `wants` tells a
    publisher whether an event would reach anyone, so it need not build one nobody reads (a quiet run's
    journal and results writer take only finished trials: four of a trial's five events went unread)."""

    def __init__(self) -> None:
        self._handlers: list[tuple[Handler, tuple[type[Event], ...] | None]] = []
        self._queues: list[Subscription] = []
        self._lock = threading.Lock()
        self._routes: dict[type[Event], list[Handler]] = {}  # event class -> its handlers, worked out once
        # Changes at every subscribe and unsubscribe: a publisher that keeps what `wants` answered (the runner,
        # once per trial instead of four calls) asks again only when it has changed.
        self.version = 0

    def subscribe(self, handler: Handler, events: tuple[type[Event], ...] | None = None) -> None:
        """Call handler inline for every event (or only those of the classes in `events`, or in the
        handler's own `events` attribute); it must be fast and must not raise."""
        if events is None:
            events = getattr(handler, "events", None)
        self._handlers.append((handler, None if events is None else tuple(events)))
        self._routes.clear()
        self.version += 1

    def subscribe_queue(self, maxsize: int = 1024) -> Subscription:
        subscription = Subscription(maxsize)
        self._queues.append(subscription)
        self.version += 1
        return subscription

    def unsubscribe(self, subscriber: Handler | Subscription) -> None:
        if isinstance(subscriber, Subscription):
            self._queues.remove(subscriber)
            self.version += 1
            return
        for index, (handler, _) in enumerate(self._handlers):
            if handler == subscriber:
                del self._handlers[index]
                self._routes.clear()
                self.version += 1
                return
        raise ValueError(f"{subscriber!r} is not subscribed")

    @property
    def has_subscribers(self) -> bool:
        return bool(self._handlers or self._queues)

    def wants(self, kind: type[Event]) -> bool:
        """Whether an event of this class would reach any handler or queue."""
        route = self._routes.get(kind)  # worked out once per class: no call of _route on the trial loop
        return bool(self._queues) or bool(route if route is not None else self._route(kind))

    def _route(self, kind: type[Event]) -> list[Handler]:
        route = self._routes.get(kind)
        if route is None:
            route = self._routes[kind] = [h for h, events in self._handlers if events is None or issubclass(kind, events)]
        return route

    def publish(self, event: Event) -> None:
        route = self._routes.get(type(event))
        if route is None:
            route = self._route(type(event))
        with self._lock:
            for handler in route:
                handler(event)
            for queue in self._queues:
                queue.offer(event)
