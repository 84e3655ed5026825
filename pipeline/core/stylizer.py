"""The Gatys optimisation: arrays in, arrays out, no I/O.

One compiled function computes the loss and its gradient; style Grams and content features
are computed once per (image, size) and passed in as tensors, so nothing fixed is recomputed
inside the loop and a new frame of the same size reuses the same trace.
"""
from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence

import numpy as np

from pipeline.config import Config, canonical_layer
from pipeline.core import lbfgs, losses
from pipeline.core.arrays import (
    MIN_SIDE,
    array_key,
    check_mask,
    feature_grid,
    fit_longest,
    mask_to_grid,
    match_colors,
    recombine_colors,
    resize,
    scale_sizes,
    to_luminance_rgb,
)
from pipeline.core.tfsetup import tf
from pipeline.core.tiling import parse_memory, tiled_stylize, whole_image_bytes
from pipeline.core.types import Iterate, StyleMasks, StylizeResult, Targets, TemporalTarget
from pipeline.core.vgg import FeatureExtractor

log = logging.getLogger(__name__)

GRAM_CACHE_SIZE = 16  # (styles, weights, size) entries of style Gram targets kept per Stylizer
LBFGS_FIRST_STEP_RMS = 2.0  # grey levels per pixel of L-BFGS-B's first (unit-norm) step
COLOR_MODES = ("off", "luminance", "histogram")

ImageHook = Callable[[int, np.ndarray], None]  # (final-scale iteration, image (H, W, 3) float32 in [0, 255])


def color_mode(value: bool | str | None) -> str:
    """image.preserve_colors as one of COLOR_MODES: false/"off" -> off, true/"luminance" -> luminance
    (today's behaviour), "histogram" -> the style's colours matched to the content's."""
    if value is None or value is False or value in ("", "off", "false", "none"):
        return "off"
    if value is True or value in ("luminance", "true"):
        return "luminance"
    if value == "histogram":
        return "histogram"
    raise ValueError(f"preserve_colors {value!r}: expected false, \"luminance\" or \"histogram\"")


class Stylizer:
    """Holds VGG once; stylizes arrays. Safe to reuse for many images and frames."""

    def __init__(self, config: Config, extractor: FeatureExtractor | None = None,
                 jit_compile: bool | None = None) -> None:
        self.config = config
        self.jit_compile = config.optim.jit_compile if jit_compile is None else jit_compile
        model = config.model
        self.content_layers = [canonical_layer(n) for n in model.content_layers]
        self.style_layers = [canonical_layer(n) for n in model.style_layers]
        self.extractor = extractor or FeatureExtractor(
            model.network, model.pooling, self.content_layers + self.style_layers, config.optim.precision)
        self.trace_count = 0
        # Small LRU: colour preservation makes new style arrays per content image, and a long-lived
        # worker must not keep every one of them.
        self._gram_cache: OrderedDict[tuple, dict[str, tf.Tensor]] = OrderedDict()
        self._mask_cache: OrderedDict[tuple, StyleMasks] = OrderedDict()
        self._style_keys: dict[int, tuple[np.ndarray, str]] = {}
        # reduce_retracing: shapes become dynamic after the second size, so frames of any size
        # share one trace (XLA still compiles once per concrete shape, and caches it).
        self._loss_and_grad = tf.function(self._loss_and_grad_impl, reduce_retracing=True,
                                          jit_compile=self.jit_compile)
        self._adam_steps = tf.function(self._adam_steps_impl, reduce_retracing=True,
                                       jit_compile=self.jit_compile)
        self._lbfgs_block = tf.function(self._lbfgs_block_impl, reduce_retracing=True,
                                        jit_compile=self.jit_compile)
        self.host_reads = 0  # device-to-host reads made by optimise() (tests bound it per call)
        # Style masks used when a call names none: a video's frames all share the run's masks.
        self.default_masks: Sequence[np.ndarray | None] | None = None

    # ------------------------------------------------------------------ targets
    def content_targets(self, content: np.ndarray) -> dict[str, tf.Tensor]:
        feats = self.extractor(tf.constant(content[None], tf.float32))
        return {name: feats[name] for name in self.content_layers}

    def style_grams(self, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                    content_hw: tuple[int, int]) -> dict[str, tf.Tensor]:
        """Blended Gram targets, cached per (styles, weights, size)."""
        norm = self.config.loss.style_normalization
        longest = max(MIN_SIDE, round(max(content_hw) * self.config.image.style_scale))
        key = (tuple(self._style_key(s) for s in styles), tuple(style_weights), longest, norm)
        if key in self._gram_cache:
            self._gram_cache.move_to_end(key)
            return self._gram_cache[key]
        total = float(sum(style_weights))
        blended: dict[str, tf.Tensor] = {}
        for style, weight in zip(styles, style_weights):
            resized = resize(style, fit_longest(style, longest))
            feats = self.extractor(tf.constant(resized[None], tf.float32))
            for name in self.style_layers:
                g = losses.gram(feats[name], norm) * (weight / total)
                blended[name] = blended[name] + g if name in blended else g
        self.remember_grams(key, blended)
        return blended

    def style_gram_stack(self, styles: Sequence[np.ndarray], content_hw: tuple[int, int]) -> dict[str, tf.Tensor]:
        """Each style's own Gram targets stacked per layer [S, C, C] (masked styles are not blended).

        Built from the single-style entries of the Gram cache, so a style's Grams are computed once
        whether it runs alone, blended or masked."""
        per_style = [self.style_grams([style], [1.0], content_hw) for style in styles]
        return {name: tf.concat([grams[name] for grams in per_style], 0) for name in self.style_layers}

    def style_masks(self, masks: Sequence[np.ndarray | None], style_weights: Sequence[float],
                    content_hw: tuple[int, int]) -> StyleMasks:
        """Each style's mask on every style layer's feature grid, and the styles' shares of the style loss.

        A style without a mask covers the whole image. The shares are the weights over their sum,
        as in the blend: two complementary masks with equal weights then give each region half the
        style weight next to half the content loss, the balance of a single style on the whole image.
        Cached per (masks, weights, size): a video passes the same masks every frame.
        """
        key = (tuple(None if m is None else self._style_key(m) for m in masks), tuple(style_weights), content_hw)
        if key in self._mask_cache:
            self._mask_cache.move_to_end(key)
            return self._mask_cache[key]
        per_layer = {}
        for name in self.style_layers:
            grid = feature_grid(*content_hw, name)
            stack = [np.ones(grid, np.float32) if m is None else mask_to_grid(m, grid) for m in masks]
            per_layer[name] = tf.constant(np.stack(stack)[..., None], tf.float32)
        total = float(sum(style_weights))
        result = StyleMasks(per_layer, tf.constant([w / total for w in style_weights], tf.float32))
        self._mask_cache[key] = result
        while len(self._mask_cache) > GRAM_CACHE_SIZE:
            self._mask_cache.popitem(last=False)
        return result

    def targets(self, content: np.ndarray, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                masks: Sequence[np.ndarray | None] | None = None) -> Targets:
        """Content features and style targets at the content's size; per-style targets under masks."""
        hw = content.shape[:2]
        if masks is None:
            return Targets(self.content_targets(content), self.style_grams(styles, style_weights, hw))
        return Targets(self.content_targets(content), self.style_gram_stack(styles, hw),
                       self.style_masks(masks, style_weights, hw))

    def remember_grams(self, key: tuple, grams: dict[str, tf.Tensor]) -> None:
        self._gram_cache[key] = grams
        while len(self._gram_cache) > GRAM_CACHE_SIZE:
            self._gram_cache.popitem(last=False)

    def _style_key(self, style: np.ndarray) -> str:
        """Content hash of a style array, computed once per array object (styles can be 100+ MB)."""
        known = self._style_keys.get(id(style))
        if known is not None and known[0] is style:
            return known[1]
        digest = array_key(style)
        if len(self._style_keys) >= 4 * GRAM_CACHE_SIZE:
            self._style_keys.clear()
        self._style_keys[id(style)] = (style, digest)  # the reference keeps the id valid
        return digest

    # ------------------------------------------------------------------ compiled step
    def _loss_and_grad_impl(self, x, content_targets, grams, warped, mask, weights, style_masks=None):
        self.trace_count += 1  # runs only while tracing: counts compilations
        cfg = self.config
        content_w = dict(zip(self.content_layers, cfg.model.content_layer_weights))
        style_w = dict(zip(self.style_layers, cfg.model.style_layer_weights))
        with tf.GradientTape() as tape:
            tape.watch(x)
            feats = self.extractor(x)
            content = tf.add_n([content_w[n] * losses.content_layer_loss(
                feats[n], content_targets[n], cfg.loss.content_normalization) for n in self.content_layers])
            # Decided while tracing: without masks the graph is the blended-Gram loss and nothing else.
            if style_masks is None:
                style = tf.add_n([style_w[n] * losses.style_layer_loss(
                    feats[n], grams[n], cfg.loss.style_normalization) for n in self.style_layers])
            else:
                style = tf.add_n([style_w[n] * losses.masked_style_layer_loss(
                    feats[n], style_masks.masks[n], grams[n], style_masks.shares, cfg.loss.style_normalization)
                    for n in self.style_layers])
            tv = losses.total_variation(x, cfg.loss.tv_form)
            temporal = losses.temporal_loss(x, warped, mask)
            terms = tf.stack([content, style, tv, temporal])
            loss = tf.reduce_sum(weights * terms)
        return loss, tape.gradient(loss, x), terms

    def _adam_steps_impl(self, x, m, v, t, steps, content_targets, grams, warped, mask, weights, hyper,
                         style_masks=None):
        # Functional state (tensors in, tensors out) rather than tf.Variable arguments: a traced
        # function generalised over shapes would otherwise keep the first call's variables, and a
        # coarse-to-fine run (new size per scale) would feed it mismatched shapes.
        lr, beta1, beta2 = hyper[0], hyper[1], hyper[2]
        last = tf.constant(0.0)
        for _ in tf.range(steps):
            loss, grad, _ = self._loss_and_grad_impl(x, content_targets, grams, warped, mask, weights, style_masks)
            t = t + 1.0
            m = beta1 * m + (1.0 - beta1) * grad
            v = beta2 * v + (1.0 - beta2) * tf.square(grad)
            m_hat = m / (1.0 - tf.pow(beta1, t))
            v_hat = v / (1.0 - tf.pow(beta2, t))
            x = tf.clip_by_value(x - lr * m_hat / (tf.sqrt(v_hat) + 1e-8), 0.0, 255.0)
            last = loss
        return x, m, v, t, last

    def _flat_objective(self, shape, content_targets, grams, warped, mask, weights, style_masks=None):
        """Loss and gradient of a flat float32 vector (the optimiser's view of the image)."""
        def objective(flat):
            loss, grad, _ = self._loss_and_grad_impl(tf.reshape(flat, shape), content_targets, grams,
                                                     warped, mask, weights, style_masks)
            return loss, tf.reshape(tf.cast(grad, tf.float32), [-1])
        return objective

    def _lbfgs_block_impl(self, state, opts, budget, trace, shape, content_targets, grams, warped, mask, weights,
                          style_masks=None):
        objective = self._flat_objective(shape, content_targets, grams, warped, mask, weights, style_masks)
        return lbfgs.run_block(objective, state, opts, budget, trace)

    # ------------------------------------------------------------------ optimisation
    def loss_weights(self, temporal: TemporalTarget | None, temporal_weight: float,
                     style_weight: float | None = None) -> tf.Tensor:
        """[content, style, tv, temporal] weights; ``style_weight`` overrides loss.style_weight (a
        tensor, so another value reuses the same trace: a grid of strengths costs no recompilation)."""
        lc = self.config.loss
        return tf.constant([lc.content_weight, lc.style_weight if style_weight is None else style_weight,
                            lc.tv_weight, temporal_weight if temporal is not None else 0.0], tf.float32)

    def evaluate(self, image: np.ndarray, targets: Targets, temporal: TemporalTarget | None = None,
                 temporal_weight: float = 0.0) -> tuple[float, dict[str, float], np.ndarray]:
        """Loss, its terms and the gradient for one image (tests and diagnostics)."""
        warped, mask = self._temporal_tensors(image.shape[:2], temporal)
        loss, grad, terms = self._loss_and_grad(tf.constant(image[None], tf.float32), targets.content,
                                                targets.grams, warped, mask,
                                                self.loss_weights(temporal, temporal_weight), targets.style_masks)
        names = ("content", "style", "tv", "temporal")
        return float(loss), dict(zip(names, map(float, terms.numpy()))), grad.numpy()[0]

    def _temporal_tensors(self, hw: tuple[int, int], temporal: TemporalTarget | None) -> tuple[tf.Tensor, tf.Tensor]:
        if temporal is None:
            return tf.zeros((1, *hw, 3), tf.float32), tf.zeros((1, *hw, 1), tf.float32)
        return (tf.constant(temporal.warped[None], tf.float32),
                tf.constant(np.asarray(temporal.mask, np.float32)[None, ..., None]))

    def optimise(self, x0: np.ndarray, targets: Targets, iterations: int,
                 temporal: TemporalTarget | None = None, temporal_weight: float = 0.0,
                 callback: Callable[[Iterate], None] | None = None,
                 scale: tuple[int, int] = (1, 1), optimizer: str | None = None, *,
                 style_weight: float | None = None, save_every: int | None = None,
                 on_image: ImageHook | None = None) -> StylizeResult:
        """Runs ``iterations`` loss+gradient evaluations from ``x0``.

        With ``save_every`` N and ``on_image``, the iterate is read back after evaluations N, 2N, ...
        and handed to ``on_image(evaluations, image)``; when the run ends elsewhere (early stop, or a
        budget that is no multiple of N) the final iterate follows, so the last image handed over is
        always the result. Blocks (L-BFGS) and chunks (Adam) are then also cut at those multiples,
        so the image is read exactly there: one extra host read per N evaluations.
        """
        if save_every is not None and save_every < 1:
            raise ValueError(f"save_every must be at least 1, got {save_every}")
        optimizer = optimizer or self.config.optim.optimizer
        run = self._lbfgs if optimizer == "lbfgs" else self._adam
        snapshots = (save_every, on_image) if save_every and on_image is not None else None
        return run(np.asarray(x0, np.float32), targets, iterations, temporal, temporal_weight, callback, scale,
                   self.loss_weights(temporal, temporal_weight, style_weight), snapshots)

    def _lbfgs(self, x0, targets, iterations, temporal, temporal_weight, callback, scale, weights, snapshots):
        """In-graph L-BFGS (pipeline.core.lbfgs): blocks of evaluations on the device, one host read per block."""
        opt = self.config.optim
        warped, mask = self._temporal_tensors(x0.shape[:2], temporal)
        x = tf.constant(x0[None], tf.float32)
        shape = tf.shape(x)
        opts = lbfgs.settings(0.0, 255.0, LBFGS_FIRST_STEP_RMS, opt.tolerance)
        every, on_image = snapshots if snapshots else (None, None)
        trace_buffer = tf.zeros([opt.block_evaluations])
        history: list[tuple[int, float, float]] = []
        start = time.perf_counter()
        state = lbfgs.initial_state(tf.reshape(x, [-1]))  # the first block evaluates the start point
        done_evals, loss, flat = 0, float("nan"), False
        image, image_at = None, 0
        while done_evals < iterations and not flat:
            # A block stops at its budget, a tensor: capping it at the next multiple of save_every
            # ends the block where an image is due without retracing (the block length, the trace
            # buffer's static shape, stays optim.block_evaluations).
            stop = iterations if every is None else min(iterations, (done_evals // every + 1) * every)
            state, report = self._lbfgs_block(state, opts, tf.constant(stop), trace_buffer, shape, targets.content,
                                              targets.grams, warped, mask, weights, targets.style_masks)
            report = report.numpy()  # the one host read per block
            loss, evals, _, stopped = report[:4]
            losses_now = report[4:4 + int(evals) - done_evals]
            self.host_reads += 1
            if not np.isfinite(loss):
                raise FloatingPointError("loss is not finite")
            elapsed = time.perf_counter() - start
            # Evaluations inside a block share its wall time evenly (only the block's end is timed).
            first = max(0, int(evals) - len(losses_now))
            t0 = history[-1][1] if history else 0.0
            for i, value in enumerate(losses_now, 1):
                history.append((first + i, t0 + (elapsed - t0) * i / len(losses_now), float(value)))
            done_evals, flat = int(evals), bool(stopped)
            if callback is not None:
                callback(Iterate(scale[0], scale[1], x0.shape[:2], min(done_evals, iterations), iterations,
                                 float(loss), elapsed))
            if every is not None and done_evals % every == 0 and done_evals != image_at:
                image, image_at = self._read_image(state.x, x0.shape), done_evals
                on_image(done_evals, image)
        if image is None or image_at != done_evals:
            image = self._read_image(state.x, x0.shape)
            if every is not None:
                on_image(done_evals, image)
        return StylizeResult(image, done_evals, time.perf_counter() - start, float(loss), history)

    def _read_image(self, x: tf.Tensor, shape: tuple[int, ...]) -> np.ndarray:
        self.host_reads += 1
        return x.numpy().reshape(shape)

    def _adam(self, x0, targets, iterations, temporal, temporal_weight, callback, scale, weights, snapshots):
        opt = self.config.optim
        warped, mask = self._temporal_tensors(x0.shape[:2], temporal)
        x = tf.constant(x0[None], dtype=tf.float32)
        m, v = tf.zeros_like(x), tf.zeros_like(x)
        t = tf.constant(0.0)
        hyper = tf.constant([opt.learning_rate, opt.adam_beta1, opt.adam_beta2], tf.float32)
        every, on_image = snapshots if snapshots else (None, None)
        history: list[tuple[int, float, float]] = []
        start = time.perf_counter()
        done, previous, image_at = 0, None, 0
        # Steps run in chunks inside the graph: the loss is read back once per chunk, not per step
        # (a chunk also ends where an image is due when snapshots are wanted).
        chunk = 10
        while done < iterations:
            steps = min(chunk, iterations - done)
            if every is not None:
                steps = min(steps, every - done % every)
            x, m, v, t, loss_tensor = self._adam_steps(x, m, v, t, tf.constant(steps), targets.content,
                                                       targets.grams, warped, mask, weights, hyper,
                                                       targets.style_masks)
            loss = float(loss_tensor)
            if not np.isfinite(loss):
                raise FloatingPointError("loss is not finite")
            done += steps
            elapsed = time.perf_counter() - start
            history.append((done, elapsed, loss))
            if callback is not None:
                callback(Iterate(scale[0], scale[1], x0.shape[:2], done, iterations, loss, elapsed))
            if every is not None and done % every == 0:
                on_image(done, x.numpy()[0])
                image_at = done
            if (previous is not None and opt.tolerance > 0
                    and (previous - loss) / max(abs(previous), 1e-12) < opt.tolerance * steps):
                break
            previous = loss
        image = x.numpy()[0]
        if every is not None and image_at != done:
            on_image(done, image)
        return StylizeResult(image, done, time.perf_counter() - start, history[-1][2], history)

    # ------------------------------------------------------------------ whole image
    def memory_budget(self) -> int | None:
        return parse_memory(self.config.image.max_memory)

    def _tiled_if_needed(self, content: np.ndarray, styles: Sequence[np.ndarray], style_weights: Sequence[float],
                         temporal: TemporalTarget | None, iterations: int,
                         callback: Callable[[Iterate], None] | None, masked: bool = False) -> StylizeResult | None:
        budget = self.memory_budget()
        if budget is None:
            return None
        opt = self.config.optim
        need = whole_image_bytes(*content.shape[:2], self.extractor.precision, opt.optimizer)
        if need <= budget:
            return None
        if temporal is not None or masked:
            log.warning("a %dx%d image needs about %.1f GB, over the %.1f GB budget; tiling does not "
                        "support %s, so the image runs whole", content.shape[1], content.shape[0],
                        need / 2**30, budget / 2**30, "the temporal term" if temporal is not None else "style masks")
            return None
        log.info("%dx%d needs about %.1f GB whole (budget %.1f GB): tiling", content.shape[1],
                 content.shape[0], need / 2**30, budget / 2**30)
        return tiled_stylize(self, content, styles, style_weights, budget=budget,
                                    iterations=iterations, callback=callback)

    def initial_image(self, content: np.ndarray, init: np.ndarray | str | None) -> np.ndarray:
        opt = self.config.optim
        choice = opt.init if init is None else init
        if isinstance(choice, np.ndarray):
            return resize(choice, content.shape[:2])
        if choice == "noise":
            rng = np.random.default_rng(opt.seed)
            noise = rng.uniform(0, 255, content.shape).astype(np.float32)
            return opt.noise_ratio * noise + (1 - opt.noise_ratio) * content
        return content.astype(np.float32)

    @staticmethod
    def _checked_masks(masks: Sequence[np.ndarray | None] | None, count: int) -> list[np.ndarray | None] | None:
        """Validated masks, or None when no style has one (then the unmasked loss runs, unchanged)."""
        if masks is None:
            return None
        if len(masks) != count:
            raise ValueError(f"{len(masks)} style masks for {count} styles; give one mask (or None) per style")
        if all(m is None for m in masks):
            return None
        return [None if m is None else check_mask(m, f"style mask {i + 1}") for i, m in enumerate(masks)]

    def stylize(self, content: np.ndarray, styles: Sequence[np.ndarray], style_weights: Sequence[float] | None = None,
                init: np.ndarray | str | None = None, temporal: TemporalTarget | None = None,
                temporal_weight: float = 0.0, iterations: int | None = None, multiscale: bool = True,
                callback: Callable[[Iterate], None] | None = None, _allow_tiling: bool = True, *,
                masks: Sequence[np.ndarray | None] | None = None, preserve_colors: bool | str | None = None,
                style_weight: float | None = None, save_every: int | None = None,
                on_image: ImageHook | None = None) -> StylizeResult:
        """Stylizes ``content`` (H, W, 3, [0, 255]) at its own size; coarse-to-fine unless told otherwise.

        With ``image.max_memory`` set and a whole-image step estimated above it, the image is
        optimised in overlapping tiles after a coarse whole-image pass (pipeline.core.tiling).

        ``masks``: one per style, (H, W) in [0, 1] of any size (stretched to the content's frame)
        or None for the whole image; each style's loss then sees only the features under its mask.
        ``preserve_colors`` overrides image.preserve_colors (see color_mode). ``style_weight``
        overrides loss.style_weight. ``save_every`` N with ``on_image``: the final scale's iterate
        after its evaluations N, 2N, ... (and the result last), colours recombined like the result;
        coarser scales are not reported, so the numbers match optim.iterations.
        """
        cfg = self.config
        content = np.asarray(content, np.float32)
        if min(content.shape[:2]) < MIN_SIDE:
            raise ValueError(f"image is {content.shape[1]}x{content.shape[0]}; VGG needs at least "
                             f"{MIN_SIDE} px on the short side")
        style_weights = list(style_weights) if style_weights is not None else [1.0] * len(styles)
        masks = self._checked_masks(masks if masks is not None else self.default_masks, len(styles))
        mode = color_mode(cfg.image.preserve_colors if preserve_colors is None else preserve_colors)
        original = content
        if mode == "luminance":
            content = to_luminance_rgb(content)
            styles = [to_luminance_rgb(s, match=original) for s in styles]
            # The optimisation runs on grey and only its luminance is kept, so a start or a temporal
            # target given as a picture (a video's carried frame, which wears the content's colours;
            # an init image) is taken as its luminance too. For the chain: 0.88x the warping error
            # on a handheld shot, 1.01x on a pan (12 frames at 192 px).
            if isinstance(init, np.ndarray):
                init = to_luminance_rgb(init)
            if temporal is not None:
                temporal = TemporalTarget(to_luminance_rgb(temporal.warped), temporal.mask)
        elif mode == "histogram":
            # The style takes the photo's palette before any feature is taken from it, so the
            # optimisation itself never pulls the colours away (Gatys et al. 2016, section 2.1).
            # Matched at the size style_grams uses, so a full-size style costs no more per frame.
            longest = max(MIN_SIDE, round(max(content.shape[:2]) * cfg.image.style_scale))
            styles = [match_colors(resize(s, fit_longest(s, longest)), content) for s in styles]

        def finish(image: np.ndarray) -> np.ndarray:
            return (recombine_colors(image, original) if mode == "luminance" else image).astype(np.float32)

        hook = None if on_image is None or not save_every else (lambda i, image: on_image(i, finish(image)))
        final_iterations = iterations or cfg.optim.iterations
        tiled = self._tiled_if_needed(content, styles, style_weights, temporal, final_iterations,
                                      callback, masks is not None) if _allow_tiling else None
        if tiled is not None:
            if style_weight is not None:
                log.warning("a style weight override is not applied to tiled runs; loss.style_weight is used")
            image = finish(tiled.image)
            if hook is not None:
                log.info("tiled run: no intermediate images, only the result")
                on_image(tiled.evaluations, image)
            return StylizeResult(image, tiled.evaluations, tiled.seconds, tiled.final_loss, tiled.history)
        sizes = (scale_sizes(*content.shape[:2], cfg.image.scales, cfg.image.min_scale_size)
                 if multiscale and temporal is None else [content.shape[:2]])
        x = self.initial_image(resize(content, sizes[0]), init if not isinstance(init, np.ndarray)
                               else resize(init, sizes[0]))
        total_evals, total_seconds, history = 0, 0.0, []
        result = None
        for index, hw in enumerate(sizes):
            last = index == len(sizes) - 1
            steps = final_iterations if last else cfg.optim.coarse_iterations
            if steps == 0:
                continue
            targets = self.targets(resize(content, hw), styles, style_weights, masks)
            x = resize(x, hw)
            result = self.optimise(x, targets, steps, temporal if last else None, temporal_weight,
                                   callback, (index + 1, len(sizes)), style_weight=style_weight,
                                   save_every=save_every if last else None, on_image=hook if last else None)
            history += [(total_evals + e, total_seconds + s, loss) for e, s, loss in result.history]
            total_evals += result.evaluations
            total_seconds += result.seconds
            x = result.image
        return StylizeResult(finish(x), total_evals, total_seconds,
                             result.final_loss if result else float("nan"), history)
