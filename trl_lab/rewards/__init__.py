"""Built-in reward plugins; importing this package registers them."""

from trl_lab.rewards import gsm8k  # noqa: F401  (registers "gsm8k" and "gsm8k_format")
from trl_lab.rewards import learned_rm  # noqa: F401  (registers "learned_rm")
from trl_lab.rewards import length  # noqa: F401  (registers "length")
from trl_lab.rewards import sentiment  # noqa: F401  (registers "sentiment")
