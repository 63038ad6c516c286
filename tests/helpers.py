"""Small builders shared by the trainer tests: tiny training configs and YAML run files."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

# A training config that runs a tiny model for a couple of CPU steps in about a second.
TINY_TRAINING: dict[str, Any] = dict(
    max_steps=2,
    per_device_train_batch_size=4,
    max_completion_length=8,
    learning_rate=1e-3,
    logging_steps=1,
    report_to="none",
    save_strategy="no",
    use_cpu=True,
    bf16=False,
    activation_checkpointing=False,
    seed=0,
)


def tiny_config(config_cls: type, tmp_path: Path, **overrides: Any):
    """``config_cls`` (GRPOConfig, PPOConfig, …) with :data:`TINY_TRAINING`, writing under ``tmp_path/out``."""
    return config_cls(**{"output_dir": str(tmp_path / "out"), **TINY_TRAINING, **overrides})


def write_tiny_run_config(tmp_path: Path, model_dir: Path, data_dir: Path, **extra: Any) -> Path:
    """A YAML run file for the example scripts: tiny model + LoRA, local GSM8K, one step; ``extra`` overrides."""
    config = {
        "model_name_or_path": str(model_dir),
        "dataset_source": "local",
        "dataset_path": str(data_dir),
        "train_size": 8,
        "rewards": [{"name": "gsm8k"}, {"name": "gsm8k_format", "weight": 0.2}],
        "output_dir": str(tmp_path / "run"),
        "max_steps": 1,
        "per_device_train_batch_size": 2,
        "num_generations": 2,
        "max_completion_length": 8,
        "logging_steps": 1,
        "report_to": "none",
        "save_strategy": "no",
        "bf16": False,
        "activation_checkpointing": False,
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
        **extra,
    }
    path = tmp_path / "tiny_run.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    """A TCP port nothing listens on now, for the ranks' rendezvous.

    accelerate's default (29500) is shared by every launch on the machine: a second launch running at the same
    time (another test session, a helper's run) would join the first one's store and both would hang.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_two_cpu_processes(script: Path, *args: str, cwd: Path) -> "subprocess.CompletedProcess[str]":
    """Run ``script`` under ``accelerate launch`` with examples/accelerate/cpu_2proc.yaml; fails with its output."""
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(REPO / "examples" / "accelerate" / "cpu_2proc.yaml"),
        "--main_process_port", str(free_port()),
        str(script), *args,
    ]
    hooks = REPO / "tests" / "launch_hooks"
    env = {
        **os.environ,
        "PYTHONPATH": f"{hooks}{os.pathsep}{REPO}",
        "OMP_NUM_THREADS": "1",
        "TRL_LAB_HANG_DUMP_S": os.environ.get("TRL_LAB_HANG_DUMP_S", "240"),
    }
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-10000:]
    return out


def task_samples(n_questions: int = 60) -> list[dict]:
    """Policy samples on the study task's training questions: per question two right answers and two wrong ones,
    one long and one short of each."""
    from trl_lab.data.gsm8k import load_gsm8k

    rows = load_gsm8k("reasoning_gym", "train", limit=n_questions, seed=0, task="basic_arithmetic",
                      task_config={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1})
    samples = []
    for question, answer in zip(rows["question"], rows["answer"]):
        wrong = str(int(float(answer)) + 1)
        for text in (f"{answer}", f"Let me work this out step by step carefully. The result is {answer}",
                     f"{wrong}", f"Let me work this out step by step carefully, twice over. The result is {wrong}"):
            samples.append({"question": question, "answer": answer, "completion": text})
    return samples


def load_bench(name: str):
    """``bench/<name>.py`` as a module (the bench folder is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
