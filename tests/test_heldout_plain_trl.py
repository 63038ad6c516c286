"""HeldOutAccuracyCallback and GoodhartCallback on plain ``trl.GRPOTrainer`` / ``trl.RLOOTrainer`` (issue 13, part 3).

No trl_lab trainer is involved: TRL's own trainers and configs, a tiny random model, and the callbacks. The
held-out results reach the trainer's evaluation metrics, so ``metric_for_best_model: heldout/accuracy`` with
``load_best_model_at_end`` and transformers' ``EarlyStoppingCallback`` work on them.
"""

from __future__ import annotations

import json

import pytest
import torch
import trl
from datasets import Dataset
from safetensors.torch import load_file
from transformers import EarlyStoppingCallback

from tests.helpers import TINY_TRAINING
from trl_lab.callbacks import GoodhartCallback, HeldOutAccuracyCallback

TRAINERS = {"grpo": (trl.GRPOTrainer, trl.GRPOConfig), "rloo": (trl.RLOOTrainer, trl.RLOOConfig)}


def questions(n: int) -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)}
                              for i in range(n)])


def length_reward(completions, **kwargs):
    return [float(len(c[0]["content"])) for c in completions]


def scripted_checker(accuracy_by_step: dict[int, float]):
    """A checker whose accuracy at each step is scripted: the first ``round(acc * n)`` items are right."""

    def checker(prompts, completions, trainer_state=None, **kwargs):
        k = round(accuracy_by_step.get(trainer_state.global_step, 0.0) * len(completions))
        return [1.0 if i < k else 0.0 for i in range(len(completions))]

    return checker


def build(kind: str, tmp_path, tiny_model_dir, eval_dataset=None, **overrides):
    trainer_cls, config_cls = TRAINERS[kind]
    settings = {k: v for k, v in TINY_TRAINING.items() if k != "activation_checkpointing"}
    args = config_cls(output_dir=str(tmp_path / "out"), **{**settings, "max_steps": 4, "num_generations": 2,
                                                            "per_device_train_batch_size": 2, **overrides})
    return trainer_cls(model=str(tiny_model_dir), reward_funcs=length_reward, args=args, train_dataset=questions(8),
                       eval_dataset=eval_dataset)


@pytest.mark.parametrize("kind", list(TRAINERS))
def test_heldout_and_goodhart_on_a_plain_trl_trainer(kind, tmp_path, tiny_model_dir):
    trainer = build(kind, tmp_path, tiny_model_dir)
    heldout = HeldOutAccuracyCallback(questions(6), trainer=trainer, eval_steps=2, checker="gsm8k",
                                      max_new_tokens=6, show_progress=False, kl_items=2)
    goodhart = GoodhartCallback("reward", heldout=heldout)
    trainer.add_callback(goodhart)
    trainer.train()
    logged = [(e["step"], e["heldout/accuracy"]) for e in trainer.state.log_history if "heldout/accuracy" in e]
    assert [step for step, _ in logged] == [0, 2, 4]
    assert all(0.0 <= acc <= 1.0 for _, acc in logged)
    assert "heldout/kl_to_ref" in next(e for e in trainer.state.log_history if "heldout/accuracy" in e)
    # the detector saw every held-out evaluation with its per-item results and the TRL reward as proxy
    assert [e["step"] for e in goodhart.history] == [0, 2, 4]
    assert len(goodhart.window_items[-1]) == 6
    assert all(e["proxy"] == e["proxy"] for e in goodhart.history[1:])  # not NaN after the first step
    report = json.loads((tmp_path / "out" / "goodhart.json").read_text())
    assert report["triggered"] is False and report["best_step"] is not None


@pytest.mark.parametrize("kind", ["grpo", pytest.param("rloo", marks=pytest.mark.slow)])  # rloo: ~25 s on 2 cores
def test_best_heldout_step_is_the_model_loaded_at_end_and_early_stopping_reads_it(kind, tmp_path, tiny_model_dir):
    accuracy = {1: 0.25, 2: 1.0, 3: 0.5, 4: 0.25, 5: 0.25, 6: 0.25}
    trainer = build(kind, tmp_path, tiny_model_dir, eval_dataset=questions(2), max_steps=6, save_only_model=True, eval_strategy="steps", eval_steps=1,
                    save_strategy="steps", save_steps=1, load_best_model_at_end=True,
                    metric_for_best_model="heldout/accuracy", greater_is_better=True,
                    per_device_eval_batch_size=2, learning_rate=5e-2)
    trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=2))
    heldout = HeldOutAccuracyCallback(questions(4), trainer=trainer, eval_steps=1, checker=scripted_checker(accuracy),
                                      format_reward=None, kl_to_ref=False, max_new_tokens=4, show_progress=False)
    callbacks = trainer.callback_handler.callbacks
    assert callbacks.index(heldout) < next(i for i, c in enumerate(callbacks) if isinstance(c, EarlyStoppingCallback))
    trainer.train()
    evals = [e for e in trainer.state.log_history if "eval_runtime" in e]
    assert [e["step"] for e in evals] == [1, 2, 3, 4]  # best at 2, two evaluations without a gain, stop
    assert trainer.state.global_step == 4
    assert trainer.state.best_global_step == 2 and trainer.state.best_metric == 1.0
    assert trainer.state.best_model_checkpoint.endswith("checkpoint-2")
    best = load_file(str(tmp_path / "out" / "checkpoint-2" / "model.safetensors"))
    last = load_file(str(tmp_path / "out" / "checkpoint-4" / "model.safetensors"))
    params = dict(trainer.model.named_parameters())
    changed = [name for name in best if not torch.equal(best[name], last[name])]
    assert changed  # training moved the weights between the best and the last step
    for name in changed:
        assert torch.equal(params[name].detach().cpu(), best[name])
    # trainer.evaluate() afterwards also reports the held-out results
    assert "eval_heldout/accuracy" in trainer.evaluate()
