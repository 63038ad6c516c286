"""The PPO critic: a value head on the policy's own backbone.

Design (chosen to fit one GPU): a single ``Linear(hidden_size, 1)`` on the final hidden states of the
policy's transformer backbone, one value per completion token. Alternatives and why not:

* a separate value model (classic PPO) doubles the weights, the activations and the optimizer state;
* the same base with its own LoRA adapter costs a second forward and backward per step (adapter switching);
* the shared backbone costs nothing extra in the training step: the head reads the hidden states of the
  policy forward TRL already runs for the log-probabilities. Value gradients flow into the trainable
  backbone parameters (LoRA adapters, or all weights) scaled by ``vf_coef``, as in the original
  shared-trunk PPO for language models. At rollout time one extra no-grad backbone pass (no LM head) gives
  the old values.

The head is registered as a submodule of the policy model (``trl_lab_value_head``), so Trainer's
optimizer, gradient clipping, device placement and DDP gradient sync include it with nothing else to do.
It is zero-initialised: initial values are 0 and the first value-loss steps do not disturb the backbone.
It is *not* part of the saved policy: :class:`ValueHeadCritic` saves it beside the checkpoint as
``value_head.safetensors`` and loads it back on resume.

The hidden states are captured by a forward hook on the backbone, active only inside :meth:`capture`;
the reference forward (adapters disabled) and generation pass through untouched.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator

import torch
from torch import nn

VALUE_HEAD_NAME = "trl_lab_value_head"
VALUE_HEAD_FILE = "value_head.safetensors"


class ValueCapture:
    """Values collected by the backbone hook during one :meth:`ValueHeadCritic.capture` block."""

    def __init__(self, logits_to_keep: int):
        self.logits_to_keep = logits_to_keep
        self.chunks: list[torch.Tensor] = []

    def values(self) -> torch.Tensor:
        """``(B, T)`` values, ``values[:, t]`` for the state before completion token ``t`` is emitted."""
        if not self.chunks:
            raise RuntimeError("no backbone forward ran inside the value capture block")
        return torch.cat(self.chunks, dim=0)


class ValueHeadCritic:
    """A zero-initialised value head attached to a causal LM's backbone (see the module docstring).

    ``model`` is the policy as TRL holds it before ``accelerate.prepare``: a ``PreTrainedModel`` or a
    ``PeftModel`` (the head then goes on the wrapped base model, next to the LoRA layers).
    """

    def __init__(self, model: nn.Module):
        lm = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.lm = lm
        self.backbone: nn.Module = lm.base_model
        if self.backbone is lm:
            raise ValueError(f"{type(lm).__name__} has no separate backbone to put a value head on")
        hidden_size = lm.config.get_text_config().hidden_size
        device = next(p.device for p in lm.parameters())
        self.head = nn.Linear(hidden_size, 1, device=device, dtype=torch.float32)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        lm.add_module(VALUE_HEAD_NAME, self.head)
        self._active: ValueCapture | None = None
        self._handle = self.backbone.register_forward_hook(self._hook)

    @contextlib.contextmanager
    def capture(self, logits_to_keep: int) -> Iterator[ValueCapture]:
        """Inside the block, each backbone forward appends the values of its last ``logits_to_keep`` tokens."""
        if self._active is not None:
            raise RuntimeError("value capture blocks do not nest")
        self._active = ValueCapture(logits_to_keep)
        try:
            yield self._active
        finally:
            self._active = None

    def _hook(self, module: nn.Module, args: tuple, output):
        capture = self._active
        if capture is None:
            return None
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        # hidden[:, i] predicts token i+1, so the state before completion token t sits at P + t - 1.
        states = hidden[:, -capture.logits_to_keep - 1 : -1]
        values = self.head(states.to(self.head.weight.dtype)).squeeze(-1)
        capture.chunks.append(values)
        if torch.is_grad_enabled():
            # Make the head reachable from the model's outputs (a zero contribution), so DDP with
            # find_unused_parameters=True sees it as used in this forward instead of marking it unused.
            tied = hidden + 0.0 * values.sum().to(hidden.dtype)
            if hasattr(output, "last_hidden_state"):
                output.last_hidden_state = tied
                return output
            return (tied, *output[1:])
        return None

    def state_key(self, key: str) -> bool:
        """Whether a model state-dict key belongs to the value head."""
        return f"{VALUE_HEAD_NAME}." in key or key.startswith(VALUE_HEAD_NAME)

    def save(self, directory: str | os.PathLike) -> None:
        """Write the head's weights to ``directory/value_head.safetensors``."""
        from safetensors.torch import save_file

        state = {k: v.detach().to("cpu").contiguous() for k, v in self.head.state_dict().items()}
        save_file(state, os.path.join(directory, VALUE_HEAD_FILE), metadata={"format": "pt"})

    def load(self, directory: str | os.PathLike) -> bool:
        """Load the head from ``directory`` if it has one; returns whether it did (warns when it does not)."""
        from safetensors.torch import load_file

        path = os.path.join(directory, VALUE_HEAD_FILE)
        if not os.path.exists(path):
            warnings.warn(f"{path} not found: the PPO value head starts from zero", stacklevel=2)
            return False
        self.head.load_state_dict(load_file(path, device=str(self.head.weight.device)))
        return True
