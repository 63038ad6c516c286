"""Train a GSM8K correctness reward model (Bradley-Terry, scalar head), then audit it.

    python examples/train_reward_model.py                      # embedded SmolLM2-135M + LoRA, local GSM8K, CPU
    python examples/train_reward_model.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_source hub \
        --load_in_4bit --max_steps 1000                        # any hub model; 4-bit on a GPU

With no ``--config`` the CPU config ``configs/reward_model_gsm8k_cpu.yaml`` is used. The job is
:mod:`trl_lab.scripts.train_reward_model`; the exit status is 1 when the audit fails.
"""

import sys
from pathlib import Path

from trl_lab.scripts.train_reward_model import main

if __name__ == "__main__":
    summary = main(default_config=Path(__file__).resolve().parent / "configs" / "reward_model_gsm8k_cpu.yaml")
    sys.exit(0 if summary.get("audit_passed", True) else 1)
