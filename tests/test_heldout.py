"""HeldOutAccuracyCallback on a tiny random model: what it logs, when, and that its numbers are the checker's."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from datasets import Dataset

from trl_lab import GRPOConfig, GRPOTrainer, completion_text
from trl_lab.callbacks.heldout import HeldOutAccuracyCallback, prompt_text
from trl_lab.callbacks.metrics_log import MetricsLoggerCallback
from tests.helpers import tiny_config

KEYS = ("heldout/accuracy", "heldout/accuracy_stderr", "heldout/mean_length", "heldout/format_rate")


def questions(n: int) -> Dataset:
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}], "answer": str(2 * i)} for i in range(n)]
    return Dataset.from_list(rows)


def tiny_args(tmp_path, **overrides) -> GRPOConfig:
    defaults = dict(rewards=["gsm8k", "gsm8k_format=0.2"], max_steps=4, num_generations=2, beta=0.04)
    return tiny_config(GRPOConfig, tmp_path, **{**defaults, **overrides})


@pytest.fixture
def trainer(tmp_path, tiny_model_dir):
    return GRPOTrainer(model=str(tiny_model_dir), args=tiny_args(tmp_path), train_dataset=questions(8))


def parity(completions, answer, **kwargs):
    """A scripted checker with a non-trivial pass rate on random text: even character count."""
    return [float(len(completion_text(c)) % 2 == 0) for c in completions]


def script_answers(model, tokenizer, text_for=lambda q: f"#### {2 * q}", calls=None):
    """Make ``model.generate`` answer every 'What is i + i?' prompt with ``text_for(i)`` then EOS."""

    def generate(input_ids, attention_mask=None, max_new_tokens=None, **kwargs):
        if calls is not None:
            calls.append({"training": model.training, "grad": torch.is_grad_enabled(), "kwargs": kwargs})
        rows = []
        for ids in input_ids.tolist():
            q = int(re.findall(r"What is (\d+) \+", tokenizer.decode(ids))[-1])
            rows.append(tokenizer.encode(text_for(q), add_special_tokens=False) + [tokenizer.eos_token_id])
        width = max(map(len, rows))
        rows = [r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows]
        return torch.cat([input_ids, torch.tensor(rows, dtype=input_ids.dtype)], dim=1)

    model.generate = generate


def test_logs_at_step_zero_and_every_eval_step_without_eating_trl_metrics(tmp_path, tiny_model_dir):
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=tiny_args(tmp_path, max_steps=5), train_dataset=questions(8))
    cb = HeldOutAccuracyCallback(questions(6), eval_steps=2, max_new_tokens=6, batch_size=4, table_size=3).bind(trainer)
    assert sum(isinstance(c, MetricsLoggerCallback) for c in trainer.callback_handler.callbacks) == 1
    trainer.train()
    history = trainer.state.log_history

    held = [e for e in history if "heldout/accuracy" in e]
    assert [e["step"] for e in held] == [0, 2, 4, 5]  # before the first step, every 2 steps, and the last
    for e in held:
        assert all(k in e and math.isfinite(e[k]) for k in KEYS), e
        assert e["heldout/n"] == 6 and 0 < e["heldout/mean_length"] <= 6
        assert "reward" not in e  # TRL's pending training metrics are not folded into the held-out entry
    # ... and every step's own training log still has them, eval steps included.
    train = [e for e in history if "reward" in e]
    assert [e["step"] for e in train] == [1, 2, 3, 4, 5]
    assert all("kl" in e and "rewards/gsm8k/mean" in e and "loss" in e for e in train)

    assert [h["step"] for h in cb.history] == [0, 2, 4, 5] and cb.last_step == 5
    assert [h["accuracy"] for h in cb.history] == [e["heldout/accuracy"] for e in held]
    assert len(cb.last_items) == 6 and len(cb.last_completions) == 6

    out = tmp_path / "out"
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "heldout/accuracy" in x] == [0, 2, 4, 5]
    table = [json.loads(x) for x in (out / "heldout" / "step_000004.jsonl").read_text().splitlines()]
    assert [r["index"] for r in table] == [0, 1, 2] and table[0]["prompt"] == "What is 0 + 0?"
    assert sorted(p.name for p in (out / "heldout").iterdir()) == [f"step_{s:06d}.jsonl" for s in (0, 2, 4, 5)]
    assert (out / "report.png").stat().st_size > 10_000  # written at on_train_end
    assert json.loads((out / "report.json").read_text())["n_heldout_evals"] == 4


def test_accuracy_is_the_checkers_on_independent_greedy_completions(trainer):
    data = questions(10)
    with torch.no_grad():  # larger weights: greedy text that differs between prompts (not one repeated token)
        for param in trainer.model.parameters():
            param.mul_(10)
    cb = HeldOutAccuracyCallback(data, checker=parity, max_new_tokens=7, batch_size=4, format_reward=None).bind(trainer)
    metrics = cb.evaluate()

    model, tok = trainer.model, trainer.processing_class
    tok.padding_side = "left"
    texts = []
    with torch.no_grad():
        for start in range(0, 10, 4):
            prompts = [prompt_text(p, tok) for p in data["prompt"][start : start + 4]]
            enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
            out = model.generate(**enc, max_new_tokens=7, do_sample=False, pad_token_id=tok.pad_token_id)
            texts += tok.batch_decode(out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    expected = [len(t) % 2 == 0 for t in texts]
    assert 0 < sum(expected) < 10, "the scripted checker should pass some items and fail others"
    assert cb.last_completions == texts
    assert cb.last_items == expected
    p = sum(expected) / 10
    assert metrics["heldout/accuracy"] == pytest.approx(p)
    assert metrics["heldout/accuracy_stderr"] == pytest.approx(math.sqrt(p * (1 - p) / 10))
    assert "heldout/format_rate" not in metrics and math.isnan(cb.history[-1]["format_rate"])


def test_model_that_always_answers_correctly_scores_one_with_zero_stderr(trainer):
    tok = trainer.processing_class
    calls = []
    script_answers(trainer.model, tok, calls=calls)
    cb = HeldOutAccuracyCallback(questions(7), batch_size=3, max_new_tokens=16).bind(trainer)
    metrics = cb.evaluate()
    assert metrics["heldout/accuracy"] == 1.0 and metrics["heldout/accuracy_stderr"] == 0.0
    assert metrics["heldout/format_rate"] == 1.0
    assert cb.last_items == [True] * 7 and cb.last_completions[3] == "#### 6"
    lengths = [len(tok.encode(f"#### {2 * i}", add_special_tokens=False)) + 1 for i in range(7)]  # + EOS
    assert metrics["heldout/mean_length"] == pytest.approx(sum(lengths) / 7)
    assert len(calls) == 3 and all(c["kwargs"]["do_sample"] is False for c in calls)  # batches of 3, greedy


def test_eval_mode_and_no_grad_inside_train_mode_restored_after(trainer):
    calls = []
    script_answers(trainer.model, trainer.processing_class, calls=calls)
    cb = HeldOutAccuracyCallback(questions(2)).bind(trainer)
    for mode in (True, False):
        trainer.model.train(mode)
        cb.evaluate()
        assert trainer.model.training is mode
        assert calls[-1]["training"] is False and calls[-1]["grad"] is False


def test_threshold_decides_correct_for_graded_rewards(trainer):
    script_answers(trainer.model, trainer.processing_class, text_for=lambda q: "x" * (q + 1))

    def graded(completions, **kwargs):  # 0.0, 0.25, 0.5, 0.75 by completion length
        return [min(len(completion_text(c)) - 1, 3) / 4 for c in completions]

    for threshold, expected in ((0.5, [False, False, True, True]), (0.75, [False, False, False, True])):
        cb = HeldOutAccuracyCallback(questions(4), checker=graded, threshold=threshold, format_reward=None)
        cb.bind(trainer).evaluate()
        assert cb.last_items == expected and cb.last_rewards == [0.0, 0.25, 0.5, 0.75]


def test_checker_by_plugin_name_and_bad_inputs():
    cb = HeldOutAccuracyCallback(questions(2), checker="gsm8k_format", format_reward=None)
    assert cb.checker.name == "gsm8k_format"
    with pytest.raises(ValueError, match="needs a 'prompt' column"):
        HeldOutAccuracyCallback(Dataset.from_list([{"question": "q", "answer": "1"}]))
    with pytest.raises(ValueError, match=r"checker 'gsm8k' needs column\(s\) \['answer'\]"):
        HeldOutAccuracyCallback(Dataset.from_list([{"prompt": "What is 1 + 1?"}]))
    with pytest.raises(RuntimeError, match="not bound to a trainer"):
        cb.on_train_begin(None, None, None)


def test_eval_steps_default_follows_args(trainer):
    from transformers import TrainerState

    cb = HeldOutAccuracyCallback(questions(2))
    state = TrainerState(max_steps=100)
    trainer.args.eval_steps = 7
    assert cb._resolve_eval_steps(trainer.args, state) == 7
    trainer.args.eval_steps = 0.25
    assert cb._resolve_eval_steps(trainer.args, state) == 25
    trainer.args.eval_steps = None
    assert cb._resolve_eval_steps(trainer.args, state) == 50


def test_plain_text_prompts_get_plain_completions(trainer):
    seen = []

    def checker(prompts, completions, answer, **kwargs):
        seen.extend(completions)
        return [1.0] * len(completions)

    script_answers(trainer.model, trainer.processing_class)
    data = Dataset.from_list([{"prompt": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)])
    cb = HeldOutAccuracyCallback(data, checker=checker).bind(trainer)
    assert cb.evaluate()["heldout/accuracy"] == 1.0
    assert seen == ["#### 0", "#### 2", "#### 4"]


def test_metrics_logger_restarts_fresh_runs_and_cuts_back_resumed_ones(tmp_path):
    from transformers import TrainerState

    class Args:
        output_dir = str(tmp_path)

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"loss": 1.0, "step": s}) + "\n" for s in (1, 2, 3, 4)))
    logger = MetricsLoggerCallback(write_report=False)
    logger.on_train_begin(Args, TrainerState(global_step=2), None)  # resumed from step 2
    logger.on_log(Args, TrainerState(global_step=3), None, logs={"loss": 0.5, "nan": float("nan")})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [
        {"loss": 1.0, "step": 1}, {"loss": 1.0, "step": 2}, {"loss": 0.5, "nan": None, "step": 3},
    ]
    fresh = MetricsLoggerCallback(write_report=False)
    fresh.on_log(Args, TrainerState(global_step=0), None, logs={"a": 1})
    assert [json.loads(x) for x in path.read_text().splitlines()] == [{"a": 1, "step": 0}]


def test_proxy_rewards_are_scored_on_the_same_heldout_completions(trainer, tmp_path):
    """``heldout/proxy/<name>``: each proxy's mean on the greedy completions; ``None`` items are left out."""
    tokenizer = trainer.processing_class
    # Items 0-2 answer cheerfully and correctly, items 3-5 flatly and wrongly.
    script_answers(trainer.model, tokenizer,
                   text_for=lambda q: f"Great! #### {2 * q}" if q < 3 else f"meh #### {2 * q + 1}")

    def cheer(completions, **kwargs):
        return [float(completion_text(c).startswith("Great")) for c in completions]

    def only_even(completions, answer, **kwargs):  # None on odd references: "does not apply"
        return [None if int(a) % 4 else float(len(completion_text(c))) for c, a in zip(completions, answer)]

    def chars(completions, **kwargs):
        return [float(len(completion_text(c))) for c in completions]

    cb = HeldOutAccuracyCallback(questions(6), max_new_tokens=8, batch_size=4,
                                 proxy_rewards=[cheer, chars, only_even]).bind(trainer)
    metrics = cb.evaluate()
    assert metrics["heldout/accuracy"] == 0.5
    assert metrics["heldout/proxy/cheer"] == 0.5
    assert cb.last_completions[0] == "Great! #### 0" and cb.last_completions[5] == "meh #### 11"
    assert metrics["heldout/proxy/chars"] == pytest.approx(sum(map(len, cb.last_completions)) / 6)
    # only_even applies to answers 0, 4, 8 (items 0, 2, 4): "Great! #### 0", "Great! #### 4", "meh #### 9"
    expected = [len(cb.last_completions[i]) for i in (0, 2, 4)]
    assert metrics["heldout/proxy/only_even"] == pytest.approx(sum(expected) / 3)
    assert cb.history[-1]["proxy/cheer"] == 0.5
    table = [json.loads(line) for line in (tmp_path / "out" / "heldout" / "step_000000.jsonl").open()]
    assert [r["proxy/cheer"] for r in table[:6]] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0][: len(table)]


def test_proxy_reward_that_needs_a_missing_column_is_refused():
    def needs_topic(completions, topic, **kwargs):
        return [0.0] * len(completions)

    with pytest.raises(ValueError, match="proxy reward 'needs_topic' needs column"):
        HeldOutAccuracyCallback(questions(2), proxy_rewards=[needs_topic])


# ------------------------------------------------------------------------------------- vLLM path
class FakeVLLMGeneration:
    """TRL's ``VLLMGeneration`` interface (sampling attributes, ``sync_weights``, ``generate``), answered greedily
    by the HF model itself so its completions can be compared with the ``model.generate`` path."""

    def __init__(self, model, tokenizer):
        self.model, self.tokenizer = model, tokenizer
        self.temperature, self.top_p, self.top_k, self.min_p = 1.0, 0.9, 50, None
        self.repetition_penalty, self.max_completion_length = 1.1, 7
        self.generation_kwargs = {"temperature": 0.7, "stop": ["\n\n"]}
        self.calls: list[dict] = []
        self.syncs = 0

    def sync_weights(self):
        self.syncs += 1

    def generate(self, prompts, images, num_generations, profiler=None):
        self.calls.append({name: getattr(self, name) for name in (
            "temperature", "top_p", "top_k", "min_p", "repetition_penalty", "max_completion_length")}
            | {"generation_kwargs": dict(self.generation_kwargs), "n_prompts": len(prompts), "images": images,
               "num_generations": num_generations})
        completions = []
        for ids in prompts:
            with torch.no_grad():
                out = self.model.generate(torch.tensor([ids]), max_new_tokens=self.max_completion_length,
                                          do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
            completions.append(out[0, len(ids):].tolist())
        return prompts, completions, None, None


def test_vllm_engine_is_used_greedily_with_fresh_weights_and_trl_settings_restored(trainer):
    reference = HeldOutAccuracyCallback(questions(5), max_new_tokens=6, generation="transformers").bind(trainer)
    expected = reference.evaluate()
    engine = FakeVLLMGeneration(trainer.model, trainer.processing_class)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, engine, -1
    cb = HeldOutAccuracyCallback(questions(5), max_new_tokens=6).bind(trainer)
    got = cb.evaluate()
    assert len(engine.calls) == 1 and engine.syncs == 1 and trainer._last_loaded_step == trainer.state.global_step
    call = engine.calls[0]
    assert (call["temperature"], call["top_p"], call["top_k"], call["min_p"], call["repetition_penalty"]) == (
        0.0, 1.0, 0, 0.0, 1.0)
    assert call["max_completion_length"] == 6 and call["generation_kwargs"] == {"stop": ["\n\n"]}
    assert call["n_prompts"] == 5 and call["num_generations"] == 1 and call["images"] is None
    # TRL's sampling settings are back for training.
    assert (engine.temperature, engine.top_k, engine.max_completion_length) == (1.0, 50, 7)
    assert engine.generation_kwargs == {"temperature": 0.7, "stop": ["\n\n"]}
    # Same greedy answers as model.generate, cut at EOS, so the same numbers.
    assert cb.last_completions == reference.last_completions
    assert {k: v for k, v in got.items() if k != "heldout/eval_seconds"} == pytest.approx(
        {k: v for k, v in expected.items() if k != "heldout/eval_seconds"})
    cb.evaluate()  # same step: the weights are already in vLLM
    assert engine.syncs == 1 and len(engine.calls) == 2


def test_vllm_prompts_are_padded_to_the_largest_shard_and_results_trimmed(trainer):
    from trl_lab.callbacks.heldout import generate_greedy_vllm

    engine = FakeVLLMGeneration(trainer.model, trainer.processing_class)
    trainer.vllm_generation, trainer._last_loaded_step = engine, trainer.state.global_step
    ids, texts = generate_greedy_vllm(trainer, trainer.processing_class, ["What is 1 + 1?"], max_new_tokens=4,
                                      per_process=3)
    assert engine.calls[0]["n_prompts"] == 3 and len(ids) == len(texts) == 1 and engine.syncs == 0
    ids, texts = generate_greedy_vllm(trainer, trainer.processing_class, [], max_new_tokens=4, per_process=2)
    assert engine.calls[1]["n_prompts"] == 2 and ids == [] and texts == []
    eos = trainer.processing_class.eos_token_id
    engine.generate = lambda prompts, images, num_generations: (prompts, [[5, eos, 7, 8]] * len(prompts), None, None)
    ids, _ = generate_greedy_vllm(trainer, trainer.processing_class, ["x"], max_new_tokens=4, per_process=1)
    assert ids == [[5, eos]]  # cut after the first EOS, as the model.generate path does


def test_vllm_generation_requires_an_engine(trainer):
    cb = HeldOutAccuracyCallback(questions(2), max_new_tokens=4, generation="vllm").bind(trainer)
    with pytest.raises(ValueError, match="no TRL vLLM engine"):
        cb.evaluate()
    with pytest.raises(ValueError, match="'auto', 'transformers' or 'vllm'"):
        HeldOutAccuracyCallback(questions(2), generation="vlm")


def test_trl_vllm_interface_the_callback_relies_on():
    """The pinned TRL still has what generate_greedy_vllm touches (the real engine needs a GPU and vllm)."""
    import inspect

    import trl.trainer.grpo_trainer as grpo_module
    from trl.generation.vllm_generation import VLLMGeneration

    from trl_lab.callbacks.heldout import _VLLM_SAMPLING

    assert list(inspect.signature(VLLMGeneration.generate).parameters)[:4] == [
        "self", "prompts", "images", "num_generations"]
    assert callable(VLLMGeneration.sync_weights)
    init = inspect.getsource(VLLMGeneration.__init__)
    for name in _VLLM_SAMPLING:
        assert f"self.{name} = " in init, name
    source = inspect.getsource(grpo_module.GRPOTrainer)
    assert "self.vllm_generation = VLLMGeneration(" in source and "self._last_loaded_step" in source


def test_length_sorted_batches_return_each_prompt_its_own_completions_in_order(tiny_model_dir):
    """generate_completions batches prompts of similar length (longest first) and puts the results back in the
    order of the texts: in fp32 the same tokens as one prompt per call, a prompt's return sequences next to each
    other, and the batches really are sorted."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.callbacks.heldout import generate_completions

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(10)  # a random tiny model with sharp logits: greedy answers differ between prompts
    texts = [prompt_text([{"role": "user", "content": "What is " + " + ".join(["1"] * k) + "?"}], tok)
             for k in (1, 7, 3, 12, 2, 9, 5)]
    seen: list[list[int]] = []
    real_generate = model.generate

    def spy(**kwargs):
        seen.append(kwargs["attention_mask"].sum(1).tolist())
        return real_generate(**kwargs)

    model.generate = spy
    with torch.no_grad():
        alone, _ = generate_completions(model, tok, texts, max_new_tokens=6, batch_size=1, sort_by_length=False)
        seen.clear()
        ids, decoded = generate_completions(model, tok, texts, max_new_tokens=6, batch_size=3)
        assert ids == alone and decoded == tok.batch_decode(alone, skip_special_tokens=True)
        lengths = [n for batch in seen for n in batch]
        assert lengths == sorted(lengths, reverse=True) and len(seen) == 3
        assert max(seen[0]) > max(seen[-1])  # the longest batch first: its memory peak shows at once

        # Two return sequences per prompt (beam search: deterministic) stay beside each other, with their prompt.
        pairs, _ = generate_completions(model, tok, texts, max_new_tokens=6, batch_size=3, num_return_sequences=2,
                                        num_beams=2)
        by_prompt = [generate_completions(model, tok, [t], max_new_tokens=6, num_return_sequences=2, num_beams=2)[0]
                     for t in texts]
    assert pairs == [row for pair in by_prompt for row in pair]
