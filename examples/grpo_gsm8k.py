"""GRPO on GSM8K against pluggable rewards.

    accelerate launch examples/grpo_gsm8k.py                      # offline CPU demo (embedded SmolLM2 + LoRA)
    accelerate launch examples/grpo_gsm8k.py --config examples/configs/grpo_gsm8k_qwen_qlora.yaml   # one GPU

With no ``--config`` the CPU demo config ``examples/configs/grpo_gsm8k_cpu.yaml`` is used; any flag on
the command line overrides the config (``--max_steps 20``, ``--rewards gsm8k gsm8k_format=0.5``, …).
All of TRL's ``GRPOConfig`` and ``ModelConfig`` flags work, plus ``--rewards``, the dataset and held-out
flags of :class:`trl_lab.script_args.GSM8KScriptArguments`. The job itself is :mod:`trl_lab.gsm8k_job`.
"""

from __future__ import annotations

from pathlib import Path

from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.gsm8k_job import run_gsm8k_job

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "grpo_gsm8k_cpu.yaml"


def main(argv: list[str] | None = None) -> GRPOTrainer:
    return run_gsm8k_job(GRPOTrainer, GRPOConfig, DEFAULT_CONFIG, argv)


if __name__ == "__main__":
    main().end()  # finish trackers, destroy the process group
