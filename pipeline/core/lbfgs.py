"""L-BFGS inside the compiled graph, for box-constrained pixels.

Why our own and not TensorFlow Probability's ``lbfgs_minimize``: TFP's Hager-Zhang line search
spends about three loss+gradient evaluations per iteration on this objective, so at an equal
evaluation budget (what a frame costs) it ends about 25% above scipy's L-BFGS-B
(benchmarks/bench_lbfgs.py measures both). The Torch-era tools and scipy's own runs here show that
a unit quasi-Newton step is almost always accepted on this problem, so this loop spends exactly one
evaluation per iteration and backtracks only when a step fails to lower the loss.

Box constraints [lo, hi] by projection with an active set (projected L-BFGS, as in Kim, Sra and
Dhillon 2010): coordinates at a bound whose gradient pushes outward are frozen for the step, the
two-loop recursion runs on the free gradient, and the trial point is clipped into the box. Only
accepted steps enter the history, and only with positive curvature, so the inverse Hessian
estimate stays positive definite.

Every loop pass is one evaluation (the first evaluates the start point), so a budget of N
evaluations costs exactly N network passes, and the network appears once in the traced graph.
The caller runs blocks of K passes inside one ``tf.function`` and reads the small ``status``
tensor back once per block; the image, gradient and history never leave the device in between.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from pipeline.core.tfsetup import tf

HISTORY = 20  # correction pairs kept, as scipy's maxcor used here before
STOP_WINDOW = 5  # early stop: mean relative decrease per iteration over this many iterations
SHRINK = 0.25  # step scale after a rejected trial when the interpolation cannot say better
RESETS_AFTER = 3  # consecutive rejections after which the history is dropped (stale curvature)


class State(NamedTuple):
    """Optimiser state, all tensors (history float32 whatever the network's precision)."""

    x: tf.Tensor  # (n,) current accepted point
    f: tf.Tensor  # () its loss
    g: tf.Tensor  # (n,) its gradient
    s: tf.Tensor  # (m, n) accepted steps, circular
    y: tf.Tensor  # (m, n) gradient changes, circular
    rho: tf.Tensor  # (m,) 1 / (s . y); 0 marks an empty slot
    head: tf.Tensor  # () int32 next slot to write
    scale: tf.Tensor  # () step scale of the next trial (1 after an accepted step)
    rejects: tf.Tensor  # () int32 consecutive rejected trials
    evals: tf.Tensor  # () int32 evaluations so far (including the start point)
    iters: tf.Tensor  # () int32 accepted iterations
    recent: tf.Tensor  # (STOP_WINDOW + 1,) losses of the latest accepted iterates, oldest first
    done: tf.Tensor  # () bool: the loss went flat (early stop) or stopped being finite


class Settings(NamedTuple):
    """Scalars passed as tensors so a new budget or tolerance never retraces."""

    lo: tf.Tensor
    hi: tf.Tensor
    first_step_rms: tf.Tensor  # size of the first (steepest-descent) step, rms per coordinate
    tolerance: tf.Tensor  # early stop threshold; 0 disables it


def settings(lo: float, hi: float, first_step_rms: float, tolerance: float) -> Settings:
    return Settings(*(tf.constant(v, tf.float32) for v in (lo, hi, first_step_rms, tolerance)))


def dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(a * b)


def initial_state(x0: tf.Tensor, history: int = HISTORY) -> State:
    """An empty history around the start point, not yet evaluated (the first loop pass does that).

    Built without the network, so the network is traced once, in the block's loop body.
    """
    x0 = tf.convert_to_tensor(x0, tf.float32)
    zeros = tf.zeros(tf.stack([history, tf.shape(x0)[0]]), tf.float32)
    inf = tf.constant(float("inf"))
    return State(x=x0, f=inf, g=tf.zeros_like(x0), s=zeros, y=zeros, rho=tf.zeros([history], tf.float32),
                 head=tf.constant(0), scale=tf.constant(1.0), rejects=tf.constant(0),
                 evals=tf.constant(0), iters=tf.constant(0),
                 recent=tf.fill([STOP_WINDOW + 1], inf), done=tf.constant(False))


def _direction(state: State, opts: Settings) -> tf.Tensor:
    """Projected quasi-Newton direction: -H g on the free coordinates, 0 on the active ones."""
    x, g = state.x, state.g
    active = tf.logical_or(tf.logical_and(x <= opts.lo, g > 0), tf.logical_and(x >= opts.hi, g < 0))
    free = 1.0 - tf.cast(active, tf.float32)
    free_g = free * g
    m = tf.shape(state.rho)[0]
    # The two-loop recursion in the subspace of free coordinates: each pair restricted to them, so
    # the curvature of coordinates pinned at a bound does not bend the step of the others.
    # Newest to oldest; empty slots have s = y = 0 and drop out.
    order = tf.math.floormod(state.head - 1 - tf.range(m), m)
    q = free_g
    alphas = tf.zeros_like(state.rho)  # tensors, not TensorArrays: XLA wants static sizes
    rhos = tf.zeros_like(state.rho)
    for i in tf.range(m):
        j = order[i]
        s_j, y_j = free * state.s[j], free * state.y[j]
        sy = dot(s_j, y_j)
        rho = tf.where(tf.logical_and(state.rho[j] > 0, sy > 1e-10 * dot(y_j, y_j)), 1.0 / sy, 0.0)
        a = rho * dot(s_j, q)
        q = q - a * y_j
        alphas = tf.tensor_scatter_nd_update(alphas, [[i]], [a])
        rhos = tf.tensor_scatter_nd_update(rhos, [[i]], [rho])
    newest = order[0]
    y_new = free * state.y[newest]
    gamma = tf.where(rhos[0] > 0, 1.0 / (rhos[0] * tf.maximum(dot(y_new, y_new), 1e-30)), 0.0)
    r = gamma * q
    for k in tf.range(m):
        i = m - 1 - k
        j = order[i]
        b = rhos[i] * dot(free * state.y[j], r)
        r = r + free * state.s[j] * (alphas[i] - b)
    d = tf.where(active, tf.zeros_like(r), -r)
    # Empty history, or curvature so stale that -Hg is no descent direction: a steepest-descent
    # step of first_step_rms per coordinate (L-BFGS-B's first step is 1 / |g|, which in pixel
    # units is a tiny fraction of a grey level and costs several extra evaluations to grow).
    n = tf.cast(tf.size(x), tf.float32)
    norm = tf.sqrt(tf.maximum(dot(free_g, free_g), 1e-30))
    steepest = -free_g * (opts.first_step_rms * tf.sqrt(n) / norm)
    usable = tf.logical_and(tf.reduce_any(rhos > 0), dot(d, free_g) < 0)
    return tf.cond(usable, lambda: d, lambda: steepest)


def _step(fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]], state: State, opts: Settings) -> State:
    """One trial point, one evaluation; accepted if it lowers the loss, else the next trial is shorter.

    The first pass evaluates the start point itself.
    """
    first = tf.equal(state.evals, 0)
    d = tf.cond(first, lambda: tf.zeros_like(state.x), lambda: _direction(state, opts))
    trial = tf.clip_by_value(state.x + state.scale * d, opts.lo, opts.hi)
    f_new, g_new = fn(trial)
    # Loop variables keep their static shapes (the network's reshapes would otherwise hide them).
    f_new = tf.ensure_shape(tf.cast(f_new, tf.float32), [])
    g_new = tf.ensure_shape(g_new, trial.shape)
    evals = state.evals + 1
    finite = tf.math.is_finite(f_new)
    accept = tf.logical_and(finite, f_new < state.f)

    def started() -> State:  # a start point whose loss is not finite ends the run (the host says so)
        return state._replace(x=trial, f=f_new, g=g_new, evals=evals, recent=tf.fill([STOP_WINDOW + 1], f_new),
                              done=tf.logical_not(finite))

    def accepted() -> State:
        step = trial - state.x
        change = g_new - state.g
        sy = dot(step, change)
        keep = sy > 1e-10 * dot(change, change)  # positive curvature only: H stays positive definite
        slot = state.head
        s = tf.cond(keep, lambda: tf.tensor_scatter_nd_update(state.s, [[slot]], step[None]), lambda: state.s)
        y = tf.cond(keep, lambda: tf.tensor_scatter_nd_update(state.y, [[slot]], change[None]), lambda: state.y)
        rho = tf.cond(keep, lambda: tf.tensor_scatter_nd_update(state.rho, [[slot]], [1.0 / sy]), lambda: state.rho)
        head = tf.where(keep, tf.math.floormod(slot + 1, tf.shape(state.rho)[0]), slot)
        recent = tf.concat([state.recent[1:], [f_new]], 0)
        iters = state.iters + 1
        before, now = recent[0], recent[-1]
        flat = tf.logical_and(
            tf.logical_and(opts.tolerance > 0, iters >= 2 * STOP_WINDOW),
            (before - now) / tf.maximum(tf.abs(before), 1e-12) < opts.tolerance * STOP_WINDOW)
        return State(trial, f_new, g_new, s, y, rho, head, tf.constant(1.0), tf.constant(0), evals, iters,
                     recent, flat)

    def rejected() -> State:
        rejects = state.rejects + 1
        # Shorter step from the quadratic through f(x), its slope along the step and f(trial),
        # kept within [0.1, 0.5] of the failed one (the usual safeguards of a backtracking search).
        step = trial - state.x
        slope = dot(state.g, step)
        curvature = f_new - state.f - slope
        t = tf.where(tf.logical_and(tf.math.is_finite(f_new), curvature > 0),
                     -slope / (2.0 * tf.maximum(curvature, 1e-30)), SHRINK)
        shrink = tf.clip_by_value(t, 0.1, 0.5)
        # After several misses the curvature pairs describe somewhere else: start the history over.
        reset = tf.equal(tf.math.floormod(rejects, RESETS_AFTER), 0)
        # The step keeps shrinking across a reset, so a run of misses always ends in a short enough step.
        rho = tf.where(reset, tf.zeros_like(state.rho), state.rho)
        return state._replace(rho=rho, scale=state.scale * shrink, rejects=rejects, evals=evals)

    return tf.cond(first, started, lambda: tf.cond(accept, accepted, rejected))


def run_block(fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]], state: State, opts: Settings,
              budget: tf.Tensor, trace: tf.Tensor) -> tuple[State, tf.Tensor]:
    """Up to ``len(trace)`` evaluations, never past ``budget`` in all, stopping early when flat.

    ``trace`` (K,) sets the block length by its shape (a static size, as XLA wants). Returns the
    new state and one report vector, the only thing the host reads per block: [loss, evaluations,
    iterations, done, then the current loss after each evaluation of this block (K entries, of
    which the first `evaluations done in this block` are set)].
    """
    block = tf.shape(trace)[0]
    k = tf.constant(0)
    while k < block and state.evals < budget and not state.done:
        state = _step(fn, state, opts)
        trace = tf.tensor_scatter_nd_update(trace, [[k]], [state.f])
        k += 1
    status = tf.stack([state.f, tf.cast(state.evals, tf.float32), tf.cast(state.iters, tf.float32),
                       tf.cast(state.done, tf.float32)])
    return state, tf.concat([status, trace], 0)


def minimize(fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]], x0, budget: int, lo: float = 0.0,
             hi: float = 255.0, first_step_rms: float = 2.0, tolerance: float = 0.0, block: int = 10,
             history: int = HISTORY) -> tuple[State, int]:
    """Plain entry point for a traceable ``fn`` on flat float32 vectors (tests, small problems).

    Returns the final state and the number of host reads it took.
    """
    opts = settings(lo, hi, first_step_rms, tolerance)
    state = initial_state(tf.constant(x0, tf.float32), history)
    blocks = tf.function(lambda st, b, trace: run_block(fn, st, opts, b, trace))
    reads = 0
    while True:
        state, report = blocks(state, tf.constant(budget), tf.zeros([block]))
        _, evals, _, done = report.numpy()[:4]
        reads += 1
        if done or evals >= budget:
            return state, reads
