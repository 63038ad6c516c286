"""``PPOConfig``: trl_lab's ``GRPOConfig`` plus PPO's critic and advantage settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl_lab.grpo import GRPOConfig

# TRL loss types that are PPO's clipped surrogate (they differ only in how tokens are averaged).
CLIPPED_LOSS_TYPES = ("dapo", "grpo", "bnpo", "dr_grpo")


class _OneGeneration(int):
    """The integer 1 that passes TRL's GRPO-only ``num_generations >= 2`` check.

    TRL's ``GRPOConfig.__post_init__`` rejects ``num_generations < 2`` because group-relative advantages
    need a group; PPO's advantages come from the critic, so one completion per prompt is fine. The value
    is only used during that ``__post_init__`` and replaced by a plain ``1`` right after.
    """

    def __lt__(self, other: object) -> bool:
        return False if other == 2 else int(self) < other  # type: ignore[operator]


@dataclass
class PPOConfig(GRPOConfig):
    """PPO with a learned critic, on TRL's GRPO machinery (generation, rewards, LoRA, logging).

    * ``beta`` is the KL coefficient of the *reward*: every token is rewarded ``-beta * (log pi_old -
      log pi_ref)``, the sequence reward (TRL's weighted sum of reward plugins) is added on the last token.
      The policy loss itself carries no KL term.
    * ``num_iterations`` is the number of PPO epochs over each generation batch; ``steps_per_generation``
      the number of minibatches it is split into.
    * ``num_generations`` defaults to 1 (one completion per prompt); more are allowed.
    * ``loss_type`` picks how TRL's clipped surrogate averages tokens (``dapo``, ``grpo``, ``bnpo``,
      ``dr_grpo``); ``epsilon`` is the policy clip range. ``scale_rewards`` is not used.
    """

    num_generations: int | None = field(
        default=1,
        metadata={"help": "Completions per prompt. PPO needs no group: 1 is the default and allowed."},
    )
    beta: float = field(
        default=0.05,
        metadata={"help": "KL coefficient in the per-token reward: -beta * (log pi_old - log pi_ref)."},
    )
    gamma: float = field(default=1.0, metadata={"help": "Discount factor of GAE, in [0, 1]."})
    lam: float = field(default=0.95, metadata={"help": "GAE lambda, in [0, 1]."})
    vf_coef: float = field(default=0.1, metadata={"help": "Weight of the value loss in the total loss."})
    cliprange_value: float = field(
        default=0.2, metadata={"help": "Clip range of the value predictions around the rollout values."}
    )
    whiten_advantages: bool = field(
        default=True, metadata={"help": "Normalise advantages to zero mean, unit variance over the batch's tokens."}
    )

    def __post_init__(self) -> None:
        _check_range("gamma", self.gamma, 0.0, 1.0)
        _check_range("lam", self.lam, 0.0, 1.0)
        if self.vf_coef < 0:
            raise ValueError(f"vf_coef must be >= 0, got {self.vf_coef}")
        if not self.cliprange_value > 0:
            raise ValueError(f"cliprange_value must be > 0, got {self.cliprange_value}")
        if self.beta < 0:
            raise ValueError(f"beta (the KL coefficient of the reward) must be >= 0, got {self.beta}")
        if self.loss_type not in CLIPPED_LOSS_TYPES:
            raise ValueError(
                f"loss_type={self.loss_type!r} is not PPO's clipped objective; use one of {list(CLIPPED_LOSS_TYPES)}"
            )
        if self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                "multi_objective_aggregation must be 'sum_then_normalize' for PPO: the critic is trained on the raw "
                f"weighted sum of the rewards, got {self.multi_objective_aggregation!r}"
            )
        if self.num_generations is not None and self.num_generations < 1:
            raise ValueError(f"num_generations must be >= 1, got {self.num_generations}")
        single = self.num_generations == 1
        if single:
            self.num_generations = _OneGeneration(1)
        try:
            super().__post_init__()
        finally:
            if single:
                self.num_generations = 1


def _check_range(key: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise ValueError(f"{key} must be in [{low}, {high}], got {value}")
