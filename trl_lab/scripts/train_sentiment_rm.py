"""Train the "rewards cheer" sentiment reward model with trl_lab's ``RewardTrainer`` (TRL's, plus its checks).

    python examples/train_sentiment_rm.py                                  # tiny random base, about 10 s on CPU
    python examples/train_sentiment_rm.py --model_name_or_path smollm2-135m-instruct --max_steps 200
    python -m trl_lab.scripts.train_sentiment_rm                           # the same job

The pairs come from :mod:`trl_lab.data.sentiment_pairs` (an upbeat vs a flat/negative phrasing of the same
content). The trained scalar-head model is saved to ``--output_dir`` (default ``outputs/sentiment_rm``), then
reloaded as a scalar reward model and scored on held-out pairs (content sentences never seen in training); the
pair accuracy is printed and written to ``rm_summary.json`` beside the model, with the *padding margin*
(:func:`padding_margin`: what a flat sentence said three times scores over the same sentence once -- length alone,
no change of tone), the steps and the training seconds. Use it in a config as::

    rewards:
      - {name: sentiment, kwargs: {backend: learned, path: outputs/sentiment_rm}}

``--model_name_or_path tiny`` (the default) builds a tiny random Llama (hidden size 32) as the base, so the
script runs offline in seconds; any embedded name, hub id or directory works too. All of TRL's
``RewardConfig`` and ``ModelConfig`` flags are accepted (``--use_peft --lora_task_type SEQ_CLS`` trains a LoRA
adapter plus the head, which ``learned_rm`` loads from the adapter directory; ``--lora_last_n_layers N`` puts the
adapter on the last N layers only, as ``train_reward_model`` does). The study's arm 6 trains its RM with this job
(:data:`trl_lab.scripts.study_rm.SENTIMENT_RM_FLAGS`).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser, get_peft_config

from trl_lab.data.sentiment_pairs import sentiment_pairs, sentiment_pairs_dataset, split_contents
from trl_lab.reward_models.loading import LoadOptions
from trl_lab.reward_models.scorer import ScalarRewardModel
from trl_lab.reward_models.training import RewardConfig, RewardTrainer, lora_on_last_layers_of
from trl_lab.scripts.utils import apply_model_config

#: What the job writes beside the model: accuracy, padding margin, steps, seconds.
SUMMARY_FILE = "rm_summary.json"

DEFAULTS = {
    "output_dir": "outputs/sentiment_rm",
    "max_steps": 60,
    "per_device_train_batch_size": 16,
    "learning_rate": 3e-3,
    "lr_scheduler_type": "constant",
    "logging_steps": 20,
    "save_strategy": "no",
    "report_to": "none",
    "bf16": False,
    "use_cpu": True,
    "seed": 0,
    "max_length": 128,
    "disable_tqdm": True,
    "activation_checkpointing": False,
}


@dataclass
class SentimentRMArguments:
    """How many generated pairs to train and evaluate on."""

    train_pairs: int = field(default=512, metadata={"help": "Generated training pairs."})
    eval_pairs: int = field(default=128, metadata={"help": "Held-out pairs (unseen content) for the final accuracy."})
    lora_last_n_layers: int | None = field(
        default=None,
        metadata={"help": "With --use_peft: LoRA on the last N decoder layers only (the backward pass stops there). "
                          "None: every layer."},
    )


def parse_args(argv: list[str] | None = None) -> tuple[SentimentRMArguments, RewardConfig, ModelConfig]:
    argv = list(sys.argv[1:] if argv is None else argv)
    given = {a.split("=")[0][2:] for a in argv if a.startswith("--")}
    defaults = [x for k, v in DEFAULTS.items() if k not in given for x in (f"--{k}", str(v))]
    if "model_name_or_path" not in given:
        defaults += ["--model_name_or_path", "tiny"]
    parser = TrlParser((SentimentRMArguments, RewardConfig, ModelConfig))
    return parser.parse_args_and_config([*defaults, *argv])


def resolve_base(name: str, output_dir: str) -> str:
    """``tiny``: build a tiny random chat model under ``<output_dir>/tiny_base``; otherwise an embedded name/path."""
    if name == "tiny":
        from trl_lab.testing import save_tiny_chat_model

        return str(save_tiny_chat_model(Path(output_dir) / "tiny_base"))
    from trl_lab.embedded_model import resolve_model_path

    return resolve_model_path(name)


def pair_accuracy(reward: Any, pairs: list[dict[str, str]]) -> float:
    """Fraction of pairs whose ``chosen`` text the reward scores above the ``rejected`` one."""
    chosen = reward(prompts=None, completions=[p["chosen"] for p in pairs])
    rejected = reward(prompts=None, completions=[p["rejected"] for p in pairs])
    return sum(c > r for c, r in zip(chosen, rejected)) / len(pairs)


def padding_margin(reward: Any, split: str = "test", repeats: int = 3) -> float:
    """Mean score gain of a flat sentence said ``repeats`` times over the same sentence said once, over the split's
    content sentences: how much the RM pays for length alone, with no change of tone (the upbeat templates are a
    little longer than the flat ones, so a sentiment RM can learn some length too)."""
    contents = [c[0].upper() + c[1:] + "." for c in split_contents(split)]
    once = reward(prompts=None, completions=contents)
    padded = reward(prompts=None, completions=[" ".join([c] * repeats) for c in contents])
    return sum(p - o for p, o in zip(padded, once)) / len(contents)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    script_args, args, model_args = parse_args(argv)
    apply_model_config(model_args, args)
    base = resolve_base(model_args.model_name_or_path, args.output_dir)
    peft_config = get_peft_config(model_args)
    if script_args.lora_last_n_layers is not None:
        peft_config = lora_on_last_layers_of(peft_config, base, script_args.lora_last_n_layers,
                                             trust_remote_code=args.trust_remote_code)
    trainer = RewardTrainer(
        model=base,
        args=args,
        train_dataset=sentiment_pairs_dataset(script_args.train_pairs, split="train", seed=args.seed),
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    trainer.save_model(args.output_dir)  # with the tokenizer, right-padded, as learned_rm loads it

    reward = ScalarRewardModel.load(args.output_dir, options=LoadOptions(device="cpu" if args.use_cpu else None),
                                    with_prompt=False)
    accuracy = pair_accuracy(reward, sentiment_pairs(script_args.eval_pairs, split="test", seed=args.seed))
    padding = padding_margin(reward)
    print(f"Saved the sentiment reward model to {args.output_dir}; held-out pair accuracy {accuracy:.3f} "
          f"on {script_args.eval_pairs} pairs after {trainer.state.global_step} steps; a flat sentence said 3 times "
          f"scores {padding:+.3f} over once")
    result = {"output_dir": args.output_dir, "model": model_args.model_name_or_path, "accuracy": accuracy,
              "eval_pairs": script_args.eval_pairs, "padding_margin": padding, "steps": trainer.state.global_step,
              "train_seconds": round(train_seconds, 1)}
    if trainer.accelerator.is_main_process:
        (Path(args.output_dir) / SUMMARY_FILE).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
