"""Trial slots: devices (or any values the user names) that running trials hold one each (SPEC §10).

`resources: {gpus: [0, 1, 2, 3], per_trial: 1}` makes four slots of one
device; `per_trial: 2` two slots of two ("0,1" and "2,3"). A running trial
holds its slot from its start to its end (every retry included), so no two
running trials share a device; it sees the devices as CUDA_VISIBLE_DEVICES,
$SOMATIZE_GPUS and `{gpus}`, and the slot as $SOMATIZE_SLOT and `{slot}`.
`resources: {slots: [a, b, c]}` names slots of any kind (machines, NUMA
nodes, licences) the same way, without CUDA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Slot:
    label: str  # {slot}, $SOMATIZE_SLOT, the trial record's `slot`
    gpus: str | None = None  # {gpus}, CUDA_VISIBLE_DEVICES; None for a named slot


def gpu_slots(devices: Sequence[str], per_trial: int) -> list[Slot]:
    """`per_trial` devices per slot, in the order given; devices left over are not used."""
    groups = [devices[i : i + per_trial] for i in range(0, len(devices) - per_trial + 1, per_trial)]
    return [Slot(",".join(group), ",".join(group)) for group in groups]


def named_slots(values: Sequence[str]) -> list[Slot]:
    return [Slot(value) for value in values]


class SlotPool:
    """The free slots; the runner takes one when a trial starts and gives it back when the trial is recorded.

    The runner never has more trials running than there are slots (`parallel`
    is at most the pool's size), so `acquire` always finds one. A trial gets
    the slot freed last (the first ones in the order listed at the start): with
    fewer trials at once than slots, the same slots are used again, and the
    worker process that serves a slot stays warm instead of being replaced.
    """

    def __init__(self, slots: Sequence[Slot]):
        if not slots:
            raise ValueError("a slot pool needs at least one slot")
        self.size = len(slots)
        self._free = deque(slots)
        self._lock = threading.Lock()

    def acquire(self) -> Slot:
        with self._lock:
            if not self._free:
                raise RuntimeError("no free slot: more trials running than slots")
            return self._free.popleft()

    def release(self, slot: Slot) -> None:
        with self._lock:
            self._free.appendleft(slot)
