"""One random stream per trial number, from the study's seed and the number alone.

Not one stream per study: a resumed study (a new process whose sampler was
told the history) must draw for trial 64 what an uninterrupted one would
have, not replay trial 0's draws, which all hit finished trials and would
make the sampler stop as if the space were exhausted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_U64 = 0xFFFFFFFFFFFFFFFF
# PCG64's stream constant: any odd number; numpy's own default increment.
_INCREMENT = 0xDA3E39CB94B95BDB


def _mix64(z: int) -> int:
    """SplitMix64's finaliser: a well-mixed 64-bit value from any 64-bit value."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return z ^ (z >> 31)


def derive_trial_seed(study_seed: int | None, number: int) -> int:
    """A stable 31-bit seed per trial, independent of how many trials ran before.

    SplitMix64's finaliser over (study seed, number): well mixed, and plain
    integer arithmetic, which is cheaper than a hash on the per-trial path.
    """
    base = 0 if study_seed is None else study_seed + 1
    z = (base * 0x9E3779B97F4A7C15 + (number + 1) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64
    return (z ^ (z >> 31)) & 0x7FFFFFFF


# PCG64's multiplier (O'Neill's 128-bit LCG constant, numpy's PCG_DEFAULT_MULTIPLIER_128).
_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
_U128 = (1 << 128) - 1
_DOUBLE = 1.0 / 9007199254740992.0  # 2**-53: a 53-bit integer to a double in [0, 1)


def trial_state(entropy: int, number: int) -> int:
    """The 128-bit PCG64 state trial `number`'s draws start from."""
    base = (entropy & _U64) * 0x9E3779B97F4A7C15 + (number + 1) * 0xBF58476D1CE4E5B9
    high, low = _mix64(base & _U64), _mix64((base + 0x9E3779B97F4A7C15) & _U64)
    return (high << 64) | low


def _numpy_state(state: int, has_uint32: int, uinteger: int) -> dict:
    return {"bit_generator": "PCG64", "state": {"state": state, "inc": _INCREMENT},
            "has_uint32": has_uint32, "uinteger": uinteger}  # fmt: skip


class UnitDraws:
    """Trial `number`'s stream for a sampler that only draws uniform numbers (random search): numpy's
    `Generator(PCG64)` set as TrialStreams sets it, draw for draw, in plain integers.

    `random(n)` is PCG64's step and XSL-RR output and numpy's 53-bit double, so a random `ask` or `run`
    never imports numpy (about 60 ms of a 460 ms `somatize ask` on an idle 2-core machine). Anything
    else (`integers`, for the rare pick among a finite space's last points) goes to a numpy Generator
    in the same state, which then carries on from where numpy left it. A random proposal of four
    dimensions costs what it did with numpy's Generator: 14 µs (best of 5 x 4,000, load 5).
    """

    def __init__(self, entropy: int, number: int):
        self._state = trial_state(entropy, number)
        self._has_uint32, self._uinteger = 0, 0

    def random(self, count: int) -> list[float]:
        """`count` uniform doubles in [0, 1): `Generator.random(count).tolist()`."""
        state, out = self._state, []
        for _ in range(count):
            state = (state * _MULTIPLIER + _INCREMENT) & _U128
            word, rotation = ((state >> 64) ^ state) & _U64, state >> 122
            word = ((word >> rotation) | (word << (64 - rotation))) & _U64
            out.append((word >> 11) * _DOUBLE)
        self._state = state
        return out

    def integers(self, high: int) -> int:
        """One integer in [0, high): `Generator.integers(high)`."""
        import numpy as np

        bits = np.random.PCG64(0)
        bits.state = _numpy_state(self._state, self._has_uint32, self._uinteger)
        value = int(np.random.Generator(bits).integers(high))
        after = bits.state
        self._state, self._has_uint32, self._uinteger = after["state"]["state"], after["has_uint32"], after["uinteger"]
        return value


class TrialStreams:
    """A numpy Generator whose state is set from (entropy, trial number) before each trial's draws.

    One Generator, re-positioned in place, so whatever holds it (the Bayesian
    sampler's acquisition search) follows. The state is set directly rather
    than through a new SeedSequence and Generator per trial: timed on the
    2-core CI machine under the same load, 20 µs against 42 µs a trial, where
    benchmarks/overhead.py's whole in-memory trial took 52 µs (idle). Any
    128-bit state of PCG64 is valid; well-mixed states put the trials' streams
    at unrelated places of its 2**128 cycle.
    """

    def __init__(self, entropy: int):
        import numpy as np

        self._entropy = entropy & _U64
        self._bits = np.random.PCG64(0)
        self.rng: np.random.Generator = np.random.Generator(self._bits)

    def at(self, number: int) -> np.random.Generator:
        self._bits.state = _numpy_state(trial_state(self._entropy, number), 0, 0)
        return self.rng
