"""The GSM8K RL job shared by ``examples/grpo_gsm8k.py`` and ``examples/ppo_gsm8k.py``.

Arguments come through TRL's ``TrlParser`` (``--config`` YAML, command line overrides it): the trainer's
config class (``GRPOConfig`` or ``PPOConfig``), TRL's ``ModelConfig`` and
:class:`~trl_lab.script_args.GSM8KScriptArguments`. LoRA and 4-bit go through TRL's ``get_peft_config`` and
``get_quantization_config``; 4-bit support is probed before anything loads.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from trl_lab.callbacks import GoodhartCallback, HeldOutAccuracyCallback
from trl_lab.data import heldout_gsm8k, load_gsm8k
from trl_lab.grpo import GRPOConfig, GRPOTrainer
from trl_lab.quantization import check_bitsandbytes, default_device, wants_quantization
from trl_lab.registry import Reward
from trl_lab.script_args import GSM8KScriptArguments


def parse_args(
    config_cls: type[GRPOConfig], default_config: str | Path, argv: list[str] | None = None
) -> tuple[GSM8KScriptArguments, GRPOConfig, ModelConfig]:
    """Parse ``argv`` (default ``sys.argv[1:]``); without ``--config``, ``default_config`` is the YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    parser = TrlParser((GSM8KScriptArguments, config_cls, ModelConfig))
    return parser.parse_args_and_config(argv)


def system_prompt_kwargs(script_args: GSM8KScriptArguments) -> dict:
    """``--system_prompt`` unset keeps the data module's default (final answer on a '#### N' line)."""
    return {} if script_args.system_prompt is None else {"system_prompt": script_args.system_prompt}


def add_watchdogs(trainer: GRPOTrainer, script_args: GSM8KScriptArguments) -> None:
    """Held-out accuracy next to reward and, on top of it, the Goodhart detector (when a held-out set is asked for)."""
    if script_args.heldout_size <= 0:
        return
    heldout_set = heldout_gsm8k(
        script_args.heldout_size,
        source=script_args.dataset_source,
        path=script_args.dataset_path,
        hub_id=script_args.dataset_hub_id,
        seed=trainer.args.seed,
        **system_prompt_kwargs(script_args),
    )
    proxies = [f for f in trainer.reward_funcs if isinstance(f, Reward)] if script_args.heldout_proxy_rewards else []
    heldout = HeldOutAccuracyCallback(
        heldout_set,
        eval_steps=script_args.heldout_eval_steps,
        max_new_tokens=script_args.heldout_max_new_tokens,
        proxy_rewards=proxies,
        kl_to_ref=script_args.heldout_kl_to_ref,
        generation=script_args.heldout_generation,
    ).bind(trainer)
    if script_args.goodhart:
        trainer.add_callback(GoodhartCallback(proxy_metric=script_args.goodhart_proxy_metric, heldout=heldout))


def apply_model_config(model_args: ModelConfig, training_args: Any) -> None:
    """Check TRL's ``ModelConfig`` early (a model is named; 4-bit runs here) and pass its loading options to the
    trainer through ``training_args.model_init_kwargs`` (options already set there win)."""
    if wants_quantization(model_args):
        check_bitsandbytes(default_device())  # before minutes of loading, not after
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is not set (use an embedded name such as smollm2-135m-instruct, a hub id or a path)")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }


def run_gsm8k_job(
    trainer_cls: type[GRPOTrainer],
    config_cls: type[GRPOConfig],
    default_config: str | Path,
    argv: list[str] | None = None,
) -> GRPOTrainer:
    """Parse arguments, load GSM8K, build ``trainer_cls``, train with the watchdogs, save; returns the trainer."""
    script_args, training_args, model_args = parse_args(config_cls, default_config, argv)
    apply_model_config(model_args, training_args)
    train_dataset = load_gsm8k(
        script_args.dataset_source,
        script_args.dataset_train_split,
        path=script_args.dataset_path,
        hub_id=script_args.dataset_hub_id,
        limit=script_args.train_size,
        seed=training_args.seed,
        **system_prompt_kwargs(script_args),
    )
    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
    )
    add_watchdogs(trainer, script_args)
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(
        f"Saved to {training_args.output_dir} after {trainer.state.global_step} steps "
        f"on {trainer.accelerator.num_processes} process(es)"
    )
    return trainer

