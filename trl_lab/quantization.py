"""Fail fast when 4-/8-bit loading is asked for where bitsandbytes cannot run it.

Without this check a QLoRA run on an unsupported machine dies deep inside model loading (or, worse,
after minutes of setup) with a kernel stack trace. :func:`check_bitsandbytes` runs a tiny 4-bit matmul
on the device the model will use and turns any failure into one readable error.
"""

from __future__ import annotations

import functools
from typing import Any

import torch


class QuantizationUnavailableError(RuntimeError):
    """4-bit/8-bit loading was requested but bitsandbytes cannot run on this machine."""


def wants_quantization(model_args: Any) -> bool:
    """True if a TRL ``ModelConfig`` asks for 4-bit or 8-bit loading."""
    return bool(getattr(model_args, "load_in_4bit", False) or getattr(model_args, "load_in_8bit", False))


@functools.cache
def check_bitsandbytes(device: str | None = None) -> None:
    """Raise :class:`QuantizationUnavailableError` unless a 4-bit matmul runs on ``device``
    (default: accelerate's ``PartialState().default_device``)."""
    if device is None:
        from accelerate import PartialState

        device = PartialState().default_device.type
    hint = (
        "Drop --load_in_4bit/--load_in_8bit (LoRA alone with --use_peft still fits small models), "
        "or run on a machine bitsandbytes supports (an NVIDIA GPU with CUDA, or its CPU backend)."
    )
    try:
        import bitsandbytes as bnb
        import bitsandbytes.functional as bnbf
    except Exception as exc:  # ImportError, or a broken native library raising at import
        raise QuantizationUnavailableError(
            f"4-bit/8-bit loading needs bitsandbytes, which cannot be imported here ({type(exc).__name__}: {exc}). "
            f"Install it with `pip install bitsandbytes`. {hint}"
        ) from exc
    try:
        weight = torch.randn(64, 64, device=device, dtype=torch.float32)
        packed, state = bnbf.quantize_4bit(weight, quant_type="nf4")
        x = torch.randn(2, 64, device=device, dtype=torch.float32)
        out = bnb.matmul_4bit(x, packed.t(), quant_state=state)
        if not torch.isfinite(out).all():
            raise RuntimeError("the 4-bit matmul returned non-finite values")
    except Exception as exc:
        raise QuantizationUnavailableError(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} cannot run 4-bit kernels on device {device!r} "
            f"({type(exc).__name__}: {exc}). {hint}"
        ) from exc
