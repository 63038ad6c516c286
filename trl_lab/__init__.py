"""trl_lab: reward plugins, thin TRL trainers and reward-hacking watchdogs.

Heavy names (trainers, configs) are imported lazily so ``import trl_lab`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from trl_lab.completions import completion_text
from trl_lab.rewards.registry import Reward, RewardPluginError, get_reward, list_rewards, register_reward
from trl_lab.rewards.specs import RewardSpec, build_rewards, parse_reward_specs

__version__ = "0.1.0"

_LAZY = {
    "GRPOConfig": "trl_lab.grpo",
    "GRPOTrainer": "trl_lab.grpo",
    "PPOConfig": "trl_lab.ppo",
    "PPOTrainer": "trl_lab.ppo",
    "resolve_model_path": "trl_lab.embedded_model",
    "load_gsm8k": "trl_lab.data.gsm8k",
}

__all__ = [
    "Reward",
    "RewardPluginError",
    "RewardSpec",
    "build_rewards",
    "completion_text",
    "get_reward",
    "list_rewards",
    "parse_reward_specs",
    "register_reward",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'trl_lab' has no attribute {name!r}")
