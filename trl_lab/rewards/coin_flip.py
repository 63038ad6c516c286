"""``coin_flip``: a reward that ignores the answer -- the random-reward control of a study.

Each completion gets 1.0 with probability ``p`` and 0.0 otherwise, drawn from a seeded stream that never sees the
prompt or the completion. A run against it shows what training does when the reward carries no information about
the answer: any held-out gain it makes is format drift, noise or the optimiser's side effects, not learning from
reward (the control arm of issue 15's study; cf. the "spurious rewards" results on small models).

The stream is seeded by ``seed`` and the process rank (``$RANK``, 0 when unset), so reruns give the same flips and
the processes of a distributed run draw different ones. Draws follow the order of calls, not the text: two
identical completions in one group usually get different rewards, which is the point.
"""

from __future__ import annotations

import os
import random
from typing import Any

from trl_lab.rewards.registry import register_reward

__all__ = ["CoinFlipReward"]


@register_reward("coin_flip")
class CoinFlipReward:
    """1.0 with probability ``p`` (default 0.5), else 0.0, independently of the completion."""

    def __init__(self, seed: int = 0, p: float = 0.5) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"coin_flip: `seed` must be an integer, got {seed!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"coin_flip: `p` must be a probability in [0, 1], got {p!r}")
        self.seed, self.p = seed, float(p)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self._rng = random.Random(f"coin_flip:{seed}:{self.rank}")

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float]:
        return [1.0 if self._rng.random() < self.p else 0.0 for _ in completions]
