"""The seed experiments as functions: a run's before/after summary, and the KL-coefficient sweep.

:func:`run_summary` reads what a run wrote (``report.json`` from :func:`trl_lab.report.write_report`,
``goodhart.json``, the held-out completion tables) and returns the numbers a reward-hacking write-up quotes:
reward, held-out accuracy and the proxy on held-out completions at the first and last evaluation, KL, length,
the Goodhart verdict, and the first held-out completion before and after. :func:`format_summary` prints it.

:func:`run_kl_sweep` runs the same GSM8K job once per KL coefficient (``beta``), everything else identical,
into ``<sweep_dir>/beta_<b>``, then overlays the runs (reward, held-out accuracy, KL, held-out proxies) in
``<sweep_dir>/kl_sweep.png`` and writes every run's summary to ``<sweep_dir>/kl_sweep.json``.
"""

from __future__ import annotations

import gc
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["format_summary", "run_kl_sweep", "run_summary"]

PathLike = str | os.PathLike


def _first_completion(table: Path) -> dict[str, Any] | None:
    with table.open(encoding="utf-8") as f:
        line = f.readline()
    return json.loads(line) if line.strip() else None


def run_summary(output_dir: PathLike) -> dict[str, Any]:
    """The run's report summary (written now if missing) plus its first/last held-out completion of item 0."""
    from trl_lab.report import write_report

    out = Path(output_dir)
    report = out / "report.json"
    summary = json.loads(report.read_text()) if report.is_file() else write_report(out).summary
    tables = sorted((out / "heldout").glob("step_*.jsonl"))
    if tables:
        summary["first_heldout_completion"] = _first_completion(tables[0])
        summary["last_heldout_completion"] = _first_completion(tables[-1])
    summary["output_dir"] = str(out)
    return summary


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines: what the proxy did, what accuracy did, and what the outputs look like."""
    lines = [f"run {summary.get('output_dir', '')}: {summary.get('steps')} steps"]
    lines.append(f"  reward (training)        max {_fmt(summary.get('max_reward'))} at step "
                 f"{summary.get('max_reward_step')}, final {_fmt(summary.get('final_reward'))}")
    lines.append(f"  held-out accuracy        {_fmt(summary.get('initial_accuracy'))} -> "
                 f"{_fmt(summary.get('final_accuracy'))} (± {_fmt(summary.get('final_accuracy_stderr'))}); best "
                 f"{_fmt(summary.get('best_accuracy'))} at step {summary.get('best_accuracy_step')}")
    for key in sorted(k[len("initial_"):] for k in summary if k.startswith("initial_heldout/")):
        lines.append(f"  {key:24s} {_fmt(summary.get('initial_' + key))} -> {_fmt(summary.get('final_' + key))}")
    lines.append(f"  KL                       final {_fmt(summary.get('final_kl'), '.4f')}, max "
                 f"{_fmt(summary.get('max_kl'), '.4f')} (training samples; none when beta = 0)")
    lines.append(f"  KL to ref (held-out)     final {_fmt(summary.get('final_heldout_kl_to_ref'), '.4f')}, max "
                 f"{_fmt(summary.get('max_heldout_kl_to_ref'), '.4f')}")
    lines.append(f"  held-out mean length     final {_fmt(summary.get('final_heldout_mean_length'), '.1f')} tokens")
    goodhart = summary.get("goodhart")
    if goodhart and goodhart.get("triggered"):
        lines.append(f"  Goodhart detector        triggered at step {goodhart.get('triggered_step')} "
                     f"({goodhart.get('trigger_reason')}), best step {goodhart.get('best_step')}, weights restored: "
                     f"{goodhart.get('restored')}")
    else:
        lines.append(f"  Goodhart detector        did not trigger"
                     + (f" (best step so far {goodhart.get('best_step')})" if goodhart else " (no goodhart.json)"))
    for when in ("first", "last"):
        item = summary.get(f"{when}_heldout_completion")
        if item:
            text = " ".join(str(item.get("completion", "")).split())
            lines.append(f"  {when} held-out answer (step {item.get('step')}, correct={item.get('correct')}): "
                         f"{text[:300]}")
    return "\n".join(lines)


def _beta_label(beta: float) -> str:
    return f"{beta:g}"


def run_kl_sweep(trainer_cls: type, config_cls: type, default_config: PathLike, betas: Sequence[float],
                 argv: Sequence[str] = (), sweep_dir: PathLike | None = None) -> dict[str, Any]:
    """Run the GSM8K job once per ``beta`` (flags ``argv`` shared), then overlay and summarise the runs.

    Each run goes to ``<sweep_dir>/beta_<b>``; ``sweep_dir`` defaults to the config's ``output_dir``. ``--beta`` or
    ``--output_dir`` in ``argv`` would defeat the sweep and are refused.
    """
    from trl_lab.gsm8k_job import parse_args, run_gsm8k_job
    from trl_lab.report import write_overlay_report

    if not betas:
        raise ValueError("kl_sweep: no betas given")
    if any(b < 0 for b in betas):
        raise ValueError(f"kl_sweep: betas must be >= 0, got {list(betas)}")
    for flag in ("--beta", "--output_dir"):
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            raise ValueError(f"kl_sweep: {flag} is set by the sweep; give the betas with --betas and the sweep's "
                             "folder with --sweep_dir")
    if sweep_dir is None:
        sweep_dir = parse_args(config_cls, default_config, list(argv))[1].output_dir
    base = Path(sweep_dir)
    runs, is_main = [], True
    for beta in betas:
        run_dir = base / f"beta_{_beta_label(beta)}"
        trainer = run_gsm8k_job(trainer_cls, config_cls, default_config,
                                [*argv, "--beta", str(beta), "--output_dir", str(run_dir)])
        is_main = trainer.accelerator.is_main_process
        runs.append(run_dir)
        trainer.accelerator.wait_for_everyone()
        del trainer
        gc.collect()
    result: dict[str, Any] = {"betas": list(betas), "runs": [str(r) for r in runs]}
    if is_main:
        labels = [f"beta={_beta_label(b)}" for b in betas]
        png = base / "kl_sweep.png"
        write_overlay_report(runs, labels, png)
        result["png"] = str(png)
        result["summaries"] = {label: run_summary(run) for label, run in zip(labels, runs)}
        (base / "kl_sweep.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result
