"""Held-out accuracy during RL training: the number the reward is supposed to move.

:class:`HeldOutAccuracyCallback` greedily answers a fixed held-out set with the trainer's current model
(adapters active) before the first step and every ``eval_steps`` steps, scores the answers with a checker
(the GSM8K checker by default, or any reward plugin with a threshold) and logs through the trainer, so
TensorBoard / W&B / trackio and ``trainer.state.log_history`` all get:

* ``heldout/accuracy`` and ``heldout/accuracy_stderr`` (binomial: ``sqrt(p (1 - p) / n)``),
* ``heldout/mean_length`` (generated tokens, up to and including the first EOS),
* ``heldout/format_rate`` (the ``gsm8k_format`` reward by default),
* ``heldout/proxy/<name>``: the mean of each reward in ``proxy_rewards`` on the same completions -- the
  training reward measured on fixed prompts, so a drift of the outputs toward what the proxy likes (cheer,
  length) shows next to the accuracy it should have bought,
* ``heldout/kl_to_ref``: the mean per-token ``KL(policy || reference)`` along the held-out answers, exact over
  the vocabulary (:mod:`~trl_lab.callbacks.kl_monitor`); it works at any ``beta``, ``0`` included, where TRL logs no KL,
* ``heldout/entropy``: the policy's mean per-token entropy (nats) along the same answers, from the same pass,
* ``heldout/repetition`` (mean over answers of the share of 3-grams repeating an earlier one of the answer),
  ``heldout/distinct_2`` (distinct 2-grams over all 2-grams of all answers), ``heldout/distinct_answers``
  (distinct whole answers over answers, token for token) and ``heldout/strict_accuracy``
  (correct *and* a well-formed final ``#### N`` line) (:mod:`~trl_lab.callbacks.answer_signals`),
* ``heldout/n`` and ``heldout/eval_seconds``.

It keeps per-item correctness for the Goodhart detector (``last_items``, ``last_step``, ``history``) and
writes the completions of the first few items to ``output_dir/heldout/step_NNNNNN.jsonl`` at every
evaluation (and a W&B / trackio table when those loggers are on).

Usage::

    trainer = GRPOTrainer(...)
    heldout = HeldOutAccuracyCallback(heldout_gsm8k(500, source="local", path=...)).bind(trainer)
    trainer.train()

``bind`` adds the callback to the trainer (and a :class:`~trl_lab.callbacks.metrics_log.MetricsLoggerCallback`
if there is none, so ``metrics.jsonl`` and the run report are written).

Distributed: item ``i`` is generated and scored on process ``i % world_size`` and the results are gathered
on every process, so each item is scored once and all processes log the same numbers.

Logging goes through ``transformers.Trainer.log`` rather than TRL's override: TRL's ``log`` would fold its
pending training metrics (reward, KL, ...) into the held-out entry and clear them, so the training log of
that step would lose them. Generation uses batched ``model.generate``, or, when the trainer generates with TRL's
vLLM (``use_vllm``, colocate or server mode), that same vLLM engine with greedy sampling: the engine gets the
current weights first (TRL's ``sync_weights``, once per step) and TRL's sampling settings are put back after.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from trl_lab.callbacks.answer_signals import distinct_answer_share, distinct_n, repeated_ngram_fraction, strict_correct
from trl_lab.merged_adapter import merged_lora

logger = logging.getLogger(__name__)

__all__ = ["HeldOutAccuracyCallback", "generate_completions", "generate_greedy", "generate_greedy_vllm", "prompt_text"]

DEFAULT_EVAL_STEPS = 50


# ----------------------------------------------------------------------------------------- generation
def prompt_text(prompt: Any, tokenizer: Any) -> str:
    """Text of one prompt as TRL's GRPO renders it (``trl.data_utils.maybe_apply_chat_template``): a conversation
    through the chat template with the generation prompt, a string as is."""
    from trl.data_utils import maybe_apply_chat_template

    return maybe_apply_chat_template({"prompt": prompt}, tokenizer)["prompt"]


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    """The ids that end a completion: the model's generation config, else the tokenizer's EOS."""
    eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos if isinstance(eos, (list, tuple)) else [eos])


def _cut_at_eos(row: Sequence[int], eos_ids: set[int]) -> list[int]:
    """``row`` up to and including its first EOS (all of it when there is none)."""
    row = list(row)
    return row[: next((i + 1 for i, t in enumerate(row) if t in eos_ids), len(row))]


def generate_completions(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    add_special_tokens: bool = False,
    progress: Any = None,
    num_return_sequences: int = 1,
    sort_by_length: bool = True,
    **sampling: Any,
) -> tuple[list[list[int]], list[str]]:
    """Completions of ``texts`` in batches of ``batch_size`` prompts with left padding: ``(token ids, decoded text)``
    per completion, in the order of ``texts``, the ``num_return_sequences`` of a prompt next to each other.

    Greedy unless ``sampling`` says otherwise (``do_sample=True, temperature=0.8``: ``model.generate``'s own
    arguments). The token ids stop at the first EOS (included). ``progress`` is an optional tqdm bar advanced per
    prompt.

    With ``sort_by_length`` (the default) the batches are formed from prompts of similar token length, longest
    first, so a batch pads to less and its KV cache is shorter (GSM8K test prompts in batches of 64: 35% fewer
    prefill tokens, 25% shorter attention during decoding); the results are put back in the order of ``texts``. A
    prompt's completion then depends on its batch-mates only through kernel rounding, as it does on ``batch_size``.
    """
    eos_ids = _eos_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else next(iter(eos_ids))
    device = next(model.parameters()).device
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    generate_kwargs = {"do_sample": False, **sampling}
    if num_return_sequences != 1:
        generate_kwargs["num_return_sequences"] = num_return_sequences
    order = list(range(len(texts)))
    if sort_by_length and len(texts) > batch_size:
        lengths = [len(row) for row in tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]]
        order.sort(key=lambda i: -lengths[i])  # stable: equal lengths keep their order
    per_prompt: list[list[list[int]]] = [[] for _ in texts]
    try:
        for start in range(0, len(texts), batch_size):
            chunk = order[start : start + batch_size]
            batch = [texts[i] for i in chunk]
            enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=add_special_tokens).to(device)
            out = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=list(eos_ids),
                                 **generate_kwargs)
            rows = [_cut_at_eos(row, eos_ids) for row in out[:, enc["input_ids"].shape[1] :].tolist()]
            for k, i in enumerate(chunk):  # generate puts a prompt's num_return_sequences next to each other
                per_prompt[i] = rows[k * num_return_sequences : (k + 1) * num_return_sequences]
            if progress is not None:
                progress.update(len(batch))
    finally:
        tokenizer.padding_side = padding_side
    ids_out = [row for rows in per_prompt for row in rows]
    return ids_out, tokenizer.batch_decode(ids_out, skip_special_tokens=True)


def generate_greedy(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    add_special_tokens: bool = False,
    progress: Any = None,
) -> tuple[list[list[int]], list[str]]:
    """Greedy completions of ``texts`` (:func:`generate_completions` without sampling): what the held-out evaluation
    and the offline audit answer with."""
    return generate_completions(model, tokenizer, texts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                add_special_tokens=add_special_tokens, progress=progress)


#: TRL's ``VLLMGeneration`` attributes that set sampling; overridden for greedy held-out generation, then restored.
_VLLM_SAMPLING = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_completion_length",
                  "generation_kwargs")
_GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}  # TRL: top_k 0 = off


def generate_greedy_vllm(
    trainer: Any, tokenizer: Any, texts: Sequence[str], *, max_new_tokens: int, per_process: int
) -> tuple[list[list[int]], list[str]]:
    """Greedy completions of ``texts`` with the trainer's TRL vLLM engine (``trainer.vllm_generation``).

    Pushes the current weights to vLLM first when TRL has not yet done so for this step. ``per_process`` is the
    largest number of texts any process has: every process sends that many (padding with its first text, or
    with a one-token prompt when it has none) because TRL's server mode slices the gathered results by equal
    counts. Token ids stop at the first EOS (included), the same EOS ids as :func:`generate_greedy`.
    """
    engine = trainer.vllm_generation
    step = trainer.state.global_step
    if getattr(trainer, "_last_loaded_step", None) != step:
        engine.sync_weights()
        trainer._last_loaded_step = step
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    filler = prompts[0] if prompts else [tokenizer.eos_token_id]
    padded = prompts + [filler] * (per_process - len(prompts))
    saved = {name: getattr(engine, name) for name in _VLLM_SAMPLING}
    sampling_keys = {"n", "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_tokens", "seed"}
    try:
        for name, value in _GREEDY.items():
            setattr(engine, name, value)
        engine.max_completion_length = max_new_tokens
        engine.generation_kwargs = {k: v for k, v in (saved["generation_kwargs"] or {}).items() if k not in sampling_keys}
        _, completion_ids, _, _ = engine.generate(prompts=padded, images=None, num_generations=1)
    finally:
        for name, value in saved.items():
            setattr(engine, name, value)
    eos_ids = _eos_ids(trainer.accelerator.unwrap_model(trainer.model), tokenizer)
    ids_out = [_cut_at_eos(row, eos_ids) for row in list(completion_ids)[: len(prompts)]]
    return ids_out, tokenizer.batch_decode(ids_out, skip_special_tokens=True) if ids_out else []


# ------------------------------------------------------------------------------------------- scoring
def _as_reward(spec: str | Callable[..., Any], role: str) -> Any:
    from trl_lab.rewards.registry import as_reward

    if not (isinstance(spec, str) or callable(spec)):
        raise TypeError(f"held-out {role} must be a reward plugin name or a callable, got {type(spec).__name__}")
    return as_reward(spec)


def _binomial_stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1.0 - p) / n) if n else float("nan")


# ------------------------------------------------------------------------------------------ callback
#: The numerics of the KL monitor's passes (``HeldOutAccuracyCallback(kl_precision=...)``).
KL_PRECISIONS = ("fp32", "bf16", "train")


class HeldOutAccuracyCallback(TrainerCallback):
    """Greedy held-out accuracy at step 0 and every ``eval_steps`` steps, logged through the trainer.

    Args:
        dataset: rows with ``prompt`` (conversation or text) and the checker's columns (``answer`` for
            GSM8K), e.g. :func:`trl_lab.data.heldout_gsm8k` (what the GSM8K job passes).
        trainer: the trainer to log through (or call :meth:`bind` later).
        eval_steps: evaluate every this many steps; default ``args.eval_steps`` (if an int) or 50.
        checker: reward plugin name or reward callable ``fn(prompts, completions, **columns)``; an item is
            correct when its reward is ``>= threshold`` (``None`` counts as wrong).
        format_reward: plugin logged as ``heldout/format_rate`` (mean reward), or ``None`` to skip.
        proxy_rewards: reward plugins (names or callables) whose mean on the held-out completions is logged as
            ``heldout/proxy/<plugin name>``; items where a plugin returns ``None`` are left out of its mean.
        generation: ``"auto"`` (TRL's vLLM engine when the trainer uses vLLM, else ``model.generate``),
            ``"transformers"`` or ``"vllm"`` (an error when the trainer has no vLLM engine).
        kl_to_ref: log ``heldout/kl_to_ref``. The reference is the trainer's ``ref_model``, else the PEFT base
            (adapters off; TRL's ``"ref"`` adapter if it made one), else a frozen copy of the model taken at the
            first evaluation (one more copy of the weights; a warning says so, and when that evaluation is not
            at step 0, e.g. after a resume, that the reference is the model of that step).
        entropy: log ``heldout/entropy`` (on the same items as ``kl_to_ref``; free when the KL is measured).
        kl_items: measure ``kl_to_ref`` and ``entropy`` on the first this-many items only (None: all). The KL is a per-token mean,
            so a few dozen answers give it tightly while accuracy needs hundreds; each item costs two
            teacher-forced passes (policy and reference), about as much as generating it on a CPU.
        kl_precision: the numerics of those two passes: ``"fp32"`` (the model as it is: the exact measurement),
            ``"bf16"`` (under ``torch.autocast`` bf16; the softmax stays fp32) or ``"train"`` (bf16 when the trainer
            trains in bf16, ``args.bf16``, else fp32). Under bf16 both passes round alike, so a fresh adapter still
            measures KL 0; on SmolLM2-135M the per-token KL moves by about 1e-3 nats
            (``docs/results/cpu_step_speed``), against the 0.01-0.5 a run's KL spans.
        merge_adapter: generate with the LoRA adapter merged (same tokens, faster; :mod:`trl_lab.merged_adapter`;
            skipped where it would not be exact). A trainer with a low-precision rollout copy
            (``generation_dtype``, e.g. ``cpu_bf16``) decodes the held-out answers with that copy instead.
        batch_size: prompts per ``generate`` call (per process).
        max_new_tokens: generation budget per item.
        table_size: completions of the first this-many items go to ``output_dir/heldout/step_NNNNNN.jsonl``.
        eval_on_train_begin / eval_on_last_step: also evaluate before the first step / after the last.
        metrics_log: on :meth:`bind`, add a ``MetricsLoggerCallback`` if the trainer has none.
        show_progress: a tqdm bar (main process) per evaluation.

    Attributes kept after each evaluation: ``last_items`` (per-item correctness, dataset order),
    ``last_rewards``, ``last_completions``, ``last_step`` (``None`` before the first evaluation), ``history``
    (one dict per evaluation: ``step``, ``accuracy``, ``stderr``, ``mean_length``, ``format_rate``, ``n``,
    ``seconds``, and ``kl_to_ref`` / ``proxy/<name>`` when measured). It satisfies :class:`trl_lab.callbacks.goodhart.GoldItemsSource`.
    """

    def __init__(
        self,
        dataset: Any,
        *,
        trainer: Trainer | None = None,
        eval_steps: int | None = None,
        checker: str | Callable[..., Any] = "gsm8k",
        threshold: float = 1.0,
        format_reward: str | Callable[..., Any] | None = "gsm8k_format",
        proxy_rewards: Sequence[str | Callable[..., Any]] = (),
        kl_to_ref: bool = True,
        entropy: bool = True,
        kl_items: int | None = None,
        kl_precision: str = "fp32",
        generation: str = "auto",
        merge_adapter: bool = True,
        batch_size: int = 16,
        max_new_tokens: int = 512,
        table_size: int = 8,
        eval_on_train_begin: bool = True,
        eval_on_last_step: bool = True,
        metrics_log: bool = True,
        show_progress: bool = True,
    ):
        columns = set(getattr(dataset, "column_names", None) or [])
        if "prompt" not in columns:
            raise ValueError(f"held-out dataset needs a 'prompt' column, got {sorted(columns)}")
        if len(dataset) == 0:
            raise ValueError("held-out dataset is empty")
        if eval_steps is not None and eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}")
        self.dataset = dataset
        self.checker = _as_reward(checker, "checker")
        missing = [c for c in self.checker.required_columns() if c not in columns]
        if missing:
            raise ValueError(
                f"held-out checker {self.checker.name!r} needs column(s) {missing}; the held-out set has {sorted(columns)}"
            )
        self.threshold = threshold
        self.format_reward = _as_reward(format_reward, "format_reward") if format_reward is not None else None
        self.proxy_rewards = [_as_reward(r, "proxy reward") for r in proxy_rewards]
        for reward in self.proxy_rewards:
            missing = [c for c in reward.required_columns() if c not in columns]
            if missing:
                raise ValueError(f"held-out proxy reward {reward.name!r} needs column(s) {missing}; the held-out "
                                 f"set has {sorted(columns)}")
        self.eval_steps = eval_steps
        if kl_items is not None and (isinstance(kl_items, bool) or not isinstance(kl_items, int) or kl_items < 1):
            raise ValueError(f"kl_items must be a positive integer or None (every item), got {kl_items!r}")
        self.kl_to_ref = kl_to_ref
        self.entropy = entropy
        self.kl_items = kl_items
        if kl_precision not in KL_PRECISIONS:
            raise ValueError(f"held-out kl_precision must be one of {KL_PRECISIONS}, got {kl_precision!r}")
        self.kl_precision = kl_precision
        if generation not in ("auto", "transformers", "vllm"):
            raise ValueError(f"held-out generation must be 'auto', 'transformers' or 'vllm', got {generation!r}")
        self.generation = generation
        self._reference: Any = None
        self._prompt_ids: dict[int, list[int]] = {}
        self.merge_adapter = merge_adapter
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.table_size = table_size
        self.eval_on_train_begin = eval_on_train_begin
        self.eval_on_last_step = eval_on_last_step
        self.metrics_log = metrics_log
        self.show_progress = show_progress
        self.trainer: Trainer | None = None
        self.last_items: list[bool] = []
        self.last_rewards: list[float | None] = []
        self.last_completions: list[str] = []
        self.last_step: int | None = None
        self.last_metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self._texts: list[str] | None = None
        if trainer is not None:
            self.bind(trainer)

    # ------------------------------------------------------------------------------------- wiring
    def bind(self, trainer: Trainer) -> "HeldOutAccuracyCallback":
        """Log through ``trainer``; adds this callback (and a metrics logger, see ``metrics_log``) to it."""
        from trl_lab.callbacks.metrics_log import MetricsLoggerCallback

        from transformers import EarlyStoppingCallback

        self.trainer = trainer
        callbacks = trainer.callback_handler.callbacks
        if self not in callbacks:
            trainer.add_callback(self)
        stoppers = [i for i, c in enumerate(callbacks) if isinstance(c, EarlyStoppingCallback)]
        if stoppers and callbacks.index(self) > stoppers[0]:
            # on_evaluate runs in list order: the held-out metrics must be in the evaluation metrics before an
            # EarlyStoppingCallback reads them (metric_for_best_model: heldout/accuracy).
            callbacks.remove(self)
            callbacks.insert(stoppers[0], self)
        if self.metrics_log and not any(isinstance(c, MetricsLoggerCallback) for c in callbacks):
            trainer.add_callback(MetricsLoggerCallback())
        return self

    def _resolve_eval_steps(self, args: Any, state: Any) -> int:
        if self.eval_steps is not None:
            return self.eval_steps
        steps = getattr(args, "eval_steps", None)
        if isinstance(steps, float) and 0 < steps < 1 and state.max_steps:
            return max(1, math.ceil(steps * state.max_steps))  # a ratio of the run, as TrainingArguments allows
        return int(steps) if steps else DEFAULT_EVAL_STEPS

    def _require_trainer(self) -> Trainer:
        if self.trainer is None:
            raise RuntimeError(
                "HeldOutAccuracyCallback is not bound to a trainer: use "
                "HeldOutAccuracyCallback(..., trainer=trainer) or callback.bind(trainer)"
            )
        return self.trainer

    # ------------------------------------------------------------------------------------- events
    def on_train_begin(self, args, state, control, **kwargs):
        self._require_trainer()
        if self.eval_on_train_begin and state.global_step != self.last_step:
            self._evaluate_and_log(args, state, control, kwargs.get("model"))

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if step == self.last_step:
            return
        due = step % self._resolve_eval_steps(args, state) == 0
        last = self.eval_on_last_step and state.max_steps and step >= state.max_steps
        if due or last:
            self._evaluate_and_log(args, state, control, kwargs.get("model"))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        """Put the held-out results into the trainer's evaluation metrics, as ``eval_heldout/...``.

        So ``metric_for_best_model: heldout/accuracy`` (``load_best_model_at_end``, ``save_strategy: best``) and
        transformers' ``EarlyStoppingCallback`` work on them: ``Trainer.evaluate`` returns the dict its callbacks
        received. The results are those of this step's held-out evaluation; when there is none yet (an
        evaluation off the held-out schedule), the held-out set is evaluated now.
        """
        if metrics is None:
            return
        if self.last_step != state.global_step or not self.last_metrics:
            self._evaluate_and_log(args, state, control, kwargs.get("model"))
        runtime = next((k for k in metrics if k.endswith("_runtime")), "eval_runtime")
        prefix = runtime[: -len("runtime")]
        metrics.update({f"{prefix}{k}": v for k, v in self.last_metrics.items()})

    # --------------------------------------------------------------------------------- evaluation
    def evaluate(self, model: Any = None, step: int | None = None) -> dict[str, float]:
        """Evaluate the held-out set now with ``model`` (default: the trainer's); returns the ``heldout/*`` metrics.

        Updates ``last_items``, ``last_rewards``, ``last_completions``, ``last_step``, ``last_metrics`` and ``history``;
        logs nothing.
        """
        trainer = self._require_trainer()
        accelerator = trainer.accelerator
        model = model if model is not None else trainer.model_wrapped
        tokenizer = trainer.processing_class
        tokenizer = getattr(tokenizer, "tokenizer", tokenizer)  # a processor wraps its tokenizer
        step = trainer.state.global_step if step is None else step
        n, rank, world = len(self.dataset), accelerator.process_index, accelerator.num_processes
        if self._texts is None:
            self._texts = [prompt_text(p, tokenizer) for p in self.dataset["prompt"]]
        mine = list(range(rank, n, world))

        start = time.perf_counter()
        progress = None
        if self.show_progress and accelerator.is_main_process:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(mine), desc=f"held-out eval @ step {step}", unit="item", leave=False)
        with _generation_mode(model, accelerator, args=trainer.args) as gen_model:
            if self._uses_vllm(trainer):
                ids, texts = generate_greedy_vllm(trainer, tokenizer, [self._texts[i] for i in mine],
                                                  max_new_tokens=self.max_new_tokens, per_process=math.ceil(n / world))
                if progress is not None:
                    progress.update(len(mine))
            else:
                with self._decoder(trainer, gen_model) as decoder:
                    ids, texts = generate_greedy(
                        decoder,
                        tokenizer,
                        [self._texts[i] for i in mine],
                        max_new_tokens=self.max_new_tokens,
                        batch_size=self.batch_size,
                        progress=progress,
                    )
            measure = self.kl_to_ref or self.entropy
            kls = self._token_stats(gen_model, tokenizer, mine, ids, step) if measure else [None] * len(mine)
        if progress is not None:
            progress.close()
        rewards, formats, proxies, stricts = self._score(mine, ids, texts, trainer.state)
        eos_ids = _eos_ids(gen_model, tokenizer)
        contents = [c[:-1] if c and c[-1] in eos_ids else c for c in ids]

        from accelerate.utils import gather_object

        local = [(i, t, len(c), r, f, p, k, body, sc) for i, t, c, r, f, p, k, body, sc
                 in zip(mine, texts, ids, rewards, formats, proxies, kls, contents, stricts, strict=True)]
        rows = sorted(gather_object(local) if world > 1 else local, key=lambda row: row[0])
        if [row[0] for row in rows] != list(range(n)):
            raise RuntimeError(f"held-out gather returned {len(rows)} results for {n} items")  # never silently skew
        self.last_completions = [row[1] for row in rows]
        self.last_rewards = [row[3] for row in rows]
        self.last_items = [r is not None and r >= self.threshold for r in self.last_rewards]
        self.last_step = step
        accuracy = sum(self.last_items) / n
        entry = {
            "step": step,
            "accuracy": accuracy,
            "stderr": _binomial_stderr(accuracy, n),
            "mean_length": sum(row[2] for row in rows) / n,
            "format_rate": (
                sum(row[4] or 0.0 for row in rows) / n if self.format_reward is not None else float("nan")
            ),
            "n": n,
            "seconds": time.perf_counter() - start,
        }
        self.history.append(entry)
        if accelerator.is_main_process:
            self._write_table(trainer, step, rows)
        metrics = {
            "heldout/accuracy": entry["accuracy"],
            "heldout/accuracy_stderr": entry["stderr"],
            "heldout/mean_length": entry["mean_length"],
            "heldout/n": float(n),
            "heldout/eval_seconds": entry["seconds"],
        }
        if self.format_reward is not None:
            metrics["heldout/format_rate"] = entry["format_rate"]
        measured = [row[6] for row in rows if row[6] is not None]
        tokens = sum(kl[2] for kl in measured)
        if self.kl_to_ref:
            entry["kl_to_ref"] = metrics["heldout/kl_to_ref"] = sum(kl[0] for kl in measured) / tokens if tokens else 0.0
        if self.entropy:
            entry["entropy"] = metrics["heldout/entropy"] = sum(kl[1] for kl in measured) / tokens if tokens else 0.0
        entry["repetition"] = metrics["heldout/repetition"] = sum(repeated_ngram_fraction(row[7], 3) for row in rows) / n
        entry["distinct_2"] = metrics["heldout/distinct_2"] = distinct_n([row[7] for row in rows], 2)
        entry["distinct_answers"] = metrics["heldout/distinct_answers"] = distinct_answer_share([row[7] for row in rows])
        entry["strict_accuracy"] = metrics["heldout/strict_accuracy"] = sum(row[8] for row in rows) / n
        for k, reward in enumerate(self.proxy_rewards):
            values = [row[5][k] for row in rows if row[5][k] is not None]
            entry[f"proxy/{reward.name}"] = metrics[f"heldout/proxy/{reward.name}"] = (
                sum(values) / len(values) if values else float("nan"))
        self.last_metrics = dict(metrics)
        return metrics

    @contextlib.contextmanager
    def _decoder(self, trainer: Trainer, gen_model: Any) -> Any:
        """What decodes the held-out answers: the trainer's low-precision rollout copy when it has one (trl_lab's
        ``GRPOTrainer`` with ``generation_dtype``), so held-out answers decode as the rollouts do at every
        evaluation; else ``gen_model``, its adapter merged for decoding only (the KL monitor needs it unmerged)."""
        get_sampler = getattr(trainer, "rollout_sampler", None)
        sampler = get_sampler() if callable(get_sampler) else None
        if sampler is not None:
            with sampler.generating(gen_model) as copy:
                yield copy
        elif self.merge_adapter:
            with merged_lora(gen_model):
                yield gen_model
        else:
            yield gen_model

    def _uses_vllm(self, trainer: Trainer) -> bool:
        available = bool(getattr(trainer, "use_vllm", False)) and getattr(trainer, "vllm_generation", None) is not None
        if self.generation == "vllm" and not available:
            raise ValueError("held-out generation='vllm' but the trainer has no TRL vLLM engine (set use_vllm=True)")
        return available and self.generation != "transformers"

    def _kl_autocast(self, model: Any) -> Any:
        """The autocast context of the KL monitor's passes (``kl_precision``); a null context for fp32."""
        args = getattr(self.trainer, "args", None)
        bf16 = self.kl_precision == "bf16" or (self.kl_precision == "train" and bool(getattr(args, "bf16", False)))
        if not bf16:
            return contextlib.nullcontext()
        return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16)

    def _token_stats(self, model: Any, tokenizer: Any, indices: list[int], ids: list[list[int]],
                     step: int) -> list[tuple[float | None, float, int] | None]:
        """Per item of ``indices``: (KL sum or None, entropy sum, tokens), or None for items past ``kl_items``."""
        from trl_lab.callbacks import kl_monitor
        from trl_lab.callbacks.kl_monitor import frozen_copy, reference_for

        if self.kl_to_ref and self._reference is None:
            self._reference = reference_for(model, getattr(self.trainer, "ref_model", None))
            if self._reference is None:
                logger.warning(
                    "heldout/kl_to_ref: the model has no reference (no ref_model, no PEFT adapter), so a frozen copy "
                    "of it is kept as the reference%s (pass kl_to_ref=False to save the memory)",
                    "" if step == 0 else f"; it is the model at step {step}, not the initial one",
                )
                self._reference = frozen_copy(model)
        measured = [k for k, i in enumerate(indices) if self.kl_items is None or i < self.kl_items]
        if not measured:
            return [None] * len(indices)
        for k in measured:  # the same prompts at every evaluation: tokenized once, as generate_greedy encodes them
            i = indices[k]
            if i not in self._prompt_ids:
                self._prompt_ids[i] = tokenizer(self._texts[i], add_special_tokens=False)["input_ids"]
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        with self._kl_autocast(model):
            kls = kl_monitor.token_kl_entropy(
                model, self._reference if self.kl_to_ref else None, [self._prompt_ids[indices[k]] for k in measured],
                [ids[k] for k in measured], pad_token_id=pad, batch_size=max(1, min(self.batch_size, 4)))
        out: list[tuple[float | None, float, int] | None] = [None] * len(indices)
        for k, kl in zip(measured, kls):
            out[k] = kl
        return out

    def _score(
        self, indices: list[int], ids: list[list[int]], texts: list[str], state: Any
    ) -> tuple[list[float | None], list[float | None], list[tuple[float | None, ...]], list[bool]]:
        if not indices:
            return [], [], [], []
        rows = self.dataset.select(indices)
        prompts = list(rows["prompt"])
        completions: list[Any] = [
            [{"role": "assistant", "content": t}] if not isinstance(p, str) else t for p, t in zip(prompts, texts)
        ]
        columns = {c: list(rows[c]) for c in rows.column_names if c != "prompt"}
        call = dict(prompts=prompts, completions=completions, completion_ids=ids, trainer_state=state, **columns)
        rewards = self.checker(**call)
        formats = self.format_reward(**call) if self.format_reward is not None else [None] * len(indices)
        proxies = list(zip(*(reward(**call) for reward in self.proxy_rewards))) or [()] * len(indices)
        stricts = strict_correct([r is not None and r >= self.threshold for r in rewards], completions)
        return rewards, formats, proxies, stricts

    def _write_table(self, trainer: Trainer, step: int, rows: list[tuple]) -> None:
        k = min(self.table_size, len(rows))
        if k <= 0:
            return
        records = []
        for i, text, length, reward, fmt, proxies, kl, body, strict in rows[:k]:
            item = self.dataset[i]
            prompt = item["prompt"]
            records.append(
                {
                    "step": step,
                    "index": i,
                    "prompt": _prompt_text(prompt),
                    "answer": item.get("answer"),
                    "completion": text,
                    "reward": reward,
                    "correct": reward is not None and reward >= self.threshold,
                    "format": fmt,
                    "length": length,
                    "strict_correct": strict,
                    "repetition": repeated_ngram_fraction(body, 3),
                    **({"kl_to_ref": kl[0] / kl[2] if kl[2] else 0.0} if kl is not None and kl[0] is not None else {}),
                    **({"entropy": kl[1] / kl[2] if kl[2] else 0.0} if kl is not None and self.entropy else {}),
                    **{f"proxy/{r.name}": v for r, v in zip(self.proxy_rewards, proxies)},
                }
            )
        folder = Path(trainer.args.output_dir) / "heldout"
        folder.mkdir(parents=True, exist_ok=True)
        with (folder / f"step_{step:06d}.jsonl").open("w") as f:
            for record in records:
                f.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
        _log_table(trainer, records)

    def _evaluate_and_log(self, args: Any, state: Any, control: Any, model: Any) -> None:
        trainer = self._require_trainer()
        metrics = self.evaluate(model, step=state.global_step)
        # transformers' log, not TRL's: TRL's would swallow (and clear) its pending training metrics.
        # Trainer.log runs the on_log event, which clears control.should_log: keep the step's own log due.
        should_log = control.should_log
        Trainer.log(trainer, metrics)
        control.should_log = trainer.control.should_log = should_log


class _generation_mode:
    """Unwrapped model in eval mode under ``torch.no_grad()``; its train/eval mode is restored on exit."""

    def __init__(self, model: Any, accelerator: Any, args: Any):
        self.model, self.accelerator, self.args = model, accelerator, args

    def __enter__(self) -> Any:
        from trl.models.utils import unwrap_model_for_generation

        unwrapped = self.accelerator.unwrap_model(self.model)
        self._was_training = unwrapped.training
        self._unwrapped = unwrapped
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()
        if hasattr(unwrapped, "gradient_checkpointing_disable"):
            # Also gathers DeepSpeed ZeRO-3 weights and turns gradient checkpointing off for generation.
            self._ctx = unwrap_model_for_generation(
                self.model,
                self.accelerator,
                gradient_checkpointing_kwargs=getattr(self.args, "gradient_checkpointing_kwargs", None),
            )
            gen_model = self._ctx.__enter__()
        else:
            self._ctx, gen_model = None, unwrapped
        gen_model.eval()
        return gen_model

    def __exit__(self, *exc: Any) -> None:
        try:
            if self._ctx is not None:
                self._ctx.__exit__(*exc)
        finally:
            self._unwrapped.train(self._was_training)
            self._no_grad.__exit__(*exc)


def _prompt_text(prompt: Any) -> str:
    """The question of a prompt: the last user message of a conversation, or the text itself."""
    if isinstance(prompt, str):
        return prompt
    users = [m for m in prompt if m.get("role") == "user"] or list(prompt)
    content = users[-1].get("content") if users else ""
    return content if isinstance(content, str) else json.dumps(content, ensure_ascii=False, default=str)


def _log_table(trainer: Trainer, records: list[dict[str, Any]]) -> None:
    """A W&B / trackio table of the table completions when such a logger is on (best effort)."""
    report_to = trainer.args.report_to or []
    backends = []
    try:
        if "wandb" in report_to:
            import wandb

            if wandb.run is not None:
                backends.append(wandb)
        if "trackio" in report_to:
            import trackio

            backends.append(trackio)
        if not backends:
            return
        import pandas as pd

        df = pd.DataFrame(records)
        for backend in backends:
            backend.log({"heldout/completions": backend.Table(dataframe=df)})
    except Exception as exc:  # optional: never fail training over a table
        logger.warning("could not log the held-out completions table: %s", exc)
