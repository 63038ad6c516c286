"""HealthMonitorCallback: warn when a run shows a hacked policy's label-free symptoms; optionally stop.

The symptoms (read from the held-out evaluations that :class:`~trl_lab.callbacks.HeldOutAccuracyCallback` logs):

* ``kl_growth``: ``heldout/kl_to_ref`` grew faster than ``kl_rate`` (nats per token per training step) since the
  previous evaluation;
* ``repetition_jump``: ``heldout/repetition`` is more than ``repetition_jump`` above its first value;
* ``length_jump``: ``heldout/mean_length`` is more than ``length_ratio`` times its first value;
* ``entropy_collapse``: ``heldout/entropy`` is below ``entropy_ratio`` times its first value;
* ``diversity_collapse``: ``heldout/distinct_answers`` (the share of distinct whole answers) is below
  ``diversity_ratio`` times its first value: the policy gives one stock reply to many prompts.

Each firing is logged as a warning, kept in :attr:`HealthMonitorCallback.warnings` and written under ``"health"`` in
``output_dir/goodhart.json`` (next to the Goodhart verdict). With ``stop=True`` (off by default) a firing also stops
training. Label-free signals are known to fire after the fact more often than they warn early: see
``docs/goodhart.md`` for how often they fire on healthy runs before relying on ``stop``.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trl_lab.report import GOODHART_FILE

__all__ = ["HealthMonitorCallback", "SIGNALS", "replay_run"]

logger = logging.getLogger(__name__)

#: Signal name -> the logged metric it reads.
SIGNALS = {
    "kl_growth": "heldout/kl_to_ref",
    "repetition_jump": "heldout/repetition",
    "length_jump": "heldout/mean_length",
    "entropy_collapse": "heldout/entropy",
    "diversity_collapse": "heldout/distinct_answers",
}


class HealthMonitorCallback(TrainerCallback):
    """Warn (and with ``stop=True`` stop) on fast KL growth, repetition or length jumps, an entropy collapse, or a
    collapse of the answers' diversity.

    Args:
        kl_rate: the fastest healthy growth of ``heldout/kl_to_ref``, nats per token per step (``None``: off).
        repetition_jump: the largest healthy rise of ``heldout/repetition`` over its first value (``None``: off).
        length_ratio: the largest healthy ``heldout/mean_length`` over its first value (``None``: off).
        entropy_ratio: the smallest healthy ``heldout/entropy`` over its first value (``None``: off).
        diversity_ratio: the smallest healthy ``heldout/distinct_answers`` over its first value (``None``: off).
            The default, 0.9, is under every healthy study run (they keep 0.97-1.00 of their distinct answers).
        stop: stop training at the first firing (default off: warn only).
    """

    def __init__(
        self,
        *,
        kl_rate: float | None = 0.05,
        repetition_jump: float | None = 0.1,
        length_ratio: float | None = 1.5,
        entropy_ratio: float | None = 0.5,
        diversity_ratio: float | None = 0.9,
        stop: bool = False,
    ):
        for name, value in (("kl_rate", kl_rate), ("repetition_jump", repetition_jump),
                            ("length_ratio", length_ratio), ("entropy_ratio", entropy_ratio),
                            ("diversity_ratio", diversity_ratio)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"HealthMonitorCallback: {name} must be a positive number or None, got {value!r}")
        for name, value in (("entropy_ratio", entropy_ratio), ("diversity_ratio", diversity_ratio)):
            if value is not None and value >= 1:
                raise ValueError(f"HealthMonitorCallback: {name} must be below 1, got {value}")
        if length_ratio is not None and length_ratio <= 1:
            raise ValueError(f"HealthMonitorCallback: length_ratio must be above 1, got {length_ratio}")
        self.kl_rate = kl_rate
        self.repetition_jump = repetition_jump
        self.length_ratio = length_ratio
        self.entropy_ratio = entropy_ratio
        self.diversity_ratio = diversity_ratio
        self.stop = stop
        self.first: dict[str, float] = {}  # metric -> its first logged value
        self.previous: dict[str, tuple[int, float]] = {}  # metric -> (step, value) at the previous evaluation
        self.warnings: list[dict[str, Any]] = []

    def check(self, step: int, metrics: dict[str, Any]) -> list[dict[str, Any]]:
        """Check one evaluation's metrics at ``step``; returns (and records) the firings."""
        values = {key: float(metrics[key]) for key in SIGNALS.values()
                  if isinstance(metrics.get(key), (int, float)) and math.isfinite(metrics[key])}
        fired: list[dict[str, Any]] = []

        def fire(signal: str, value: float, reference: float, limit: float) -> None:
            fired.append({"step": int(step), "signal": signal, "metric": SIGNALS[signal], "value": value,
                          "reference": reference, "limit": limit})

        kl = values.get(SIGNALS["kl_growth"])
        if self.kl_rate is not None and kl is not None and SIGNALS["kl_growth"] in self.previous:
            last_step, last = self.previous[SIGNALS["kl_growth"]]
            if step > last_step and (kl - last) / (step - last_step) > self.kl_rate:
                fire("kl_growth", (kl - last) / (step - last_step), last, self.kl_rate)
        def fell_below(value: float, reference: float, ratio: float) -> bool:
            return reference > 0 and value / reference < ratio

        for signal, key, limit, breached in (
            ("repetition_jump", SIGNALS["repetition_jump"], self.repetition_jump, lambda v, r, t: v - r > t),
            ("length_jump", SIGNALS["length_jump"], self.length_ratio, lambda v, r, t: r > 0 and v / r > t),
            ("entropy_collapse", SIGNALS["entropy_collapse"], self.entropy_ratio, fell_below),
            ("diversity_collapse", SIGNALS["diversity_collapse"], self.diversity_ratio, fell_below),
        ):
            if limit is not None and key in values and key in self.first and breached(values[key], self.first[key], limit):
                fire(signal, values[key], self.first[key], limit)
        for key, value in values.items():
            self.first.setdefault(key, value)
            self.previous[key] = (int(step), value)
        for w in fired:
            logger.warning("HealthMonitorCallback: %s at step %d (%s = %.4g; reference %.4g, limit %.4g)",
                           w["signal"], step, w["metric"], w["value"], w["reference"], w["limit"])
        self.warnings.extend(fired)
        return fired

    def report(self) -> dict[str, Any]:
        """What goes under ``"health"`` in ``goodhart.json``."""
        return {
            "warnings": self.warnings,
            "fired": sorted({w["signal"] for w in self.warnings}),
            "rule": {"kl_rate": self.kl_rate, "repetition_jump": self.repetition_jump,
                     "length_ratio": self.length_ratio, "entropy_ratio": self.entropy_ratio,
                     "diversity_ratio": self.diversity_ratio, "stop": self.stop},
        }

    def save_report(self, directory: str | os.PathLike) -> Path:
        """Write :meth:`report` under ``"health"`` in ``directory/goodhart.json``, keeping what else it holds."""
        path = Path(directory) / GOODHART_FILE
        existing = json.loads(path.read_text()) if path.is_file() else {}
        existing["health"] = self.report()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(existing, indent=2))
        return path

    # ----------------------------------------------------------------------------------- trainer hooks

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if not any(key in logs for key in SIGNALS.values()):
            return
        fired = self.check(int(state.global_step), logs)
        if fired and state.is_world_process_zero:
            self.save_report(args.output_dir)
        if fired and self.stop:
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.save_report(args.output_dir)


def _distinct_answers_from_table(run_dir: Path, step: int, n: float | None) -> float | None:
    """``heldout/distinct_answers`` at ``step`` from the answers ``HeldOutAccuracyCallback`` wrote to
    ``run_dir/heldout/step_*.jsonl``, or None unless all ``n`` were kept (decoded text: the callback counts token
    ids, the same up to answers that decode alike)."""
    from trl_lab.callbacks.answer_signals import distinct_answer_share

    table = run_dir / "heldout" / f"step_{step:06d}.jsonl"
    if not table.is_file():
        return None
    answers = [json.loads(line).get("completion") for line in table.read_text().splitlines() if line.strip()]
    if not answers or None in answers or n is None or len(answers) != int(n):
        return None
    return distinct_answer_share([[a] for a in answers])


def replay_run(run_dir: str | os.PathLike, monitor: HealthMonitorCallback | None = None,
               ) -> tuple[list[int], set[str], list[dict[str, Any]]]:
    """Replay a finished run's held-out evaluations (the ``heldout/accuracy`` entries of its ``metrics.jsonl``)
    through ``monitor`` (default limits when None): ``(evaluation steps, signals the run logged, warnings)``.

    Signals whose metric the run did not log cannot fire, except ``heldout/distinct_answers``, recomputed from the
    run's held-out tables when every item's answer was kept. Nothing is logged or written.
    """
    run_dir = Path(run_dir)
    monitor = monitor if monitor is not None else HealthMonitorCallback()
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "heldout/accuracy" in e]
    for e in evals:
        if SIGNALS["diversity_collapse"] not in e:
            share = _distinct_answers_from_table(run_dir, int(e["step"]), e.get("heldout/n"))
            if share is not None:
                e[SIGNALS["diversity_collapse"]] = share
    level = logger.level
    logger.setLevel(logging.ERROR)  # a replay reports its warnings; it does not log them again
    try:
        for e in evals:
            monitor.check(int(e["step"]), e)
    finally:
        logger.setLevel(level)
    logged = {signal for signal, key in SIGNALS.items() if any(key in e for e in evals)}
    return [int(e["step"]) for e in evals], logged, monitor.warnings
