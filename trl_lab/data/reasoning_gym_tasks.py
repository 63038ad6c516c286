"""Any numeric reasoning-gym task as GSM8K-format files, so the GSM8K job (checker, held-out set) runs on it.

The GSM8K job reads ``{train,test}.jsonl`` of ``{"question", "answer"}`` rows (``--dataset_source local``).
:func:`write_task_jsonl` writes such files from a reasoning-gym generator (``chain_sum``, ``basic_arithmetic``,
``leg_counting``, ...): answers become ``#### N``, so the ``gsm8k`` checker scores them unchanged. Use it when
the model needs a task it can already partly solve -- e.g. a 135M model scores ~3% on GSM8K, too little for
held-out accuracy to rise or fall measurably, but ~40% on one-digit two-term ``chain_sum`` (~28% with two digits).

Splits: reasoning-gym draws item ``i`` from ``Random(seed + i)``, so seeds ``s`` and ``s + 1`` give the same items
shifted by one. ``train`` uses seeds ``seed ..`` and ``test`` seeds ``seed + TEST_SEED_OFFSET ..`` (disjoint streams),
and test questions that also occur in train (same numbers drawn) or earlier in test are dropped and counted, so
the held-out set is never trained on and counts each question once.

    trl-lab make-task chain_sum outputs/tasks/chain_sum_1digit --train_size 100 --test_size 400 \\
        --config '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}'
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["TEST_SEED_OFFSET", "task_rows", "write_task_jsonl"]

#: Seed offset of the test split: item seeds of train (``seed + i``) and test never meet below this many items.
TEST_SEED_OFFSET = 1_000_000


def task_rows(name: str, size: int, *, seed: int, **config: Any) -> list[dict[str, str]]:
    """``size`` rows ``{"question", "answer": "#### N"}`` from reasoning-gym's ``name`` generator (its ``config``).

    Raises ``ValueError`` naming the task and item when an answer is not a single number (the GSM8K checker
    could not score it), and for an unknown task.
    """
    import reasoning_gym
    from reasoning_gym.factory import DATASETS

    from trl_lab.data.gsm8k import parse_gsm8k_reference

    if name not in DATASETS:
        raise ValueError(f"unknown reasoning-gym task {name!r}; e.g. chain_sum, basic_arithmetic, leg_counting")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    dataset = reasoning_gym.create_dataset(name, size=size, seed=seed, **config)
    rows = []
    for i, item in enumerate(dataset):
        try:
            answer = parse_gsm8k_reference(str(item["answer"]))
        except ValueError as err:
            raise ValueError(
                f"reasoning-gym task {name!r}, item {i} (seed {seed}): answer {item['answer']!r} is not a number "
                f"({err}); only numeric tasks can be scored by the gsm8k checker"
            ) from err
        rows.append({"question": str(item["question"]).strip(), "answer": f"#### {answer}"})
    return rows


def write_task_jsonl(
    name: str,
    out_dir: str | os.PathLike,
    *,
    train_size: int,
    test_size: int,
    seed: int = 0,
    **config: Any,
) -> dict[str, Any]:
    """Write ``out_dir/{train,test}.jsonl`` (GSM8K format) and ``out_dir/task.json`` (how they were made).

    Returns the ``task.json`` content: task, config, seeds, and rows per split (test after dropping overlaps).
    """
    if max(train_size, test_size) > TEST_SEED_OFFSET:
        raise ValueError(f"at most {TEST_SEED_OFFSET} rows per split (the splits' seed streams would overlap)")
    train = task_rows(name, train_size, seed=seed, **config)
    test_all = task_rows(name, test_size, seed=seed + TEST_SEED_OFFSET, **config)
    seen = {row["question"] for row in train}
    test = []
    for row in test_all:  # each held-out question once (a repeat would count twice in accuracy), none from train
        if row["question"] not in seen:
            seen.add(row["question"])
            test.append(row)
    if not test:
        raise ValueError(f"reasoning-gym task {name!r}: every test question also occurs in train (config {config})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", train), ("test", test)):
        with (out / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    info = {"task": name, "config": config, "train_seed": seed, "test_seed": seed + TEST_SEED_OFFSET, "train": len(train),
            "test": len(test), "test_dropped_as_repeats": len(test_all) - len(test)}
    (out / "task.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
