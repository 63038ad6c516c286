"""The study's task and budget (issue 15): what every arm of :mod:`trl_lab.scripts.study` shares, and what the study's
reward models (:mod:`trl_lab.scripts.study_rm`) are trained on.

    python -m trl_lab.scripts.study_task --export outputs/study_task    # the task as train.jsonl / test.jsonl

The export is for machines without reasoning-gym (the lent GPU machine has none, and nothing can be installed there
but carried wheels): the task's distinct questions of each split, in the generator's order, as GSM8K-format rows that
``dataset_source: local`` reads (``python -m trl_lab.scripts.study --task_dir DIR``). A local file is not the
generator: every seed trains on the file's first ``train_size`` questions (the generator draws them per seed) and
samples its held-out set from the exported test questions, so runs on the export pair with each other, not with
runs on the generator.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["EXPORT_SIZES", "STUDY_FLAGS", "TASK_FLAGS", "export_task", "local_task_flags", "main", "task_flags"]

#: The task, held-out set and budget every arm shares (arm 1's seeds 42 and 43 ran exactly these).
STUDY_FLAGS: tuple[str, ...] = (
    "--dataset_source", "reasoning_gym",
    "--dataset_task", "basic_arithmetic",
    "--dataset_task_config", '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}',
    "--heldout_size", "256",
    "--heldout_eval_steps", "25",
    "--heldout_table_size", "None",
    "--max_steps", "50",
    # Pinned at what every committed run used (the CPU config moved to faster settings on 2026-12-06), so that
    # step-0 answers stay comparable between runs of one numerics: held-out batches of 16, the KL monitor in fp32.
    "--heldout_batch_size", "16",
    "--heldout_kl_precision", "fp32",
    # The live detector every committed run used; the default became glr on 2026-12-07. The study table scores glr
    # by replaying it on each run's per-item log (study_summary.REPLAYED_DETECTORS), so both rules are compared on
    # the same runs and a rerun of a committed run stays that run.
    "--goodhart_rule", "paired_z",
)

#: The flags of :data:`STUDY_FLAGS` that choose the task (not the held-out set or the budget).
TASK_FLAGS = ("--dataset_source", "--dataset_task", "--dataset_task_config")


def task_flags() -> list[str]:
    """The task part of :data:`STUDY_FLAGS`, e.g. for sampling the task's training questions."""
    pairs = zip(STUDY_FLAGS[::2], STUDY_FLAGS[1::2])
    return [x for flag, value in pairs if flag in TASK_FLAGS for x in (flag, value)]


#: Questions per split in :func:`export_task`: more than any run here takes (train_size 256, held-out 256 + audit
#: 256), and room for larger batches and held-out sets on a GPU.
EXPORT_SIZES = {"train": 4096, "test": 2048}


def _task_options() -> tuple[str, dict]:
    flags = dict(zip(STUDY_FLAGS[::2], STUDY_FLAGS[1::2]))
    if flags["--dataset_source"] != "reasoning_gym":
        raise ValueError(f"study_task: the export reads a reasoning-gym task, not {flags['--dataset_source']!r}")
    return flags["--dataset_task"], json.loads(flags["--dataset_task_config"])


def export_task(out_dir: str | Path, sizes: dict[str, int] | None = None, seed: int = 0) -> dict[str, int]:
    """Write the study task's first distinct questions of each split (``sizes``, default :data:`EXPORT_SIZES`;
    the generator's stream at ``seed``) to ``out_dir/{train,test}.jsonl`` as ``{"question", "answer": "#### N"}``
    rows; returns the count per split. The splits are the generator's (by question hash): disjoint."""
    from trl_lab.data.gsm8k import _generated_rows

    task, config = _task_options()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, n in (sizes or EXPORT_SIZES).items():
        rows = [row for _, row in _generated_rows(task, split, n, seed, config)]
        (out / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": r["question"], "answer": f"#### {r['answer']}"}) + "\n" for r in rows))
        counts[split] = len(rows)
    (out / "export.json").write_text(json.dumps({"task": task, "task_config": config, "seed": seed,
                                                 "counts": counts}, indent=2) + "\n")
    return counts


def local_task_flags(task_dir: str | Path) -> list[str]:
    """The flags that replace :data:`TASK_FLAGS` to read an :func:`export_task` folder instead of the generator."""
    return ["--dataset_source", "local", "--dataset_path", str(task_dir), "--dataset_task", "none",
            "--dataset_task_config", "null"]


def main(argv: list[str] | None = None) -> dict[str, int]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--export", required=True, metavar="DIR", help="write DIR/train.jsonl and DIR/test.jsonl")
    parser.add_argument("--train", type=int, default=EXPORT_SIZES["train"], help="train questions")
    parser.add_argument("--test", type=int, default=EXPORT_SIZES["test"], help="test questions")
    args = parser.parse_args(argv)
    counts = export_task(args.export, {"train": args.train, "test": args.test})
    print(f"study_task: wrote {counts} questions to {args.export}")
    return counts


if __name__ == "__main__":
    main()
