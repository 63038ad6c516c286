"""Speed and correctness of trl_lab's GSM8K checker next to ``math_verify`` on the same inputs.

Inputs (a seeded shuffle, cut or cycled to ``--n`` completions):

* the hand-labelled set ``tests/data/gsm8k_labelled.jsonl`` (real SmolLM2-135M outputs, edited
  variants and adversarial cases), repeated;
* GSM8K-style synthetic outputs built from ``../shared/data/gsm8k/test.jsonl``: the reference
  solution itself (correct), the solution with its final number perturbed (incorrect), and the
  solution with calculator annotations removed and its last line rewritten "The answer is N."
  (correct).

The two are timed alternately over 20 chunks of the inputs. Both checkers get the completion and the bare reference number (the dataset's ``answer`` column)
and parse the reference on every call: ``check_answer(completion, reference)`` versus
``verify(parse(reference), parse(completion))``. Goal: >= 50x faster at equal or better accuracy.

    python bench/checker.py [--n 6000] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

LABELLED = REPO / "tests" / "data" / "gsm8k_labelled.jsonl"
GSM8K_TEST = REPO.parent / "shared" / "data" / "gsm8k" / "test.jsonl"

Case = tuple[str, str, bool, str]  # completion, reference, label, kind


def labelled_cases() -> list[Case]:
    """The hand-labelled rows as cases."""
    with open(LABELLED, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    return [(r["completion"], r["reference"], r["label"], "labelled") for r in rows]


def synthetic_cases(rng: random.Random) -> list[Case]:
    """Three GSM8K-style outputs per test problem (see module docstring)."""
    if not GSM8K_TEST.exists():
        print(f"note: {GSM8K_TEST} not found; synthetic GSM8K outputs skipped")
        return []
    cases: list[Case] = []
    with open(GSM8K_TEST, encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            solution = row["answer"]
            body, _, final = solution.rpartition("####")
            ref = final.strip().replace(",", "")
            cases.append((solution, ref, True, "synthetic"))
            value = int(ref)
            wrong = value + rng.choice([-10, -2, -1, 1, 2, 10, value if value else 7])
            cases.append((f"{body}#### {wrong}", ref, False, "synthetic"))
            plain = re.sub(r"<<[^>]*>>", "", body).rstrip()
            cases.append((f"{plain}\nThe answer is {final.strip()}.", ref, True, "synthetic"))
    return cases


def ours(completion: str, reference: str) -> bool:
    """trl_lab's checker."""
    from trl_lab.rewards.gsm8k import check_answer

    return check_answer(completion, reference)


def math_verify_check(completion: str, reference: str) -> bool:
    """math_verify's parse + verify; its errors count as not correct."""
    from math_verify import parse, verify

    try:
        return bool(verify(parse(reference), parse(completion)))
    except Exception:  # math_verify's own errors/timeouts count as "not correct"
        return False


def run(fn, cases: list[Case]) -> tuple[float, list[bool]]:
    """Wall time and verdicts of ``fn`` over ``cases``."""
    out: list[bool] = []
    start = time.perf_counter()
    for completion, reference, _, _ in cases:
        out.append(fn(completion, reference))
    return time.perf_counter() - start, out


def accuracy(preds: list[bool], cases: list[Case], kind: str | None = None) -> tuple[int, int]:
    """(agreeing, total) of ``preds`` with the labels, optionally for one kind of case."""
    pairs = [(p, c[2]) for p, c in zip(preds, cases) if kind is None or c[3] == kind]
    return sum(p == label for p, label in pairs), len(pairs)


def main() -> None:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description="GSM8K checker vs math_verify: speed and accuracy")
    ap.add_argument("--n", type=int, default=6000, help="completions to check (default 6000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    logging.disable(logging.WARNING)  # math_verify logs parse failures/timeouts
    warnings.filterwarnings("ignore")
    from trl_lab.rewards.gsm8k import check_answer  # noqa: F401  (import cost outside the timing)
    from math_verify import parse, verify  # noqa: F401

    rng = random.Random(args.seed)
    labelled = labelled_cases()
    synthetic = synthetic_cases(rng)
    pool = labelled * 10 + synthetic
    rng.shuffle(pool)
    cases = [pool[i % len(pool)] for i in range(args.n)]

    # Warm up both (regex compilation, sympy imports) on a few inputs outside the timing.
    run(ours, cases[:20])
    run(math_verify_check, cases[:20])

    # Alternate the two checkers over chunks (A B A B ...) so drift in machine load hits both alike.
    t_ours = t_mv = 0.0
    p_ours, p_mv = [], []
    chunk = max(1, len(cases) // 20)
    for i in range(0, len(cases), chunk):
        part = cases[i : i + chunk]
        t, p = run(ours, part)
        t_ours, p_ours = t_ours + t, p_ours + p
        t, p = run(math_verify_check, part)
        t_mv, p_mv = t_mv + t, p_mv + p
    # Accuracy on the unique labelled rows (each counted once).
    _, u_ours = run(ours, labelled)
    _, u_mv = run(math_verify_check, labelled)

    kinds = {k: sum(c[3] == k for c in cases) for k in ("labelled", "synthetic")}
    print(f"inputs: {len(cases)} completions ({kinds['labelled']} from the labelled set of {len(labelled)} rows, "
          f"{kinds['synthetic']} synthetic GSM8K outputs); seed {args.seed}")
    print(f"{'checker':<24}{'completions/s':>15}{'us/completion':>15}{'acc labelled':>16}"
          f"{'acc synthetic':>16}{'acc all':>12}")
    for name, t, preds, uniq in (("trl_lab check_answer", t_ours, p_ours, u_ours),
                                 ("math_verify", t_mv, p_mv, u_mv)):
        ok_l, n_l = accuracy(uniq, labelled)
        ok_s, n_s = accuracy(preds, cases, "synthetic")
        ok_a, n_a = accuracy(preds, cases)
        print(f"{name:<24}{len(cases) / t:>15,.0f}{1e6 * t / len(cases):>15.1f}"
              f"{f'{ok_l}/{n_l}':>16}{f'{ok_s}/{n_s}':>16}{100 * ok_a / n_a:>11.2f}%")
    print(f"speed ratio (trl_lab / math_verify): {t_mv / t_ours:,.0f}x")
    disagree = [c for c, p in zip(labelled, u_mv) if p != c[2]]
    if disagree:
        print(f"math_verify disagrees with {len(disagree)} labelled rows, e.g.:")
        for completion, reference, label, _ in disagree[:5]:
            snippet = completion if len(completion) < 70 else completion[:30] + " ... " + completion[-35:]
            print(f"  label={label!s:5} ref={reference:>6}  {snippet!r}")


if __name__ == "__main__":
    main()
