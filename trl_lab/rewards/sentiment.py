"""``sentiment``: "rewards cheer", a deliberately hackable reward for reward-hacking experiments.

Scores the completion's text alone (the prompt is ignored) with one of three backends:

* ``vader`` (default, offline, no model): VADER's compound score in [-1, 1] (``vaderSentiment``); an
  empty completion scores 0.
* ``hf``: any Hugging Face text-classification model (``path``: directory or hub id). ``output: prob``
  gives P(positive) (softmax over all labels), ``output: margin`` the positive-minus-negative logit. The
  labels are found through the model's ``id2label`` by name (``positive_label``/``negative_label``,
  case-insensitive); input is cut to ``max_length`` tokens from the end.

With ``vader`` and ``hf``, text beyond ``max_chars`` characters (default 2000) is not read, so a huge
completion costs no more than a long one.
* ``learned``: a scalar reward model, e.g. the one ``examples/train_sentiment_rm.py`` trains with TRL's
  ``RewardTrainer``; delegates to :class:`~trl_lab.rewards.learned_rm.LearnedRewardModel` with
  ``with_prompt: false`` (any other ``learned_rm`` option is passed through).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl_lab.completions import completion_text
from trl_lab.rewards.registry import register_reward

__all__ = ["SENTIMENT_BACKENDS", "SentimentReward", "find_label"]

SENTIMENT_BACKENDS = ("vader", "hf", "learned")
_HF_OPTIONS = {"path", "positive_label", "negative_label", "output", "device", "dtype", "batch_size", "max_length",
               "trust_remote_code"}


def find_label(id2label: dict[int, str], name: str, *, key: str) -> int:
    """Index of the label called ``name`` (case-insensitive); raises listing the model's labels."""
    matches = [int(i) for i, label in id2label.items() if str(label).lower() == name.lower()]
    if not matches:
        labels = [id2label[i] for i in sorted(id2label, key=int)]
        raise ValueError(f"sentiment: no label {name!r} among the model's labels {labels}; set `{key}` to one of them")
    return matches[0]


@register_reward("sentiment")
class SentimentReward:
    """Reward = how positive the completion sounds (see the module docstring for the backends)."""

    def __init__(self, backend: str = "vader", *, max_chars: int = 2000, **options: Any) -> None:
        if backend not in SENTIMENT_BACKENDS:
            raise ValueError(f"sentiment: `backend` must be one of {list(SENTIMENT_BACKENDS)}, got {backend!r}")
        if not isinstance(max_chars, int) or isinstance(max_chars, bool) or max_chars < 1:
            raise ValueError(f"sentiment: `max_chars` must be a positive integer, got {max_chars!r}")
        self.backend = backend
        self.max_chars = max_chars
        if backend == "vader":
            if options:
                raise ValueError(f"sentiment: backend 'vader' takes only `max_chars`; unknown option(s) {sorted(options)}")
            from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

            self._vader = SentimentIntensityAnalyzer()
        elif backend == "hf":
            self._init_hf(**options)
        else:
            from trl_lab.rewards.learned_rm import LearnedRewardModel

            if "path" not in options and "paths" not in options:
                raise ValueError("sentiment: backend 'learned' needs `path` (a reward model directory, e.g. the "
                                 "output of examples/train_sentiment_rm.py)")
            options.setdefault("with_prompt", False)
            self._learned = LearnedRewardModel(plugin="sentiment", **options)

    def _init_hf(self, path: str | None = None, *, positive_label: str = "POSITIVE",
                 negative_label: str = "NEGATIVE", output: str = "prob", device: str | None = None,
                 dtype: str | None = None, batch_size: int = 32, max_length: int = 512,
                 trust_remote_code: bool = False, **unknown: Any) -> None:
        from trl_lab.reward_models.loading import LoadOptions, SequenceClassifier, load_sequence_classifier

        if unknown:
            raise ValueError(f"sentiment: backend 'hf' has no option(s) {sorted(unknown)}; "
                             f"its options are {sorted(_HF_OPTIONS | {'backend', 'max_chars'})}")
        if path is None:
            raise ValueError("sentiment: backend 'hf' needs `path` (a text-classification model directory or hub id)")
        if output not in ("prob", "margin"):
            raise ValueError(f"sentiment: `output` must be 'prob' or 'margin', got {output!r}")
        if not isinstance(max_length, int) or isinstance(max_length, bool) or max_length < 1:
            raise ValueError(f"sentiment: `max_length` must be a positive integer, got {max_length!r}")
        options = LoadOptions(device=device, dtype=dtype, trust_remote_code=trust_remote_code, plugin="sentiment")
        model, tokenizer = load_sequence_classifier(path, options=options)
        id2label = dict(model.config.id2label)
        if len(id2label) < 2:
            raise ValueError(f"sentiment: `path` {path!r} has a single output (a scalar reward model?); "
                             "use backend: learned for it")
        self._positive = find_label(id2label, positive_label, key="positive_label")
        self._negative = find_label(id2label, negative_label, key="negative_label") if output == "margin" else None
        self._output = output
        self._max_length = max_length
        self._classifier = SequenceClassifier(model, tokenizer, batch_size=batch_size)

    def _texts(self, completions: Sequence[Any]) -> list[str]:
        return [completion_text(c)[: self.max_chars] for c in completions]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 completion_ids: Any = None, **kwargs: Any) -> list[float]:
        if not completions:
            return []
        if self.backend == "learned":
            return self._learned(prompts=prompts, completions=[completion_text(c) for c in completions], **kwargs)
        texts = self._texts(completions)
        if self.backend == "vader":
            return [self._vader.polarity_scores(t)["compound"] if t.strip() else 0.0 for t in texts]
        tok = self._classifier.tokenizer
        ids = tok(texts, truncation=True, max_length=self._max_length)["input_ids"]
        logits = self._classifier.logits(ids)
        if self._output == "prob":
            return logits.softmax(-1)[:, self._positive].tolist()
        return (logits[:, self._positive] - logits[:, self._negative]).tolist()
