"""Label-free signals on a set of answers: how repetitive and how varied they are, and whether they end well-formed.

Reward-hacked policies drift toward long, formulaic, repetitive answers; these numbers put that drift on the same
fixed held-out answers as accuracy (:class:`~trl_lab.callbacks.HeldOutAccuracyCallback` logs them):

* :func:`repeated_ngram_fraction`: within one answer, the share of its n-grams that already occurred earlier in it
  (0 for an answer that never repeats itself, close to 1 for a loop);
* :func:`distinct_n`: across all answers, distinct n-grams over all n-grams (Li et al., 2016), low when every
  answer says the same thing;
* :func:`distinct_answer_share`: the share of answers that are distinct whole answers -- what falls when a policy
  collapses to one stock reply on most prompts (a short reply repeated on 166 of 256 prompts barely moves the
  pooled ``distinct_n``: its few n-grams weigh little against the longer varied answers);
* :func:`strict_correct`: correct *and* ending in a well-formed ``#### N`` line (the GSM8K format check of
  :func:`trl_lab.rewards.gsm8k.gsm8k_format`), so format learning is not counted as reasoning.

Tokens are any hashable items: the callback passes generated token ids (EOS removed).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["distinct_answer_share", "distinct_n", "repeated_ngram_fraction", "strict_correct"]


def _ngrams(tokens: Sequence[Hashable], n: int) -> list[tuple[Hashable, ...]]:
    if n < 1:
        raise ValueError(f"n-gram size must be >= 1, got {n}")
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def repeated_ngram_fraction(tokens: Sequence[Hashable], n: int = 3) -> float:
    """Share of the answer's n-grams that repeat an earlier n-gram of the same answer (0.0 with no n-gram)."""
    grams = _ngrams(tokens, n)
    return (len(grams) - len(set(grams))) / len(grams) if grams else 0.0


def distinct_n(answers: Sequence[Sequence[Hashable]], n: int = 2) -> float:
    """Distinct n-grams over all n-grams of all ``answers`` (1.0 when there is no n-gram at all)."""
    grams = [g for tokens in answers for g in _ngrams(tokens, n)]
    return len(set(grams)) / len(grams) if grams else 1.0


def distinct_answer_share(answers: Sequence[Sequence[Hashable]]) -> float:
    """Distinct answers over answers (1.0 for no answer): 1.0 when no two answers are the same."""
    return len({tuple(tokens) for tokens in answers}) / len(answers) if answers else 1.0


def strict_correct(correct: Sequence[bool], completions: Sequence[Any]) -> list[bool]:
    """Per answer: ``correct`` and its last non-empty line a well-formed ``#### <number>`` agreeing with the answer."""
    from trl_lab.rewards.gsm8k import gsm8k_format

    if len(correct) != len(completions):
        raise ValueError(f"strict_correct: {len(correct)} verdicts for {len(completions)} completions")
    formats = gsm8k_format(list(completions))
    return [bool(c) and f >= 1.0 for c, f in zip(correct, formats)]
