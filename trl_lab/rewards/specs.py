"""Reward specifications: which plugins, with which weights and options.

A spec is written in YAML as a mapping, or on the command line as a string::

    rewards:                                 # YAML (``--config run.yaml``)
      - {name: gsm8k, weight: 1.0}
      - {name: gsm8k_format, weight: 0.2}
      - name: my_pkg.rewards:make_reward     # a reward plugin: registered, or with a `completions` parameter
        weight: 0.5
        kwargs: {threshold: 3}
        timeout: 120                         # seconds a call may take (default: $TRL_LAB_REWARD_TIMEOUT, else 600)

    --rewards gsm8k gsm8k_format=0.2 '{name: length, weight: 0.3, kwargs: {target: 200}}'   # CLI

The string form is ``NAME`` or ``NAME=WEIGHT``; a string starting with ``{`` is parsed as a YAML/JSON
mapping. A config holds each spec as a :class:`RewardSpecDict` (a plain, JSON-ready mapping; TRL's argument parser
builds one from each ``--rewards`` string). :func:`build_rewards` turns specs into TRL's ``reward_funcs`` and
``reward_weights`` (with each plugin's ``timeout``, and one check that their weighted sum stays finite). A malformed
spec is a :class:`RewardSpecError` naming the config key.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import yaml

from trl_lab.rewards.registry import Reward, RewardPluginError, get_reward, parse_timeout
from trl_lab.rewards.weighted_sum import WeightedSumCheck

_SPEC_KEYS = {"name", "weight", "kwargs", "timeout"}


class RewardSpecError(ValueError, argparse.ArgumentTypeError):
    """A malformed reward spec. A ``ValueError``; argparse (TRL's parser) prints its message as it is."""


@dataclass(frozen=True)
class RewardSpec:
    """One reward plugin in a run: its registry name (or dotted path), weight, options, and the seconds a call may
    take (``timeout``: None for the global default, :func:`~trl_lab.rewards.registry.default_timeout`; 0 for none)."""

    name: str
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.timeout is None:
            del out["timeout"]  # the global default: not written into the config
        return out


class RewardSpecDict(dict):
    """One reward spec as a config holds it: ``{"name": ..., "weight": ..., "kwargs": {...}}``, a plain mapping.

    ``RewardSpecDict(item)`` parses and checks ``item`` (a CLI string, a mapping or a :class:`RewardSpec`). It is the
    item type of ``GRPOConfig.rewards``, so TRL's parser builds one from each ``--rewards`` string, and the config
    stays JSON-serialisable for loggers and checkpoints.
    """

    def __init__(self, item: Any) -> None:
        super().__init__(parse_reward_spec(item).to_dict())


def parse_reward_spec(item: Any, *, key: str = "rewards") -> RewardSpec:
    """Parse one spec (mapping, ``RewardSpec``, or CLI string); ``key`` names the config key in errors."""
    if isinstance(item, RewardSpec):
        return item
    if isinstance(item, str):
        text = item.strip()
        if text.startswith("{"):
            try:
                item = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise RewardSpecError(f"{key}: cannot parse reward spec {text!r}: {exc}") from exc
        else:
            name, sep, weight = text.rpartition("=") if "=" in text else (text, "", "")
            return _make(name.strip(), weight.strip() if sep else 1.0, {}, key, item)
    if not isinstance(item, Mapping):
        raise RewardSpecError(
            f"{key}: a reward spec must be a mapping {{name, weight, kwargs}} or a string 'name[=weight]', "
            f"got {item!r}"
        )
    unknown = set(item) - _SPEC_KEYS
    if unknown:
        raise RewardSpecError(f"{key}: reward spec {dict(item)!r} has unknown key(s) {sorted(unknown)}; allowed: name, weight, kwargs, timeout")
    if "name" not in item:
        raise RewardSpecError(f"{key}: reward spec {dict(item)!r} has no 'name'")
    kwargs = item.get("kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise RewardSpecError(f"{key}: 'kwargs' of reward {item['name']!r} must be a mapping, got {kwargs!r}")
    return _make(item["name"], item.get("weight", 1.0), dict(kwargs), key, item, item.get("timeout"))


def _make(name: Any, weight: Any, kwargs: dict[str, Any], key: str, raw: Any, timeout: Any = None) -> RewardSpec:
    if not isinstance(name, str) or not name:
        raise RewardSpecError(f"{key}: reward spec {raw!r} needs a non-empty string name")
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise RewardSpecError(f"{key}: weight of reward {name!r} must be a number, got {weight!r}") from None
    if not math.isfinite(w):
        raise RewardSpecError(f"{key}: weight of reward {name!r} must be finite, got {w}")
    if timeout is not None:
        try:
            timeout = parse_timeout(timeout, f"{key}: timeout of reward {name!r}")
        except ValueError as exc:
            raise RewardSpecError(str(exc)) from None
        timeout = 0.0 if timeout is None else timeout  # given as 0 / none: no timeout
    return RewardSpec(name, w, kwargs, timeout)


def parse_reward_specs(items: Iterable[Any] | None, *, key: str = "rewards") -> list[RewardSpec]:
    """Parse a list of specs; duplicates (same name and options) are an error.

    A single spec where a list is expected -- ``rewards: gsm8k`` or ``rewards: {name: gsm8k}`` in YAML -- is read as
    the one-element list it obviously means (iterating it would read ``'g'`` or ``'name'`` as reward names).
    """
    if isinstance(items, (str, Mapping, RewardSpec)):
        items = [items]
    specs = [parse_reward_spec(i, key=key) for i in (items or [])]
    seen: set[str] = set()
    for s in specs:
        ident = f"{s.name}{sorted(s.kwargs.items())}"
        if ident in seen:
            raise RewardSpecError(f"{key}: reward {s.name!r} is listed twice with the same options")
        seen.add(ident)
    return specs


def build_rewards(specs: Iterable[RewardSpec | Any], *, key: str = "rewards",
                  default_timeout: float | None | str = "default") -> tuple[list[Reward], list[float]]:
    """Resolve specs to TRL's ``reward_funcs`` and ``reward_weights``.

    ``default_timeout`` (seconds; 0 or None for none) is the timeout of plugins whose spec gives none; ``"default"``
    keeps :func:`~trl_lab.rewards.registry.default_timeout` (``$TRL_LAB_REWARD_TIMEOUT``, else 600 s).

    Two plugins that would log under the same name (the same plugin with different options) get a
    ``#2``, ``#3``… suffix so TRL's per-reward metrics stay apart. Each reward gets its spec's ``timeout`` (else the
    global default) and all share one :class:`~trl_lab.rewards.weighted_sum.WeightedSumCheck`.
    """
    funcs: list[Reward] = []
    weights: list[float] = []
    names: dict[str, int] = {}
    for spec in parse_reward_specs(specs, key=key):
        try:
            reward = get_reward(spec.name, **spec.kwargs)
        except RewardPluginError as exc:
            raise RewardPluginError(f"{key}: {exc}") from exc
        count = names.get(reward.__name__, 0) + 1
        names[reward.__name__] = count
        if count > 1:
            reward.name = reward.__name__ = f"{reward.__name__}#{count}"
        reward.weight = spec.weight
        if spec.timeout is not None:
            reward.timeout = spec.timeout or None
        elif default_timeout != "default":
            reward.timeout = parse_timeout(default_timeout, "reward_timeout")
        funcs.append(reward)
        weights.append(spec.weight)
    if not funcs:
        raise ValueError(f"{key}: no reward given; name at least one reward plugin")
    weighted_sum = WeightedSumCheck([f.name for f in funcs], weights)
    for reward in funcs:
        reward.weighted_sum = weighted_sum
    return funcs, weights
