"""The GSM8K RL job with trl_lab's PPO (a learned critic on the policy's hidden states, GAE): the PPO twin of
:mod:`trl_lab.scripts.grpo_gsm8k`, with the same rewards, data, LoRA/4-bit options and watchdogs.

    accelerate launch examples/ppo_gsm8k.py                  # the CPU demo config
    python -m trl_lab.scripts.ppo_gsm8k --config my_ppo.yaml --num_iterations 4

PPO's own flags: ``--gamma``, ``--lam``, ``--vf_coef``, ``--cliprange_value``, ``--whiten_advantages``; ``--beta`` is
the KL coefficient of the per-token reward. The value head is saved beside the model as ``value_head.safetensors``.
"""

from __future__ import annotations

import os

from trl_lab.ppo import PPOConfig, PPOTrainer
from trl_lab.scripts.grpo_gsm8k import run_gsm8k_job
from trl_lab.scripts.utils import end_job

__all__ = ["main"]


def main(argv: list[str] | None = None, *, default_config: str | os.PathLike | None = None) -> PPOTrainer:
    return run_gsm8k_job(PPOTrainer, PPOConfig, default_config, argv)


if __name__ == "__main__":
    end_job(main())  # every rank together: trackers finished, process group destroyed
