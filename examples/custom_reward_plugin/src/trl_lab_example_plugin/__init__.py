"""Example reward plugins that trl_lab discovers through the ``trl_lab.rewards`` entry point group."""

from __future__ import annotations

import re

from trl_lab import completion_text

_HEDGE = re.compile(r"\b(maybe|perhaps|either|or)\b", re.IGNORECASE)


def no_hedging(completions, **kwargs) -> list[float]:
    """1.0 for a completion that never hedges ("maybe", "perhaps", "either", "or"), else 0.0."""
    return [0.0 if _HEDGE.search(completion_text(c)) else 1.0 for c in completions]


class KeywordReward:
    """Reward ``bonus`` when a completion contains ``word`` (case-insensitive)."""

    def __init__(self, word: str, bonus: float = 1.0):
        if not word:
            raise ValueError("keyword reward: `word` must be a non-empty string")
        self.word = word.lower()
        self.bonus = float(bonus)

    def __call__(self, completions, **kwargs) -> list[float]:
        return [self.bonus if self.word in completion_text(c).lower() else 0.0 for c in completions]
