"""The in-graph L-BFGS: a bounded convex problem with a known answer, then the real objective."""
from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline import config as config_mod
from pipeline.core import lbfgs
from pipeline.core.stylizer import Stylizer
from pipeline.core.tfsetup import tf
from pipeline.core.types import Targets

COUPLING = 0.05


def bounded_quadratic(n: int = 600, seed: int = 0):
    """f(x) = 1/2 sum_i w_i (x_i - t_i)^2 + c/2 sum_i (x_i - x_{i+1})^2 on [0, 255]^n, condition ~1000.

    Sixty targets lie far outside the box, so most of those coordinates end exactly at a bound;
    the minimiser is taken from a long scipy L-BFGS-B run to 1e-9 gradient tolerance.
    """
    rng = np.random.default_rng(seed)
    w = np.exp(rng.uniform(0, np.log(1000), n)).astype(np.float32)
    t = rng.uniform(20, 235, n).astype(np.float32)
    low, high = rng.choice(n, 2 * (n // 20), replace=False).reshape(2, -1)
    t[low] = -20.0
    t[high] = 275.0  # near the box: the loss at the optimum stays small against float32 resolution
    wt, tt = tf.constant(w), tf.constant(t)
    calls = tf.Variable(0)
    outside = tf.Variable(0.0)  # how far any evaluated point ever left the box

    def fn(x):
        calls.assign_add(1)
        outside.assign(tf.maximum(outside, tf.maximum(-tf.reduce_min(x), tf.reduce_max(x) - 255.0)))
        d = x - tt
        diff = x[1:] - x[:-1]
        loss = 0.5 * tf.reduce_sum(wt * d * d) + 0.5 * COUPLING * tf.reduce_sum(diff * diff)
        grad = wt * d + COUPLING * (tf.pad(diff, [[1, 0]]) - tf.pad(diff, [[0, 1]]))
        return loss, grad

    return fn, w, t, low, high, calls, outside


def scipy_reference(w, t) -> np.ndarray:
    from scipy.optimize import Bounds, minimize

    def fun(x):
        d = x - t
        diff = x[1:] - x[:-1]
        grad = w * d
        grad[1:] += COUPLING * diff
        grad[:-1] -= COUPLING * diff
        return 0.5 * float(np.sum(w * d * d)) + 0.5 * COUPLING * float(diff @ diff), grad

    res = minimize(fun, np.full_like(t, 128.0, dtype=np.float64), jac=True, method="L-BFGS-B",
                   bounds=Bounds(0.0, 255.0), options={"maxiter": 20000, "maxfun": 20000, "ftol": 0, "gtol": 1e-9})
    return res.x


def test_reaches_the_known_bounded_minimiser_inside_the_box_with_an_exact_budget():
    fn, w, t, _low, _high, calls, outside = bounded_quadratic()
    x0 = np.full(t.shape, 128.0, np.float32)
    state, _ = lbfgs.minimize(fn, x0, budget=150, block=7)
    x = state.x.numpy()
    assert int(calls.numpy()) == 150 and int(state.evals) == 150  # the budget is exact, never exceeded
    assert float(outside.numpy()) <= 0.0  # no evaluated point ever left [0, 255]
    reference = scipy_reference(w, t)
    at_low, at_high = reference <= 1e-6, reference >= 255 - 1e-6
    assert at_low.sum() >= 20 and at_high.sum() >= 20  # the problem really pins coordinates
    np.testing.assert_array_equal(x[at_low], 0.0)  # pinned exactly, not approximately
    np.testing.assert_array_equal(x[at_high], 255.0)
    # Half a grey level: below what an 8-bit output can show (float32 loss resolution sets the floor).
    assert np.abs(x - reference).max() < 0.5, np.abs(x - reference).max()


def test_budget_is_exact_for_any_block_length():
    for budget, block in ((1, 10), (9, 10), (10, 10), (11, 10), (23, 4)):
        fn, *_, calls, _ = bounded_quadratic(80, seed=budget)
        _state, reads = lbfgs.minimize(fn, np.full(80, 128.0, np.float32), budget=budget, block=block)
        assert int(calls.numpy()) == budget, (budget, block)
        assert reads <= math.ceil(budget / block), (budget, block, reads)


def test_early_stop_ends_a_flat_run_before_the_budget():
    fn, *_, calls, _ = bounded_quadratic(50)
    state, _ = lbfgs.minimize(fn, np.full(50, 128.0, np.float32), budget=5000, tolerance=1e-6)
    assert bool(state.done) and int(calls.numpy()) < 5000


def make(extractor, optimizer: str, iterations: int, **overrides) -> Stylizer:
    cfg = config_mod.load(overrides={"image.scales": [1.0], "optim.tolerance": 0.0, "optim.optimizer": optimizer,
                                     "optim.iterations": iterations, **overrides})
    return Stylizer(cfg, extractor=extractor)


def test_beats_adam_and_matches_scipy_on_a_real_image(extractor, photo, painting):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from common import scipy_lbfgs  # the earlier host-side optimiser, kept as the reference

    results = {name: make(extractor, name, 40).stylize(photo, [painting]) for name in ("lbfgs", "adam")}
    stylizer = make(extractor, "lbfgs", 40)
    targets = Targets(stylizer.content_targets(photo), stylizer.style_grams([painting], [1.0], photo.shape[:2]))
    results["scipy"] = scipy_lbfgs(stylizer, photo, targets, 40)
    assert all(r.evaluations == 40 for r in results.values())
    ours, scipy_, adam = (results[n].final_loss for n in ("lbfgs", "scipy", "adam"))
    assert ours < adam, (ours, adam)
    assert ours <= 1.02 * scipy_, (ours, scipy_)
    image = results["lbfgs"].image
    assert image.min() >= 0 and image.max() <= 255


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "xla"])
def test_no_retrace_for_a_second_frame_and_host_reads_bounded(extractor, photo, painting, jit):
    block, evaluations = 4, 13
    stylizer = Stylizer(config_mod.load(overrides={
        "image.scales": [1.0], "optim.tolerance": 0.0, "optim.iterations": evaluations,
        "optim.block_evaluations": block, "optim.jit_compile": jit}), extractor=extractor)
    stylizer.stylize(photo, [painting])
    traces = stylizer.trace_count
    reads = stylizer.host_reads
    second = stylizer.stylize(np.ascontiguousarray(photo[::-1]), [painting])
    assert stylizer.trace_count == traces
    assert second.evaluations == evaluations
    # One read per block of evaluations (the first evaluates the start point) plus the image.
    assert stylizer.host_reads - reads <= math.ceil(evaluations / block) + 1
