"""How far the policy has moved from its reference, measured at any KL coefficient (``beta = 0`` included).

TRL only computes a KL when it pays for it in the loss: with ``beta = 0`` there is no reference pass and no
``kl`` metric, which hides exactly the curve a "cut the leash" run is about. This module measures it on fixed
completions instead, independent of the loss:

* :func:`reference_for` finds the reference of a trainer's model: TRL's ``ref_model`` when it has one, the PEFT
  base (adapters disabled, or TRL's ``"ref"`` adapter when it made one), else ``None``; a caller without one
  can keep a frozen copy with :func:`frozen_copy`.
* :func:`token_kl` returns, per completion, the sum and count over its tokens of the *exact* per-position
  ``KL(pi(. | context) || pi_ref(. | context))`` (summed over the whole vocabulary, not a sampled estimate),
  teacher-forced along the given completion;
* :func:`token_kl_entropy` returns the same KL (or ``None`` without a reference) and, from the same forward pass,
  the sum of the policy's own next-token entropy along the completion.

:class:`~trl_lab.callbacks.HeldOutAccuracyCallback` uses it on its greedy held-out answers and logs
``heldout/kl_to_ref``. It differs from TRL's ``kl`` (the k3 estimate on the sampled training completions): same
divergence, different contexts and estimator, so compare each with itself across runs and steps.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Reference", "frozen_copy", "reference_for", "token_kl", "token_kl_entropy"]


@dataclass
class Reference:
    """The reference policy: a separate ``model``, or the policy itself with its adapters switched (``adapter``).

    ``kind`` is ``"ref_model"``, ``"peft"`` or ``"copy"`` (for messages and logs).
    """

    kind: str
    model: Any = None
    adapter: str | None = None

    @contextlib.contextmanager
    def active(self, policy: Any) -> Iterator[Any]:
        """The module to run for reference log-probs (for ``"peft"``: ``policy`` with the reference adapter state)."""
        if self.kind != "peft":
            yield self.model
            return
        from trl.trainer.utils import use_adapter

        with use_adapter(policy, adapter_name=self.adapter):
            yield policy


def reference_for(policy: Any, ref_model: Any = None) -> Reference | None:
    """The reference of ``policy`` (an unwrapped model): ``ref_model`` if given, else its PEFT base, else ``None``.

    A PEFT policy whose trainer loaded a pretrained adapter has a ``"ref"`` adapter (TRL makes one when
    ``beta != 0``); it is used, as TRL does. Otherwise the reference is the base model with adapters disabled.
    """
    if ref_model is not None:
        return Reference("ref_model", model=ref_model)
    peft_config = getattr(policy, "peft_config", None)
    if isinstance(peft_config, dict) and hasattr(policy, "disable_adapter"):
        return Reference("peft", adapter="ref" if "ref" in peft_config else None)
    return None


def frozen_copy(policy: Any) -> Reference:
    """A frozen, eval-mode copy of ``policy`` as it is now (costs one more copy of the weights)."""
    model = copy.deepcopy(policy)
    # Trainers patch ``forward`` on the instance (accelerate's autocast / fp32-output wrappers). deepcopy copies
    # such a wrapper with its closure, which still calls the *original* model: the "copy" would follow the policy.
    for module in model.modules():
        module.__dict__.pop("forward", None)
    model.eval()
    model.requires_grad_(False)
    return Reference("copy", model=model)


def _log_probs(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Next-token log-probs at the ``target`` positions only, ``(n_targets, vocab)``: the vocabulary-wide softmax
    is the costly part, and prompt and padding positions do not need it. The LM head projects only the positions
    from the first target on (transformers' ``logits_to_keep``): most of a held-out sequence is its prompt."""
    first = int(target.any(0).nonzero()[0]) if target.any() else target.shape[1]
    keep = input_ids.shape[1] - first  # positions first .. L-1; position t predicts token t + 1
    try:
        out = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep)
    except TypeError:  # a model whose forward has no logits_to_keep: every position
        out, first = model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False), 0
    logits = getattr(out, "logits", None)
    if logits is None:
        raise TypeError(f"KL to reference: {type(model).__name__}'s forward returned no logits (a patched forward?)")
    logits = logits[:, -(input_ids.shape[1] - first):] if first else logits
    return F.log_softmax(logits[:, :-1][target[:, first:]].float(), dim=-1)


def token_kl(
    policy: Any,
    reference: Reference,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 4,
) -> list[tuple[float, int]]:
    """``(sum over the completion's tokens of KL(pi || pi_ref) at that position, number of tokens)`` per completion.

    ``prompts[i] + completions[i]`` is run teacher-forced through ``policy`` and the reference (right-padded, so
    position ids are the usual ``0..L-1``); the KL at a completion token is over the full next-token distribution
    that produced it. Empty completions give ``(0.0, 0)``. Both models are run as they are (call it in eval mode).
    """
    rows = token_kl_entropy(policy, reference, prompts, completions, pad_token_id=pad_token_id, batch_size=batch_size)
    return [(kl, n) for kl, _, n in rows]


@torch.no_grad()
def token_kl_entropy(
    policy: Any,
    reference: Reference | None,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 4,
) -> list[tuple[float | None, float, int]]:
    """Per completion: ``(KL sum or None without reference, sum of the policy's next-token entropy, tokens)``.

    As :func:`token_kl`; the entropy ``-sum_v pi(v | context) log pi(v | context)`` (nats) at each position that
    produced a completion token comes from the policy pass the KL needs anyway. ``reference=None`` runs the policy
    only.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"token_kl: {len(prompts)} prompts but {len(completions)} completions")
    from trl.trainer.utils import pad

    device = next(policy.parameters()).device
    results: list[tuple[float | None, float, int]] = []
    for start in range(0, len(prompts), batch_size):
        pairs = list(zip(prompts[start : start + batch_size], completions[start : start + batch_size]))
        if any(not p for p, _ in pairs):
            raise ValueError("token_kl: an empty prompt (a completion needs a context)")
        seqs = [torch.tensor(list(p) + list(c), dtype=torch.long) for p, c in pairs]
        ids = pad(seqs, padding_value=pad_token_id, padding_side="right")
        attention = pad([torch.ones_like(s) for s in seqs], padding_value=0, padding_side="right")
        # The positions that predict a completion token: position t predicts token t + 1.
        target = pad([torch.tensor([False] * (len(p) - 1) + [True] * len(c) + [False]) for p, c in pairs],
                     padding_value=False, padding_side="right")[:, :-1]
        ids, attention, target = ids.to(device), attention.to(device), target.to(device)
        logp = _log_probs(policy, ids, attention, target)
        rows = target.nonzero()[:, 0]  # the sequence of each target position, in the order of `logp`

        def per_row(values: torch.Tensor) -> list[float]:
            return torch.zeros(len(pairs), dtype=values.dtype, device=values.device).index_add_(0, rows, values).tolist()

        entropy = per_row((-(logp.exp() * logp).sum(-1)).clamp_min(0.0))
        kl: list[float | None] = [None] * len(pairs)
        if reference is not None:
            with reference.active(policy) as ref:
                logq = _log_probs(ref, ids, attention, target)
            kl = per_row((logp.exp() * (logp - logq)).sum(-1).clamp_min(0.0))  # exact KL; clamp rounding below 0
        results.extend(zip(kl, entropy, target.sum(-1).tolist()))
    return [(None if k is None else float(k), float(h), int(n)) for k, h, n in results]
