"""The KL-leash sweep: the same run at several KL coefficients, overlaid in ``<sweep_dir>/kl_sweep.png``.

    python examples/kl_sweep.py                                   # beta 0.05, 0.005, 0.0 on the CPU config
    python examples/kl_sweep.py --betas 0.1 0.02 0 --sweep_dir outputs/sweep --max_steps 200

The default config is ``configs/reward_hacking_cpu.yaml`` (sentiment reward only). The job is
:mod:`trl_lab.scripts.kl_sweep`.
"""

from pathlib import Path

from trl_lab.scripts.kl_sweep import main

if __name__ == "__main__":
    main(default_config=Path(__file__).resolve().parent / "configs" / "reward_hacking_cpu.yaml")
