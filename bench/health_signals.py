"""Replay recorded runs' held-out metrics through HealthMonitorCallback: which signals fire, and when.

    python bench/health_signals.py [RUN_DIR ...]    (default: every docs/results run with a metrics.jsonl)

Each run's ``metrics.jsonl`` evaluation entries (those with ``heldout/accuracy``) go through
:func:`trl_lab.callbacks.health.replay_run` with the default limits; the signals a run did not log (runs recorded
before ``heldout/repetition`` / ``heldout/entropy`` existed) cannot fire -- except ``heldout/distinct_answers``, which
is recomputed from the run's ``heldout/step_*.jsonl`` answers when every item's answer was kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from trl_lab.callbacks.health import replay_run

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", type=Path)
    args = parser.parse_args(argv)
    runs = args.runs or sorted(p.parent for p in (REPO / "docs" / "results").rglob("metrics.jsonl"))
    for run in runs:
        steps, logged, warnings = replay_run(run)
        fired = ", ".join(f"{w['signal']}@{w['step']} ({w['value']:.3g})" for w in warnings) or "none"
        name = run.relative_to(REPO) if run.is_relative_to(REPO) else run
        print(f"{name}: evaluations at {steps}; signals logged: {sorted(logged)}; fired: {fired}")


if __name__ == "__main__":
    main()
