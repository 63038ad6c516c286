"""Every log dict of a run, appended to ``output_dir/metrics.jsonl`` as it is logged.

``trainer_state.json`` (which holds ``log_history``) is only written at checkpoints, so a run without
checkpoints (or one that died between them) leaves no record of its curves. :class:`MetricsLoggerCallback`
writes one JSON line per ``Trainer.log`` call on the main process (the same dict TensorBoard/W&B get, plus
``step``), and at the end of training writes the run report (:func:`trl_lab.report.write_report`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from trl_lab.report import METRICS_FILE, write_report

logger = logging.getLogger(__name__)

__all__ = ["MetricsLoggerCallback", "write_run_report"]


class MetricsLoggerCallback(TrainerCallback):
    """Append each log dict (with ``step``) to ``<output_dir>/metrics.jsonl``; write the report at train end.

    A fresh run (global step 0 at its first event) starts the file anew; a resumed run keeps the lines up to
    the step it resumes from. Only the main process writes. A resumed run's file is cut back only once the resume
    has restored the trainer's state, i.e. at its first step (transformers loads the RNG state after
    ``on_train_begin``, at the first step): a resume that fails leaves the previous run's log whole. Lines logged
    before that (e.g. a held-out evaluation at train begin) are kept in memory and written after the cut.
    """

    def __init__(self, path: str | os.PathLike | None = None, *, write_report: bool = True):
        self.path = Path(path) if path is not None else None
        self.write_report = write_report
        self._started = False
        self._resumed_from: int | None = None  # a resumed run's step, until its log is cut back
        self._pending: list[str] = []

    def _file(self, args: Any) -> Path:
        return self.path if self.path is not None else Path(args.output_dir) / METRICS_FILE

    def _start(self, args: Any, state: Any) -> None:
        """Truncate (fresh run) now, or mark a resumed run to be cut back at its first step; once per session."""
        if self._started:
            return
        self._started = True
        self._pending = []
        if state.global_step > 0:
            self._resumed_from = state.global_step
        else:
            self._cut(args, 0)

    def _cut(self, args: Any, step: int) -> None:
        """Keep the lines up to ``step`` (none for a fresh run), then write the lines logged meanwhile."""
        self._resumed_from = None
        path = self._file(args)
        kept = []
        if path.exists() and step > 0:
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line).get("step", 0) <= step:
                        kept.append(line)
                except json.JSONDecodeError:
                    continue
        if path.exists() or self._pending:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{line}\n" for line in kept + self._pending))
        self._pending = []

    def _restored(self, args: Any, state: Any) -> None:
        """A resumed run has passed its first step (or ended): its state was restored; cut the log back now."""
        if self._resumed_from is not None and state.is_world_process_zero:
            self._cut(args, self._resumed_from)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self._start(args, state)

    def on_step_begin(self, args, state, control, **kwargs):
        self._restored(args, state)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self._start(args, state)  # a callback ahead of this one may log before our on_train_begin
        if self._resumed_from is not None and state.global_step > self._resumed_from:
            self._restored(args, state)
        record = {k: _jsonable(v) for k, v in logs.items()}
        record["step"] = state.global_step
        line = json.dumps(record)
        if self._resumed_from is not None:
            self._pending.append(line)
            return
        path = self._file(args)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(line + "\n")

    def on_train_end(self, args, state, control, **kwargs):
        self._restored(args, state)
        self._started = False
        if self.write_report and state.is_world_process_zero:
            write_run_report(args.output_dir, log_path=self._file(args))


def write_run_report(output_dir: str | os.PathLike, log_path: str | os.PathLike | None = None) -> None:
    """:func:`trl_lab.report.write_report` at the end of a run; a failure is logged, never raised."""
    try:
        report = write_report(output_dir, log_path=log_path)
        logger.info("run report: %s", report.png)
    except Exception as exc:  # a plotting problem must never fail a finished run
        logger.warning("could not write the run report for %s: %s", output_dir, exc)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "item"):
        try:
            return _jsonable(value.item())
        except (ValueError, RuntimeError):
            pass
    return str(value)
