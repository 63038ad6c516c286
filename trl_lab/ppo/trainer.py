"""``PPOTrainer``: PPO with a learned critic as a thin subclass of trl_lab's (and so TRL's) ``GRPOTrainer``.

Everything but the advantages is TRL's: generation, reward plugins, reference log-probs (LoRA: the base
with adapters disabled, never a copy), the clipped policy loss, PPO epochs (``num_iterations``), logging.
Two hooks change:

* ``_generate_and_score_completions``: after TRL's rollout, one no-grad pass gives the critic's values
  (and the rollout log-probs when TRL did not need them); the sequence reward goes on the last token,
  ``-beta * (log pi_old - log pi_ref)`` on every token; GAE gives per-token ``(B, T)`` advantages (which
  TRL's ``_compute_loss`` accepts as they are) and the returns.
* ``_compute_loss``: TRL's loss with its KL term off (the KL is in the reward), plus ``vf_coef`` times the
  clipped value loss on the values captured from the same forward pass.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from accelerate.utils import is_peft_model
from trl.models.utils import disable_gradient_checkpointing

from trl_lab.grpo import GRPOTrainer
from trl_lab.ppo.advantages import (
    clipped_value_loss,
    compute_gae,
    explained_variance,
    masked_whiten,
    shaped_rewards,
)
from trl_lab.ppo.config import PPOConfig
from trl_lab.ppo.critic import ValueHeadCritic

_MULTIMODAL_KEYS = ("pixel_values", "image_grid_thw", "num_images", "token_type_ids", "mm_token_type_ids")


class PPOTrainer(GRPOTrainer):
    """PPO on TRL's GRPO machinery; takes a :class:`~trl_lab.ppo.PPOConfig` and the same arguments as
    :class:`trl_lab.GRPOTrainer`. The critic is :class:`~trl_lab.ppo.critic.ValueHeadCritic` (``self.critic``).
    """

    def __init__(self, model: Any, reward_funcs: Any = None, args: PPOConfig | None = None,
                 train_dataset: Any = None, *pos: Any, **kwargs: Any):
        if args is not None and not isinstance(args, PPOConfig):
            raise TypeError(f"trl_lab.PPOTrainer needs a trl_lab.PPOConfig, got {type(args).__name__}")
        super().__init__(model, reward_funcs, args, train_dataset, *pos, **kwargs)
        if getattr(self, "use_vllm", False):
            raise ValueError("use_vllm is not supported by PPOTrainer yet: set use_vllm=false")
        self.critic = ValueHeadCritic(self.model)
        self._rewards_per_func: torch.Tensor | None = None

    # --- rollout -----------------------------------------------------------------------------------

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        # Keep TRL's raw rewards (all processes, before group normalisation) for the PPO sequence score.
        self._rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        return self._rewards_per_func

    def _generate_and_score_completions(self, inputs: list[dict[str, Any]]) -> dict[str, Any]:
        output = super()._generate_and_score_completions(inputs)
        if any(k in output for k in _MULTIMODAL_KEYS):
            raise NotImplementedError("PPOTrainer does not support multimodal inputs yet")
        mode = "train" if self.model.training else "eval"
        completion_ids = output["completion_ids"]
        mask = output["completion_mask"]
        if "tool_mask" in output:
            mask = mask * output["tool_mask"]
        input_ids = torch.cat([output["prompt_ids"], completion_ids], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        logits_to_keep = completion_ids.size(1)
        batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size

        old_logps = output.get("old_per_token_logps")
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            self.critic.capture(logits_to_keep) as captured,
        ):
            if old_logps is None:  # TRL skips it when the loss can use per_token_logps.detach(); we need it for KL
                old_logps, _, _ = self._get_per_token_logps_and_entropies(
                    self.model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size
                )
            else:  # only the values: the backbone without the LM head
                self.critic.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        values = captured.values().float() * mask

        scores = self._local_sequence_scores(completion_ids.size(0), completion_ids.device)
        ref_logps = output.get("ref_per_token_logps")
        kl = None if ref_logps is None else (old_logps - ref_logps).float() * mask
        rewards = shaped_rewards(scores, mask, kl, self.beta)
        advantages, returns = compute_gae(rewards, values, mask, self.args.gamma, self.args.lam)
        raw_advantages = advantages
        if self.args.whiten_advantages:
            advantages = masked_whiten(advantages, mask)

        output["advantages"] = advantages
        output["old_values"] = values
        output["returns"] = returns

        metrics = self._metrics[mode]
        metrics["ppo/values_mean"].append(self._global_masked_mean(values, mask))
        metrics["ppo/returns_mean"].append(self._global_masked_mean(returns, mask))
        metrics["ppo/advantages_mean"].append(self._global_masked_mean(raw_advantages, mask))
        metrics["ppo/rollout_explained_variance"].append(self._gathered(explained_variance(values, returns, mask)))
        if kl is not None:
            metrics["kl"].append(self._global_masked_mean(kl, mask))
            per_sequence_kl = kl.sum(dim=1)
            metrics["ppo/kl_per_sequence"].append(self._gathered(per_sequence_kl.mean()))
            metrics["ppo/non_score_reward"].append(self._gathered(-self.beta * per_sequence_kl.mean()))
        return output

    def _local_sequence_scores(self, local_size: int, device: torch.device) -> torch.Tensor:
        """This process's rows of TRL's weighted reward sum (unscorable rows score 0)."""
        rewards_per_func = self._rewards_per_func
        if rewards_per_func is None:
            raise RuntimeError("rewards were not computed for this batch")
        scores = (rewards_per_func * self.reward_weights.to(rewards_per_func.device).unsqueeze(0)).nansum(dim=1)
        start = self.accelerator.process_index * local_size
        return scores[start : start + local_size].to(device=device, dtype=torch.float32)

    # --- loss --------------------------------------------------------------------------------------

    def _compute_loss(self, model, inputs):
        mode = "train" if self.model.training else "eval"
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        with self.critic.capture(inputs["completion_ids"].size(1)) as captured, self._kl_in_reward_only():
            loss = super()._compute_loss(model, inputs)
        values = captured.values()
        value_loss, clip_fraction = clipped_value_loss(
            values, inputs["old_values"], inputs["returns"], mask, self.args.cliprange_value
        )
        normalizer = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        loss = loss + self.args.vf_coef * value_loss / normalizer

        metrics = self._metrics[mode]
        metrics["ppo/value_loss"].append(self._gathered(value_loss.detach()))
        metrics["ppo/value_clipfrac"].append(self._gathered(clip_fraction))
        metrics["ppo/explained_variance"].append(
            self._gathered(explained_variance(values.detach(), inputs["returns"], mask))
        )
        metrics["ppo/vpred_mean"].append(self._global_masked_mean(values.detach(), mask))
        return loss

    @contextlib.contextmanager
    def _kl_in_reward_only(self) -> Iterator[None]:
        """TRL adds ``beta * KL`` to the loss when ``self.beta != 0``; PPO has it in the reward instead."""
        beta, self.beta = self.beta, 0.0
        try:
            yield
        finally:
            self.beta = beta

    # --- checkpoints -------------------------------------------------------------------------------

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save the policy as TRL does (without the value head), and the head beside it."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        unwrapped = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if state_dict is None and not is_peft_model(unwrapped):
            state_dict = unwrapped.state_dict()
        if state_dict is not None:
            state_dict = {k: v for k, v in state_dict.items() if not self.critic.state_key(k)}
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save:
            self.critic.save(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: Any = None) -> None:
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        self.critic.load(resume_from_checkpoint)

    # --- metrics helpers ---------------------------------------------------------------------------

    def _global_masked_mean(self, x: torch.Tensor, mask: torch.Tensor) -> float:
        mask = mask.to(x.dtype)
        totals = self.accelerator.reduce(torch.stack([(x * mask).sum(), mask.sum()]), reduction="sum")
        return (totals[0] / totals[1].clamp(min=1.0)).item()

    def _gathered(self, x: torch.Tensor) -> float:
        return self.accelerator.gather(x.detach().float().reshape(1)).mean().item()
