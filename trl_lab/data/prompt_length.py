"""Prompts too long for the model, found before training.

One 100 kB question makes every rollout that draws it run at the model's full context (minutes on a CPU, with only
transformers' "friendly reminder" to say why). :func:`check_prompt_lengths` counts each prompt's tokens exactly as TRL's
``GRPOTrainer`` tokenizes it (``apply_chat_template(add_generation_prompt=True)`` for conversations, the plain
tokenizer otherwise) and refuses rows over the limit, naming the first one; ``drop=True`` drops them with a warning
instead. Over-long prompts are not truncated: a GSM8K question cut short is a different problem, and its reference
answer no longer belongs to it. :func:`default_prompt_limit` is the model's context length minus the completion
budget.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["PromptTooLongError", "check_prompt_lengths", "context_length", "default_prompt_limit",
           "prompt_token_counts"]

_BATCH = 256


class PromptTooLongError(ValueError):
    """A prompt has more tokens than the limit."""


def context_length(model_config: Any, tokenizer: Any = None) -> int | None:
    """The model's context length (``max_position_embeddings`` and its aliases), else the tokenizer's
    ``model_max_length`` when it is a real number; ``None`` when neither says."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model_config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 10**7 else None  # transformers' "no limit" is ~1e30


def default_prompt_limit(model_config: Any, tokenizer: Any, max_completion_length: int | None) -> int | None:
    """Context length minus ``max_completion_length`` (the room a rollout needs after the prompt)."""
    context = context_length(model_config, tokenizer)
    if context is None:
        return None
    limit = context - (max_completion_length or 0)
    if limit < 1:
        raise ValueError(f"max_completion_length is {max_completion_length}, but the model's context is {context} "
                         "tokens: no room is left for a prompt; lower max_completion_length")
    return limit


def prompt_token_counts(prompts: list[Any], tokenizer: Any, **chat_template_kwargs: Any) -> list[int]:
    """Tokens of each prompt as TRL's GRPOTrainer tokenizes it for generation."""
    counts: list[int] = []
    for start in range(0, len(prompts), _BATCH):
        batch = prompts[start:start + _BATCH]
        if batch and isinstance(batch[0], list):  # conversational
            ids = tokenizer.apply_chat_template(conversation=batch, add_generation_prompt=True, tokenize=True,
                                                return_dict=True, **chat_template_kwargs)["input_ids"]
        else:
            ids = tokenizer(text=batch)["input_ids"]
        counts.extend(len(x) for x in ids)
    return counts


def check_prompt_lengths(dataset: Any, tokenizer: Any, limit: int, *, what: str, flag: str, drop: bool = False,
                         **chat_template_kwargs: Any) -> Any:
    """``dataset`` when every ``prompt`` has at most ``limit`` tokens; else :class:`PromptTooLongError` naming the first
    over-long row of ``what`` (e.g. "the training set"), its size, the count and ``flag``, the setting to change. With
    ``drop`` the over-long rows are dropped (a warning says how many) and the rest returned."""
    counts = prompt_token_counts(list(dataset["prompt"]), tokenizer, **chat_template_kwargs)
    long_rows = [i for i, n in enumerate(counts) if n > limit]
    if not long_rows:
        return dataset
    first = long_rows[0]
    question = dataset[first]["question"] if "question" in dataset.column_names else str(dataset[first]["prompt"])
    snippet = " ".join(question.split())
    snippet = snippet if len(snippet) <= 60 else snippet[:59] + "…"
    message = (f"{len(long_rows)} prompt(s) of {what} have more than {limit} tokens; the first is row {first} "
               f"({counts[first]} tokens, {len(question)} characters: {snippet!r})")
    if not drop:
        raise PromptTooLongError(f"{message}. Remove or shorten them, raise the limit ({flag}), or drop them "
                                 "(--long_prompts drop)")
    logger.warning("%s; dropping them (--long_prompts drop).", message)
    keep = set(long_rows)
    return dataset.select([i for i in range(len(counts)) if i not in keep])
