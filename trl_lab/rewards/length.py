"""``length``: rewards on completion length, in tokens or characters.

Modes (``n`` is the completion's length):

============== =========================================== =========================================
mode           reward                                      options
============== =========================================== =========================================
penalty        ``-max(0, n - target) / scale``: 0 up to     ``target`` (required), ``scale`` (default
               the target, then linearly negative          ``target``: -1 at twice the target)
brevity        ``1 - min(n, max_length) / max_length``      ``max_length`` (required)
verbosity      ``min(n, max_length) / max_length``          ``max_length`` (required); *deliberately
                                                           hackable*: rewards rambling, for experiments
soft_overlong  TRL's ``get_soft_overlong_punishment``       ``max_length`` (L_max), ``soft_cache``
               (DAPO): 0, then linear to -1 over the last  (L_cache, required)
               ``soft_cache`` units, -1 beyond
============== =========================================== =========================================

``unit: tokens`` (the default) counts with ``tokenizer`` (a path or hub id) when given, else with the
``completion_ids`` TRL's GRPOTrainer passes (the policy's own tokens, EOS included); ``unit: chars``
counts characters of the completion text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from trl_lab.completions import completion_text
from trl_lab.rewards.registry import register_reward

__all__ = ["LENGTH_MODES", "LENGTH_UNITS", "LengthReward"]

LENGTH_MODES = ("penalty", "brevity", "verbosity", "soft_overlong")
LENGTH_UNITS = ("tokens", "chars")


def _positive(value: Any, key: str, *, allow_zero: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        raise ValueError(f"length: `{key}` must be a {'non-negative' if allow_zero else 'positive'} number, "
                         f"got {value!r}")
    return float(value)


@register_reward("length")
class LengthReward:
    """A reward computed from each completion's length (see the module docstring for the modes)."""

    def __init__(self, mode: str = "penalty", *, unit: str = "tokens", tokenizer: str | None = None,
                 target: int | None = None, scale: float | None = None, max_length: int | None = None,
                 soft_cache: int | None = None, trust_remote_code: bool = False) -> None:
        if mode not in LENGTH_MODES:
            raise ValueError(f"length: `mode` must be one of {list(LENGTH_MODES)}, got {mode!r}")
        if unit not in LENGTH_UNITS:
            raise ValueError(f"length: `unit` must be one of {list(LENGTH_UNITS)}, got {unit!r}")
        if tokenizer is not None and unit != "tokens":
            raise ValueError("length: `tokenizer` counts tokens; it needs unit: tokens")
        self.mode, self.unit = mode, unit
        needs = {"penalty": {"target"}, "brevity": {"max_length"}, "verbosity": {"max_length"},
                 "soft_overlong": {"max_length", "soft_cache"}}[mode]
        given = {k for k, v in {"target": target, "scale": scale, "max_length": max_length,
                                "soft_cache": soft_cache}.items() if v is not None}
        missing, extra = needs - given, given - needs - ({"scale"} if mode == "penalty" else set())
        if missing:
            raise ValueError(f"length: mode {mode!r} needs {sorted(missing)}")
        if extra:
            raise ValueError(f"length: mode {mode!r} does not use {sorted(extra)}")
        self.target = _positive(target, "target") if target is not None else None
        self.scale = _positive(scale, "scale") if scale is not None else self.target
        self.max_length = _positive(max_length, "max_length") if max_length is not None else None
        self._overlong = None
        if mode == "soft_overlong":
            from trl.rewards import get_soft_overlong_punishment

            cache = _positive(soft_cache, "soft_cache", allow_zero=True)
            if cache >= self.max_length:  # type: ignore[operator]
                raise ValueError(f"length: `soft_cache` ({soft_cache}) must be smaller than `max_length` ({max_length})")
            self._overlong = get_soft_overlong_punishment(int(max_length), int(soft_cache))  # type: ignore[arg-type]
        self.tokenizer = None
        if tokenizer is not None:
            from transformers import AutoTokenizer

            from trl_lab.reward_models.loading import check_source

            source = check_source(tokenizer, plugin="length", key="tokenizer")
            try:
                self.tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
            except (OSError, ValueError) as exc:
                raise ValueError(f"length: `tokenizer` {source!r} cannot be loaded: {exc}") from exc

    def lengths(self, completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None) -> list[int]:
        """Length of each completion in this reward's unit."""
        if self.unit == "chars":
            return [len(completion_text(c)) for c in completions]
        if self.tokenizer is not None:
            texts = [completion_text(c) for c in completions]
            return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if completion_ids is None:
            raise ValueError("length: unit 'tokens' without a `tokenizer` option needs the `completion_ids` TRL "
                             "passes; give `tokenizer: <path or hub id>` or use unit: chars")
        if len(completion_ids) != len(completions):
            raise ValueError(f"length: {len(completion_ids)} completion_ids for {len(completions)} completions")
        return [len(ids) for ids in completion_ids]

    def __call__(self, prompts: Sequence[Any] | None = None, completions: Sequence[Any] = (),
                 completion_ids: Sequence[Sequence[int]] | None = None, **kwargs: Any) -> list[float]:
        n = self.lengths(completions, completion_ids)
        if self.mode == "penalty":
            return [-max(0.0, x - self.target) / self.scale for x in n]  # type: ignore[operator]
        if self.mode == "brevity":
            return [1.0 - min(x, self.max_length) / self.max_length for x in n]  # type: ignore[type-var,operator]
        if self.mode == "verbosity":
            return [min(x, self.max_length) / self.max_length for x in n]  # type: ignore[type-var,operator]
        return self._overlong(completion_ids=[range(x) for x in n])  # TRL's reward reads only len() of each
