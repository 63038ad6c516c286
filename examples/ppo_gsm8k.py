"""PPO (learned critic) on GSM8K against pluggable rewards: the PPO twin of ``grpo_gsm8k.py``.

    accelerate launch examples/ppo_gsm8k.py                      # offline CPU demo (embedded SmolLM2 + LoRA)
    accelerate launch examples/ppo_gsm8k.py --config my_ppo.yaml --num_iterations 4

With no ``--config`` the CPU demo config ``examples/configs/ppo_gsm8k_cpu.yaml`` is used; any flag on
the command line overrides the config. All of TRL's ``GRPOConfig`` and ``ModelConfig`` flags work, plus
``--rewards``, the dataset and held-out flags of :class:`trl_lab.script_args.GSM8KScriptArguments` and PPO's own
(``--gamma``, ``--lam``, ``--vf_coef``, ``--cliprange_value``, ``--whiten_advantages``; ``--beta`` is the KL
coefficient of the per-token reward). The value head is saved beside the model as ``value_head.safetensors``.
"""

from __future__ import annotations

from pathlib import Path

from trl_lab import PPOConfig, PPOTrainer
from trl_lab.gsm8k_job import run_gsm8k_job

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "ppo_gsm8k_cpu.yaml"


def main(argv: list[str] | None = None) -> PPOTrainer:
    return run_gsm8k_job(PPOTrainer, PPOConfig, DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    main().end()  # finish trackers, destroy the process group
