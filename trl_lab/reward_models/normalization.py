"""Normalising and clipping raw reward scores.

A learned reward model's raw scores have an arbitrary offset and scale. :class:`RewardNormalizer` maps
them to roughly zero mean and unit standard deviation, with statistics that are either

* ``fixed``: given (``mean``/``std``), computed once from a calibration set, or, when neither is given,
  computed once from the first batch scored and frozen from then on; or
* ``running``: updated with every batch (Welford's algorithm, exact over everything seen so far), the
  batch itself included before it is normalised.

:func:`clip_rewards` bounds the result. Both work on plain lists of floats.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

NORMALIZE_MODES = ("none", "fixed", "running")


class RewardNormalizer:
    """``(score - mean) / std`` with fixed or running statistics; ``mode='none'`` passes scores through."""

    def __init__(self, mode: str = "none", *, mean: float | None = None, std: float | None = None,
                 eps: float = 1e-6) -> None:
        if mode not in NORMALIZE_MODES:
            raise ValueError(f"normalize must be one of {list(NORMALIZE_MODES)}, got {mode!r}")
        if (mean is None) != (std is None):
            raise ValueError("normalize: give both `mean` and `std`, or neither")
        if std is not None and not (math.isfinite(std) and std > 0):
            raise ValueError(f"normalize: `std` must be a positive finite number, got {std!r}")
        if mean is not None and mode != "fixed":
            raise ValueError(f"normalize: `mean`/`std` are fixed statistics; they need normalize='fixed', not {mode!r}")
        self.mode = mode
        self.eps = eps
        self.count = 0
        self.mean = 0.0 if mean is None else float(mean)
        self._m2 = 0.0  # sum of squared deviations (Welford)
        self._fixed_std = None if std is None else float(std)
        self._given = mean is not None  # given statistics are never recomputed

    @property
    def ready(self) -> bool:
        """True once statistics exist (fixed mode: given or computed; running: at least one score seen)."""
        return self._given or self.count > 0

    @property
    def std(self) -> float:
        if self._fixed_std is not None:
            return self._fixed_std
        if self.count < 2:
            return 1.0
        return math.sqrt(self._m2 / self.count)

    def fit(self, scores: Sequence[float]) -> None:
        """Set fixed statistics from calibration scores (population mean and standard deviation)."""
        if not scores:
            raise ValueError("normalize: the calibration set is empty")
        self.count, self.mean, self._m2, self._fixed_std = 0, 0.0, 0.0, None
        self.update(scores)
        self._fixed_std = self.std

    def update(self, scores: Sequence[float]) -> None:
        """Add scores to the running statistics (Welford)."""
        for x in scores:
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self._m2 += delta * (x - self.mean)

    def __call__(self, scores: Sequence[float]) -> list[float]:
        """Normalise a batch of scores (updating the statistics first as the mode says)."""
        scores = [float(s) for s in scores]
        if self.mode == "none" or not scores:
            return scores
        if self.mode == "running" or not self.ready:
            if self.mode == "fixed":
                self.fit(scores)  # computed once, from the first batch, then frozen
            else:
                self.update(scores)
        mean, std = self.mean, max(self.std, self.eps)
        return [(s - mean) / std for s in scores]

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "count": float(self.count)}


def parse_clip(clip: float | Sequence[float] | None, *, key: str = "clip") -> tuple[float, float] | None:
    """``None`` | ``c`` (meaning ``[-c, c]``) | ``[low, high]`` -> ``(low, high)``; raises naming ``key``."""
    if clip is None:
        return None
    if isinstance(clip, (int, float)) and not isinstance(clip, bool):
        if not (math.isfinite(clip) and clip > 0):
            raise ValueError(f"{key}: a single bound must be a positive number, got {clip!r}")
        return (-float(clip), float(clip))
    if isinstance(clip, Sequence) and not isinstance(clip, str) and len(clip) == 2:
        low, high = (float(c) for c in clip)
        if not low < high:
            raise ValueError(f"{key}: need low < high, got {list(clip)!r}")
        return (low, high)
    raise ValueError(f"{key}: expected a number c (clip to [-c, c]) or [low, high], got {clip!r}")


def clip_rewards(scores: Sequence[float], bounds: tuple[float, float] | None) -> list[float]:
    """Clamp every score into ``bounds`` (``None``: unchanged)."""
    if bounds is None:
        return list(scores)
    low, high = bounds
    return [min(max(s, low), high) for s in scores]
