"""CPU settings that make a GRPO step faster without changing its numbers (measured in ``bench/step.py``).

Three causes dominate a CPU step of a small model (``../shared/notes`` has the profile):

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

* **Every position scored**: off Triton devices TRL's fused LM head projects *all* positions of a batch (prompt and
  padding included, their results masked to 0 afterwards) so that tile shapes stay fixed for compilers such as
  Neuron's. Eager CPU code gains nothing from fixed shapes, and the prompt is often as long as the completion:
  :func:`score_only_labelled_positions` makes TRL take its own compact path (only positions with a label, as on
  CUDA) while keeping its torch kernel. The same log-probs row by row and the same gradients (tested).

:func:`tune_cpu` applies all three; :class:`trl_lab.grpo.GRPOTrainer` calls it when it trains on CPU and
``cpu_tuning`` is on (the default).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CpuTuning", "cpu_has_native_bf16", "route_fp32_matmul_to_onednn", "score_only_labelled_positions",
           "set_lm_head_tiles", "tune_cpu"]

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
    labelled_positions_only: bool = False


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


def score_only_labelled_positions() -> None:
    """Make TRL's fused LM head project only the positions that have a label on CPU too (it already does on Triton
    devices). Patches the name ``trl.trainer.utils._use_triton`` (private in TRL 1.16; ``tests`` pin it), which
    decides only that; the kernel choice reads ``trl.kernels.chunked_logprob._use_triton`` and stays torch on CPU."""
    import trl.trainer.utils as trl_utils

    decide = trl_utils._use_triton
    if getattr(decide, "_trl_lab_compact_cpu", False):
        return

    def compact_on_cpu_too(device: torch.device) -> bool:
        return device.type == "cpu" or decide(device)

    compact_on_cpu_too._trl_lab_compact_cpu = True  # type: ignore[attr-defined]
    compact_on_cpu_too._trl_lab_original = decide  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu_too


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX), so bf16 autocast and a bf16 sampler are
    faster than fp32 here; without it oneDNN emulates bf16 and both are slower."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def cpu_description() -> dict[str, object]:
    """What this CPU is, for a run's record: its model name and whether it has AMX bf16 tiles (``amx_bf16``).

    Runs that compute in bf16 on CPUs with and without AMX use different oneDNN kernels, so their greedy answers
    differ as fp32 and bf16 ones do (docs/results/study, Numerics). Linux's ``/proc/cpuinfo``; elsewhere the
    platform's processor string and ``None`` for AMX."""
    import platform

    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"cpu_model": platform.processor() or None, "cpu_amx_bf16": None}
    lines = text.splitlines()
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)
    flags = next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), [])
    return {"cpu_model": model, "cpu_amx_bf16": "amx_bf16" in flags}


def tune_cpu(*, token_tile: int = CPU_TOKEN_TILE, vocab_tile: int = CPU_VOCAB_TILE) -> CpuTuning:
    """The three settings above, for a process that trains on CPU. Process-wide, like every torch backend flag."""
    onednn, error = route_fp32_matmul_to_onednn()
    set_lm_head_tiles(token_tile, vocab_tile)
    score_only_labelled_positions()
    return CpuTuning(onednn, error, token_tile, vocab_tile, labelled_positions_only=True)
