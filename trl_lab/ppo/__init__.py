"""PPO with a learned critic on TRL's GRPO machinery: :class:`PPOConfig`, :class:`PPOTrainer`.

``trl_lab.ppo.advantages`` holds the per-token arithmetic (reward shaping, GAE, value loss),
``trl_lab.ppo.critic`` the value head.
"""

from trl_lab.ppo.config import PPOConfig
from trl_lab.ppo.trainer import PPOTrainer

__all__ = ["PPOConfig", "PPOTrainer"]
