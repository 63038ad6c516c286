"""Datasets for GRPO: GSM8K from the Hub, from local jsonl files, or from reasoning-gym's offline generator."""

from trl_lab.data import gsm8k as _gsm8k
from trl_lab.data.gsm8k import *  # noqa: F403  (the public names listed in gsm8k.__all__)

__all__ = list(_gsm8k.__all__)
