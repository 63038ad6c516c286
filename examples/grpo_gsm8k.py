"""GRPO on GSM8K against pluggable rewards: the main job.

    accelerate launch examples/grpo_gsm8k.py                      # offline CPU demo (embedded SmolLM2 + LoRA)
    accelerate launch examples/grpo_gsm8k.py --config examples/configs/grpo_gsm8k_qwen_qlora.yaml   # one GPU

With no ``--config`` the CPU demo config ``configs/grpo_gsm8k_cpu.yaml`` is used; any flag on the command line
overrides the config (``--max_steps 20``, ``--rewards gsm8k gsm8k_format=0.5``, …). The job is
:mod:`trl_lab.scripts.grpo_gsm8k`.
"""

from pathlib import Path

from trl_lab.scripts.grpo_gsm8k import main
from trl_lab.scripts.utils import end_job

if __name__ == "__main__":
    end_job(main(default_config=Path(__file__).resolve().parent / "configs" / "grpo_gsm8k_cpu.yaml"))
