"""The acquisition search behind the Bayesian sampler, against brute force on fitted skopt surrogates."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.stats import norm
from sklearn.gaussian_process import GaussianProcessRegressor as SklearnGP
from skopt.learning import GaussianProcessRegressor
from skopt.learning.gaussian_process.kernels import RBF, ConstantKernel, Matern, WhiteKernel
from skopt.space import Categorical, Integer, Real, Space
from skopt.utils import normalize_dimensions

from somatize.samplers.acquisition import (
    AcquisitionSearch, Mixture, Posterior, acquisition, acquisition_and_gradient, random_points, transform,
)  # fmt: skip

# The GPs here are fitted with scikit-learn's wide default bounds, which small data reach.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def fitted_gp(X: np.ndarray, y: np.ndarray, kernel=None, search: bool = True) -> GaussianProcessRegressor:
    """skopt's GP as the sampler builds it; `search=False` keeps the kernel's
    hyperparameters, for comparisons that need a well-conditioned model."""
    shape = Matern(length_scale=np.ones(X.shape[1]), nu=2.5) if kernel is None else kernel
    return GaussianProcessRegressor(
        kernel=ConstantKernel(1.0) * shape, normalize_y=True, noise=1e-8, optimizer="fmin_l_bfgs_b" if search else None
    ).fit(X, y)


def branin_unit(X: np.ndarray) -> np.ndarray:
    x, y = X[:, 0] * 15 - 5, X[:, 1] * 15
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    return (y - b * x**2 + c * x - 6) ** 2 + 10 * (1 - 1 / (8 * math.pi)) * np.cos(x) + 10


@pytest.mark.parametrize("z", [-6.0, -2.0, -0.5, 0.0, 0.7, 3.0])
def test_log_expected_improvement_is_the_log_of_the_closed_form(z: float) -> None:
    std = np.array([0.3])
    mean = 1.0 - z * std  # best = 1.0
    closed = (1.0 - mean) * norm.cdf(z) + std * norm.pdf(z)
    assert acquisition("EI", mean, std, 1.0) == pytest.approx(np.log(closed), rel=1e-9)
    assert acquisition("PI", mean, std, 1.0) == pytest.approx(np.log(norm.cdf(z)), rel=1e-9)
    assert acquisition("LCB", mean, std, 1.0) == pytest.approx(-(mean - 1.96 * std))


def test_log_expected_improvement_stays_finite_and_ordered_where_the_plain_value_underflows() -> None:
    mean = np.array([50.0, 100.0, 1e3, 1e5])  # 50 to 100 000 standard deviations above the best
    values = acquisition("EI", mean, np.ones(4), 0.0)
    assert np.all(np.isfinite(values))
    assert np.all(np.diff(values) < 0)


@pytest.mark.parametrize("rows", [3, 200])  # exact kernel rows, and the matrix-product path
def test_posterior_agrees_with_the_gp_and_its_gradients_with_finite_differences(rows: int) -> None:
    rng = np.random.default_rng(0)
    X = rng.random((25, 3))
    model = fitted_gp(X, np.sin(3 * X).sum(1), kernel=Matern(length_scale=[0.3, 0.5, 0.4], nu=2.5), search=False)
    posterior = Posterior(model)
    points = rng.random((rows, 3))
    mean, std = posterior(points)
    # scikit-learn's own prediction (through the Cholesky factor, as Posterior does).
    expected_mean, expected_std = SklearnGP.predict(model, points, return_std=True)
    np.testing.assert_allclose(mean, expected_mean, atol=1e-8)
    np.testing.assert_allclose(std, expected_std, atol=1e-6)

    mean, std, dmean, dstd = posterior.gradients(points[:3])
    h = 1e-6
    for j in range(3):
        step = np.zeros(3)
        step[j] = h
        up, down = posterior(points[:3] + step), posterior(points[:3] - step)
        np.testing.assert_allclose(dmean[:, j], (up[0] - down[0]) / (2 * h), rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(dstd[:, j], (up[1] - down[1]) / (2 * h), rtol=1e-4, atol=1e-6)


def test_gradients_of_a_kernel_other_than_matern_come_from_skopt() -> None:
    rng = np.random.default_rng(1)
    X = rng.random((15, 2))
    posterior = Posterior(fitted_gp(X, X.sum(1) ** 2, kernel=RBF(length_scale=[0.4, 0.3]), search=False))
    point = np.array([[0.3, 0.6]])
    _, _, dmean, dstd = posterior.gradients(point)
    h = 1e-6
    for j in (0, 1):
        step = np.array([[h * (j == 0), h * (j == 1)]])
        up, down = posterior(point + step), posterior(point - step)
        assert dmean[0, j] == pytest.approx((up[0] - down[0])[0] / (2 * h), rel=1e-4)
        assert dstd[0, j] == pytest.approx((up[1] - down[1])[0] / (2 * h), rel=1e-4)


@pytest.mark.parametrize("kind", ["EI", "PI", "LCB"])
def test_the_search_finds_the_maximum_a_dense_grid_finds(kind: str) -> None:
    rng = np.random.default_rng(2)
    X = rng.random((12, 2))
    y = branin_unit(X)
    model = fitted_gp(X, y)
    space = Space(normalize_dimensions([Real(0.0, 1.0), Real(0.0, 1.0)]))
    best = float(y.min())

    grid = np.stack(np.meshgrid(np.linspace(0, 1, 301), np.linspace(0, 1, 301)), -1).reshape(-1, 2)
    grid_max = acquisition(kind, *Posterior(model)(grid), best).max()
    found = AcquisitionSearch(space, np.random.default_rng(0)).best(model, (kind,), best, X[np.argmin(y)])
    assert len(found) == 1
    value = acquisition(kind, *Posterior(model)(found[0][None]), best)[0]
    # A 301-point grid is within 1/600 of any point; the search refines past it.
    assert value >= grid_max - 1e-6


def test_integer_and_categorical_dimensions_end_on_their_best_values() -> None:
    # Loss depends on a categorical (index 2 is best), an integer (7 is best) and a real.
    space = Space(normalize_dimensions([Categorical([0, 1, 2, 3]), Integer(1, 10), Real(0.0, 1.0)]))
    points = space.rvs(n_samples=30, random_state=3)

    def loss(p: list) -> float:
        return [1.0, 0.6, 0.0, 0.8][p[0]] + 0.05 * (p[1] - 7) ** 2 + (p[2] - 0.4) ** 2

    X, y = space.transform(points), np.array([loss(p) for p in points])
    model = fitted_gp(X, y)
    found = AcquisitionSearch(space, np.random.default_rng(0)).best(model, ("EI",), float(y.min()), X[np.argmin(y)])
    point = space.inverse_transform(found[0][None])[0]
    # On the space: a category and a whole number, encoded exactly as skopt encodes them.
    assert point[0] in (0, 1, 2, 3) and float(point[1]).is_integer()
    np.testing.assert_allclose(space.transform([point])[0], found[0])
    # And no other choice of either discrete value (the real held) scores higher.
    posterior = Posterior(model)
    value = acquisition("EI", *posterior(found[0][None]), float(y.min()))[0]
    others = [[c, i, point[2]] for c in range(4) for i in range(1, 11)]
    assert value >= acquisition("EI", *posterior(space.transform(others)), float(y.min())).max() - 1e-6


@pytest.mark.parametrize("kind", ["EI", "PI", "LCB"])
def test_acquisition_gradients_agree_with_finite_differences(kind: str) -> None:
    rng = np.random.default_rng(4)
    X = rng.random((20, 2))
    y = branin_unit(X)
    posterior = Posterior(fitted_gp(X, y, kernel=Matern(length_scale=[0.3, 0.4], nu=2.5), search=False))
    points = rng.random((4, 2))
    mean, std, dmean, dstd = posterior.gradients(points)
    _, grad = acquisition_and_gradient(kind, mean, std, y.min(), dmean, dstd)
    h = 1e-6
    for j in (0, 1):
        step = np.zeros(2)
        step[j] = h
        up = acquisition(kind, *posterior(points + step), y.min())
        down = acquisition(kind, *posterior(points - step), y.min())
        np.testing.assert_allclose(grad[:, j], (up - down) / (2 * h), rtol=1e-4, atol=1e-6)


def mixed_loss(p: list) -> float:
    """benchmarks/functions.py's mixed function on a skopt point (log lr, dropout, layers, kernel index)."""
    return 0.5 * (math.log10(p[0]) + 2.5) ** 2 + 4 * (p[1] - 0.2) ** 2 + 0.05 * (p[2] - 5) ** 2 + (0.3, 0.5, 0, 0.8)[p[3]]


def proposal_shortfall(space: Space, seed: int) -> float:
    """How far (log EI) the search's proposal falls below the local maximum over the reals at its own
    discrete values (Nelder-Mead from the proposal), on a fit to random points and a cluster near the
    optimum, as a search gathers them. The local maximum, not the highest: EI over the reals has several,
    and which one a search from elsewhere reaches depends on the machine's rounding (from the incumbent,
    seed 0 found one 0.0058 above the proposal on one machine, and none above 0.004 on another)."""
    rng = np.random.default_rng(seed)
    points = space.rvs(n_samples=20, random_state=seed)
    points += [[10 ** (-2.5 + rng.normal(0, 0.02)), 0.2 + rng.normal(0, 0.01), 5, 2] for _ in range(8)]
    X, y = space.transform(points), np.array([mixed_loss(p) for p in points])
    model, best, incumbent = fitted_gp(X, y), float(y.min()), X[np.argmin(y)]
    found = AcquisitionSearch(space, np.random.default_rng(0)).best(model, ("EI",), best, incumbent)[0]
    posterior = Posterior(model)

    def ei(x: np.ndarray) -> float:
        return float(acquisition("EI", *posterior(np.atleast_2d(x)), best)[0])

    def at_reals(z: np.ndarray) -> float:
        x = found.copy()
        x[:2] = np.clip(z, 0.0, 1.0)
        return -ei(x)

    fine = -minimize(at_reals, found[:2], method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12}).fun
    return fine - ei(found)


def test_real_dimensions_are_refined_for_the_integer_the_sweep_settles_on() -> None:
    # The local search relaxes the integer with the reals, the sweep rounds it, and the reals were
    # left where they were best for a fractional integer. Over these 10 fits, log units of EI below the
    # local maximum: median 0.0030 with refine=False, 0.0007 with the reals refined after the sweep
    # (the same with one BLAS thread or two). The median, not the largest: the fits are ill-conditioned
    # (amplitudes at their bound), and with OMP_NUM_THREADS=1 seed 0's fit, and so its shortfall,
    # differ (0.0052 against 0.0008), while the other seeds stay below 0.002.
    space = Space(normalize_dimensions([
        Real(1e-5, 1.0, prior="log-uniform"), Real(0.0, 0.6), Integer(1, 10), Categorical([0, 1, 2, 3]),
    ]))  # fmt: skip
    assert float(np.median([proposal_shortfall(space, seed) for seed in range(10)])) < 0.0015


MIXED = Space(normalize_dimensions([
    Real(1e-5, 1.0, prior="log-uniform"), Real(0.0, 0.6), Integer(1, 10), Integer(1, 64, prior="log-uniform"),
    Categorical([0, 1, 2, 3]), Categorical([0, 1]),
]))  # fmt: skip


@pytest.mark.parametrize("seed", [0, 7, 2**31 - 2])
def test_candidates_are_skopts_own_draws_bit_for_bit(seed: int) -> None:
    # random_points and transform skip skopt's transposing and per-element loop; what they give must not move.
    expected = MIXED.transform(MIXED.rvs(n_samples=300, random_state=seed))
    got = random_points(MIXED, 300, seed)
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
    points = MIXED.rvs(n_samples=50, random_state=seed + 1)
    assert np.array_equal(transform(MIXED, points), MIXED.transform(points))


def test_posterior_is_the_same_for_either_memory_order_of_the_cholesky_factor() -> None:
    # The triangular solves call LAPACK directly, transposing a C-ordered factor as scipy does.
    rng = np.random.default_rng(3)
    X = rng.random((25, 2))
    model = fitted_gp(X, branin_unit(X))
    points = rng.random((6, 2))
    model.L_ = np.asfortranarray(model.L_)
    fortran = Posterior(model).gradients(points)
    model.L_ = np.ascontiguousarray(model.L_)
    c_order = Posterior(model).gradients(points)
    for a, b in zip(fortran, c_order):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
    mean, std = model.predict(points, return_std=True)
    np.testing.assert_allclose(c_order[0], mean, rtol=1e-9)
    np.testing.assert_allclose(c_order[1], std, rtol=1e-6)


def test_posterior_of_a_noisy_gp_drops_only_the_zeroed_noise_term() -> None:
    # skopt zeroes the fitted noise for predictions; Posterior skips that term, and must still predict as skopt.
    rng = np.random.default_rng(4)
    X = rng.random((30, 2))
    y = branin_unit(X) + rng.normal(0, 5.0, 30)
    model = GaussianProcessRegressor(
        kernel=ConstantKernel(1.0) * RBF(length_scale=[0.4, 0.3]), normalize_y=True, noise="gaussian"
    ).fit(X, y)
    assert model.noise_ > 0 and model.kernel_.k2.noise_level == 0.0
    points = rng.random((8, 2))
    mean, std = Posterior(model)(points)
    expected_mean, expected_std = model.predict(points, return_std=True)
    np.testing.assert_allclose(mean, expected_mean, rtol=1e-9)
    np.testing.assert_allclose(std, expected_std, rtol=1e-6)


# A mixture of GPs, some of them warped (bayesian.MODEL_AVERAGING) -------------------------------------


def mixture_of_two() -> tuple[Mixture, np.ndarray]:
    """A plain GP of y and a GP of the warped w = log1p((y - low) / spread), both fitted to a noisy
    curve, weighted 0.6 / 0.4; and rows to ask about."""
    rng = np.random.default_rng(5)
    X = rng.random((12, 1))
    y = np.sin(6 * X[:, 0]) + 0.1 * rng.normal(size=12)
    low, spread = float(y.min()), 0.8

    def noisy_gp(values: np.ndarray) -> GaussianProcessRegressor:
        kernel = ConstantKernel(1.0) * Matern(length_scale=0.3, nu=2.5) + WhiteKernel(0.01)
        return GaussianProcessRegressor(kernel=kernel, normalize_y=True, noise="gaussian").fit(X, values)

    plain, warped = noisy_gp(y), noisy_gp(np.log1p((y - low) / spread))
    return Mixture([(0.6, plain, None), (0.4, warped, (low, spread))]), np.linspace(0.0, 1.0, 7)[:, None]


def test_a_mixture_s_expected_improvement_is_that_of_its_law_in_the_loss_s_units() -> None:
    mixture, X = mixture_of_two()
    bars = np.array([-0.2, 0.0])  # one a part
    rng = np.random.default_rng(6)
    draws = rng.standard_normal(400_000)
    checked = 0
    for row, got in zip(X, mixture.acquisitions(("EI",), bars, X)[0]):
        improvement = 0.0
        for weight, posterior, warp, bar in zip(mixture.weights, mixture.posteriors, mixture.warps, bars):
            mean, std = posterior(row[None])
            values = mean[0] + std[0] * draws
            if warp is not None:
                values = warp[0] + warp[1] * np.expm1(values)
            improvement += weight * float(np.mean(np.maximum(bar - values, 0.0)))
        if improvement > 1e-3:  # (below, the draws do not resolve it)
            assert got == pytest.approx(math.log(improvement), abs=0.02)
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("kind", ["EI", "PI", "LCB"])
def test_a_mixture_s_acquisition_gradients_agree_with_finite_differences(kind: str) -> None:
    mixture, X = mixture_of_two()
    bars = np.array([-0.7, -0.6])
    value, grad = mixture.acquisition_and_gradient(kind, bars, X)
    assert np.allclose(value, mixture.acquisitions((kind,), bars, X)[0])
    h = 1e-6
    moved = mixture.acquisitions((kind,), bars, X + h)[0]
    assert np.allclose((moved - value) / h, grad[:, 0], rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("bars", [(-0.7, -0.6), (-0.9, -0.4), (-0.3, -0.8)])
def test_the_search_of_a_mixture_reaches_the_mixture_s_maximum(bars: tuple[float, float]) -> None:
    # Each start climbs on one part alone (the cheaper search); the end points must still reach the maximum
    # of the mixture's EI, which neither part's maximum is where the parts share it.
    mixture, _ = mixture_of_two()
    bar = np.array(bars)
    space = Space(normalize_dimensions([Real(0.0, 1.0)]))
    found = AcquisitionSearch(space, np.random.default_rng(0)).best(mixture, ("EI",), bar, None, refine=False)[0]
    grid = np.linspace(0.0, 1.0, 20_001)[:, None]
    values = mixture.acquisitions(("EI",), bar, grid)[0]
    assert mixture.acquisitions(("EI",), bar, found[None])[0][0] >= float(np.max(values)) - 1e-6
