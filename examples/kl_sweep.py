"""The KL-leash sweep (the seeds' second "break it" run): the same run at several KL coefficients.

    python examples/kl_sweep.py                                   # beta 0.05, 0.005, 0.0 on the CPU config
    python examples/kl_sweep.py --betas 0.1 0.02 0 --sweep_dir outputs/sweep --max_steps 200

Everything but ``beta`` is identical between the runs: the config (default: the reward-hacking config,
``examples/configs/reward_hacking_cpu.yaml``, sentiment reward only) and any other flag, which all runs share.
Runs go to ``<sweep_dir>/beta_<b>`` (``sweep_dir`` defaults to the config's ``output_dir``); the overlay of
reward, held-out accuracy and KL is ``<sweep_dir>/kl_sweep.png`` and every run's summary is in
``<sweep_dir>/kl_sweep.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.experiments import format_summary, run_kl_sweep

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "reward_hacking_cpu.yaml"
DEFAULT_BETAS = (0.05, 0.005, 0.0)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     add_help=False, allow_abbrev=False)
    parser.add_argument("--betas", type=float, nargs="+", default=list(DEFAULT_BETAS))
    parser.add_argument("--sweep_dir", default=None)
    sweep, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    result = run_kl_sweep(GRPOTrainer, GRPOConfig, DEFAULT_CONFIG, sweep.betas, rest, sweep_dir=sweep.sweep_dir)
    for label, summary in result.get("summaries", {}).items():
        print(f"== {label}\n{format_summary(summary)}")
    if "png" in result:
        print(f"overlay: {result['png']}\nsummaries: {json.dumps(result['runs'])}")
    return result


if __name__ == "__main__":
    main()
