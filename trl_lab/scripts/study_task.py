"""The study's task and budget (issue 15): what every arm of :mod:`trl_lab.scripts.study` shares, and what the study's
reward models (:mod:`trl_lab.scripts.study_rm`) are trained on."""

from __future__ import annotations

__all__ = ["STUDY_FLAGS", "TASK_FLAGS", "task_flags"]

#: The task, held-out set and budget every arm shares (arm 1's seeds 42 and 43 ran exactly these).
STUDY_FLAGS: tuple[str, ...] = (
    "--dataset_source", "reasoning_gym",
    "--dataset_task", "basic_arithmetic",
    "--dataset_task_config", '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}',
    "--heldout_size", "256",
    "--heldout_eval_steps", "25",
    "--heldout_table_size", "None",
    "--max_steps", "50",
)

#: The flags of :data:`STUDY_FLAGS` that choose the task (not the held-out set or the budget).
TASK_FLAGS = ("--dataset_source", "--dataset_task", "--dataset_task_config")


def task_flags() -> list[str]:
    """The task part of :data:`STUDY_FLAGS`, e.g. for sampling the task's training questions."""
    pairs = zip(STUDY_FLAGS[::2], STUDY_FLAGS[1::2])
    return [x for flag, value in pairs if flag in TASK_FLAGS for x in (flag, value)]
