"""What every job does with its arguments: parse them with TRL's ``TrlParser`` (a default config YAML unless
``--config`` is given; the command line overrides the YAML), and pass TRL's ``ModelConfig`` on as loading options."""

from __future__ import annotations

import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser

from trl_lab.quantization import check_bitsandbytes, wants_quantization

__all__ = ["apply_model_config", "end_job", "parse_job_args", "refuse_previous_run"]


def parse_job_args(*dataclass_types: type, default_config: str | os.PathLike | None = None,
                   argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``dataclass_types`` with ``TrlParser``; without ``--config``,
    ``default_config`` (if given) is the YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    return TrlParser(dataclass_types).parse_args_and_config(argv)


def apply_model_config(model_args: ModelConfig, training_args: Any) -> None:
    """Check TRL's ``ModelConfig`` early (a model is named; 4-bit runs on this process's device) and pass its loading
    options to the trainer through ``training_args.model_init_kwargs`` (options already set there win)."""
    if wants_quantization(model_args):
        check_bitsandbytes(training_args.device.type)  # before minutes of loading, not after
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is not set (use an embedded name such as smollm2-135m-instruct, a hub id "
                         "or a path)")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }


def refuse_previous_run(output_dir: str | os.PathLike | None, *, resuming: bool, overwrite: bool,
                        is_main_process: bool = True) -> None:
    """Refuse an ``output_dir`` that holds a previous run (``metrics.jsonl``, ``checkpoint-*``) unless resuming: a new
    run would truncate its log and leave its checkpoints beside the new ones. ``overwrite`` (the job's
    ``--overwrite_output_dir``) deletes the run's log, report, Goodhart files and checkpoints instead (main process)."""
    from trl_lab.callbacks.goodhart import SNAPSHOT_DIR
    from trl_lab.report import GOODHART_FILE, METRICS_FILE, REPORT_JSON, REPORT_PNG

    if not output_dir or resuming or not Path(output_dir).is_dir():
        return
    out = Path(output_dir)
    checkpoints = sorted((p for p in out.glob("checkpoint-*") if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)),
                         key=lambda p: int(p.name.split("-")[1]))
    log = out / METRICS_FILE
    if not checkpoints and not log.exists():
        return
    if overwrite:
        if is_main_process:
            for folder in [*checkpoints, out / SNAPSHOT_DIR]:
                shutil.rmtree(folder, ignore_errors=True)
            for name in (METRICS_FILE, REPORT_PNG, REPORT_JSON, GOODHART_FILE):
                (out / name).unlink(missing_ok=True)
        return
    found = ([METRICS_FILE] if log.exists() else []) + ([f"{len(checkpoints)} checkpoint-* folder(s)"]
                                                         if checkpoints else [])
    resume = f"--resume_from_checkpoint {checkpoints[-1]}" if checkpoints else "a resume from a checkpoint"
    raise ValueError(f"output_dir {str(out)!r} holds a previous run ({', '.join(found)}): a new run there would "
                     f"truncate its log and mix its checkpoints with the new ones. Resume it ({resume}), choose "
                     "another output_dir, or pass --overwrite_output_dir true to delete it and start afresh")


#: Seconds every rank sleeps after the process group is destroyed, before its trainer is freed (see :func:`end_job`).
SETTLE_S = 0.2


def end_job(trainer: Any) -> None:
    """End a job's ranks together: wait for every process, finish the trackers and destroy the process group
    (``trainer.end()``), then release the GIL for a moment before the caller frees the trainer.

    The pause is for gloo (CPU runs): its worker threads destroy finished collectives, which needs the GIL, while
    the last reference to a ``ProcessGroupGloo`` -- DDP's reducer, freed with the trainer after the group is
    destroyed -- joins those threads holding the GIL. Freed while a worker still held a finished all-gather, a rank
    hung there forever (gdb: ``~ProcessGroupGloo`` in ``std::thread::join``, a ``pt_gloo_runloop`` thread in
    ``~AsyncAllgatherWork`` waiting for the GIL; 1 run in about 10 of the two-process CPU test).
    """
    trainer.accelerator.wait_for_everyone()
    trainer.end()
    time.sleep(SETTLE_S)  # the workers finish destroying their last collectives while nothing holds the GIL
