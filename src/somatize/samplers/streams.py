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

    `random(n)` is PCG64's step and XSL-RR output and numpy's 53-bit double, so a random `ask`, or a
    `run` of fewer trials than random.py's BLOCK_IMPORT_TRIALS (unit_block's, numpy's), never imports
    numpy (about 60 ms of a 460 ms `somatize ask` on an idle 2-core machine). Anything else (`integers`,
    for the rare pick among a finite space's last points) goes to a numpy Generator in the same state,
    which then carries on from where numpy left it. A random proposal of four
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


def unit_block(entropy: int, first: int, count: int, width: int) -> np.ndarray:
    """The first `width` draws of trials `first` .. `first + count - 1`, each from its own stream: row j,
    column i is `UnitDraws(entropy, first + i).random(width)[j]`, to the bit.

    The same arithmetic as UnitDraws, on numpy's wrapping 64-bit integers, a trial per element: the
    128-bit state as two halves, its product with the multiplier from 32-bit pieces, the rotation by
    `(64 - r) & 63` so that r = 0 shifts by nothing. 0.28 µs a trial in blocks of 1,024 (four draws each),
    where UnitDraws takes 6.4 µs (process time, one process, load ~6, issue 18).
    """
    import numpy as np

    u64 = np.uint64
    low32, s32, s58, s11 = u64(0xFFFFFFFF), u64(32), u64(58), u64(11)
    multiplier_low, multiplier_high = u64(_MULTIPLIER & _U64), u64(_MULTIPLIER >> 64)
    m0, m1 = u64(_MULTIPLIER & 0xFFFFFFFF), u64((_MULTIPLIER >> 32) & 0xFFFFFFFF)
    with np.errstate(over="ignore"):  # every product and sum here is meant modulo 2**64
        numbers = np.arange(first + 1, first + 1 + count, dtype=np.uint64)
        base = u64((entropy & _U64) * 0x9E3779B97F4A7C15 & _U64) + numbers * u64(0xBF58476D1CE4E5B9)
        high, low = _mix64_array(base), _mix64_array(base + u64(0x9E3779B97F4A7C15))
        out = np.empty((width, count))
        for row in range(width):
            l0, l1 = low & low32, low >> s32  # low's 32-bit halves: the high word of low * multiplier_low
            p00, p01, p10, p11 = l0 * m0, l0 * m1, l1 * m0, l1 * m1
            middle = (p00 >> s32) + (p01 & low32) + (p10 & low32)
            product_low = low * multiplier_low
            product_high = p11 + (p01 >> s32) + (p10 >> s32) + (middle >> s32) + low * multiplier_high
            product_high += high * multiplier_low
            low = product_low + u64(_INCREMENT)
            high = product_high + (low < product_low)  # the carry of the increment
            word, rotation = high ^ low, high >> s58
            word = (word >> rotation) | (word << ((u64(64) - rotation) & u64(63)))
            out[row] = (word >> s11).astype(np.float64) * _DOUBLE
    return out


def _mix64_array(z: np.ndarray) -> np.ndarray:
    """_mix64 of each element (numpy's uint64 products wrap, as `& _U64` does)."""
    import numpy as np

    u64 = np.uint64
    z = (z ^ (z >> u64(30))) * u64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> u64(27))) * u64(0x94D049BB133111EB)
    return z ^ (z >> u64(31))


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
