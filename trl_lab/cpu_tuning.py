"""CPU settings that make a GRPO step faster without changing its numbers (measured in ``bench/step.py``).

Two causes dominate a CPU step of a small model (``../shared/notes`` has the profile):

* **fp32 GEMMs through MKL** reach about 50 GFLOP/s at decode shapes on the AMD EPYC machines this project runs on;
  oneDNN's fp32 kernels are faster. PyTorch routes fp32 matmuls to oneDNN when
  ``torch.backends.mkldnn.matmul.fp32_precision = "bf16"``. On a CPU *without* AMX that route stays fp32-accurate,
  but on an AMX CPU it really computes in bf16. :func:`route_fp32_matmul_to_onednn` therefore measures the error
  of a GEMM on the route against float64 and keeps the route only when it is fp32-accurate (relative error below
  ``1e-5``; fp32 itself gives a few ``1e-7``), else puts the previous setting back.
* **TRL's fused LM head** (``trl.kernels.chunked_logprob``) has no Triton kernel on CPU and folds its tiles in
  torch, with tiles of 4096 positions x 32768 vocabulary entries (about 0.5 GB of fp32 each): their temporaries
  page-fault about 3 GB per step. :func:`set_lm_head_tiles` makes them small (128 x 4096 by default); the result is
  the same sum in other blocks (equal to float rounding, tested).

:func:`tune_cpu` applies both; :class:`trl_lab.grpo.GRPOTrainer` calls it when it trains on CPU and
``cpu_tuning`` is on (the default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

__all__ = ["CpuTuning", "route_fp32_matmul_to_onednn", "set_lm_head_tiles", "tune_cpu"]

logger = logging.getLogger(__name__)

#: Largest relative error (Frobenius, against float64) a GEMM on the oneDNN route may have to be kept.
FP32_ACCURATE = 1e-5
#: LM-head tiles for CPU: positions per tile and vocabulary entries per tile.
CPU_TOKEN_TILE = 128
CPU_VOCAB_TILE = 4096


@dataclass(frozen=True)
class CpuTuning:
    """What :func:`tune_cpu` did: whether fp32 matmuls go through oneDNN (and the error it measured), the tiles."""

    onednn_matmul: bool
    onednn_rel_error: float | None
    token_tile: int
    vocab_tile: int


def _gemm_rel_error() -> float:
    """Relative error of a decode-shaped fp32 GEMM as torch computes it now, against float64."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(16, 576, generator=gen)
    b = torch.randn(576, 1536, generator=gen)
    exact = a.double() @ b.double()
    return float((torch.mm(a, b).double() - exact).norm() / exact.norm())


def route_fp32_matmul_to_onednn() -> tuple[bool, float | None]:
    """Route fp32 matmuls to oneDNN if that keeps them fp32-accurate on this CPU; ``(kept, measured error)``."""
    backend = getattr(torch.backends, "mkldnn", None)
    if backend is None or not backend.is_available() or not hasattr(backend, "matmul"):
        return False, None
    previous = backend.matmul.fp32_precision
    backend.matmul.fp32_precision = "bf16"
    error = _gemm_rel_error()
    if error > FP32_ACCURATE:  # an AMX CPU: the route really computes in bf16
        backend.matmul.fp32_precision = previous
        logger.info("cpu_tuning: oneDNN's fp32 matmul route has relative error %.2g here (bf16 math); not used", error)
        return False, error
    return True, error


def set_lm_head_tiles(token_tile: int = CPU_TOKEN_TILE, vocab_tile: int = CPU_VOCAB_TILE) -> None:
    """Set the tile sizes of TRL's fused LM head (module constants, private in TRL 1.16; ``tests`` pin them)."""
    import trl.kernels.chunked_logprob as chunked_logprob
    import trl.trainer.utils as trl_utils

    if token_tile < 1 or vocab_tile < 1:
        raise ValueError(f"cpu_tuning: tiles must be positive, got {token_tile} x {vocab_tile}")
    chunked_logprob.TOKEN_CHUNK_SIZE = token_tile
    trl_utils._CHUNKED_LOGPROB_CHUNK_SIZE = vocab_tile


def tune_cpu(*, token_tile: int = CPU_TOKEN_TILE, vocab_tile: int = CPU_VOCAB_TILE) -> CpuTuning:
    """Both settings above, for a process that trains on CPU. Process-wide, like every torch backend flag."""
    onednn, error = route_fp32_matmul_to_onednn()
    set_lm_head_tiles(token_tile, vocab_tile)
    return CpuTuning(onednn, error, token_tile, vocab_tile)
