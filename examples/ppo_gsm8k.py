"""PPO (learned critic) on GSM8K against pluggable rewards: the PPO twin of ``grpo_gsm8k.py``.

    accelerate launch examples/ppo_gsm8k.py                      # offline CPU demo (embedded SmolLM2 + LoRA)
    accelerate launch examples/ppo_gsm8k.py --config my_ppo.yaml --num_iterations 4

With no ``--config`` the CPU demo config ``configs/ppo_gsm8k_cpu.yaml`` is used. The job is
:mod:`trl_lab.scripts.ppo_gsm8k`.
"""

from pathlib import Path

from trl_lab.scripts.ppo_gsm8k import main
from trl_lab.scripts.utils import end_job

if __name__ == "__main__":
    end_job(main(default_config=Path(__file__).resolve().parent / "configs" / "ppo_gsm8k_cpu.yaml"))
