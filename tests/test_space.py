from __future__ import annotations

import math

import pytest

from somatize import CategoricalDimension, FloatDimension, IntDimension, Objective, SearchSpace, make_sampler
from somatize.errors import SpaceError


def grid_of(*dims, points=3, n_trials=None):
    space = SearchSpace(tuple(dims))
    sampler = make_sampler({"type": "grid", "n_trials": n_trials, "points_per_dim": points}, space, Objective("y"), 0)
    out = []
    while (p := sampler.propose(len(out))) is not None:
        out.append(p)
    return sampler, out


def test_grid_log_float_points_are_exact():
    _, points = grid_of(FloatDimension("lr", 0.001, 0.1, scale="log"))
    assert [p["lr"] for p in points] == [0.001, 0.01, 0.1]


def test_grid_linear_float_includes_both_ends():
    _, points = grid_of(FloatDimension("x", 0.0, 1.0), points=5)
    assert [p["x"] for p in points] == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_grid_step_float_snaps_to_lattice_without_duplicates():
    _, points = grid_of(FloatDimension("d", 0.0, 0.5, step=0.1), points=4)
    assert [p["d"] for p in points] == [0.0, 0.2, 0.3, 0.5]


def test_grid_int_dedupes_and_covers_range():
    _, points = grid_of(IntDimension("n", 1, 4), points=5)
    assert [p["n"] for p in points] == [1, 2, 3, 4]
    _, points = grid_of(IntDimension("u", 16, 1024, scale="log"), points=3)
    assert [p["u"] for p in points] == [16, 128, 1024]
    _, points = grid_of(IntDimension("s", 0, 10, step=5), points=5)
    assert [p["s"] for p in points] == [0, 5, 10]


def test_grid_is_cartesian_first_dimension_slowest():
    sampler, points = grid_of(CategoricalDimension("a", ("x", "y")), IntDimension("b", 0, 2), points=3)
    assert [(p["a"], p["b"]) for p in points] == [("x", 0), ("x", 1), ("x", 2), ("y", 0), ("y", 1), ("y", 2)]
    assert sampler.total == 6


def test_grid_cap_and_constants():
    space = SearchSpace((IntDimension("b", 0, 9),), {"epochs": 20})
    sampler = make_sampler({"type": "grid", "n_trials": 4, "points_per_dim": 10}, space, Objective("y"), 0)
    assert sampler.total == 4
    assert sampler.propose(0) == {"b": 0, "epochs": 20}


def random_points(space, n, seed):
    sampler = make_sampler({"type": "random", "n_trials": n}, space, Objective("y"), seed)
    return [sampler.propose(i) for i in range(n)]


MIXED = SearchSpace(
    (
        FloatDimension("lr", 1e-4, 0.1, scale="log"),
        FloatDimension("dropout", 0.0, 0.5, step=0.1),
        IntDimension("layers", 1, 4),
        IntDimension("units", 16, 1024, scale="log"),
        CategoricalDimension("act", ("relu", "tanh", True, 3)),
    )
)


@pytest.mark.parametrize("choices", [("relu", 1, True, 2.5, -0.0), (1, 2, 3), (math.nan, "a"), ("a", 0.0)])
def test_a_categorical_holds_a_value_only_of_one_of_its_choices_types_and_equal_to_it(choices):
    # contains() looks values up by (type, value): the same answers as comparing with each choice in turn.
    dim = CategoricalDimension("k", choices)

    class Text(str):
        pass

    values = [*choices, "relu", Text("relu"), 1, 1.0, True, False, 0, 0.0, -0.0, 2.5, math.nan, None, [1], {"a": 1},
              "b", 3, 2]
    for value in values:
        expected = any(type(c) is type(value) and c == value for c in choices)
        assert dim.contains(value) is expected, (choices, value)


def test_random_stays_in_bounds_with_plain_types():
    for params in random_points(MIXED, 500, seed=1):
        assert MIXED.contains(params), params
        assert type(params["lr"]) is float and type(params["layers"]) is int


def test_random_ints_are_inclusive_and_reproducible():
    points = random_points(MIXED, 300, seed=7)
    assert {p["layers"] for p in points} == {1, 2, 3, 4}
    assert {p["units"] for p in points} >= {16, 1024} or min(p["units"] for p in points) <= 17
    assert points == random_points(MIXED, 300, seed=7)
    assert points != random_points(MIXED, 300, seed=8)


def test_random_log_dimension_is_log_uniform():
    space = SearchSpace((FloatDimension("lr", 1e-4, 1.0, scale="log"),))
    values = [p["lr"] for p in random_points(space, 4000, seed=3)]
    # Each decade should hold a quarter of the draws; a linear sampler would put ~90% in the last.
    decades = [sum(1 for v in values if 10 ** (k - 4) <= v < 10 ** (k - 3)) for k in range(4)]
    for count in decades:
        assert abs(count / len(values) - 0.25) < 0.03, decades


def test_random_never_repeats_and_ends_when_finite_space_is_exhausted():
    space = SearchSpace((IntDimension("a", 0, 2), CategoricalDimension("b", ("x", "y"))))
    sampler = make_sampler({"type": "random", "n_trials": 50}, space, Objective("y"), 0)
    assert sampler.total == 6
    seen = [sampler.propose(i) for i in range(6)]
    assert len({(p["a"], p["b"]) for p in seen}) == 6
    assert sampler.propose(6) is None


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: FloatDimension("x", 1.0, 0.0), "low"),
        (lambda: FloatDimension("x", 0.0, 1.0, scale="log"), "low"),
        (lambda: FloatDimension("x", 0.0, 1.0, step=2.0), "step"),
        (lambda: FloatDimension("x", 0.0, 1.0, default=3.0), "default"),
        (lambda: IntDimension("x", 5, 1), "low"),
        (lambda: IntDimension("x", 0, 9, scale="log"), "low"),
        (lambda: IntDimension("x", 0, 9, default=10), "default"),
        (lambda: CategoricalDimension("x", ()), "choices"),
        (lambda: CategoricalDimension("x", ("a", "a")), "choices"),
    ],
)
def test_invalid_dimensions_are_rejected(build, field):
    with pytest.raises(SpaceError) as info:
        build()
    assert info.value.field == field


def test_space_cardinality():
    assert MIXED.cardinality() is None
    assert SearchSpace((IntDimension("a", 0, 9, step=3), CategoricalDimension("b", (1, 2)))).cardinality() == 8
    assert math.isclose(FloatDimension("x", 0, 1, scale="linear").from_unit(0.5), 0.5)


@pytest.mark.parametrize("entropy", [0, 7, 2**64 - 1, 0x1234_5678_9ABC_DEF0])
def test_random_search_draws_are_numpys_draw_for_draw(entropy):
    """The random sampler's plain-integer stream (no numpy import) is the numpy Generator of the trial's
    stream, doubles and integers interleaved, so seeded studies propose what they always did."""
    from somatize.samplers.streams import TrialStreams, UnitDraws

    streams = TrialStreams(entropy)
    for number in (0, 1, 63, 10_000):
        ours, numpys = UnitDraws(entropy, number), streams.at(number)
        mine = [*ours.random(5), ours.integers(6), ours.integers(10**12), *ours.random(3), ours.integers(2)]
        theirs = [*numpys.random(5).tolist(), int(numpys.integers(6)), int(numpys.integers(10**12)),
                  *numpys.random(3).tolist(), int(numpys.integers(2))]  # fmt: skip
        assert mine == theirs
    sampler = make_sampler({"type": "random", "n_trials": 5}, MIXED, Objective("y"), entropy)
    assert [sampler.propose(i) for i in range(5)] == [
        MIXED.from_unit(streams.at(i).random(len(MIXED)).tolist()) for i in range(5)
    ]
