"""GoodhartCallback inside a real trainer: GRPO on a tiny model with a scripted held-out source.

The reward rises with every call (the proxy climbs); a scripted GoldItemsSource reports per-item held-out
results at every step whose accuracy rises, peaks, then falls. The callback must stop training early and
put back the trainable weights of the best step, compared tensor by tensor with a copy taken at that step.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from transformers import TrainerCallback

from tests.test_grpo_e2e import gsm_rows, tiny_args
from trl_lab import GRPOTrainer
from trl_lab.callbacks import GoodhartCallback

N_ITEMS = 300
# accuracy at steps 1, 2, ...: rises to a peak at step 4, then falls 8 points per step
ACCURACY = [0.40, 0.52, 0.60, 0.62, 0.54, 0.46, 0.38, 0.30] + [0.30] * 8


class ScriptedHeldout(TrainerCallback):
    """A GoldItemsSource: 'evaluates' at every step with scripted per-item results; records the weights."""

    def __init__(self):
        self.last_items: list[bool] | None = None
        self.last_step: int | None = None
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        acc = ACCURACY[step - 1]
        items = np.zeros(N_ITEMS, dtype=bool)
        items[: round(acc * N_ITEMS)] = True
        self.last_items = np.random.default_rng(step).permutation(items).tolist()
        self.last_step = step
        self.weights[step] = {n: p.detach().clone() for n, p in model.named_parameters()}


class RisingReward:
    """Reward that climbs with every call, with noise so GRPO's advantages (and gradients) are not zero."""

    __name__ = "rising"

    def __init__(self):
        self.calls = 0
        self.rng = random.Random(0)

    def __call__(self, completions, **kwargs):
        self.calls += 1
        return [0.1 * self.calls + self.rng.random() for _ in completions]


def test_grpo_stops_early_and_restores_best_weights(tmp_path, tiny_model_dir):
    heldout = ScriptedHeldout()
    goodhart = GoodhartCallback(heldout=heldout)
    args = tiny_args(tmp_path, rewards=None, max_steps=len(ACCURACY), learning_rate=5e-2, max_completion_length=8,
                     per_device_train_batch_size=2)
    trainer = GRPOTrainer(
        model=str(tiny_model_dir), reward_funcs=[RisingReward()], args=args, train_dataset=gsm_rows(),
        callbacks=[heldout, goodhart],
    )
    trainer.train()
    stopped = trainer.state.global_step
    assert stopped < args.max_steps
    assert goodhart.triggered_step == stopped and goodhart.trigger_reason == "goodhart"
    assert stopped == 7  # z about 3.8 at step 6 and 6.3 at step 7: two in a row above 3.5
    assert goodhart.best_step == 4  # peak of the 3-point moving average of ACCURACY
    assert [e["step"] for e in goodhart.history] == list(range(1, stopped + 1))
    rewards = [e["reward"] for e in trainer.state.log_history if "reward" in e]
    assert goodhart.proxy_point < rewards[-1]

    best, last = heldout.weights[goodhart.best_step], heldout.weights[stopped]
    assert any(not torch.equal(best[n], last[n]) for n in best)  # training moved the weights after the peak
    assert goodhart.restored
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param.detach(), best[name]), name

    report = json.loads((tmp_path / "out" / "goodhart.json").read_text())
    assert report["triggered"] and report["restored"] and report["best_step"] == 4
    assert report["triggered_step"] == stopped


class ScriptedLogs(TrainerCallback):
    """Injects a rising proxy and scripted held-out accuracy (with stderr) into each step's logs."""

    def __init__(self):
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.weights[state.global_step] = {
            n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad
        }

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs["fake/proxy"] = 0.1 * state.global_step
        logs["heldout/accuracy"] = ACCURACY[state.global_step - 1]
        logs["heldout/accuracy_stderr"] = 0.02


def test_plain_trainer_with_lora_checkpoints_and_gold_from_logs(tmp_path, tiny_model_dir):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    rows = Dataset.from_list([{"input_ids": [5 + i, 6 + i, 7 + i, 8 + i], "labels": [5 + i, 6 + i, 7 + i, 8 + i]}
                              for i in range(32)])
    scripted = ScriptedLogs()
    goodhart = GoodhartCallback("fake/proxy")
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=len(ACCURACY), per_device_train_batch_size=2,
        learning_rate=5e-2, logging_steps=1, save_strategy="steps", save_steps=3, report_to="none",
        use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows, callbacks=[scripted, goodhart])
    trainer.train()
    # se_ref = sqrt(3 * 0.02^2) / 3: z = (0.5867 - g) / 0.0231 = 5.5 at step 6, 8.9 (>= collapse_z 7) at step 7
    assert trainer.state.global_step == goodhart.triggered_step == 7 and goodhart.trigger_reason == "collapse"
    ema = 0.1
    for step in (2, 3, 4):
        ema += 0.3 * (0.1 * step - ema)
    assert goodhart.best_step == 4 and goodhart.proxy_point == pytest.approx(ema)
    saved = sorted(p.name for p in (tmp_path / "out" / "goodhart_best").glob("*.safetensors"))
    assert saved and (tmp_path / "out" / "checkpoint-6").is_dir()
    best = scripted.weights[4]
    assert set(best) == {n for n, p in trainer.model.named_parameters() if p.requires_grad}  # the adapter only
    assert any(not torch.equal(best[n], scripted.weights[7][n]) for n in best)
    for name, param in trainer.model.named_parameters():
        assert torch.equal(param.detach(), best[name] if param.requires_grad else frozen[name]), name
