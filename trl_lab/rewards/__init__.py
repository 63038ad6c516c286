"""Built-in reward plugins; importing this package registers them."""

from trl_lab.rewards import gsm8k  # noqa: F401  (registers "gsm8k" and "gsm8k_format")
