"""Held-out answer signals (issue 13, part 2): repetition, distinct-n, strict accuracy, policy entropy, with numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.test_heldout import questions, script_answers, tiny_args
from trl_lab import GRPOTrainer
from trl_lab.callbacks.answer_signals import distinct_n, repeated_ngram_fraction, strict_correct
from trl_lab.callbacks.heldout import HeldOutAccuracyCallback
from trl_lab.callbacks.kl_monitor import frozen_copy, token_kl, token_kl_entropy


def test_a_looping_answer_scores_higher_repetition_than_a_normal_one():
    normal = "Janet has 16 eggs and eats 3 so 13 are left to sell".split()
    loop = "so the answer is so the answer is so the answer is 4".split()
    assert repeated_ngram_fraction(normal, 3) == 0.0
    # 3-grams of the loop: 11, distinct: 5 ("so the answer", "the answer is", "answer is so", "is so the", "answer is 4")
    assert repeated_ngram_fraction(loop, 3) == pytest.approx(6 / 11)
    assert repeated_ngram_fraction(["a", "b"], 3) == 0.0  # no 3-gram at all
    with pytest.raises(ValueError, match="n-gram size"):
        repeated_ngram_fraction(normal, 0)


def test_identical_answers_have_lower_distinct_n_than_varied_ones():
    same = [["the", "answer", "is", "4"]] * 4
    varied = [["the", "answer", "is", str(k)] for k in range(4)] 
    assert distinct_n(same, 2) == pytest.approx(3 / 12)
    assert distinct_n(varied, 2) == pytest.approx(6 / 12)  # 2 shared bigrams + 4 distinct "is k"
    assert distinct_n([[], ["x"]], 2) == 1.0


def test_a_stock_reply_on_most_prompts_lowers_the_distinct_answer_share_where_distinct_n_barely_moves():
    """Sentiment seed 43's collapse in small: most prompts get one short reply, the rest long varied answers."""
    from trl_lab.callbacks.answer_signals import distinct_answer_share

    varied = [[f"w{k}", *(f"x{k}_{j}" for j in range(30))] for k in range(10)]
    stock = [["I'm", "ready", "for", "the", "next", "part?"]] * 20
    assert distinct_answer_share(varied) == 1.0 and distinct_answer_share([]) == 1.0
    assert distinct_answer_share(varied + stock) == pytest.approx(11 / 30)
    assert distinct_n(varied + stock, 2) > 0.75 * distinct_n(varied, 2)  # pooled 2-grams: 0.76, answers: 0.37


def test_strict_accuracy_needs_a_well_formed_final_line():
    completions = ["2 + 2 = 4\n#### 4", "The answer is 4.", "#### 5", "#### 4\nDone."]
    correct = [True, True, False, True]  # what the GSM8K checker says for reference 4
    assert strict_correct(correct, completions) == [True, False, False, False]
    conversational = [[{"role": "assistant", "content": "#### 4"}]]
    assert strict_correct([True], conversational) == [True]
    with pytest.raises(ValueError, match="2 verdicts for 1"):
        strict_correct([True, False], ["#### 4"])


def test_entropy_is_the_policys_own_next_token_entropy_along_the_answer(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    prompt, answer = [5, 6, 7], [8, 9, 10]
    (kl, ent, n), = token_kl_entropy(model, None, [prompt], [answer], pad_token_id=0)
    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1 : -1].float()
    logp = torch.log_softmax(logits, -1)
    assert kl is None and n == 3
    assert ent == pytest.approx(float(-(logp.exp() * logp).sum()), rel=1e-5)
    assert 0 < ent / n <= math.log(model.config.vocab_size)
    # with a reference, the KL is token_kl's, and the entropy the same
    (kl2, ent2, _), = token_kl_entropy(model, frozen_copy(model), [prompt], [answer], pad_token_id=0)
    assert kl2 == pytest.approx(token_kl(model, frozen_copy(model), [prompt], [answer], pad_token_id=0)[0][0])
    assert ent2 == pytest.approx(ent, rel=1e-6)


@pytest.mark.parametrize("text_for,strict,repetitive", [
    (lambda q: f"{q} + {q} = {2 * q}\n#### {2 * q}", 1.0, False),
    (lambda q: f"The answer is {2 * q}.", 0.0, False),
    (lambda q: "so so so so so so so so so so\n" + f"#### {2 * q}", 1.0, True),
])
def test_heldout_logs_the_answer_signals(tmp_path, tiny_model_dir, text_for, strict, repetitive):
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=tiny_args(tmp_path), train_dataset=questions(8))
    script_answers(trainer.model, trainer.processing_class, text_for=text_for)
    heldout = HeldOutAccuracyCallback(questions(4), trainer=trainer, max_new_tokens=32, show_progress=False,
                                      kl_to_ref=False)
    metrics = heldout.evaluate()
    assert metrics["heldout/accuracy"] == 1.0  # the checker accepts all three
    assert metrics["heldout/strict_accuracy"] == strict
    assert (metrics["heldout/repetition"] > 0.5) is repetitive
    assert (metrics["heldout/repetition"] == 0.0) is not repetitive
    assert 0 < metrics["heldout/distinct_2"] <= 1
    assert metrics["heldout/distinct_answers"] == 1.0  # every question gets its own answer
    assert metrics["heldout/entropy"] > 0 and "heldout/kl_to_ref" not in metrics


def test_run_report_draws_the_answer_signals_when_logged(tmp_path):
    from trl_lab.report import write_report

    rows = [{"step": s, "reward": 0.1 * s, "heldout/accuracy": 0.5, "heldout/n": 16.0, "heldout/mean_length": 30.0,
             "heldout/strict_accuracy": 0.25 + 0.01 * s, "heldout/repetition": 0.01 * s,
             "heldout/distinct_2": 0.8 - 0.01 * s, "heldout/entropy": 2.0 - 0.05 * s} for s in (0, 10, 20)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    axes = write_report(tmp_path).figure.axes
    labels = [ax.get_ylabel() for ax in axes]
    assert labels[-2:] == ["held-out answers\n(share)", "policy entropy"] and len(axes) == 6
    strict = [line for line in axes[1].lines if line.get_label().startswith("strict accuracy")]
    assert list(strict[0].get_ydata()) == pytest.approx([0.25, 0.35, 0.45])
    assert list(axes[-1].lines[0].get_ydata()) == pytest.approx([2.0, 1.5, 1.0])
