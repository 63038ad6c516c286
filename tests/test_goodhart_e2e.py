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

from tests.test_goodhart import hook_args
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


def lora_trainer(model_dir, output_dir, callbacks, **overrides):
    """A plain transformers Trainer on the tiny model with a LoRA adapter (r=4) and 32 toy rows."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(model_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    rows = Dataset.from_list([{"input_ids": [5 + i, 6 + i, 7 + i, 8 + i], "labels": [5 + i, 6 + i, 7 + i, 8 + i]}
                              for i in range(32)])
    args = TrainingArguments(**{
        "output_dir": str(output_dir), "max_steps": len(ACCURACY), "per_device_train_batch_size": 2,
        "learning_rate": 5e-2, "logging_steps": 1, "save_strategy": "steps", "save_steps": 3, "report_to": "none",
        "use_cpu": True, "disable_tqdm": True, **overrides,
    })
    return Trainer(model=model, args=args, train_dataset=rows, callbacks=callbacks)


def test_plain_trainer_with_lora_checkpoints_and_gold_from_logs(tmp_path, tiny_model_dir):
    scripted = ScriptedLogs()
    goodhart = GoodhartCallback("fake/proxy")
    trainer = lora_trainer(tiny_model_dir, tmp_path / "out", [scripted, goodhart])
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
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


class CrashAfter(TrainerCallback):
    """Kills the run at ``step``'s log (after the callbacks before it have seen the log), like a lost job."""

    def __init__(self, step: int):
        self.step = step

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt("job lost")


class FirstStepProbe(TrainerCallback):
    """Copies the state of the trainer's active GoodhartCallback as the resumed run starts its first step."""

    def __init__(self):
        self.trainer = None
        self.seen: dict | None = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.seen is None:
            active = [cb for cb in self.trainer.callback_handler.callbacks if isinstance(cb, GoodhartCallback)]
            assert len(active) == 1
            self.seen = json.loads(json.dumps(active[0].state()))


def uninterrupted_reference(rule: str) -> GoodhartCallback:
    """The same stream fed to observe() without a trainer: what a run that was never interrupted decides."""
    reference, ema = GoodhartCallback("fake/proxy", rule=rule), None
    for step, gold in enumerate(ACCURACY, start=1):
        proxy = 0.1 * step  # ScriptedLogs' proxy, smoothed as on_log does
        ema = proxy if ema is None else ema + reference.proxy_ema * (proxy - ema)
        if reference.observe(step, ema, gold, gold_stderr=0.02):
            return reference
    raise AssertionError("the reference never triggered")


def assert_ends_with_best_adapter(trainer, best, last) -> None:
    """Training moved the trainable weights after the best step, and the model ends with the best step's ones."""
    assert any(not torch.equal(best[n], last[n]) for n in best)
    trained = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    assert set(trained) == set(best)
    for name, param in trained.items():
        assert torch.equal(param.detach(), best[name]), name


@pytest.mark.parametrize("restore_flag", [False, True], ids=["default-resume", "restore_callback_states"])
def test_resume_from_checkpoint_continues_the_detector(tmp_path, tiny_model_dir, restore_flag):
    out = tmp_path / "out"
    reference = uninterrupted_reference("paired_z")
    assert (reference.triggered_step, reference.trigger_reason, reference.best_step) == (7, "collapse", 4)

    # Run 1: checkpoints at steps 2 and 4, then the job dies at step 5 (seen by the callback, not saved).
    first_logs = ScriptedLogs()
    first = GoodhartCallback("fake/proxy", rule="paired_z")
    trainer = lora_trainer(tiny_model_dir, out, [first_logs, first, CrashAfter(5)], save_steps=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert [e["step"] for e in first.history] == [1, 2, 3, 4, 5] and not first.triggered
    assert not (out / "checkpoint-6").exists()
    # At the checkpoint, step 3 was the best so far (smoothed 0.58) and step 4 was still pending.
    on_disk = sorted(p.name for p in (out / "goodhart_best").glob("*.safetensors"))
    assert on_disk == ["step-3.safetensors", "step-4.safetensors"]
    saved = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())["stateful_callbacks"]

    # Run 2: a new process would build everything again; nothing from run 1 is reused but the files.
    logs = ScriptedLogs()
    goodhart = GoodhartCallback("fake/proxy", rule="paired_z")
    probe = FirstStepProbe()
    trainer = lora_trainer(tiny_model_dir, out, [logs, goodhart, probe], save_steps=2,
                           restore_callback_states_from_checkpoint=restore_flag)
    probe.trainer = trainer
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    active = [cb for cb in trainer.callback_handler.callbacks if isinstance(cb, GoodhartCallback)]
    assert len(active) == 1
    resumed = active[0]
    if not restore_flag:
        assert resumed is goodhart  # the caller's own object carries the verdict

    # It started step 5 with exactly the detector state that run 1 had after step 4.
    at_checkpoint = GoodhartCallback("fake/proxy", rule="paired_z")
    for entry in reference.history[:4]:
        at_checkpoint.observe(entry["step"], entry["proxy"], entry["gold"], gold_stderr=0.02)
    at_checkpoint.proxy_smoothed = reference.history[3]["proxy"]  # the EMA after step 4's log
    assert probe.seen["attributes"] == json.loads(json.dumps(at_checkpoint.state()))["attributes"]
    assert probe.seen == saved["GoodhartCallback"]
    assert probe.seen["attributes"]["best_step"] == 3
    assert probe.seen["attributes"]["best_gold"] == pytest.approx(0.58)
    assert [e["step"] for e in probe.seen["attributes"]["history"]] == [1, 2, 3, 4]

    # It then decides what the uninterrupted run decides, at the same step.
    assert trainer.state.global_step == resumed.triggered_step == reference.triggered_step == 7
    assert resumed.trigger_reason == "collapse" and resumed.best_step == 4
    assert resumed.proxy_point == reference.proxy_point and resumed.best_gold == reference.best_gold
    assert resumed.history == reference.history
    report = json.loads((out / "goodhart.json").read_text())
    assert report["triggered_step"] == 7 and report["best_step"] == 4 and report["restored"]
    assert report["history"] == reference.history

    # The best step (4) was trained by run 1; the checkpoint at step 6 came before the trigger. Its weights,
    # written at the step-4 save, must survive that save and be the ones put back after the trigger.
    assert (out / "checkpoint-6").is_dir()
    assert_ends_with_best_adapter(trainer, best=first_logs.weights[4], last=logs.weights[7])


def test_resume_picks_its_own_saved_state_and_stops_past_a_trigger(tmp_path, caplog):
    from transformers import TrainerControl, TrainerState

    fired = uninterrupted_reference("glr")  # fired at step 7
    early = GoodhartCallback("fake/proxy")
    early.observe(1, 0.1, 0.4, gold_stderr=0.02)
    other = GoodhartCallback("fake/proxy", "other/accuracy")
    # transformers appends one entry per save when a class has several instances: the last match is current
    saved = json.loads(json.dumps({"GoodhartCallback": [other.state(), early.state(), fired.state()]}))
    args = hook_args(tmp_path)

    cb, control = GoodhartCallback("fake/proxy"), TrainerControl()
    state = TrainerState(global_step=7, stateful_callbacks=saved)
    cb.on_train_begin(args, state, control)
    assert cb.triggered_step == 7 and cb.best_step == 4 and cb.history == fired.history
    state.global_step = 8  # a checkpoint saved at the trigger step was resumed: stop after one step
    cb.on_step_end(args, state, control)
    assert control.should_training_stop and len(cb.history) == 7

    unknown = GoodhartCallback("fake/proxy", "third/accuracy")
    with caplog.at_level("WARNING", logger="trl_lab.callbacks.goodhart"):
        unknown.on_train_begin(args, TrainerState(global_step=7, stateful_callbacks=saved), TrainerControl())
    assert unknown.history == [] and "starts afresh" in caplog.text


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rl_trainer_with_lora_resumes_the_detector_like_an_uninterrupted_run(tmp_path, tiny_model_dir, algorithm):
    """The same crash-and-resume as above, under our GRPO / PPO trainers with a LoRA adapter and their checkpoints,
    with the default rule (glr)."""
    from peft import LoraConfig

    from tests.helpers import tiny_config
    from trl_lab import PPOConfig, PPOTrainer

    out = tmp_path / "out"
    reference = uninterrupted_reference("glr")  # the default rule: its windows since the best step are resumed too

    def grpo(callbacks):
        torch.manual_seed(0)
        common = dict(rewards=None, max_steps=len(ACCURACY), learning_rate=5e-2, max_completion_length=8,
                      per_device_train_batch_size=2, save_strategy="steps", save_steps=2, logging_steps=1)
        trainer_cls, args = (GRPOTrainer, tiny_args(tmp_path, **common)) if algorithm == "grpo" else (
            PPOTrainer, tiny_config(PPOConfig, tmp_path, **common))
        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
        return trainer_cls(model=str(tiny_model_dir), reward_funcs=[RisingReward()], args=args,
                           train_dataset=gsm_rows(), callbacks=callbacks, peft_config=lora)

    first_logs, first = ScriptedLogs(), GoodhartCallback("fake/proxy")
    with pytest.raises(KeyboardInterrupt):
        grpo([first_logs, first, CrashAfter(5)]).train()
    assert [e["step"] for e in first.history] == [1, 2, 3, 4, 5] and not first.triggered

    logs, goodhart = ScriptedLogs(), GoodhartCallback("fake/proxy")
    trainer = grpo([logs, goodhart])
    trainer.train(resume_from_checkpoint=str(out / "checkpoint-4"))
    assert trainer.state.global_step == goodhart.triggered_step == reference.triggered_step == 7
    assert (goodhart.trigger_reason, goodhart.best_step) == ("collapse", 4)
    assert goodhart.history == reference.history and goodhart.proxy_point == reference.proxy_point
    # Step 4's adapter, trained by the crashed run, is what the resumed run ends with.
    assert_ends_with_best_adapter(trainer, best=first_logs.weights[4], last=logs.weights[7])
