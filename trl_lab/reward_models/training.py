"""Reward-model training: thin subclasses of TRL's ``RewardConfig`` and ``RewardTrainer``.

What TRL already does is left to it: LoRA/QLoRA through ``peft_config`` (build it with TRL's
``get_peft_config(ModelConfig)``) and ``quantization_config``; the Bradley-Terry loss with an optional per-pair
``margin`` column (loss ``-logsigmoid(r_chosen - r_rejected - margin)``); gradient clipping (``max_grad_norm``,
from ``TrainingArguments``); right padding in its collator; ``config.pad_token_id`` set from the tokenizer.

What this module adds:

* a model given by name goes through :func:`trl_lab.embedded_model.resolve_model_path` (``smollm2-135m-instruct``
  works offline);
* ``RewardConfig.margin_column``: use a column of another name as TRL's ``margin``;
* a LoRA config whose ``task_type`` is not ``SEQ_CLS`` is refused (the score head would be neither trained nor
  saved in the adapter, and ``learned_rm`` could not load it);
* a check, on real training pairs, that last-non-pad pooling is right: the scores of a right-padded batch equal
  the scores of each sequence alone (:func:`check_pooling`). A ``config.pad_token_id`` other than the padding token,
  or a model that pools elsewhere, fails here, naming the tokenizer and the gap, before any step is taken;
* the tokenizer is set to ``padding_side="right"`` before transformers' ``Trainer.save_model`` saves it beside the
  model, so ``learned_rm`` loads the output directory as it is.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import trl

__all__ = ["RewardConfig", "RewardTrainer", "check_pooling", "lora_on_last_layers", "lora_on_last_layers_of"]


@dataclass
class RewardConfig(trl.RewardConfig):
    """TRL's ``RewardConfig`` plus ``margin_column`` and ``check_pooling``."""

    margin_column: str | None = field(
        default=None,
        metadata={"help": "Dataset column holding a per-pair margin (renamed to TRL's `margin`). None: no margin "
                          "unless the dataset already has a `margin` column."},
    )
    check_pooling: bool = field(
        default=True,
        metadata={"help": "Before training, check that a right-padded batch scores like unpadded singles."},
    )
    pooling_atol: float = field(default=1e-4, metadata={"help": "Tolerance of the pooling check."})


def lora_on_last_layers(peft_config: Any, num_hidden_layers: int, n: int) -> Any:
    """Restrict a LoRA config to the last ``n`` of ``num_hidden_layers`` decoder layers (peft's ``layers_to_transform``).

    The backward pass then stops at the lowest adapted layer: on SmolLM2-135M (30 layers) with ``n=8`` a
    training step takes about 0.45x the time of LoRA on every layer (measured on CPU, 16 sequences of 220 tokens).
    The score head is trained either way. ``target_modules`` must be a list of module names (peft refuses
    ``layers_to_transform`` with ``all-linear``).
    """
    if not 1 <= n <= num_hidden_layers:
        raise ValueError(f"reward_training: lora_last_n_layers must be in [1, {num_hidden_layers}] for this model, "
                         f"got {n}")
    targets = peft_config.target_modules
    if isinstance(targets, str) or targets is None or "all-linear" in targets:
        raise ValueError("reward_training: lora_last_n_layers needs lora_target_modules as a list of module names "
                         f"(e.g. q_proj k_proj v_proj o_proj gate_proj up_proj down_proj), got {targets!r}")
    peft_config.layers_to_transform = list(range(num_hidden_layers - n, num_hidden_layers))
    return peft_config


def lora_on_last_layers_of(peft_config: Any, model: str, n: int, *, trust_remote_code: bool = False) -> Any:
    """:func:`lora_on_last_layers` for the model ``model`` (an embedded name, hub id or directory) whose layer count is
    read from its config: what a job's ``--lora_last_n_layers`` does. ``peft_config`` None (no ``--use_peft``) is
    refused: the flag restricts the LoRA adapter."""
    if peft_config is None:
        raise ValueError("lora_last_n_layers is set but use_peft is not: it restricts the LoRA adapter")
    from transformers import AutoConfig

    from trl_lab.embedded_model import resolve_model_path

    config = AutoConfig.from_pretrained(resolve_model_path(model), trust_remote_code=trust_remote_code)
    return lora_on_last_layers(peft_config, config.num_hidden_layers, n)


def check_pooling(model: Any, pad_token_id: int, sequences: Sequence[Sequence[int]], *,
                  atol: float = 1e-4) -> float:
    """Largest |score(padded batch) - score(alone)| over ``sequences``; ValueError when above ``atol``.

    ``sequences`` should differ in length, so that some of them are padded in the batch.
    """
    if len(sequences) < 2:
        raise ValueError("check_pooling: needs at least two sequences")
    if len({len(s) for s in sequences}) < 2:
        raise ValueError("check_pooling: the sequences all have the same length, so none would be padded")
    from trl.trainer.utils import pad

    device = next(model.parameters()).device
    seqs = [torch.as_tensor(list(s), dtype=torch.long) for s in sequences]
    ids = pad(seqs, padding_value=pad_token_id, padding_side="right")
    mask = pad([torch.ones_like(s) for s in seqs], padding_value=0, padding_side="right")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            batched = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
            batched = batched.float()[:, 0].cpu()
            alone = torch.stack([
                model(input_ids=torch.as_tensor([list(s)], device=device), use_cache=False).logits.float()[0, 0].cpu()
                for s in sequences
            ])
    finally:
        model.train(was_training)
    gap = float((batched - alone).abs().max())
    if not gap <= atol:
        raise ValueError(
            f"reward_training: last-non-pad pooling is wrong: a right-padded batch scores up to {gap:.3g} away from "
            f"the same sequences scored alone (pad_token_id={pad_token_id}, config.pad_token_id="
            f"{getattr(model.config, 'pad_token_id', None)}). Does config.pad_token_id name the padding token, "
            "and does the model pool on the last non-pad token?"
        )
    return gap


def _rename_margin(dataset: Any, column: str | None, name: str) -> Any:
    if dataset is None or column is None or column == "margin":
        return dataset
    if isinstance(dataset, dict):
        return {k: _rename_margin(v, column, f"{name}[{k!r}]") for k, v in dataset.items()}
    columns = list(dataset.column_names or [])
    if column not in columns:
        raise ValueError(f"reward_training: `margin_column` {column!r} is not a column of {name} (columns: {columns})")
    if "margin" in columns:
        raise ValueError(f"reward_training: {name} has both `margin` and `margin_column` {column!r}; keep one")
    return dataset.rename_column(column, "margin")


class RewardTrainer(trl.RewardTrainer):
    """TRL's ``RewardTrainer`` with embedded model names, a margin column, a SEQ_CLS LoRA check and a pooling check."""

    def __init__(self, model: Any, args: RewardConfig | None = None, train_dataset: Any = None,
                 eval_dataset: Any = None, processing_class: Any = None, peft_config: Any = None,
                 **kwargs: Any) -> None:
        if isinstance(model, (str, os.PathLike)):
            from trl_lab.embedded_model import resolve_model_path

            model = resolve_model_path(str(model))
        if peft_config is not None:
            task = getattr(peft_config, "task_type", None)
            if str(getattr(task, "value", task)) != "SEQ_CLS":
                raise ValueError(
                    f"reward_training: peft_config.task_type is {getattr(task, 'value', task)!r}; a reward model "
                    "needs SEQ_CLS (--lora_task_type SEQ_CLS) so the score head is trained and saved with the adapter"
                )
        margin_column = getattr(args, "margin_column", None)
        train_dataset = _rename_margin(train_dataset, margin_column, "train_dataset")
        eval_dataset = _rename_margin(eval_dataset, margin_column, "eval_dataset")
        super().__init__(model=model, args=args, train_dataset=train_dataset, eval_dataset=eval_dataset,
                         processing_class=processing_class, peft_config=peft_config, **kwargs)
        self.processing_class.padding_side = "right"
        self.pooling_gap: float | None = None
        if getattr(self.args, "check_pooling", True):
            self.pooling_gap = self._check_pooling()

    def _check_pooling(self) -> float | None:
        seqs: list[list[int]] = []
        for example in self.train_dataset:
            for key in ("chosen_ids", "rejected_ids"):
                if all(len(example[key]) != len(s) for s in seqs):
                    seqs.append(list(example[key]))
            if len(seqs) >= 3:
                break
        if len(seqs) < 2:
            return None  # every training sequence has the same length: padding never happens
        return check_pooling(self.model, self.processing_class.pad_token_id, seqs,
                             atol=getattr(self.args, "pooling_atol", 1e-4))
