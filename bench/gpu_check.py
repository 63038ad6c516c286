"""The CUDA paths on tiny models, in one short run: what a lent GPU machine must confirm (issue 12).

Checks (each independent; a failure is recorded with its error and the others still run):

* ``grpo_bf16`` / ``ppo_bf16``: two bf16 LoRA steps of trl_lab's GRPOTrainer and PPOTrainer; finite loss, seconds
  per step, peak GPU memory (``torch.cuda.max_memory_allocated``), and PPO's peak over GRPO's;
* ``qlora``: a 4-bit (bitsandbytes NF4) base with LoRA, one GRPO step; the base layers must be ``Linear4bit``;
* ``learned_rm``: a reward model on its own device (``device``, bf16, and 4-bit), scores against fp32 on CPU;
* ``heldout_kl``: the held-out callback and the KL monitor on the device (KL 0 at step 0, > 0 after training);
* ``merged_generation``: greedy tokens with the adapter merged equal the unmerged ones; base weights bit-identical.

    python bench/gpu_check.py --out gpu_check.json                 # on the GPU machine (bench/gpu_check.sh)
    python bench/gpu_check.py --device cpu --checks grpo_bf16 ...  # the same code on CPU (what the tests run)

Writes one JSON file with every check's status and figures, and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHECKS: dict[str, Callable[..., dict[str, Any]]] = {}


def check(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    CHECKS[fn.__name__] = fn
    return fn


def _questions(n: int):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
                              for i in range(n)])


def _length_reward(completions, **kwargs):
    from trl_lab import completion_text

    return [float(len(completion_text(c))) / 10 for c in completions]


def _config(config_cls, out: Path, device: str, **overrides):
    cuda = device.startswith("cuda")
    kwargs = dict(output_dir=str(out), max_steps=2, per_device_train_batch_size=4, num_generations=2,
                  max_completion_length=16, learning_rate=1e-3, beta=0.04, logging_steps=1, report_to="none",
                  save_strategy="no", use_cpu=not cuda, bf16=cuda, activation_checkpointing=False, seed=0,
                  disable_tqdm=True)
    return config_cls(**{**kwargs, **overrides})


def _lora():
    from peft import LoraConfig

    return LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda") else None


def _train(trainer_cls, config_cls, model_dir: Path, out: Path, device: str, **kwargs) -> dict[str, Any]:
    _peak_reset(device)
    trainer = trainer_cls(model=str(model_dir), reward_funcs=_length_reward, args=_config(config_cls, out, device),
                          train_dataset=_questions(8), peft_config=_lora(), **kwargs)
    start = time.perf_counter()
    trainer.train()
    seconds = (time.perf_counter() - start) / trainer.state.global_step
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if not losses or not all(math.isfinite(x) for x in losses):
        raise AssertionError(f"non-finite or missing loss: {losses}")
    return {"seconds_per_step": seconds, "peak_mb": _peak_mb(device), "losses": losses,
            "model_device": str(next(trainer.model.parameters()).device)}


@check
def grpo_bf16(ctx) -> dict[str, Any]:
    from trl_lab import GRPOConfig, GRPOTrainer

    return _train(GRPOTrainer, GRPOConfig, ctx["model"], ctx["tmp"] / "grpo", ctx["device"])


@check
def ppo_bf16(ctx) -> dict[str, Any]:
    from trl_lab import PPOConfig, PPOTrainer

    result = _train(PPOTrainer, PPOConfig, ctx["model"], ctx["tmp"] / "ppo", ctx["device"])
    grpo = ctx["results"].get("grpo_bf16", {})
    if result["peak_mb"] and grpo.get("peak_mb"):
        result["peak_mb_vs_grpo"] = result["peak_mb"] / grpo["peak_mb"]
    return result


@check
def qlora(ctx) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    from trl_lab import GRPOConfig, GRPOTrainer

    device = ctx["device"]
    _peak_reset(device)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                               bnb_4bit_compute_dtype=torch.bfloat16 if device.startswith("cuda") else torch.float32)
    trainer = GRPOTrainer(model=str(ctx["model"]), reward_funcs=_length_reward,
                          args=_config(GRPOConfig, ctx["tmp"] / "qlora", device, max_steps=1),
                          train_dataset=_questions(4), peft_config=_lora(), quantization_config=quant)
    kinds = {type(m).__name__ for m in trainer.model.modules()}
    if "Linear4bit" not in kinds:
        raise AssertionError(f"no Linear4bit layer in the policy: {sorted(kinds)[:12]}")
    trainer.train()
    loss = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    if not loss or not math.isfinite(loss[0]):
        raise AssertionError(f"loss {loss}")
    return {"loss": loss[0], "peak_mb": _peak_mb(device)}


@check
def learned_rm(ctx) -> dict[str, Any]:
    from trl_lab.rewards.learned_rm import LearnedRewardModel
    from trl_lab.testing import save_tiny_classifier

    # hidden 64: bitsandbytes' 4-bit CPU kernel (taken on CPUs with AVX512-BF16) packs weights in blocks of 64 input
    # features and fails on narrower layers ("shape '[32, 0]' is invalid"); the default tiny width is 32.
    rm = save_tiny_classifier(ctx["tmp"] / "rm", hidden_size=64)
    texts = ["The answer is 4.\n#### 4", "I think 5", "", "Great question! #### 7"]
    reference = LearnedRewardModel(str(rm), device="cpu")(completions=texts)
    out: dict[str, Any] = {}
    for name, options in (("fp32", {}), ("bf16", {"dtype": "bfloat16"}), ("4bit", {"load_in_4bit": True})):
        reward = LearnedRewardModel(str(rm), device=ctx["device"], **options)
        scores = reward(completions=texts)
        out[f"{name}_device"] = str(reward.models[0].classifier.device)
        out[f"{name}_max_abs_diff_vs_cpu"] = max(abs(a - b) for a, b in zip(scores, reference))
    if out["fp32_max_abs_diff_vs_cpu"] > 1e-3:
        raise AssertionError(f"fp32 scores on {ctx['device']} differ from CPU: {out}")
    return out


@check
def heldout_kl(ctx) -> dict[str, Any]:
    from trl_lab import GRPOConfig, GRPOTrainer
    from trl_lab.callbacks.heldout import HeldOutAccuracyCallback

    trainer = GRPOTrainer(model=str(ctx["model"]), reward_funcs=_length_reward,
                          args=_config(GRPOConfig, ctx["tmp"] / "heldout", ctx["device"], max_steps=3, beta=0.0),
                          train_dataset=_questions(8), peft_config=_lora())
    callback = HeldOutAccuracyCallback(_questions(6), eval_steps=3, max_new_tokens=8, batch_size=4,
                                       checker=_length_reward, threshold=0.5).bind(trainer)
    trainer.train()
    kls = [h["kl_to_ref"] for h in callback.history]
    if len(kls) < 2 or abs(kls[0]) > 1e-4 or not kls[-1] > 0:
        raise AssertionError(f"kl_to_ref should start at 0 and grow: {kls}")
    return {"kl_to_ref": kls, "eval_seconds": [h["seconds"] for h in callback.history],
            "reference": callback._reference.kind}


@check
def merged_generation(ctx) -> dict[str, Any]:
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.merged_adapter import merged_lora

    device = ctx["device"]
    tok = AutoTokenizer.from_pretrained(ctx["model"])
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(ctx["model"]), _lora()).to(device).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" not in n}
    ids = torch.tensor([tok("What is 2 + 2?")["input_ids"]], device=device)
    kwargs = dict(max_new_tokens=16, do_sample=False, pad_token_id=tok.pad_token_id)
    plain = model.generate(input_ids=ids, **kwargs)
    with merged_lora(model) as reason:
        merged = model.generate(input_ids=ids, **kwargs)
    same_weights = all(torch.equal(before[n], p) for n, p in model.named_parameters() if n in before)
    if reason is not None or not same_weights:
        raise AssertionError(f"merge skipped ({reason}) or weights changed ({same_weights})")
    return {"identical_tokens": bool(torch.equal(plain, merged)), "weights_bit_identical": same_weights}


def environment(device: str) -> dict[str, Any]:
    import importlib.metadata as md

    import torch

    env = {"python": platform.python_version(), "device": device, "torch": torch.__version__}
    for dist in ("trl", "transformers", "peft", "accelerate", "datasets", "bitsandbytes"):
        try:
            env[dist] = md.version(dist)
        except md.PackageNotFoundError:
            env[dist] = None
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--checks", nargs="+", default=list(CHECKS), choices=list(CHECKS))
    parser.add_argument("--out", default="gpu_check.json")
    args = parser.parse_args(argv)
    import torch

    from trl_lab.testing import save_tiny_chat_model

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ctx: dict[str, Any] = {"device": device, "tmp": tmp, "model": save_tiny_chat_model(tmp / "policy"), "results": {}}
    report: dict[str, Any] = {"environment": environment(device), "checks": {}}
    for name in args.checks:
        start = time.perf_counter()
        try:
            result = CHECKS[name](ctx)
            ctx["results"][name] = result
            entry = {"status": "ok", **result}
        except Exception as exc:  # record and go on: one broken path must not hide the others
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}",
                     "traceback": traceback.format_exc(limit=6)}
        entry["seconds"] = time.perf_counter() - start
        report["checks"][name] = entry
        print(f"{name:18s} {entry['status']:7s} {entry['seconds']:6.1f} s  "
              + (entry.get("error", "") or json.dumps({k: v for k, v in entry.items()
                                                       if k not in ("status", "seconds", "traceback")})[:160]),
              flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(0 if all(c["status"] == "ok" for c in report["checks"].values()) else 1)
