"""Preemption: a SIGTERM ends the run at the next step boundary with a checkpoint, like a normal end.

A scheduler that preempts a job sends SIGTERM and, some seconds later, SIGKILL. Python's default for SIGTERM is to
die at once: no checkpoint, no ``goodhart.json``, no report. :class:`PreemptionCallback` catches SIGTERM while
training runs, lets the current optimizer step finish, then sets ``control.should_save`` and
``control.should_training_stop``: the trainer writes a checkpoint (``--resume_from_checkpoint`` continues from it) and
returns from ``train()`` as at the last step, so every ``on_train_end`` (the run report, the Goodhart verdict) runs and
the job saves its model. A second SIGTERM gets the handler that was there before (by default: die now). With several
processes the flag is all-reduced at every step, so all ranks stop at the same step.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Any

from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = ["PreemptionCallback"]


class PreemptionCallback(TrainerCallback):
    """Save a checkpoint and stop at the next step end after SIGTERM (``signals``); ``stopped_at`` is that step."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self.received: int | None = None
        self.stopped_at: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # asked twice: do what would have happened without us
            self.uninstall()
            signal.raise_signal(signum)
            return
        self.received = signum
        logger.warning("%s received: saving a checkpoint and stopping after this step (send it again to stop now)",
                       signal.Signals(signum).name)

    def uninstall(self) -> None:
        """Put the handlers back that were there before training began (also done at train end)."""
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def on_train_begin(self, args, state, control, **kwargs):
        self.received = self.stopped_at = None
        if threading.current_thread() is not threading.main_thread():
            logger.warning("PreemptionCallback: training runs outside the main thread, where signal handlers cannot "
                           "be installed; SIGTERM will not save a checkpoint")
            return
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def _any_process_received(self, args: Any) -> bool:
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=args.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())

    def on_step_end(self, args, state, control, **kwargs):
        if self.stopped_at is None and self._any_process_received(args):
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.uninstall()
        if self.stopped_at is not None and state.is_world_process_zero:
            logger.warning("stopped by a signal at step %d; checkpoint-%d in %s resumes the run "
                           "(--resume_from_checkpoint)", self.stopped_at, self.stopped_at, args.output_dir)
