"""One loaded scalar reward model that scores (prompt, completion) pairs: what RL and the audit both call.

:class:`ScalarRewardModel` joins the three lower pieces of this wing: a classifier loaded by
:func:`~trl_lab.reward_models.loading.load_sequence_classifier` (one output), inputs rendered as TRL's
``RewardTrainer`` trained it (:class:`~trl_lab.reward_models.inputs.RewardModelInputs`) and length-sorted batched
scoring (:class:`~trl_lab.reward_models.loading.SequenceClassifier`). It returns raw scores: normalising, clipping
and ensembling are the ``learned_rm`` reward plugin's business (:mod:`trl_lab.rewards.learned_rm`).

``settings`` records everything the scorer was loaded with that can change a score (device, dtype, 4-bit, the
rendering options, the batch size); the audit gate keys its cached verdicts on it, so a verdict reached with one
setting is never reused for another.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from trl_lab.reward_models.inputs import RewardModelInputs
from trl_lab.reward_models.loading import LoadOptions, SequenceClassifier, load_sequence_classifier

__all__ = ["ScalarRewardModel", "compare_tokenizers"]


class ScalarRewardModel:
    """A loaded reward model: renders pairs, scores them in batches, returns one raw float per pair.

    Calling it as ``scorer(prompts=..., completions=...)`` is :meth:`score`, the scorer interface of
    :func:`trl_lab.reward_models.audit.audit_reward_model`.
    """

    def __init__(self, classifier: SequenceClassifier, inputs: RewardModelInputs, source: str,
                 settings: dict[str, Any] | None = None) -> None:
        self.classifier = classifier
        self.inputs = inputs
        self.source = source
        self.settings = dict(settings or {})

    @classmethod
    def load(cls, path: str | os.PathLike, *, options: LoadOptions = LoadOptions(), batch_size: int = 32,
             max_length: int | None = 1024, with_prompt: bool = True, append_eos: bool = True,
             chat_template_kwargs: dict[str, Any] | None = None) -> ScalarRewardModel:
        """Load the RM at ``path`` (hub id, directory or adapter directory); it must have one output."""
        model, tokenizer = load_sequence_classifier(str(path), num_labels=1, options=options)
        chat_template_kwargs = dict(chat_template_kwargs or {})
        inputs = RewardModelInputs(tokenizer, max_length=max_length, with_prompt=with_prompt, append_eos=append_eos,
                                   chat_template_kwargs=chat_template_kwargs, plugin=options.plugin)
        classifier = SequenceClassifier(model, tokenizer, batch_size=batch_size)
        loading = {k: v for k, v in asdict(options).items() if k not in ("plugin", "key")}
        settings = {**loading, "device": str(classifier.device), "batch_size": batch_size, "max_length": max_length,
                    "with_prompt": with_prompt, "append_eos": append_eos, "chat_template_kwargs": chat_template_kwargs}
        return cls(classifier, inputs, str(path), settings)

    @property
    def tokenizer(self) -> Any:
        return self.classifier.tokenizer

    def score(self, prompts: Sequence[Any] | None, completions: Sequence[Any]) -> list[float]:
        """Raw scalar scores, one per (prompt, completion)."""
        ids = self.inputs.encode(prompts, completions)
        return self.classifier.logits(ids)[:, 0].tolist()

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (), **_: Any) -> list[float]:
        return self.score(prompts, completions)

    def __repr__(self) -> str:
        return f"ScalarRewardModel({self.source!r})"


def compare_tokenizers(rm_tokenizer: Any, policy_tokenizer: Any) -> list[str]:
    """What differs between two tokenizers (vocabulary, special tokens, chat template); empty if nothing."""
    diffs = []
    if rm_tokenizer.get_vocab() != policy_tokenizer.get_vocab():
        diffs.append(f"vocabulary ({len(rm_tokenizer)} vs {len(policy_tokenizer)} tokens)")
    for attr in ("bos_token", "eos_token", "pad_token"):
        a, b = getattr(rm_tokenizer, attr, None), getattr(policy_tokenizer, attr, None)
        if a != b:
            diffs.append(f"{attr} ({a!r} vs {b!r})")
    if getattr(rm_tokenizer, "chat_template", None) != getattr(policy_tokenizer, "chat_template", None):
        diffs.append("chat template")
    return diffs
