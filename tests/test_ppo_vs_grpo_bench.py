"""bench/ppo_vs_grpo.py --study: the study's PPO and healthy arms timed side by side (tiny model here)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.helpers import REPO


def test_study_mode_times_both_arms_and_prints_the_ratio_table(tiny_model_dir):
    flags = (f"--model_name_or_path {tiny_model_dir} --lora_target_modules q_proj v_proj --lora_r 4 --lora_alpha 8 "
             "--max_completion_length 4 --train_size 8 --cpu_bf16 false --use_cpu true")
    out = subprocess.run([sys.executable, str(REPO / "bench" / "ppo_vs_grpo.py"), "--study", "--steps", "2",
                          "--repeats", "1", "--job_flags", flags], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.splitlines()
    assert any(l.startswith("  run 1/1 ppo (study arm ppo)") for l in lines)
    assert any(l.startswith("  run 1/1 grpo (study arm healthy)") for l in lines)
    table = {l[:26].strip(): l[26:].split() for l in lines[lines.index(next(l for l in lines if l.startswith("metric"))):]}
    ppo, grpo, ratio = map(float, table["step time (s)"])
    # the table prints 4 significant digits: on a fast machine (steps of ~0.04 s) the ratio of the printed times
    # differs from the printed ratio (of the unrounded times) by up to ~0.3%
    assert ppo > 0 and grpo > 0 and ratio == pytest.approx(ppo / grpo, rel=0.01)
    # equal generated tokens per step is the arm's design: 8 completions each (num_tokens counts prompts too)
    assert float(table["tokens / step (num_tokens)"][0]) > 0 and float(table["peak CPU RSS (MiB)"][0]) > 0
