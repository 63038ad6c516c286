"""The GSM8K RL job: GRPO (or trl_lab's PPO, :mod:`trl_lab.scripts.ppo_gsm8k`) against reward plugins, with the
held-out watchdogs.

    accelerate launch examples/grpo_gsm8k.py                 # the CPU demo config (embedded SmolLM2 + LoRA)
    python -m trl_lab.scripts.grpo_gsm8k --config examples/configs/grpo_gsm8k_qwen_lora.yaml

Arguments come through TRL's ``TrlParser`` (``--config`` YAML, the command line overrides it): the trainer's
config class (``GRPOConfig`` or ``PPOConfig``), TRL's ``ModelConfig`` and :class:`GSM8KScriptArguments` (a
``trl.ScriptArguments``: ``--dataset_name`` / ``--dataset_config`` are the hub dataset, ``--dataset_train_split`` /
``--dataset_test_split`` the training and held-out splits). LoRA and 4-bit go through TRL's ``get_peft_config`` and
``get_quantization_config``; 4-bit support is probed before anything loads. GSM8K is this job's task: it passes the
GSM8K held-out set to the held-out callback and the GSM8K audit suite to the trainer's reward-model gate.

Before the model loads the job refuses an ``output_dir`` holding a previous run (unless resuming or
``--overwrite_output_dir``), held-out questions that are training questions or a ``learned_rm``'s
(``--allow_heldout_overlap``), and prompts over ``--max_prompt_tokens`` (``--long_prompts drop``). A SIGTERM saves a
checkpoint at the next step end and the job ends as usual (:class:`~trl_lab.callbacks.preemption.PreemptionCallback`).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import trl
from trl import ModelConfig, get_peft_config, get_quantization_config

from trl_lab.callbacks import GoodhartCallback, HealthMonitorCallback, HeldOutAccuracyCallback, MetricsLoggerCallback
from trl_lab.callbacks.goodhart import RULES as GOODHART_RULES
from trl_lab.callbacks.heldout import KL_PRECISIONS
from trl_lab.callbacks.preemption import PreemptionCallback
from trl_lab.data.gsm8k import heldout_gsm8k, load_gsm8k
from trl_lab.data.gsm8k_pairs import gsm8k_audit_suite, read_pairs
from trl_lab.data.leakage import overlapping_questions, read_trained_questions, refuse_heldout_overlap
from trl_lab.data.prompt_length import check_prompt_lengths, default_prompt_limit
from trl_lab.embedded_model import resolve_model_path
from trl_lab.grpo import GRPOConfig, GRPOTrainer
from trl_lab.report import format_summary, run_summary
from trl_lab.rewards.registry import Reward
from trl_lab.scripts.utils import apply_model_config, end_job, parse_job_args, refuse_previous_run

logger = logging.getLogger(__name__)

__all__ = ["GSM8KScriptArguments", "add_watchdogs", "check_heldout_leakage", "check_prompts", "learned_rm_folders",
           "load_heldout_set", "main", "parse_args", "run_gsm8k_job"]


@dataclass
class GSM8KScriptArguments(trl.ScriptArguments):
    """Where the GSM8K prompts come from, and the held-out watchdogs.

    ``dataset_source``: ``hub`` (``dataset_name``, default ``openai/gsm8k``), ``local`` (a folder of ``{split}.jsonl``
    files given by ``dataset_path``), ``gsm_symbolic`` (reasoning-gym's GSM8K-style generator: offline, no files
    needed), ``reasoning_gym`` (any numeric reasoning-gym task, ``dataset_task`` with ``dataset_task_config``,
    generated offline in GSM8K format) or ``auto`` (the hub when reachable, else ``gsm_symbolic``).
    """

    dataset_name: str | None = field(default="openai/gsm8k",
                                     metadata={"help": "Hub dataset id for dataset_source=hub."})
    dataset_config: str | None = field(default="main", metadata={"help": "Hub dataset configuration."})
    dataset_source: str = field(
        default="auto",
        metadata={"help": "hub | local | gsm_symbolic | reasoning_gym | auto",
                  "choices": ["hub", "local", "gsm_symbolic", "reasoning_gym", "auto"]},
    )
    dataset_task: str | None = field(
        default=None,
        metadata={"help": "For dataset_source=reasoning_gym: a numeric reasoning-gym task, e.g. chain_sum ('none' "
                  "unsets a task the YAML config set, to read another source)."},
    )
    dataset_task_config: str | None = field(
        default=None,
        metadata={"help": "For dataset_source=reasoning_gym: the task's options as a JSON object, e.g. "
                  "'{\"min_terms\": 2, \"max_terms\": 2, \"min_digits\": 1, \"max_digits\": 1}'."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "For dataset_source=local: a folder with train.jsonl/test.jsonl, or one jsonl file."},
    )
    train_size: int | None = field(default=None, metadata={"help": "Use only the first N training prompts."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; default asks for a final line '#### <number>'. Empty string: none."},
    )
    heldout_size: int = field(
        default=0,
        metadata={"help": "Held-out items of dataset_test_split scored during training (greedy); 0 turns the "
                  "evaluation off. 500 is recommended on a GPU."},
    )
    heldout_eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate the held-out set every N steps (default: eval_steps, else 50)."}
    )
    heldout_max_new_tokens: int = field(default=256, metadata={"help": "Generation budget per held-out item."})
    heldout_proxy_rewards: bool = field(
        default=True,
        metadata={"help": "Also score the held-out completions with the training reward plugins, logged as "
                  "heldout/proxy/<plugin>: what the proxy thinks of the outputs accuracy is measured on."},
    )
    heldout_generation: str = field(
        default="auto",
        metadata={"help": "Held-out generation: 'auto' (TRL's vLLM engine when --use_vllm, else model.generate), "
                  "'transformers' or 'vllm'."},
    )
    heldout_kl_to_ref: bool = field(
        default=True,
        metadata={"help": "Log heldout/kl_to_ref: the policy's per-token KL to its reference along the held-out "
                  "answers, at any beta (TRL logs no KL when beta = 0)."},
    )
    heldout_kl_items: int | None = field(
        default=64,
        metadata={"help": "Measure heldout/kl_to_ref on the first N held-out items only (a per-token mean: a few dozen "
                  "answers give it tightly, and each costs two forward passes); None: every item."},
    )
    heldout_kl_precision: str = field(
        default="fp32",
        metadata={"help": "Numerics of the KL monitor's two passes: 'fp32' (exact), 'bf16' (autocast, about half the "
                  "cost on a CPU with native bf16; KL within about 1e-3 nats) or 'train' (bf16 when training is "
                  "bf16).", "choices": list(KL_PRECISIONS)},
    )
    goodhart: bool = field(
        default=True,
        metadata={"help": "With a held-out set: stop when reward rises while held-out accuracy falls, and restore "
                  "the best step's weights."},
    )
    health_monitor: bool = field(
        default=True,
        metadata={"help": "With a held-out set: warn (log and goodhart.json) on fast KL growth, repetition or length "
                  "jumps, or an entropy collapse of the held-out answers (trl_lab.callbacks.HealthMonitorCallback)."},
    )
    health_stop: bool = field(
        default=False,
        metadata={"help": "Stop training at the first health warning (off: label-free signals often fire late)."},
    )
    heldout_batch_size: int = field(
        default=16, metadata={"help": "Held-out prompts per generate call (per process)."},
    )
    heldout_table_size: int | None = field(
        default=8,
        metadata={"help": "Write the answers of the first N held-out items at every evaluation to "
                  "output_dir/heldout/step_*.jsonl (None: every item, which a paired before/after test needs)."},
    )
    goodhart_rule: str = field(
        default="glr",
        metadata={"help": "The detector's drop rule: 'glr' (a change-point scan over every window since the best "
                  "step) or 'paired_z' (the latest evaluation alone, two in a row); docs/goodhart.md compares them.",
                  "choices": list(GOODHART_RULES)},
    )
    goodhart_proxy_metric: str = field(
        default="reward",
        metadata={"help": "The logged metric the detector treats as the proxy (e.g. rewards/sentiment/mean)."},
    )
    goodhart_proxy_components: bool = field(
        default=True,
        metadata={"help": "With several reward plugins, the detector's proxy condition also holds when any one "
                  "plugin's mean (rewards/<plugin>/mean) rose while accuracy fell, not only the total."},
    )
    allow_heldout_overlap: bool = field(
        default=False,
        metadata={"help": "Run even when held-out questions are also in the training set (or in a learned_rm's "
                  "training pairs); refused by default, since held-out accuracy would score trained-on answers."},
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Start afresh in an output_dir that holds a previous run (metrics.jsonl, checkpoint-*): "
                  "its log, report and checkpoints are deleted first. Refused by default unless resuming."},
    )
    max_prompt_tokens: int | None = field(
        default=None,
        metadata={"help": "Longest prompt (tokens, chat template included) allowed in the training and held-out "
                  "sets; default: the model's context length minus max_completion_length."},
    )
    long_prompts: str = field(
        default="error",
        metadata={"help": "Prompts over max_prompt_tokens: 'error' (refused before training, naming the row) or "
                  "'drop' (dropped, with a warning).", "choices": ["error", "drop"]},
    )

    def __post_init__(self) -> None:
        for key in ("heldout_size", "train_size", "heldout_eval_steps", "heldout_kl_items", "heldout_max_new_tokens",
                    "heldout_batch_size", "heldout_table_size", "max_prompt_tokens"):
            value, least = getattr(self, key), 0 if key == "heldout_size" else 1
            if value is not None and value < least:
                raise ValueError(f"{key} must be >= {least}" + (" (0 turns the held-out evaluation off)"
                                                                if key == "heldout_size" else "") + f", got {value}")
        if isinstance(self.dataset_task, str) and self.dataset_task.lower() == "none":
            self.dataset_task = None  # the command line's way to unset the YAML's task
        if isinstance(self.dataset_task_config, str):  # a JSON string on the command line; a mapping in YAML
            try:
                self.dataset_task_config = json.loads(self.dataset_task_config)
            except json.JSONDecodeError as exc:
                raise ValueError(f"dataset_task_config is not JSON ({exc}): {self.dataset_task_config!r}") from exc
        if self.dataset_task_config is not None and not isinstance(self.dataset_task_config, dict):
            raise ValueError(f"dataset_task_config must be a JSON object, got {self.dataset_task_config!r}")
        if self.heldout_kl_precision not in KL_PRECISIONS:
            allowed = ", ".join(map(repr, KL_PRECISIONS[:-1])) + f" or {KL_PRECISIONS[-1]!r}"
            raise ValueError(f"heldout_kl_precision must be {allowed}, got {self.heldout_kl_precision!r}")
        if self.goodhart_rule not in GOODHART_RULES:
            raise ValueError(f"goodhart_rule must be one of {', '.join(map(repr, GOODHART_RULES))}, "
                             f"got {self.goodhart_rule!r}")
        if self.long_prompts not in ("error", "drop"):
            raise ValueError(f"long_prompts must be 'error' or 'drop', got {self.long_prompts!r}")
        if (self.dataset_task is not None) != (self.dataset_source == "reasoning_gym"):
            raise ValueError("dataset_task goes with dataset_source: reasoning_gym (and that source needs a task); got "
                             f"dataset_source={self.dataset_source!r}, dataset_task={self.dataset_task!r}")

    def dataset_kwargs(self) -> dict[str, Any]:
        """The GSM8K loader's options these arguments set (``--system_prompt`` unset keeps the data module's
        default: a final answer on a '#### N' line)."""
        kwargs: dict[str, Any] = {"source": self.dataset_source, "path": self.dataset_path,
                                  "hub_id": self.dataset_name, "hub_config": self.dataset_config}
        if self.dataset_source == "reasoning_gym":
            kwargs.update(task=self.dataset_task, task_config=self.dataset_task_config)
        if self.system_prompt is not None:
            kwargs["system_prompt"] = self.system_prompt
        return kwargs


def parse_args(config_cls: type[GRPOConfig], default_config: str | os.PathLike | None = None,
               argv: list[str] | None = None) -> tuple[GSM8KScriptArguments, GRPOConfig, ModelConfig]:
    """Parse ``argv`` (default ``sys.argv[1:]``); without ``--config``, ``default_config`` (if given) is the YAML."""
    return parse_job_args(GSM8KScriptArguments, config_cls, ModelConfig, default_config=default_config, argv=argv)


def load_heldout_set(script_args: GSM8KScriptArguments, seed: int) -> Any:
    """The held-out set the watchdogs score (None for ``heldout_size: 0``); refused when the split has fewer items
    than asked for, before any model loads."""
    if script_args.heldout_size == 0:
        return None
    heldout_set = heldout_gsm8k(script_args.heldout_size, split=script_args.dataset_test_split, seed=seed,
                                **script_args.dataset_kwargs())
    if len(heldout_set) < script_args.heldout_size:
        raise ValueError(f"heldout_size is {script_args.heldout_size}, but the {script_args.dataset_test_split!r} split "
                         f"has {len(heldout_set)} items; set heldout_size to at most {len(heldout_set)}")
    return heldout_set


def learned_rm_folders(training_args: GRPOConfig) -> list[str]:
    """The local folders of the ``learned_rm`` rewards in ``training_args.rewards`` (``path`` / ``paths``)."""
    folders = []
    for spec in training_args.rewards or []:
        if spec.get("name") == "learned_rm":
            kwargs = spec.get("kwargs") or {}
            paths = kwargs.get("paths") or ([kwargs["path"]] if kwargs.get("path") else [])
            folders.extend(str(p) for p in paths if os.path.isdir(str(p)))
    return folders


def check_heldout_leakage(script_args: GSM8KScriptArguments, training_args: GRPOConfig, train_dataset: Any,
                          heldout_set: Any) -> None:
    """Refuse (unless ``allow_heldout_overlap``) held-out questions that are also training questions, or questions a
    ``learned_rm`` reward trained on (its ``rm_train_questions.json``); and audit pairs (``rm_audit_data``) on
    questions that RM trained on. Before any model loads."""
    allow, fix = script_args.allow_heldout_overlap, ("Hold out data the model does not train on: another "
                                                      "dataset_test_split than dataset_train_split, or files without "
                                                      "shared questions (one --dataset_path file is split by question "
                                                      "hash)")
    if heldout_set is not None:
        refuse_heldout_overlap(
            overlapping_questions(train_dataset["question"], heldout_set["question"]), len(heldout_set),
            train=f"the training set (dataset_train_split {script_args.dataset_train_split!r}, {len(train_dataset)} "
                  "questions)", heldout=f"dataset_test_split {script_args.dataset_test_split!r}", fix=fix, allow=allow)
    for folder in learned_rm_folders(training_args):
        trained = read_trained_questions(folder)
        if trained is None:
            continue
        if heldout_set is not None:
            refuse_heldout_overlap(
                overlapping_questions(trained, heldout_set["question"], fingerprints=True), len(heldout_set),
                train=f"the training pairs of the learned_rm {folder}",
                heldout=f"dataset_test_split {script_args.dataset_test_split!r}", allow=allow,
                fix="Train the RM on other questions than the RL held-out set (train_reward_model reads its "
                    "dataset_train_split)")
        audit_data = getattr(training_args, "rm_audit_data", None)
        if audit_data and os.path.isfile(audit_data):
            audit_questions = [p["question"] for p in read_pairs(audit_data, split="eval",
                                                                 limit=getattr(training_args, "rm_audit_limit", 200))
                               if "question" in p]
            refuse_heldout_overlap(
                overlapping_questions(trained, audit_questions, fingerprints=True), len(audit_questions),
                train=f"the training pairs of the learned_rm {folder}", heldout=f"rm_audit_data {audit_data}",
                allow=allow, fix="Audit the RM on pairs of questions it did not train on (e.g. the RM's own eval "
                                 "split, which train_reward_model audits)")


def check_prompts(script_args: GSM8KScriptArguments, training_args: GRPOConfig, model_args: ModelConfig,
                  train_dataset: Any, heldout_set: Any) -> tuple[Any, Any]:
    """The training and held-out sets with no prompt over ``max_prompt_tokens`` (default: the model's context minus
    ``max_completion_length``): over-long prompts are refused naming the row, or dropped with ``long_prompts:
    drop``. Loads the tokenizer and config only, not the model."""
    from transformers import AutoConfig, AutoTokenizer

    path = resolve_model_path(model_args.model_name_or_path)
    options = dict(revision=model_args.model_revision, trust_remote_code=training_args.trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(path, **options)
    limit, flag = script_args.max_prompt_tokens, "--max_prompt_tokens"
    if limit is None:
        limit = default_prompt_limit(AutoConfig.from_pretrained(path, **options), tokenizer,
                                     training_args.max_completion_length)
        flag = f"--max_prompt_tokens; default {limit}: the model's context minus max_completion_length"
        if limit is None:
            logger.warning("model %s states no context length: prompt lengths are not checked (set "
                           "--max_prompt_tokens to check them)", model_args.model_name_or_path)
            return train_dataset, heldout_set
    template_kwargs = training_args.chat_template_kwargs or {}
    drop = script_args.long_prompts == "drop"
    train_dataset = check_prompt_lengths(
        train_dataset, tokenizer, limit, flag=flag, drop=drop, **template_kwargs,
        what=f"the training set (dataset_train_split {script_args.dataset_train_split!r})")
    if heldout_set is not None:
        heldout_set = check_prompt_lengths(
            heldout_set, tokenizer, limit, flag=flag, drop=drop, **template_kwargs,
            what=f"the held-out set (dataset_test_split {script_args.dataset_test_split!r})")
    return train_dataset, heldout_set


def add_watchdogs(trainer: GRPOTrainer, script_args: GSM8KScriptArguments, heldout_set: Any) -> None:
    """The run's log (metrics.jsonl and the report, always) and, with a held-out set, held-out accuracy next to reward
    and the Goodhart detector on top of it."""
    if not any(isinstance(c, MetricsLoggerCallback) for c in trainer.callback_handler.callbacks):
        trainer.add_callback(MetricsLoggerCallback())
    if heldout_set is None:
        return
    proxies = [f for f in trainer.reward_funcs if isinstance(f, Reward)] if script_args.heldout_proxy_rewards else []
    heldout = HeldOutAccuracyCallback(
        heldout_set,
        eval_steps=script_args.heldout_eval_steps,
        max_new_tokens=script_args.heldout_max_new_tokens,
        proxy_rewards=proxies,
        kl_to_ref=script_args.heldout_kl_to_ref,
        kl_items=script_args.heldout_kl_items,
        kl_precision=script_args.heldout_kl_precision,
        generation=script_args.heldout_generation,
        batch_size=script_args.heldout_batch_size,
        table_size=len(heldout_set) if script_args.heldout_table_size is None else script_args.heldout_table_size,
    ).bind(trainer)
    if script_args.health_monitor:
        trainer.add_callback(HealthMonitorCallback(stop=script_args.health_stop))
    if script_args.goodhart:
        trainer.add_callback(GoodhartCallback(proxy_metric=script_args.goodhart_proxy_metric, heldout=heldout,
                                              rule=script_args.goodhart_rule,
                                              proxy_components=script_args.goodhart_proxy_components))


def run_gsm8k_job(
    trainer_cls: type[GRPOTrainer],
    config_cls: type[GRPOConfig],
    default_config: str | os.PathLike | None = None,
    argv: list[str] | None = None,
) -> GRPOTrainer:
    """Parse arguments, load GSM8K, build ``trainer_cls``, train with the watchdogs, save; returns the trainer."""
    script_args, training_args, model_args = parse_args(config_cls, default_config, argv)
    refuse_previous_run(training_args.output_dir, resuming=bool(training_args.resume_from_checkpoint),
                        overwrite=script_args.overwrite_output_dir, is_main_process=training_args.process_index == 0)
    apply_model_config(model_args, training_args)
    train_dataset = load_gsm8k(split=script_args.dataset_train_split, limit=script_args.train_size,
                               seed=training_args.seed, **script_args.dataset_kwargs())
    heldout_set = load_heldout_set(script_args, training_args.seed)
    check_heldout_leakage(script_args, training_args, train_dataset, heldout_set)
    train_dataset, heldout_set = check_prompts(script_args, training_args, model_args, train_dataset, heldout_set)
    trainer = trainer_cls(
        model=model_args.model_name_or_path,
        args=training_args,
        train_dataset=train_dataset,
        peft_config=get_peft_config(model_args),
        quantization_config=get_quantization_config(model_args),
        rm_audit_suite=gsm8k_audit_suite,
    )
    add_watchdogs(trainer, script_args, heldout_set)
    preemption = PreemptionCallback()  # SIGTERM: a checkpoint, then the normal end below (model, report)
    trainer.add_callback(preemption)
    try:
        trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    finally:
        preemption.uninstall()
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(
        f"Saved to {training_args.output_dir} after {trainer.state.global_step} steps "
        f"on {trainer.accelerator.num_processes} process(es)"
    )
    if preemption.stopped_at is not None:
        trainer.accelerator.print(f"Stopped by SIGTERM at step {preemption.stopped_at}: resume with "
                                  f"--resume_from_checkpoint {training_args.output_dir}/checkpoint-{preemption.stopped_at}")
    if trainer.accelerator.is_main_process and script_args.heldout_size > 0:
        # What moved: the reward, the answers' style (format, length) and held-out accuracy, before and after.
        print(format_summary(run_summary(training_args.output_dir)))
    return trainer


def main(argv: list[str] | None = None, *, default_config: str | os.PathLike | None = None) -> GRPOTrainer:
    """The GRPO job; ``examples/grpo_gsm8k.py`` calls it with the CPU demo config as ``default_config``."""
    return run_gsm8k_job(GRPOTrainer, GRPOConfig, default_config, argv)


if __name__ == "__main__":
    end_job(main())  # every rank together: trackers finished, process group destroyed
