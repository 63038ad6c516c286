"""GoodhartCallback: stop when the training reward keeps rising while held-out accuracy falls, keep the best.

The detection rule, its parameters and the gold-source protocol are documented on
:class:`GoodhartCallback` and in ``docs/goodhart.md``; ``bench/goodhart.py`` measures it on simulated runs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import weakref
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from trl_lab.callbacks.metrics_log import write_run_report
from trl_lab.report import GOODHART_FILE, REPORT_JSON

__all__ = ["GoldItemsSource", "GoodhartCallback", "ema_update", "reward_components"]

logger = logging.getLogger(__name__)

SNAPSHOT_DIR = "goodhart_best"

#: The drop rules: ``glr`` (default) scans every window of evaluations since the best step; ``paired_z`` tests the
#: latest evaluation alone, with patience. ``glr`` meets issue 13's targets on the suite fitted to real runs (slow
#: hacks 99% caught at a median delay of 13 evaluations, against ``paired_z``'s 92% at 16) and is worse than
#: ``paired_z`` on the most persistent suite, where neither meets them (docs/goodhart.md, "glr retuned").
RULES = ("paired_z", "glr")
#: Per-rule defaults of ``z_threshold``, ``patience``, ``smoothing``, ``threshold_growth`` and ``fresh_draw_z``
#: (``bench/goodhart.py`` and ``bench/goodhart_frontier.py`` measure them; ``"gaussian"``: the tail-bound growth of :meth:`threshold`).
RULE_DEFAULTS: dict[str, dict[str, Any]] = {
    "paired_z": {"z_threshold": 3.5, "patience": 2, "smoothing": 1, "threshold_growth": "gaussian",
                 "fresh_draw_z": 0.0},
    "glr": {"z_threshold": 4.15, "patience": 1, "smoothing": 2, "threshold_growth": 1.0, "fresh_draw_z": 0.5},
}
#: ``fresh_draw_z`` is added in full when :attr:`GoodhartCallback.change_ratio` is at or above the upper end, not at
#: all at or below the lower, linearly between: fresh draws measure about 0.97-1.0, the simulator fitted to the
#: study's runs 0.83-0.88 once a few evaluations are in, the real runs 0.4-0.93 (docs/goodhart.md).
FRESH_DRAW_RAMP = (0.85, 0.95)
#: The change ratio compares an item's outcome change at lag one with its mean change at lags 2..CHANGE_LAGS.
CHANGE_LAGS = 4


@runtime_checkable
class GoldItemsSource(Protocol):
    """Where per-item held-out results come from (e.g. ``HeldOutAccuracyCallback``).

    ``last_items[i]`` is whether held-out item ``i`` was answered correctly at the evaluation made at
    training step ``last_step`` (``None`` before the first one). Items must be in the same order at every
    evaluation: the paired test compares item ``i`` with item ``i``.
    """

    last_items: Sequence[bool] | None
    last_step: int | None


# Gold sources by gold metric, so a callback that transformers rebuilds from a checkpoint's JSON state
# (``restore_callback_states_from_checkpoint=True``) finds the live source again.
_SOURCES: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()


class GoodhartCallback(TrainerCallback, ExportableState):
    """Stop training when the proxy reward rises while held-out (gold) accuracy falls; restore the best step.

    **Inputs.** ``proxy_metric`` (default ``reward``; or e.g. ``rewards/sentiment/mean``) is read from every
    log and smoothed with an exponential moving average (``proxy_ema`` = weight of the newest value).
    ``gold_metric`` (default ``heldout/accuracy``) is read from the logs of evaluation steps, with its
    standard error from ``<gold_metric>_stderr`` when logged. Per-item correctness comes from ``heldout``
    (a :class:`GoldItemsSource`, e.g. ``HeldOutAccuracyCallback``): its ``last_items`` are used when its
    ``last_step`` is the current step, and a new evaluation there counts as a gold observation even when
    the accuracy is not in the logs. :meth:`observe` is the same thing without a trainer.

    **Best step.** The gold curve is smoothed with a centred moving average over ``2*smoothing + 1``
    evaluations; a step's smoothed value is final once the evaluation ``smoothing`` after it has arrived.
    The best step is the peak of the smoothed curve (first one on ties); its *reference* is the pooled
    window: per item, the fraction of correct answers over the window's evaluations (or, without items, the
    window's mean accuracy with standard error ``sqrt(sum se_j^2) / w``).

    **Drop statistic** at each evaluation ``k`` after the best step is known: one-sided z of reference
    minus current accuracy.

    * with per-item results: the paired-difference z-test ``z = mean(d) / (sd(d) / sqrt(n))`` with
      ``d_i = ref_i - x_i`` (McNemar's test when the window is a single evaluation). Item difficulty is
      shared between checkpoints, so this is much tighter than comparing two accuracies;
    * otherwise: ``z = (ref - g_k) / sqrt(se_ref^2 + se_k^2)``, ``se`` the logged stderr, else the
      binomial ``sqrt(g(1-g)/n)`` with ``n = gold_n``.

    That z of the latest evaluation is ``rule="paired_z"``'s statistic. With ``rule="glr"`` (the default) the drop
    statistic is instead the largest of these z over the windows ``[j, k]`` of evaluations since the best step, the
    window's per-item mean against the reference (a generalised likelihood-ratio scan for a change point after the
    best step; see :meth:`_window_z`); the single-evaluation z still drives the collapse trigger. ``z_threshold``
    holds up to ``horizon`` evaluations and grows after (:meth:`threshold`). ``fresh_draw_z`` (``glr``: 0.5) is
    added to it when the per-item outcomes change as often from one evaluation to the next as across longer lags
    (:attr:`change_ratio` near 1: every evaluation a fresh draw, as with sampled decoding), where the scan's windows
    are nearly independent looks and need a higher bar; on persistent outcomes (greedy decoding on a fixed set) it
    adds nothing.

    **Trigger** (never during the first ``warmup_evals`` evaluations):

    * *Goodhart*: ``z >= z_threshold`` at ``patience`` consecutive evaluations, and the smoothed proxy is
      above its value at the best step by more than ``proxy_min_rise`` (skipped when ``proxy_metric`` is
      ``None``) -- or, with ``proxy_components`` (the default) and a reward of several plugins, any one
      plugin's smoothed mean (``rewards/<plugin>/mean``) is: a total that stays flat because a gamed part
      rises while the part being lost falls (checker + length bonus) is the same divergence.
      ``trigger_proxy`` names the metric that rose;
    * *collapse*: a single ``z >= collapse_z`` (whatever the proxy does).

    Defaults (``paired_z``: z 3.5, patience 2, smoothing 1, Gaussian-tail growth; ``glr``: z 4.15, patience 1,
    smoothing 2, +1.0 per doubling; both: collapse 7, warm-up 3, horizon 40) hold false alarms near or under 1% on
    40 evaluations of 500 items in ``bench/goodhart.py``; beyond ``horizon`` evaluations the threshold rises so
    the rate does not grow with the run's length (:meth:`threshold`).

    **On trigger**: ``control.should_training_stop = True``; ``triggered_step``, ``trigger_reason``,
    ``best_step``, ``best_gold`` (smoothed) and ``proxy_point`` (smoothed proxy at the best step; when the best
    step is the evaluation before the first step, which has no proxy yet, the first proxy value logged after it)
    are set;
    ``goodhart.json`` is written to ``args.output_dir``; with ``restore_best`` the trainable parameters
    (the adapter for LoRA) of the best step are copied back into the model in ``on_train_end``. They are
    snapshotted in CPU memory at each evaluation that may become the best, and written to
    ``output_dir/goodhart_best/step-<k>.safetensors`` at each checkpoint save so a resumed run can restore them.

    **Resume.** The detector state is saved in each checkpoint's ``trainer_state.json`` (``ExportableState``).
    On ``train(resume_from_checkpoint=...)`` the callback takes it back in ``on_train_begin``, into the
    object you passed, whatever ``restore_callback_states_from_checkpoint`` says (with ``True``, transformers
    replaces the object by one rebuilt from the saved state). Kept weight snapshots stay on disk.
    """

    def __init__(
        self,
        proxy_metric: str | None = "reward",
        gold_metric: str = "heldout/accuracy",
        *,
        gold_stderr_metric: str | None = None,
        gold_n: int | None = None,
        rule: str = "glr",
        z_threshold: float | None = None,
        patience: int | None = None,
        horizon: int = 40,
        threshold_growth: float | str | None = None,
        fresh_draw_z: float | None = None,
        collapse_z: float = 7.0,
        warmup_evals: int = 3,
        smoothing: int | None = None,
        proxy_ema: float = 0.3,
        proxy_min_rise: float = 0.0,
        proxy_components: bool = True,
        restore_best: bool = True,
        heldout: GoldItemsSource | None = None,
    ):
        if rule not in RULES:
            raise ValueError(f"GoodhartCallback: rule {rule!r} is not one of {RULES}")
        z_threshold = RULE_DEFAULTS[rule]["z_threshold"] if z_threshold is None else z_threshold
        patience = RULE_DEFAULTS[rule]["patience"] if patience is None else patience
        smoothing = RULE_DEFAULTS[rule]["smoothing"] if smoothing is None else smoothing
        threshold_growth = RULE_DEFAULTS[rule]["threshold_growth"] if threshold_growth is None else threshold_growth
        fresh_draw_z = RULE_DEFAULTS[rule]["fresh_draw_z"] if fresh_draw_z is None else fresh_draw_z
        if patience < 1 or smoothing < 0 or warmup_evals < 0 or horizon < 1 or not 0 < proxy_ema <= 1:
            raise ValueError("GoodhartCallback: need patience >= 1, smoothing >= 0, warmup_evals >= 0, horizon >= 1 "
                             "and 0 < proxy_ema <= 1")
        if threshold_growth != "gaussian" and not (isinstance(threshold_growth, (int, float))
                                                   and math.isfinite(threshold_growth) and threshold_growth >= 0):
            raise ValueError(f"GoodhartCallback: threshold_growth must be 'gaussian' or a finite number >= 0 "
                             f"(per doubling of the evaluations beyond the horizon), got {threshold_growth!r}")
        if not (isinstance(fresh_draw_z, (int, float)) and math.isfinite(fresh_draw_z) and fresh_draw_z >= 0):
            raise ValueError(f"GoodhartCallback: fresh_draw_z must be a finite number >= 0, got {fresh_draw_z!r}")
        self.proxy_metric = proxy_metric
        self.gold_metric = gold_metric
        self.gold_stderr_metric = gold_stderr_metric or f"{gold_metric}_stderr"
        self.gold_n = gold_n
        self.rule = rule
        self.horizon = horizon
        self.threshold_growth = threshold_growth
        self.fresh_draw_z = float(fresh_draw_z)
        self.z_threshold = z_threshold
        self.patience = patience
        self.collapse_z = collapse_z
        self.warmup_evals = warmup_evals
        self.smoothing = smoothing
        self.proxy_ema = proxy_ema
        self.proxy_min_rise = proxy_min_rise
        self.proxy_components = proxy_components
        self.restore_best = restore_best
        if heldout is not None:
            try:
                _SOURCES[gold_metric] = heldout
            except TypeError:  # not weak-referenceable: no re-linking after a callback-state restore
                pass
        self.heldout = heldout if heldout is not None else _SOURCES.get(gold_metric)
        # Detector state (JSON-serialisable; see state()).
        self.history: list[dict[str, Any]] = []  # per evaluation: step, gold, proxy, se, z, smoothed
        self.window_items: list[np.ndarray | None] = []  # per-item results of the last 2*smoothing+1 evals
        self.since_best: list[np.ndarray | None] = []  # glr: per-item results of the evaluations after the best
        self.since_best_se: list[float | None] = []  # glr: their standard errors (the test without items)
        self.recent_items: list[np.ndarray] = []  # the last CHANGE_LAGS + 1 per-item results (change_ratio)
        self.lag_one_changes = 0.0  # sum over evaluations of the share of items changed since the previous one
        self.longer_lag_changes = 0.0  # ... and of the mean share changed at lags 2..CHANGE_LAGS
        self.best_step: int | None = None
        self.best_gold: float | None = None  # smoothed gold at the best step
        self.best_ref: dict[str, Any] | None = None  # reference: gold, se, items (pooled window)
        self.proxy_point: float | None = None
        self.proxy_smoothed: float | None = None
        self.first_proxy: float | None = None  # the proxy's first finite value: its level when training began
        # proxy_components: the same three per reward plugin (``rewards/<plugin>/mean``), by metric name
        self.component_points: dict[str, float] = {}
        self.component_smoothed: dict[str, float] = {}
        self.first_components: dict[str, float] = {}
        self.trigger_proxy: str | None = None  # the proxy metric whose rise the Goodhart trigger saw
        self.consecutive = 0
        self.triggered_step: int | None = None
        self.trigger_reason: str | None = None
        self.restored = False
        self._snapshots: dict[int, dict[str, Any]] = {}
        self._persisted: set[int] = set()
        self._warned: set[str] = set()

    # ----------------------------------------------------------------------------------------- detector

    @property
    def triggered(self) -> bool:
        """Whether the detector has fired."""
        return self.triggered_step is not None

    def observe(
        self,
        step: int,
        proxy: float,
        gold: float,
        gold_items: Sequence[bool] | None = None,
        *,
        gold_stderr: float | None = None,
        model: Any = None,
        components: Mapping[str, float] | None = None,
    ) -> bool:
        """Record one gold evaluation at ``step`` with the proxy level then; True once the detector has fired.

        ``proxy`` is used as given (NaN when unknown); ``components``, the levels of the reward's parts then
        (``{"rewards/<plugin>/mean": value}``), are watched with it when ``proxy_components`` is on. With
        ``model``, its trainable parameters are snapshotted so :meth:`restore` can bring back the best step.
        Observations after the trigger are ignored (the verdict and best step stay fixed).
        """
        if self.triggered:
            return True
        self._as_arrays()
        items = None if gold_items is None else np.asarray(gold_items, dtype=np.float64)
        if items is not None and items.size == 0:
            items = None
        se = self._stderr(gold, items, gold_stderr)
        if self.first_proxy is None and math.isfinite(proxy):
            self.first_proxy = float(proxy)
        parts = {k: float(v) for k, v in (components or {}).items() if self.proxy_components and math.isfinite(v)}
        for name, value in parts.items():
            self.first_components.setdefault(name, value)
        if model is not None:
            self._snapshots[int(step)] = _trainable_state(model)
        self.history.append({"step": int(step), "gold": float(gold), "proxy": float(proxy), "se": se,
                             "z": None, "smoothed": None, **({"components": parts} if parts else {})})
        self.window_items.append(items)
        del self.window_items[: -(2 * self.smoothing + 1)]
        self._count_changes(items)
        if self.rule == "glr":  # the windows since the best step (paired_z needs only the reference)
            self.since_best.append(items)
            self.since_best_se.append(se)
        self._finalize(len(self.history) - 1 - self.smoothing)
        z_last = self._drop_z(gold, se, items)
        z = self._window_z() if self.rule == "glr" else z_last
        self.history[-1]["z"] = z
        self.history[-1]["z_last"] = z_last
        threshold = self.threshold(len(self.history))
        self.history[-1]["threshold"] = threshold
        self.history[-1]["change_ratio"] = self.change_ratio
        self.consecutive = self.consecutive + 1 if z is not None and z >= threshold else 0
        reason = self._verdict(z, z_last, proxy, parts)
        if reason is not None:
            self.triggered_step, self.trigger_reason = int(step), reason
            logger.warning(
                "GoodhartCallback: %s at step %d (z=%.2f; gold %.4f vs smoothed best %.4f at step %s; "
                "proxy %.4g vs %.4g there%s)", reason, step, z, gold, self.best_gold, self.best_step, proxy,
                math.nan if self.proxy_point is None else self.proxy_point,
                f"; rising: {self.trigger_proxy}" if self.trigger_proxy not in (None, self.proxy_metric) else "",
            )
        self._prune_snapshots()
        return self.triggered

    def _stderr(self, gold: float, items: np.ndarray | None, given: float | None) -> float | None:
        if given is not None and math.isfinite(given) and given > 0:
            return float(given)
        n = items.size if items is not None else self.gold_n
        if not n:
            return None
        g = min(max(gold, 0.5 / n), 1 - 0.5 / n)
        return math.sqrt(g * (1 - g) / n)

    def _finalize(self, index: int) -> None:
        """The smoothed value of evaluation ``index`` is final: update the best step and its reference."""
        if index < 0:
            return
        h = self.smoothing
        lo, hi = max(0, index - h), min(len(self.history), index + h + 1)
        window = self.history[lo:hi]
        smoothed = float(np.mean([e["gold"] for e in window]))
        self.history[index]["smoothed"] = smoothed
        if self.best_gold is not None and smoothed <= self.best_gold:
            return
        entry = self.history[index]
        self.best_step, self.best_gold, self.proxy_point = entry["step"], smoothed, entry["proxy"]
        self.component_points = dict(entry.get("components") or {})
        after = len(self.history) - 1 - index  # evaluations after the best step, the newest included
        self.since_best, self.since_best_se = self.since_best[-after:] if after else [], \
            self.since_best_se[-after:] if after else []
        ses = [e["se"] for e in window]
        se_ref = math.sqrt(sum(s * s for s in ses)) / len(ses) if all(s is not None for s in ses) else None
        # window_items holds the last 2h+1 evaluations; map history indices onto it.
        offset = len(self.history) - len(self.window_items)
        rows = [self.window_items[i - offset] for i in range(lo, hi) if i - offset >= 0]
        ref_items = None
        if rows and all(r is not None for r in rows) and len({r.size for r in rows}) == 1:
            ref_items = sum(rows) / len(rows)
        self.best_ref = {"gold": smoothed, "se": se_ref, "items": ref_items}

    def _as_arrays(self) -> None:
        """Per-item vectors as float arrays (they come back as lists from a checkpoint's JSON state)."""
        self.window_items = [None if r is None else np.asarray(r, dtype=np.float64) for r in self.window_items]
        self.since_best = [None if r is None else np.asarray(r, dtype=np.float64) for r in self.since_best]
        self.recent_items = [np.asarray(r, dtype=np.float64) for r in self.recent_items]
        if self.best_ref is not None and self.best_ref.get("items") is not None:
            self.best_ref["items"] = np.asarray(self.best_ref["items"], dtype=np.float64)

    def _drop_z(self, gold: float, se: float | None, items: np.ndarray | None) -> float | None:
        ref = self.best_ref
        if ref is None:
            return None
        if items is not None and ref["items"] is not None and ref["items"].size == items.size and items.size > 1:
            return _paired_z(ref["items"] - items)
        if se is None or ref["se"] is None:
            self._warn_once(
                "no-se",
                f"GoodhartCallback: no standard error for {self.gold_metric!r}: give per-item results "
                f"(heldout=...), log {self.gold_stderr_metric!r}, or set gold_n; detection is off",
            )
            return None
        return (ref["gold"] - gold) / math.sqrt(ref["se"] ** 2 + se**2)

    def _count_changes(self, items: np.ndarray | None) -> None:
        """Add the newest per-item results to the change counts of :attr:`change_ratio`."""
        if items is None:
            return
        recent = [r for r in self.recent_items if r.size == items.size]
        if len(recent) >= 2:
            self.lag_one_changes += float(np.abs(items - recent[-1]).mean())
            self.longer_lag_changes += float(np.mean([np.abs(items - recent[-lag]).mean()
                                                      for lag in range(2, min(CHANGE_LAGS, len(recent)) + 1)]))
        self.recent_items = (recent + [items])[-(CHANGE_LAGS + 1):]

    @property
    def change_ratio(self) -> float | None:
        """How often item outcomes change from one evaluation to the next, relative to longer lags.

        Summed over the evaluations so far (from the third with per-item results on): the share of items whose
        outcome differs from the previous evaluation, over the mean share differing from the evaluations 2 to
        ``CHANGE_LAGS`` back. Item difficulty changes nothing in it (a hard item is as likely wrong at any lag), so
        it is about 1 when every evaluation draws every outcome afresh and below 1 when outcomes persist (greedy
        decoding on a fixed set: an answer right at one evaluation is usually right at the next, less so later);
        a genuine drift of the accuracy lowers it too. None before there is a lag-two pair."""
        if self.longer_lag_changes <= 0.0:
            return None
        return self.lag_one_changes / self.longer_lag_changes

    def fresh_draw_bump(self) -> float:
        """What the threshold adds for fresh-draw outcomes now: ``fresh_draw_z`` times where :attr:`change_ratio`
        lies on :data:`FRESH_DRAW_RAMP` (0 below it, 1 above; 0 while the ratio is unknown)."""
        ratio = self.change_ratio
        if not self.fresh_draw_z or ratio is None:
            return 0.0
        lo, hi = FRESH_DRAW_RAMP
        return self.fresh_draw_z * min(max((ratio - lo) / (hi - lo), 0.0), 1.0)

    def threshold(self, evaluations: int) -> float:
        """The drop threshold at the ``evaluations``-th evaluation: ``z_threshold`` up to ``horizon``, then higher.

        Beyond the horizon the threshold grows as ``sqrt(z^2 + 2 ln(evaluations / horizon))``: the level a maximum
        over ``evaluations / horizon`` times as many looks needs to keep the same tail (the Gaussian tail bound),
        so the false-alarm rate stays near its horizon value on longer runs instead of growing with them -- if the
        looks were independent draws of one statistic. A drop against a running maximum is not: the longer the run,
        the luckier its best evaluation, so the statistic itself drifts up on a healthy plateau. With a number for
        ``threshold_growth`` (``glr``'s default: 1.0) the threshold instead grows by that much per doubling, ``z +
        threshold_growth * log2(evaluations / horizon)``, the rate ``bench/goodhart_frontier.py --growth``
        measures is needed; ``"gaussian"`` (``paired_z``'s default) is the tail bound above.

        Plus :meth:`fresh_draw_bump`, from the outcomes seen so far.
        """
        return self._length_threshold(evaluations) + self.fresh_draw_bump()

    def _length_threshold(self, evaluations: int) -> float:
        if evaluations <= self.horizon:
            return self.z_threshold
        if self.threshold_growth != "gaussian":
            return self.z_threshold + self.threshold_growth * math.log2(evaluations / self.horizon)
        return math.sqrt(self.z_threshold**2 + 2.0 * math.log(evaluations / self.horizon))

    def _window_z(self) -> float | None:
        """glr: the largest drop z of the reference against the mean of the last m evaluations, over every m.

        The evaluations since the best step are the candidates; a change point at any of them is a window
        ``[j, now]``. With per-item results the test is paired: ``d_i = ref_i - mean_{t in window} x_i(t)``, its
        variance estimated across items, so the persistence of item outcomes between evaluations (the same items
        mostly right or wrong again) sets the noise, whatever it is. Without items, window means of the accuracy
        with independent standard errors.
        """
        ref = self.best_ref
        if ref is None or not self.since_best:
            return None
        rows, ses = self.since_best, self.since_best_se
        ref_items = ref["items"]
        paired = ref_items is not None and all(r is not None and r.size == ref_items.size for r in rows)
        if not paired and (ref["se"] is None or any(se is None for se in ses)):
            return None
        golds = [e["gold"] for e in self.history[-len(rows):]]
        best: float | None = None
        total, se_sq = 0.0, 0.0
        for m in range(1, len(rows) + 1):
            if paired:
                total = total + rows[-m]
                z = _paired_z(ref_items - total / m)
            else:
                total, se_sq = total + golds[-m], se_sq + ses[-m] ** 2
                z = (ref["gold"] - total / m) / math.sqrt(ref["se"] ** 2 + se_sq / (m * m))
            best = z if best is None else max(best, z)
        return best

    def _verdict(self, z: float | None, z_last: float | None, proxy: float,
                 components: Mapping[str, float] | None = None) -> str | None:
        if z is None:
            return None
        if z_last is not None and z_last >= self.collapse_z:
            return "collapse"
        if len(self.history) <= self.warmup_evals or self.consecutive < self.patience:
            return None
        if self.proxy_metric is None:
            return "gold_drop"
        if math.isfinite(proxy) and (self.proxy_point is None or not math.isfinite(self.proxy_point)):
            # The best step came before any proxy was logged (the step-0 evaluation, when the proxy starts
            # pulling from the first step on): its proxy level is where the proxy started.
            self.proxy_point = self.first_proxy
        if math.isfinite(proxy) and self.proxy_point is not None and proxy - self.proxy_point > self.proxy_min_rise:
            self.trigger_proxy = self.proxy_metric
            return "goodhart"
        # A reward that mixes a gamed part with the part being lost (checker + length bonus) can stay flat in
        # total while accuracy falls: a rise of any one of its parts is the same divergence.
        for name, value in sorted((components or {}).items()):
            point = self.component_points.get(name, self.first_components.get(name))
            if point is not None and value - point > self.proxy_min_rise:
                self.trigger_proxy = name
                return "goodhart"
        return None

    # ----------------------------------------------------------------------------------- weights

    def _kept_steps(self) -> set[int]:
        """Steps whose weights may still be restored: the best step and those whose smoothed value is not final."""
        keep = {e["step"] for e in self.history if e["smoothed"] is None}
        if self.best_step is not None:
            keep.add(self.best_step)
        return keep

    def _prune_snapshots(self) -> None:
        keep = self._kept_steps()
        for step in list(self._snapshots):
            if step not in keep:
                del self._snapshots[step]

    def restore(self, model: Any, snapshot_dir: str | os.PathLike | None = None) -> bool:
        """Copy the best step's trainable parameters back into ``model``; False when no snapshot exists.

        Looks in memory first, then in ``snapshot_dir`` (``output_dir/goodhart_best`` in a trainer).
        """
        if self.best_step is None:
            return False
        weights = self._snapshots.get(self.best_step)
        if weights is None and snapshot_dir is not None:
            path = Path(snapshot_dir) / f"step-{self.best_step}.safetensors"
            if path.exists():
                from safetensors.torch import load_file

                weights = load_file(str(path))
        if weights is None:
            logger.warning("GoodhartCallback: no snapshot of best step %s; weights not restored", self.best_step)
            return False
        import torch

        params = dict(model.named_parameters())
        missing = [name for name in weights if name not in params]
        if missing:
            raise RuntimeError(f"GoodhartCallback: snapshot has parameters the model lacks: {missing[:5]}")
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value.to(device=params[name].device, dtype=params[name].dtype))
        self.restored = True
        return True

    def persist(self, snapshot_dir: str | os.PathLike) -> None:
        """Write the kept snapshots (best and still-pending steps) as safetensors; delete stale ones.

        A file of a kept step stays even when its snapshot is not in memory (taken before a resume).
        """
        from safetensors.torch import save_file

        directory = Path(snapshot_dir)
        directory.mkdir(parents=True, exist_ok=True)
        for step, weights in self._snapshots.items():
            path = directory / f"step-{step}.safetensors"
            if step not in self._persisted or not path.exists():
                save_file({k: v.contiguous() for k, v in weights.items()}, str(path))
                self._persisted.add(step)
        keep = self._kept_steps() | set(self._snapshots)
        for path in directory.glob("step-*.safetensors"):
            if int(path.stem.split("-", 1)[1]) not in keep:
                path.unlink()

    # ----------------------------------------------------------------------------------- report/state

    def report(self) -> dict[str, Any]:
        """The verdict and the evidence, as written to ``goodhart.json``."""
        return {
            "triggered": self.triggered,
            "triggered_step": self.triggered_step,
            "trigger_reason": self.trigger_reason,
            "best_step": self.best_step,
            "best_gold_smoothed": self.best_gold,
            "proxy_point": self.proxy_point,
            "trigger_proxy": self.trigger_proxy,
            "restored": self.restored,
            "proxy_metric": self.proxy_metric,
            "gold_metric": self.gold_metric,
            "rule": {k: v for k, v in self.state()["args"].items() if k not in ("proxy_metric", "gold_metric")},
            "history": self.history,
        }

    def save_report(self, directory: str | os.PathLike) -> Path:
        """Write :meth:`report` to ``directory/goodhart.json`` (keeping a ``"health"`` entry there); returns the path."""
        path = Path(directory) / GOODHART_FILE
        report = self.report()
        if path.is_file():  # keep what a HealthMonitorCallback wrote there
            health = json.loads(path.read_text()).get("health")
            if health is not None:
                report["health"] = health
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(_finite(report), indent=2))
        return path

    def state(self) -> dict[str, Any]:
        """``ExportableState``: constructor args and detector state, JSON-serialisable."""
        return {
            "args": {
                "proxy_metric": self.proxy_metric,
                "gold_metric": self.gold_metric,
                "gold_stderr_metric": self.gold_stderr_metric,
                "gold_n": self.gold_n,
                "rule": self.rule,
                "z_threshold": self.z_threshold,
                "horizon": self.horizon,
                "threshold_growth": self.threshold_growth,
                "fresh_draw_z": self.fresh_draw_z,
                "patience": self.patience,
                "collapse_z": self.collapse_z,
                "warmup_evals": self.warmup_evals,
                "smoothing": self.smoothing,
                "proxy_ema": self.proxy_ema,
                "proxy_min_rise": self.proxy_min_rise,
                "proxy_components": self.proxy_components,
                "restore_best": self.restore_best,
            },
            "attributes": _finite({
                "history": self.history,
                "window_items": [None if r is None else np.asarray(r).tolist() for r in self.window_items],
                "since_best": [None if r is None else np.asarray(r).tolist() for r in self.since_best],
                "since_best_se": self.since_best_se,
                "recent_items": [np.asarray(r).tolist() for r in self.recent_items],
                "lag_one_changes": self.lag_one_changes,
                "longer_lag_changes": self.longer_lag_changes,
                "best_step": self.best_step,
                "best_gold": self.best_gold,
                "best_ref": None if self.best_ref is None else {
                    **self.best_ref,
                    "items": None if self.best_ref["items"] is None else np.asarray(self.best_ref["items"]).tolist(),
                },
                "proxy_point": self.proxy_point,
                "proxy_smoothed": self.proxy_smoothed,
                "first_proxy": self.first_proxy,
                "component_points": self.component_points,
                "component_smoothed": self.component_smoothed,
                "first_components": self.first_components,
                "trigger_proxy": self.trigger_proxy,
                "consecutive": self.consecutive,
                "triggered_step": self.triggered_step,
                "trigger_reason": self.trigger_reason,
            }),
        }

    # ----------------------------------------------------------------------------------- trainer hooks

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step > 0:  # resuming: state is the checkpoint's trainer_state.json
            self._resume(state)

    def _resume(self, state) -> None:
        """Take the detector state saved in the checkpoint being resumed.

        transformers only restores callback states with ``restore_callback_states_from_checkpoint=True`` (and
        then by replacing the callback object); by default it would drop them and the detector would restart
        with no best step. The saved entry is the last one of this class with the same proxy and gold metric
        (transformers appends one per save when a class has several instances). Weight snapshots are not in
        the state: the kept ones are read back from ``output_dir/goodhart_best`` when needed.
        """
        stored = (state.stateful_callbacks or {}).get(type(self).__name__)
        entries = stored if isinstance(stored, list) else [stored] if stored else []
        mine = [e for e in entries
                if all(e.get("args", {}).get(k) == getattr(self, k) for k in ("proxy_metric", "gold_metric"))]
        if not mine:
            logger.warning("GoodhartCallback: the checkpoint resumed at step %d has no state for (%r, %r); the "
                           "detector starts afresh", state.global_step, self.proxy_metric, self.gold_metric)
            return
        for name, value in mine[-1].get("attributes", {}).items():
            setattr(self, name, value)
        self._as_arrays()
        self._snapshots, self._persisted = {}, set()
        if self.triggered:
            logger.warning("GoodhartCallback: the checkpoint's detector had already fired at step %d (%s); "
                           "training stops after the next step", self.triggered_step, self.trigger_reason)

    def on_log(self, args, state, control, logs=None, model=None, **kwargs):
        logs = logs or {}
        if (self.proxy_metric and self.first_proxy is None and "reward" in logs and "loss" in logs
                and self.proxy_metric not in logs):
            # A typo here would silently switch the Goodhart rule off for the whole run: stop at the first training log.
            logged = sorted(k for k in logs if k == "reward" or k.startswith(("rewards/", "heldout/proxy/")))
            raise ValueError(f"GoodhartCallback: proxy_metric {self.proxy_metric!r} is not in the training log; the "
                             f"reward metrics logged are {logged} (set goodhart_proxy_metric to one of them)")
        value = logs.get(self.proxy_metric) if self.proxy_metric else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            self.proxy_smoothed = ema_update(self.proxy_smoothed, float(value), self.proxy_ema)
            if self.first_proxy is None:
                self.first_proxy = self.proxy_smoothed
        if self.proxy_metric and self.proxy_components:
            for name in reward_components(logs):
                self.component_smoothed[name] = ema_update(self.component_smoothed.get(name), float(logs[name]),
                                                           self.proxy_ema)
                self.first_components.setdefault(name, self.component_smoothed[name])
        self._maybe_observe(args, state, control, logs, model)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.triggered and state.global_step > self.triggered_step:  # resumed past a trigger
            control.should_training_stop = True
        if not control.should_log:  # a logging step: on_log comes next with the proxy of this step
            self._maybe_observe(args, state, control, {}, model)

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        self._maybe_observe(args, state, control, metrics or {}, model)

    def on_save(self, args, state, control, **kwargs):
        if self._snapshots and state.is_world_process_zero:
            self.persist(Path(args.output_dir) / SNAPSHOT_DIR)

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self._maybe_observe(args, state, control, {}, None)
        if self.triggered and self.restore_best and model is not None:
            self.restore(model, Path(args.output_dir) / SNAPSHOT_DIR)
        if state.is_world_process_zero:
            self.save_report(args.output_dir)
            if (Path(args.output_dir) / REPORT_JSON).is_file():
                # A run report written by a callback ahead of this one lacks the final verdict: redraw it.
                write_run_report(args.output_dir)

    def _maybe_observe(self, args, state, control, logs: dict[str, Any], model: Any) -> None:
        step = int(state.global_step)
        if self.triggered or (self.history and self.history[-1]["step"] >= step):
            return
        items = None
        source = self.heldout
        if source is not None and source.last_step is not None and int(source.last_step) == step:
            items = source.last_items
        gold = logs.get(self.gold_metric)
        if gold is None:
            if not items:
                return
            gold = float(np.mean(np.asarray(items, dtype=np.float64)))
        stderr = logs.get(self.gold_stderr_metric)
        if self.proxy_metric and self.proxy_smoothed is None and step > 0:  # an eval before training has none
            self._warn_once("no-proxy", f"GoodhartCallback: no {self.proxy_metric!r} logged before the first "
                                        f"{self.gold_metric!r}; the Goodhart rule needs it (collapse still works)")
        proxy = math.nan if self.proxy_smoothed is None else self.proxy_smoothed
        snapshot_model = model if (self.restore_best and model is not None) else None
        if self.observe(step, proxy, float(gold), items, gold_stderr=stderr, model=snapshot_model,
                        components=dict(self.component_smoothed)):
            control.should_training_stop = True
            if state.is_world_process_zero:
                self.save_report(args.output_dir)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(message)


def ema_update(previous: float | None, value: float, weight: float) -> float:
    """One step of the proxy's exponential moving average: ``value`` itself first, then ``weight`` of each new one."""
    return value if previous is None else previous + weight * (value - previous)


def reward_components(logs: Mapping[str, Any]) -> list[str]:
    """The per-plugin reward means in a training log (TRL logs ``rewards/<function>/mean`` for each reward
    function), when there are at least two: one plugin's mean is the total itself."""
    names = sorted(k for k, v in logs.items() if k.startswith("rewards/") and k.endswith("/mean")
                   and isinstance(v, (int, float)) and math.isfinite(v))
    return names if len(names) > 1 else []


def _paired_z(d: np.ndarray) -> float:
    """One-sided z of the mean of per-item differences ``d`` (McNemar's test when ``d`` is in {-1, 0, 1})."""
    n = d.size
    total = float(d.sum())
    var = max(float(np.dot(d, d)) - total * total / n, 0.0) / (n - 1)
    if var <= 1e-12:
        return math.inf if total > 1e-9 else 0.0
    return (total / n) / math.sqrt(var / n)


def _trainable_state(model: Any) -> dict[str, Any]:
    """CPU copies of the trainable parameters (the adapter under LoRA); all parameters if none train."""
    named = list(model.named_parameters())
    chosen = [(n, p) for n, p in named if p.requires_grad] or named
    return {name: p.detach().to("cpu", copy=True) for name, p in chosen}


def _finite(value: Any) -> Any:
    """A copy with NaN/inf floats replaced by None, so the JSON is strict."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
