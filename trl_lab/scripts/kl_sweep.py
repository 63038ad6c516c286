"""The KL-leash sweep (the seeds' second "break it" run): the same GSM8K job at several KL coefficients.

    python -m trl_lab.scripts.kl_sweep --config examples/configs/reward_hacking_cpu.yaml --betas 0.05 0.005 0
    python examples/kl_sweep.py                      # the same, with that config as the default

Everything but ``beta`` is identical between the runs: the config and every other flag, which all runs share.
:func:`run_kl_sweep` runs the job once per beta into ``<sweep_dir>/beta_<b>`` (``sweep_dir`` defaults to the
config's ``output_dir``), then overlays reward, held-out accuracy, KL and the held-out proxies in
``<sweep_dir>/kl_sweep.png`` and writes every run's summary to ``<sweep_dir>/kl_sweep.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trl_lab.report import format_summary, run_summary, write_overlay_report
from trl_lab.scripts.grpo_gsm8k import parse_args, run_gsm8k_job

__all__ = ["DEFAULT_BETAS", "main", "run_kl_sweep"]

DEFAULT_BETAS = (0.05, 0.005, 0.0)


def _beta_label(beta: float) -> str:
    return f"{beta:g}"


def run_kl_sweep(trainer_cls: type, config_cls: type, default_config: str | os.PathLike | None, betas: Sequence[float],
                 argv: Sequence[str] = (), sweep_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run the GSM8K job once per ``beta`` (flags ``argv`` shared), then overlay and summarise the runs.

    Each run goes to ``<sweep_dir>/beta_<b>``; ``sweep_dir`` defaults to the config's ``output_dir``. ``--beta`` or
    ``--output_dir`` in ``argv`` would defeat the sweep and are refused.
    """
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


def main(argv: list[str] | None = None, *, default_config: str | os.PathLike | None = None) -> dict[str, Any]:
    """``--betas`` and ``--sweep_dir``, then every flag of the GRPO GSM8K job (shared by all runs)."""
    from trl_lab.grpo import GRPOConfig, GRPOTrainer

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False, allow_abbrev=False)
    parser.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    parser.add_argument("--sweep_dir", default=None)
    sweep, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    result = run_kl_sweep(GRPOTrainer, GRPOConfig, default_config, sweep.betas, rest, sweep_dir=sweep.sweep_dir)
    for label, summary in result.get("summaries", {}).items():
        print(f"== {label}\n{format_summary(summary)}")
    if "png" in result:
        print(f"overlay: {result['png']}\nsummaries: {json.dumps(result['runs'])}")
    return result


if __name__ == "__main__":
    main()
