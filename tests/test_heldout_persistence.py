"""bench/heldout_persistence.py: the kept shares it reads from real run folders (fit and printing are the bench's)."""

import json
from pathlib import Path

import pytest

from tests.helpers import load_bench


def _bench():
    return load_bench("heldout_persistence")


def _run(root: Path, seed: int, evals: dict[int, list[bool]]) -> Path:
    run = root / "arm2_random" / f"seed{seed}"
    (run / "heldout").mkdir(parents=True)
    for step, correct in evals.items():
        rows = [{"step": step, "index": i, "correct": c} for i, c in enumerate(correct)]
        rows.reverse()  # the bench orders items by index, not by line
        (run / "heldout" / f"step_{step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_within_run_and_cross_seed_kept_shares(tmp_path):
    bench = _bench()
    a = _run(tmp_path, 1, {0: [True, True, False, False], 6: [True, False, True, False], 12: [True] * 4})
    b = _run(tmp_path, 2, {0: [True, True, False, False], 6: [True, True, False, False]})
    within, cross = bench.observations([a, b], max_acc_diff=0.05)
    # run a: steps 0 -> 6 keep 2 of 4 at accuracy 0.5; step 12 (accuracy 1.0) is too far in accuracy to pair
    # run b: steps 0 -> 6 keep all four
    assert sorted(within) == [(6, 0.5, 0.5), (6, 0.5, 1.0)]
    # across seeds at step 6 (step 0 is the same base model in every seed, left out): 2 of 4 agree
    assert cross == [(0.5, 0.5)]
    assert bench.load_run(a)[6].tolist() == [True, False, True, False]


def test_the_fit_prefers_memory_when_outcomes_never_change(tmp_path):
    bench = _bench()
    # outcomes identical at every evaluation of a run; two seeds that disagree on 40% of the items
    pattern = [i % 5 == 0 for i in range(200)]
    other = [i % 5 == 1 for i in range(200)]
    runs = [_run(tmp_path, 1, dict.fromkeys((0, 6, 12, 18), pattern)), _run(tmp_path, 2, {6: other, 12: other})]
    within, cross = bench.observations(runs, max_acc_diff=0.05)
    assert all(k == 1.0 for _, _, k in within)
    best = bench.fit(within, cross)[0][1]
    assert best["item_memory"] >= 0.5 or best["persistence_per_step"] >= 0.99
    assert best["sim"][0.2][6] > best["fresh"][0.2] + 0.05
