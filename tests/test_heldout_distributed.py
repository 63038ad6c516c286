"""HeldOutAccuracyCallback under `accelerate launch` with two CPU processes: each item scored once, same numbers."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from tests.helpers import launch_two_cpu_processes

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from datasets import Dataset
    from trl_lab import GRPOConfig, GRPOTrainer, completion_text
    from trl_lab.callbacks.heldout import HeldOutAccuracyCallback

    model_dir, out_dir = sys.argv[1:3]
    seen = []

    def parity(completions, answer, idx, **kwargs):
        seen.extend(idx)
        return [float(len(completion_text(c)) % 2 == 0) for c in completions]

    def rows(n):
        return Dataset.from_list([
            {"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i), "idx": i}
            for i in range(n)
        ])

    args = GRPOConfig(
        output_dir=out_dir, rewards=["gsm8k"], max_steps=1, per_device_train_batch_size=2, num_generations=2,
        max_completion_length=6, logging_steps=1, report_to="none", save_strategy="no", bf16=False,
        activation_checkpointing=False, seed=0,
    )
    trainer = GRPOTrainer(model=model_dir, args=args, train_dataset=rows(8))
    with torch.no_grad():  # larger weights: greedy text that differs between prompts
        for p in trainer.model.parameters():
            p.mul_(10)
    cb = HeldOutAccuracyCallback(rows(11), checker=parity, format_reward=None, batch_size=1, max_new_tokens=6,
                                 eval_on_last_step=False, eval_steps=100).bind(trainer)
    trainer.train()
    rank = trainer.accelerator.process_index
    result = dict(rank=rank, world=trainer.accelerator.num_processes, seen=seen, items=cb.last_items,
                  completions=cb.last_completions, history=cb.history,
                  logged=[e for e in trainer.state.log_history if "heldout/accuracy" in e])
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    trainer.accelerator.end_training()
    """
)


def test_two_processes_split_the_items_and_agree(tmp_path, tiny_model_dir):
    script = tmp_path / "heldout_ddp.py"
    script.write_text(SCRIPT)
    out = tmp_path / "run"
    out.mkdir()
    launch_two_cpu_processes(script, str(tiny_model_dir), str(out), cwd=tmp_path)
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["world"] == r1["world"] == 2

    # Each item generated and scored exactly once: rank r takes items r, r+2, ...
    assert r0["seen"] == [0, 2, 4, 6, 8, 10] and r1["seen"] == [1, 3, 5, 7, 9]
    # Gathered: both ranks hold all 11 results, in dataset order, and log the same numbers.
    assert r0["items"] == r1["items"] and r0["completions"] == r1["completions"] and len(r0["items"]) == 11
    assert r0["history"] == [{**h, "seconds": r0["history"][i]["seconds"]} for i, h in enumerate(r1["history"])]
    assert [e["step"] for e in r0["logged"]] == [0] and r0["logged"][0]["heldout/n"] == 11

    # The same completions as one process generating every item alone.
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.callbacks.heldout import prompt_text, generate_greedy

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)
        texts = [
            prompt_text([{"role": "user", "content": f"What is {i} + {i}?"}], tok) for i in range(11)
        ]
        _, completions = generate_greedy(model, tok, texts, max_new_tokens=6, batch_size=1)
    assert r0["completions"] == completions
    assert r0["items"] == [len(c) % 2 == 0 for c in completions]
    assert r0["logged"][0]["heldout/accuracy"] == pytest.approx(sum(r0["items"]) / 11)

    # Only the main process writes files: one metrics line per log call.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "heldout/accuracy" in x] == [0]
