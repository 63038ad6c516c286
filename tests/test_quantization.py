"""4-bit loading: a clear error before loading where bitsandbytes cannot run, and QLoRA where it can."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from trl_lab.quantization import QuantizationUnavailableError, check_bitsandbytes

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fresh_probe():
    check_bitsandbytes.cache_clear()
    yield
    check_bitsandbytes.cache_clear()


def _break_bitsandbytes(monkeypatch):
    import bitsandbytes

    def refuse(*args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")

    monkeypatch.setattr(bitsandbytes, "matmul_4bit", refuse)


def test_probe_passes_where_bitsandbytes_runs():
    check_bitsandbytes("cpu")  # bitsandbytes >= 0.46 has a CPU backend


def test_probe_names_the_device_and_the_way_out(monkeypatch):
    _break_bitsandbytes(monkeypatch)
    with pytest.raises(QuantizationUnavailableError) as err:
        check_bitsandbytes("cpu")
    msg = str(err.value)
    assert "device 'cpu'" in msg and "no kernel image" in msg and "--load_in_4bit" in msg


def test_missing_bitsandbytes_gives_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # makes `import bitsandbytes` raise ImportError
    with pytest.raises(QuantizationUnavailableError, match="pip install bitsandbytes"):
        check_bitsandbytes("cpu")


def test_gsm8k_job_refuses_before_loading_anything(monkeypatch, tmp_path):
    from trl_lab.scripts import grpo_gsm8k

    _break_bitsandbytes(monkeypatch)
    monkeypatch.setattr(grpo_gsm8k, "load_gsm8k", lambda *a, **k: pytest.fail("data loaded before the 4-bit check"))
    config = REPO / "examples" / "configs" / "grpo_gsm8k_cpu.yaml"
    with pytest.raises(QuantizationUnavailableError):
        grpo_gsm8k.main(["--load_in_4bit", "--output_dir", str(tmp_path), "--use_cpu", "true"], default_config=config)


def test_qlora_grpo_step_on_cpu(tmp_path, tiny_model_dir):
    """The QLoRA path end to end: 4-bit base (bitsandbytes Linear4bit) + LoRA adapters, one GRPO step."""
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import BitsAndBytesConfig

    from trl_lab import GRPOConfig, GRPOTrainer

    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"{i}+1?"}], "answer": str(i + 1)} for i in range(4)])
    args = GRPOConfig(
        output_dir=str(tmp_path), rewards=["gsm8k", "gsm8k_format=0.2"], max_steps=1, per_device_train_batch_size=4,
        num_generations=2, max_completion_length=8, report_to="none", save_strategy="no", use_cpu=True, bf16=False,
        activation_checkpointing=False, logging_steps=1,
    )
    trainer = GRPOTrainer(
        model=str(tiny_model_dir), args=args, train_dataset=rows,
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4"),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    assert any(type(m).__name__ == "Linear4bit" for m in trainer.model.modules())
    trainer.train()
    entry = next(e for e in trainer.state.log_history if "loss" in e)
    assert math.isfinite(entry["loss"])
