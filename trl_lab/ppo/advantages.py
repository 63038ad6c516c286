"""PPO's per-token arithmetic: shaped rewards, GAE, whitening, the clipped value loss, explained variance.

Pure tensor functions on right-padded ``(B, T)`` completion tensors with a ``mask`` that is 1 on real
completion tokens and 0 on the padding after EOS. Padding never contributes: its rewards and values are
treated as zero (the episode has ended), and every output is zero there.
"""

from __future__ import annotations

import torch


def last_token_index(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the last real token of each row and whether the row has any (``(B,)`` long, ``(B,)`` bool)."""
    positions = torch.arange(mask.size(1), device=mask.device).expand_as(mask)
    last = torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values
    return last.clamp(min=0), last >= 0


def shaped_rewards(
    scores: torch.Tensor, mask: torch.Tensor, kl: torch.Tensor | None = None, beta: float = 0.0
) -> torch.Tensor:
    """Per-token rewards: ``-beta * kl`` on every real token, plus the sequence ``score`` on the last one.

    ``kl`` is the per-token estimate ``log pi_old - log pi_ref`` of the sampled tokens (``None``: no KL term).
    Rows without any real token (e.g. masked truncated completions) get no reward at all.
    """
    mask = mask.to(scores.dtype)
    rewards = torch.zeros_like(mask) if kl is None or beta == 0.0 else -beta * kl.to(scores.dtype) * mask
    last, has_tokens = last_token_index(mask)
    rows = torch.arange(mask.size(0), device=mask.device)
    rewards[rows, last] += torch.where(has_tokens, scores, torch.zeros_like(scores))
    return rewards


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation; returns ``(advantages, returns)``, both zero on padding.

    ``delta_t = r_t + gamma * V_{t+1} - V_t`` with ``V = 0`` after the last real token, and
    ``A_t = delta_t + gamma * lam * A_{t+1}``; ``returns = A + V`` are the value targets.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    rewards = rewards * mask
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.size(1))):
        next_value = values[:, t + 1] if t + 1 < values.size(1) else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when there are none)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Population variance of ``x`` over the masked positions."""
    return masked_mean((x - masked_mean(x, mask)) ** 2, mask)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / std`` over the masked positions; zero on padding."""
    mask = mask.to(x.dtype)
    return (x - masked_mean(x, mask)) * torch.rsqrt(masked_var(x, mask) + eps) * mask


def clipped_value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, cliprange: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's clipped value loss and the fraction of tokens where the clipped term was the larger one.

    ``0.5 * mean(max((V - R)^2, (clip(V, V_old - c, V_old + c) - R)^2))`` over the masked tokens.
    """
    clipped = old_values + (values - old_values).clamp(-cliprange, cliprange)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    clip_fraction = masked_mean((loss_clipped > loss_unclipped).to(values.dtype), mask)
    return loss, clip_fraction


def explained_variance(predictions: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(targets - predictions) / Var(targets)`` over the masked tokens (1 is perfect, <= 0 is useless).

    NaN when the targets do not vary (nothing to explain); TRL's logger skips NaN values.
    """
    var_targets = masked_var(targets, mask)
    if var_targets <= 1e-12:
        return torch.full_like(var_targets, float("nan"))
    return 1.0 - masked_var(targets - predictions, mask) / var_targets
