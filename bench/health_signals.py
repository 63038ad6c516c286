"""Replay recorded runs' held-out metrics through HealthMonitorCallback: which signals fire, and when.

    python bench/health_signals.py [RUN_DIR ...]    (default: every docs/results run with a metrics.jsonl)

Each run's ``metrics.jsonl`` evaluation entries (those with ``heldout/accuracy``) go through
:meth:`HealthMonitorCallback.check` with the default limits; the signals a run did not log (runs recorded before
``heldout/repetition`` / ``heldout/entropy`` existed) cannot fire -- except ``heldout/distinct_answers``, which is
recomputed from the run's ``heldout/step_*.jsonl`` answers when every item's answer was kept (from the decoded
text: the callback counts token ids, the same up to answers that decode alike).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from trl_lab.callbacks.answer_signals import distinct_answer_share
from trl_lab.callbacks.health import SIGNALS, HealthMonitorCallback

REPO = Path(__file__).resolve().parents[1]


def distinct_answers_from_tables(run_dir: Path, step: int, n: float | None) -> float | None:
    """``heldout/distinct_answers`` at ``step`` from the answers the run kept, or None unless all ``n`` were kept."""
    table = run_dir / "heldout" / f"step_{step:06d}.jsonl"
    if not table.is_file():
        return None
    answers = [json.loads(line)["completion"] for line in table.read_text().splitlines() if line.strip()]
    if not answers or n is None or len(answers) != int(n):
        return None
    return distinct_answer_share([[a] for a in answers])


def replay(run_dir: Path) -> tuple[list[int], set[str], list[dict]]:
    cb = HealthMonitorCallback()
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if "heldout/accuracy" in e]
    for e in evals:
        if "heldout/distinct_answers" not in e:
            share = distinct_answers_from_tables(run_dir, int(e["step"]), e.get("heldout/n"))
            if share is not None:
                e["heldout/distinct_answers"] = share
    for e in evals:
        cb.check(int(e["step"]), e)
    logged = {signal for signal, key in SIGNALS.items() if any(key in e for e in evals)}
    return [int(e["step"]) for e in evals], logged, cb.warnings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    args = parser.parse_args(argv)
    logging.getLogger("trl_lab.callbacks.health").setLevel(logging.ERROR)
    runs = args.runs or sorted(p.parent for p in (REPO / "docs" / "results").rglob("metrics.jsonl"))
    for run in runs:
        steps, logged, warnings = replay(run)
        fired = ", ".join(f"{w['signal']}@{w['step']} ({w['value']:.3g})" for w in warnings) or "none"
        name = run.relative_to(REPO) if run.is_relative_to(REPO) else run
        print(f"{name}: evaluations at {steps}; signals logged: {sorted(logged)}; fired: {fired}")


if __name__ == "__main__":
    main()
