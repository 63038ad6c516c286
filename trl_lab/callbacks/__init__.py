"""Trainer callbacks that watch for reward hacking (plain ``transformers.TrainerCallback`` subclasses)."""

from trl_lab.callbacks.goodhart import GoldItemsSource, GoodhartCallback
from trl_lab.callbacks.health import HealthMonitorCallback
from trl_lab.callbacks.heldout import HeldOutAccuracyCallback
from trl_lab.callbacks.metrics_log import MetricsLoggerCallback

__all__ = ["GoldItemsSource", "GoodhartCallback", "HealthMonitorCallback", "HeldOutAccuracyCallback",
           "MetricsLoggerCallback"]
