from __future__ import annotations

import json
import threading
import time

from somatize.events import EventBus, StudyProgress, TrialStarted


def test_any_number_of_handlers_see_every_event():
    bus = EventBus()
    seen_a, seen_b = [], []
    bus.subscribe(seen_a.append)
    bus.subscribe(seen_b.append)
    for i in range(5):
        bus.publish(StudyProgress(completed=i, total=5))
    assert [e.completed for e in seen_a] == [e.completed for e in seen_b] == list(range(5))


def test_slow_queue_subscriber_never_blocks_and_knows_what_it_missed():
    bus = EventBus()
    queue = bus.subscribe_queue(maxsize=10)
    release = threading.Event()
    got = []

    def slow_consumer():
        release.wait()
        while (event := queue.get(timeout=0.1)) is not None:
            got.append(event)

    consumer = threading.Thread(target=slow_consumer)
    consumer.start()
    started = time.perf_counter()
    for i in range(1000):
        bus.publish(TrialStarted(trial_id=f"trial_{i:04d}", number=i))
    publish_seconds = time.perf_counter() - started
    release.set()
    consumer.join(5)
    assert publish_seconds < 1.0  # a stuck consumer did not hold the publisher up
    assert queue.missed == 990
    assert [e.number for e in got] == list(range(990, 1000))  # newest kept


def test_events_serialise_to_one_json_object():
    event = StudyProgress(completed=1, total=None)
    data = event.to_json()
    assert data["event"] == "study_progress" and data["best_value"] is None
    assert "\n" not in json.dumps(data, allow_nan=False)
