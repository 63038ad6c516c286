"""GRPO with reward plugins: TRL's ``GRPOConfig``/``GRPOTrainer`` plus what they lack.

Added on top of TRL, nothing re-implemented:

* ``GRPOConfig.rewards``: reward plugins by name with weights and options (YAML or CLI), resolved to
  TRL's ``reward_funcs`` and ``reward_weights``;
* embedded model names (``smollm2-135m-instruct``) resolved to a cached local checkpoint;
* faster rollouts with the same numbers: the LoRA adapter merged for generation (:mod:`trl_lab.merged_adapter`)
  and, on CPU, oneDNN matmuls, small LM-head tiles and only completion positions scored (:mod:`trl_lab.cpu_tuning`);
* faster, not exact, where asked: rollouts from a bf16 copy of the policy (``generation_dtype``,
  :mod:`trl_lab.low_precision_sampler`), and ``cpu_bf16`` for bf16 autocast plus that copy on CPUs with native bf16;
* checks that fail before training rather than hours into it: every reward callable is wrapped with
  :class:`~trl_lab.rewards.registry.Reward` (plugin name in errors, finite values, right length), the dataset
  must carry the columns each plugin needs, 4-bit loading is probed on the actual device, and every
  ``learned_rm`` reward model must pass its audit (``rm_audit_*``; see :mod:`trl_lab.reward_models.gate`).

The rewards are built once, from the specs the config parsed; the audit gate then scores with the reward models
of those built ``learned_rm`` rewards, still before the policy loads.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import torch
import trl
from transformers.utils import logging as hf_logging
from torch import nn
from transformers import TrainingArguments

from trl_lab.cpu_tuning import CpuTuning, cpu_has_native_bf16, tune_cpu
from trl_lab.embedded_model import resolve_model_path
from trl_lab.low_precision_sampler import LowPrecisionSampler, parse_generation_dtype
from trl_lab.merged_adapter import merged_lora
from trl_lab.quantization import check_bitsandbytes
from trl_lab.reward_models.gate import AuditSuiteReader, gate_reward_models, read_pairs_suite
from trl_lab.rewards.learned_rm import LearnedRewardModel
from trl_lab.rewards.registry import Reward, as_reward, parse_timeout
from trl_lab.rewards.specs import RewardSpecDict, build_rewards, parse_reward_specs

logger = hf_logging.get_logger(__name__)


@dataclass
class GRPOConfig(trl.GRPOConfig):
    """TRL's ``GRPOConfig`` plus ``rewards``: the reward plugins of the run, and the audit of learned RMs.

    ``rewards`` is a list of specs (``name``, ``weight``, ``kwargs``), each held as a
    :class:`~trl_lab.rewards.specs.RewardSpecDict`; see :mod:`trl_lab.rewards.specs`.
    Weights go in the specs: setting TRL's ``reward_weights`` as well is an error. ``rm_audit_data``,
    ``rm_audit_limit`` and ``rm_audit_override`` set how the reward models of ``learned_rm`` rewards are audited
    before training (:func:`trl_lab.reward_models.gate.gate_reward_models`).
    """

    rewards: list[RewardSpecDict] | None = field(
        default=None,
        metadata={
            "help": "Reward plugins with weights: 'name', 'name=weight', or a YAML mapping "
            "'{name: ..., weight: ..., kwargs: {...}}'; a name may be 'package.module:object'. "
            "See `trl-lab rewards` for the available names."
        },
    )

    reward_timeout: float | None = field(
        default=None,
        metadata={"help": "Seconds a reward plugin call may take before the run stops with an error naming the "
                  "plugin, for specs without their own `timeout` (0: no timeout). Unset: $TRL_LAB_REWARD_TIMEOUT, "
                  "else 600."},
    )
    rm_audit_data: str | None = field(
        default=None,
        metadata={
            "help": "Audit every `learned_rm` reward model on this file before training: a JSONL of preference "
            "pairs, or a GSM8K JSONL (its eval split by question hash). Verdicts are cached in <RM>/rm_audit/. "
            "Unset: a cached verdict for the RM's current weights is required."
        },
    )
    rm_audit_limit: int | None = field(
        default=200, metadata={"help": "Audit on at most this many pairs of `rm_audit_data` (None: all)."}
    )
    rm_audit_override: bool = field(
        default=False,
        metadata={"help": "Train against a reward model that failed its audit, or has none, with a warning."},
    )
    merge_adapter_for_generation: bool = field(
        default=True,
        metadata={"help": "Generate rollouts with the LoRA adapter merged into the base weights (one matmul per layer "
                  "instead of three), restored bit for bit after; skipped for quantized bases, active LoRA dropout, "
                  "vLLM, DeepSpeed and FSDP. Same tokens, faster decoding."},
    )
    cpu_tuning: bool = field(
        default=True,
        metadata={"help": "On CPU: fp32 matmuls through oneDNN where that stays fp32-accurate, small tiles for "
                  "TRL's fused LM head, and only completion positions projected through it (see "
                  "trl_lab.cpu_tuning). Same numbers, faster steps, less memory."},
    )
    generation_dtype: str | None = field(
        default=None,
        metadata={"help": "Generate rollouts with a copy of the policy in this dtype ('bfloat16' or 'float16'), "
                  "refreshed (adapter merged) before each generation; unset: the policy itself. Faster decoding "
                  "where the hardware has native bf16, but not exact: the sampler's log-probs differ slightly from "
                  "the trained policy's (see trl_lab.low_precision_sampler)."},
    )
    cpu_bf16: bool = field(
        default=False,
        metadata={"help": "When training on a CPU with native bf16 (AVX512-BF16 or AMX): set `bf16` (autocast for "
                  "the log-prob and backward passes) and `generation_dtype: bfloat16`. On other CPUs, a warning "
                  "and fp32 (emulated bf16 is slower). Ignored on GPUs."},
    )

    def __post_init__(self) -> None:
        _refuse_non_finite(self)
        parse_generation_dtype(self.generation_dtype)
        _apply_cpu_bf16(self)
        if self.max_steps == 0:
            raise ValueError("max_steps is 0: TRL would still run one step (at learning rate 0); give max_steps >= 1, "
                             "or -1 to train for num_train_epochs")
        if self.reward_timeout is not None:
            parse_timeout(self.reward_timeout, "reward_timeout")
        if self.rm_audit_limit is not None and self.rm_audit_limit < 1:
            raise ValueError(f"rm_audit_limit must be >= 1 (or None for every pair), got {self.rm_audit_limit}")
        _use_cpu_when_distributed_without_accelerator(self)
        super().__post_init__()
        if self.rewards is not None:
            # Plain mappings, so the config stays JSON-serialisable for loggers and checkpoints.
            self.rewards = [RewardSpecDict(s) for s in parse_reward_specs(self.rewards, key="rewards")]
            if self.reward_weights is not None:
                raise ValueError(
                    "both `rewards` and `reward_weights` are set: give each weight in its reward spec "
                    "(e.g. `gsm8k_format=0.2`) and leave `reward_weights` unset"
                )


def _refuse_non_finite(config: Any) -> None:
    """A NaN or infinite number in any numeric field (``--beta nan``, ``--vf_coef inf``) is an error naming the key:
    it would pass TRL's checks and poison the weights at step 1. Fields whose own default is not finite are left
    alone."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        values = value if isinstance(value, (list, tuple)) else [value]
        bad = [v for v in values if isinstance(v, float) and not math.isfinite(v)]
        default_ok = isinstance(f.default, float) and not math.isfinite(f.default)
        if bad and not default_ok:
            raise ValueError(f"{f.name} must be a finite number, got {value!r}")


def _trains_on_cpu(args: TrainingArguments) -> bool:
    """``use_cpu``, or no accelerator at all (CUDA, XPU, MPS, or an out-of-tree device such as NPU or HPU)."""
    return bool(args.use_cpu) or not torch.accelerator.is_available()


def _apply_cpu_bf16(config: Any) -> None:
    """``cpu_bf16`` -> ``bf16`` and a bf16 sampler, on a CPU that computes bf16 natively (before devices are set up)."""
    if not config.cpu_bf16 or not _trains_on_cpu(config):
        return
    if not cpu_has_native_bf16():
        logger.warning("cpu_bf16: this CPU has no native bf16 (AVX512-BF16 or AMX); training stays fp32, as emulated "
                       "bf16 would be slower")
        return
    config.bf16 = True
    config.use_cpu = True  # transformers refuses bf16 without an accelerator unless use_cpu says CPU is meant
    if config.generation_dtype is None:
        config.generation_dtype = "bfloat16"


def _use_cpu_when_distributed_without_accelerator(args: TrainingArguments) -> None:
    """Under ``accelerate launch --num_processes N`` on a machine without GPUs, train on CPU *together*.

    accelerate only forms a CPU process group (gloo) when told ``cpu=True``; otherwise every process
    silently trains alone on the full data. Must run before ``TrainingArguments`` sets up devices.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and _trains_on_cpu(args):
        args.use_cpu = True


class GRPOTrainer(trl.GRPOTrainer):
    """TRL's ``GRPOTrainer`` that takes its rewards from ``args.rewards`` and checks its inputs early.

    ``reward_funcs`` may still be given directly (callables, reward-model ids or modules, as in TRL);
    plain callables are wrapped so their failures name them. A string ``model`` may be an embedded
    model name from :mod:`trl_lab.embedded_model`. ``rm_audit_suite`` reads ``args.rm_audit_data`` into the pairs
    and probes the reward models are audited on (default:
    :func:`~trl_lab.reward_models.gate.read_pairs_suite`, a JSONL of preference pairs and no probes; the GSM8K jobs
    pass :func:`trl_lab.data.gsm8k_pairs.gsm8k_audit_suite`).
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: trl.GRPOConfig | None = None,
                 train_dataset: Any = None, *pos: Any, rm_audit_suite: AuditSuiteReader | None = None,
                 **kwargs: Any):
        if args is None:
            raise ValueError("trl_lab.GRPOTrainer needs `args` (a trl_lab.GRPOConfig with `rewards`)")
        rewards = getattr(args, "rewards", None)
        if reward_funcs is not None and rewards:
            raise ValueError("pass either `reward_funcs` or `args.rewards`, not both")
        if reward_funcs is None:
            if not rewards:
                raise ValueError("no rewards: set `rewards` in the config (e.g. `--rewards gsm8k gsm8k_format=0.2`)")
            timeout = getattr(args, "reward_timeout", None)
            reward_funcs, args.reward_weights = build_rewards(rewards,
                                                              default_timeout="default" if timeout is None else timeout)
            _gate_learned_reward_models(reward_funcs, args, rm_audit_suite or read_pairs_suite)
        else:
            reward_funcs = [_wrap(f) for f in (reward_funcs if isinstance(reward_funcs, list) else [reward_funcs])]
        if train_dataset is not None:
            if hasattr(train_dataset, "__len__") and len(train_dataset) == 0:
                raise ValueError("the training set is empty (no prompts to train on); check the dataset source, its "
                                 "split and train_size")
            check_reward_columns(reward_funcs, train_dataset)
        quantization_config = kwargs.get("quantization_config")
        if quantization_config is not None and (
            getattr(quantization_config, "load_in_4bit", False) or getattr(quantization_config, "load_in_8bit", False)
        ):
            check_bitsandbytes(str(args.device.type))
        check_output_dir_writable(args.output_dir)
        if isinstance(model, str):
            model = resolve_model_path(model)
        self.cpu_tuning: CpuTuning | None = None
        if getattr(args, "cpu_tuning", False) and args.device.type == "cpu":
            self.cpu_tuning = tune_cpu()
        self.sampler: LowPrecisionSampler | None = None
        self._sampler_checked = False
        super().__init__(model, reward_funcs, args, train_dataset, *pos, **kwargs)

    def _generate_single_turn(self, *args: Any, **kwargs: Any) -> Any:
        """TRL's rollout generation: from the low-precision copy when ``generation_dtype`` applies, else with the LoRA
        adapter merged for it when ``merge_adapter_for_generation``."""
        if not self._generates_in_process():
            return super()._generate_single_turn(*args, **kwargs)
        policy = self.accelerator.unwrap_model(self.model)
        sampler = self.rollout_sampler()
        if sampler is not None:
            # TRL generates with `unwrap_model_for_generation(self.model_wrapped)`: hand it the copy for this call.
            wrapped = self.model_wrapped
            try:
                with sampler.generating(policy) as copy:
                    self.model_wrapped = copy
                    return super()._generate_single_turn(*args, **kwargs)
            finally:
                self.model_wrapped = wrapped
        if not getattr(self.args, "merge_adapter_for_generation", False):
            return super()._generate_single_turn(*args, **kwargs)
        with merged_lora(policy):
            return super()._generate_single_turn(*args, **kwargs)

    def rollout_sampler(self) -> LowPrecisionSampler | None:
        """The low-precision copy rollouts are generated with (``generation_dtype``), built on first use; None (said
        once) where it does not apply. The held-out callback generates with it too, so that every evaluation, the
        one before the first step included, decodes the way the rollouts do."""
        if not self._sampler_checked:
            policy = self.accelerator.unwrap_model(self.model)
            self._sampler_checked = True
            dtype = parse_generation_dtype(getattr(self.args, "generation_dtype", None))
            reason = (LowPrecisionSampler.applies_to(policy, dtype) if self._generates_in_process()
                      else "rollouts come from vLLM or sharded weights (DeepSpeed, FSDP)")
            if reason is None:
                self.sampler = LowPrecisionSampler(policy, dtype)
            elif dtype is not None:
                logger.warning("generation_dtype %s not used: %s; generating with the policy itself", dtype, reason)
        return self.sampler

    def _generates_in_process(self) -> bool:
        """Whether rollouts come from ``generate`` on this process's whole model (not vLLM, not sharded weights)."""
        from accelerate.utils import DistributedType

        return not self.use_vllm and self.accelerator.distributed_type not in (DistributedType.DEEPSPEED,
                                                                               DistributedType.FSDP)


def check_output_dir_writable(output_dir: str | os.PathLike | None) -> None:
    """Fail before the model loads when ``output_dir`` cannot be written: with ``save_strategy: no`` the first write
    comes after all of training, and the trained weights would be lost."""
    if not output_dir:
        return
    try:
        os.makedirs(output_dir, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_check_"):
            pass
    except OSError as exc:
        raise ValueError(f"output_dir {str(output_dir)!r} is not writable ({type(exc).__name__}: {exc}); the run "
                         "could not save its weights, log or report") from exc


def learned_reward_models(reward_funcs: list[Any]) -> list[tuple[str, Any]]:
    """``(reward name, scorer)`` for every reward model of the ``learned_rm`` rewards (subclasses too) in
    ``reward_funcs``. Rewards that only use a learned RM inside (``sentiment`` with ``backend: learned``) are not
    among them: a sentiment RM is meant to prefer cheer over correctness, and no correctness audit applies."""
    return [(func.name, scorer) for func in reward_funcs
            if isinstance(func, Reward) and isinstance(func.fn, LearnedRewardModel) for scorer in func.fn.models]


def _gate_learned_reward_models(reward_funcs: list[Any], args: Any, read_suite: AuditSuiteReader) -> None:
    """The audit gate on the built rewards' reward models (see :mod:`trl_lab.reward_models.gate`)."""
    scorers = learned_reward_models(reward_funcs)
    if not scorers:
        return
    data = getattr(args, "rm_audit_data", None)
    suite = None
    if data is not None:
        try:
            suite = read_suite(data, getattr(args, "rm_audit_limit", 200))
        except ValueError as exc:
            raise ValueError(f"rm_audit_data: {exc}") from exc
    # The local main process audits (and caches) first; the other processes then read its verdict.
    with args.main_process_first(desc="reward-model audit"):
        gate_reward_models(scorers, suite=suite, override=getattr(args, "rm_audit_override", False))


def _wrap(func: Any) -> Any:
    """Wrap plain reward callables in :class:`Reward`; reward-model ids and modules pass through."""
    if isinstance(func, (str, nn.Module)):
        return func
    return as_reward(func)


def check_reward_columns(reward_funcs: list[Any], dataset: Any) -> None:
    """Raise if a reward plugin needs a dataset column the training set does not have."""
    columns = set(getattr(dataset, "column_names", None) or [])
    if not columns:
        return  # iterable datasets without known columns: TRL will fail on the first batch instead
    for func in reward_funcs:
        if isinstance(func, Reward):
            missing = [c for c in func.required_columns() if c not in columns]
            if missing:
                raise ValueError(
                    f"reward plugin {func.name!r} needs dataset column(s) {missing}, but the training set has "
                    f"{sorted(columns)}"
                )
