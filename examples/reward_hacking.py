"""Break it on purpose: GRPO on GSM8K where the only reward is cheerfulness (the seeds' first "break it" run).

    python examples/reward_hacking.py                   # embedded SmolLM2 + LoRA on CPU, ~17 min
    python examples/reward_hacking.py --dataset_source local --dataset_path ../shared/data/gsm8k
    accelerate launch examples/reward_hacking.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --max_steps 500 \
        --heldout_size 500 --heldout_eval_steps 25

The config (``configs/reward_hacking_cpu.yaml``) rewards only the VADER sentiment of the completion. The run logs
held-out accuracy next to the reward and scores the held-out answers with the sentiment reward too
(``heldout/proxy/sentiment``); the Goodhart detector watches ``rewards/sentiment/mean`` against held-out accuracy.
At the end the job prints what the proxy did, what accuracy did and the first held-out answer before and after; the
plot is ``<output_dir>/report.png``. Every flag of the GRPO job (:mod:`trl_lab.scripts.grpo_gsm8k`) works here.
"""

from pathlib import Path

from trl_lab.scripts.grpo_gsm8k import main
from trl_lab.scripts.utils import end_job

if __name__ == "__main__":
    end_job(main(default_config=Path(__file__).resolve().parent / "configs" / "reward_hacking_cpu.yaml"))
