"""A sequence-classification model loaded for scoring: from a hub id, a local directory or a PEFT adapter.

:func:`load_sequence_classifier` loads ``AutoModelForSequenceClassification`` and its tokenizer on a
device of its own (which may differ from the policy's), in a chosen dtype or in 4-bit, with
safetensors weights only and ``trust_remote_code`` off unless asked. A directory holding
``adapter_config.json`` is a PEFT adapter: its base model is loaded and the adapter merged in (kept
unmerged in 4-bit). Every problem found before the weights load (a path that does not exist, a wrong
number of outputs, a classification head that would be randomly initialised) is a ``ValueError``
naming the plugin and the config key.

:class:`SequenceClassifier` scores lists of token ids in length-sorted, right-padded batches under
``torch.inference_mode()`` and returns the logits in input order. The model pools on the last
non-pad token itself (``config.pad_token_id`` is always set), so right padding gives the same score as
scoring each sequence alone.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from trl_lab.quantization import check_bitsandbytes

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
# A hub id: "name" or "org/name" (letters, digits, - _ .), not a filesystem-looking path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class LoadOptions:
    """Where and how to load a classifier; ``plugin``/``key`` name the culprit in errors."""

    device: str | None = None
    dtype: str | None = None
    load_in_4bit: bool = False
    base_model: str | None = None
    trust_remote_code: bool = False
    plugin: str = "sequence_classifier"
    key: str = "path"


def resolve_dtype(dtype: str | None, *, plugin: str) -> torch.dtype | None:
    """``None``/``"auto"`` -> None (the checkpoint's dtype), else the torch dtype; raises naming ``dtype``."""
    if dtype is None or dtype == "auto":
        return None
    if dtype not in _DTYPES:
        raise ValueError(f"{plugin}: `dtype` must be one of auto, {', '.join(sorted(_DTYPES))}; got {dtype!r}")
    return _DTYPES[dtype]


def check_source(path: Any, *, plugin: str, key: str) -> str:
    """Return ``path`` as a string if it is an existing directory or looks like a hub id; else raise."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{plugin}: `{key}` must be a model directory or hub id, got {path!r}")
    text = os.path.expanduser(str(path))
    if os.path.exists(text):
        if not os.path.isdir(text):
            raise ValueError(f"{plugin}: `{key}` {text!r} is a file; expected a model directory or a hub id")
        return text
    if text.startswith((".", "/", "~")) or text.count("/") > 1 or not _HUB_ID.match(text):
        raise ValueError(f"{plugin}: `{key}` {text!r} does not exist (and is not a hub id)")
    return text


def is_adapter_dir(path: str) -> bool:
    """True if ``path`` is a local PEFT adapter directory (holds ``adapter_config.json``)."""
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def load_sequence_classifier(path: str, *, num_labels: int | None = None,
                             options: LoadOptions = LoadOptions()) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from a hub id, model directory or PEFT adapter directory.

    ``num_labels``: required number of outputs (1 for a reward model); a checkpoint with another count is
    refused before its weights load.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    plugin, key = options.plugin, options.key
    path = check_source(path, plugin=plugin, key=key)
    dtype = resolve_dtype(options.dtype, plugin=plugin)
    if options.device is None:
        from accelerate import PartialState

        device = str(PartialState().device)  # this process's device: its own GPU under accelerate launch
    else:
        device = options.device
    adapter = is_adapter_dir(path)
    base = path
    if adapter:
        from peft import PeftConfig

        peft_config = PeftConfig.from_pretrained(path)
        base = check_source(options.base_model or peft_config.base_model_name_or_path,
                            plugin=plugin, key="base_model" if options.base_model else f"{key} (adapter's base model)")
        if not os.path.isfile(os.path.join(path, "adapter_model.safetensors")):
            raise ValueError(f"{plugin}: adapter {path!r} has no adapter_model.safetensors (only safetensors are loaded)")
    elif options.base_model is not None:
        raise ValueError(f"{plugin}: `base_model` is only for adapter directories, and {path!r} is not one")

    config = _load(AutoConfig.from_pretrained, path if not adapter else base, plugin, key,
                   trust_remote_code=options.trust_remote_code)
    if num_labels is not None and not adapter and config.num_labels != num_labels:
        raise ValueError(
            f"{plugin}: `{key}` {path!r} has {config.num_labels} outputs (num_labels={config.num_labels}, "
            f"labels {list(config.id2label.values())}); expected num_labels={num_labels}"
            + (" (a scalar reward model)" if num_labels == 1 else "")
        )

    kwargs: dict[str, Any] = {"trust_remote_code": options.trust_remote_code, "use_safetensors": True}
    if dtype is not None:
        kwargs["dtype"] = dtype
    if adapter and num_labels is not None:
        kwargs["num_labels"] = num_labels
    if options.load_in_4bit:
        from transformers import BitsAndBytesConfig

        check_bitsandbytes(torch.device(device).type)
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype or torch.bfloat16,
            bnb_4bit_use_double_quant=True,
        )
        kwargs["device_map"] = {"": device}
    model, info = _load(AutoModelForSequenceClassification.from_pretrained, base, plugin, key,
                        output_loading_info=True, **kwargs)
    missing = list(info.get("missing_keys") or [])
    if adapter:
        from peft import PeftModel

        _check_adapter_covers(path, missing, plugin)
        model = PeftModel.from_pretrained(model, path, is_trainable=False)
        if not options.load_in_4bit:
            model = model.merge_and_unload()
    elif missing:
        raise ValueError(
            f"{plugin}: `{key}` {path!r} lacks trained weights for {sorted(missing)[:4]}: its classification head "
            "would be randomly initialised (is it a base language model rather than a trained classifier?)"
        )
    if not options.load_in_4bit:
        model.to(device)
    model.eval()

    tok_source = path if adapter and os.path.isfile(os.path.join(path, "tokenizer_config.json")) else base
    tokenizer = _load(AutoTokenizer.from_pretrained, tok_source, plugin, key,
                      trust_remote_code=options.trust_remote_code)
    if tokenizer.pad_token is None:  # as TRL's RewardTrainer: pad with EOS when there is no pad token
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ValueError(f"{plugin}: the tokenizer of {path!r} has neither a pad nor an EOS token")
    model.config.pad_token_id = tokenizer.pad_token_id  # the model pools on the last non-pad token
    tokenizer.padding_side = "right"
    return model, tokenizer


def _load(fn: Any, source: str, plugin: str, key: str, **kwargs: Any) -> Any:
    try:
        return fn(source, **kwargs)
    except (OSError, ValueError) as exc:
        where = ("this directory" if os.path.isdir(source)
                 else "the hub (it is not a local directory; as a hub id it needs the hub to be reachable)")
        raise ValueError(f"{plugin}: `{key}` {source!r}: cannot load from {where}: {exc}") from exc


def _check_adapter_covers(path: str, missing: Sequence[str], plugin: str) -> None:
    """The base model's untrained head must be saved in the adapter (``modules_to_save``)."""
    if not missing:
        return
    from safetensors import safe_open

    with safe_open(os.path.join(path, "adapter_model.safetensors"), framework="pt") as f:
        saved = list(f.keys())
    uncovered = [m for m in missing if not any(f".{m.rsplit('.', 1)[0]}." in f".{k}" for k in saved)]
    if uncovered:
        raise ValueError(
            f"{plugin}: adapter {path!r} does not hold the classification head {uncovered[:4]} that its base model "
            "lacks; it would be randomly initialised (train the adapter with task_type SEQ_CLS)"
        )


class SequenceClassifier:
    """A loaded classifier that turns lists of token ids into logits, in batches, without gradients."""

    def __init__(self, model: Any, tokenizer: Any, *, batch_size: int = 32) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"`batch_size` must be a positive integer, got {batch_size!r}")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.pad_token_id = int(tokenizer.pad_token_id)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def logits(self, ids: Sequence[Sequence[int]]) -> torch.Tensor:
        """``(len(ids), num_labels)`` float32 logits on CPU, in the order of ``ids``."""
        out = torch.empty(len(ids), self.num_labels, dtype=torch.float32)
        if not ids:
            return out
        from trl.trainer.utils import pad

        order = sorted(range(len(ids)), key=lambda i: len(ids[i]), reverse=True)  # little padding per batch
        device = self.device
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                # An empty sequence is scored as one pad token.
                seqs = [torch.as_tensor(list(ids[i]) or [self.pad_token_id], dtype=torch.long) for i in chunk]
                input_ids = pad(seqs, padding_value=self.pad_token_id, padding_side="right")
                mask = pad([torch.ones_like(s) for s in seqs], padding_value=0, padding_side="right")
                logits = self.model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits
                out[torch.as_tensor(chunk)] = logits.float().cpu()
        return out

