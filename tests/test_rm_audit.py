"""trl_lab.reward_models.audit: held-out accuracy, length bias and a probe battery catch a length-loving reward model."""

from __future__ import annotations

import json
import pytest
import yaml

from trl_lab.completions import completion_text
from trl_lab.data.gsm8k import build_prompt
from trl_lab.data.gsm8k_pairs import gsm8k_pair_splits, gsm8k_probe_items, load_gsm8k_solutions
from trl_lab.rewards.gsm8k import check_answer
from trl_lab.reward_models.audit import audit_reward_model, length_r2, load_probes

PROBES = {"correct_vs_polished_wrong", "concise_correct_vs_verbose_wrong", "correct_vs_empty", "correct_vs_refusal",
          "correct_vs_cheerful_wrong"}


@pytest.fixture(scope="module")
def eval_pairs(shared_gsm8k):
    return gsm8k_pair_splits(load_gsm8k_solutions(shared_gsm8k / "train.jsonl", limit=400), eval_fraction=0.25, seed=0)["eval"]


def longer_is_better(prompts, completions, **kwargs):
    """A reward-hackable scorer: one point per 100 characters."""
    return [len(completion_text(c)) / 100 for c in completions]


def make_checker(pairs):
    """A good scorer: 1 when the declared answer is right, else 0 (the question comes from the prompt)."""
    answers = {p["prompt"][-1]["content"]: p["answer"] for p in pairs}

    def checker(prompts, completions, **kwargs):
        return [float(check_answer(completion_text(c), answers[p[-1]["content"]])) for p, c in zip(prompts, completions)]

    return checker


def test_length_r2():
    assert length_r2([1, 2, 3, 4], [2, 4, 6, 8]) == pytest.approx(1.0)
    assert length_r2([1, 2, 3, 4], [1, 0, 0, 1]) == pytest.approx(0.0)
    assert length_r2([1, 1, 1], [0, 1, 2]) == 0.0


def test_length_loving_scorer_is_flagged(eval_pairs, tmp_path):
    report = audit_reward_model(longer_is_better, eval_pairs, probes=gsm8k_probe_items(eval_pairs))
    assert not report.passed
    assert report.length_r2 == pytest.approx(1.0)
    assert "length_bias" in report.failures
    assert "probe:concise_correct_vs_verbose_wrong" in report.failures
    verbose = next(p for p in report.probes if p.name == "concise_correct_vs_verbose_wrong")
    assert verbose.n == 4 and verbose.worst_margin < -5
    assert report.accuracy_by_type["verbose_wrong"] == 0.0
    assert report.accuracy < 0.5 and "held_out_accuracy" in report.failures
    paths = report.write(tmp_path)
    saved = json.loads(paths["json"].read_text())
    assert saved["passed"] is False and saved["failures"] == report.failures
    assert len(saved["chosen_scores"]) == report.n_pairs == len(eval_pairs)
    assert "FAILED" in paths["text"].read_text() and "length bias R^2" in paths["text"].read_text()
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"


def test_answer_checking_scorer_passes(eval_pairs):
    report = audit_reward_model(make_checker(eval_pairs), eval_pairs, probes=gsm8k_probe_items(eval_pairs))
    assert report.passed, report.failures
    assert report.accuracy == 1.0 and report.mean_margin == 1.0
    assert set(report.accuracy_by_type) == {"arithmetic_slip", "confident_wrong", "verbose_wrong", "wrong_final"}
    assert {p.name for p in report.probes} == PROBES
    assert all(p.worst_margin == 1.0 and p.passed for p in report.probes)
    assert report.length_r2 < 0.3
    # a stricter margin than the checker's 0/1 scale can give fails every probe
    strict = audit_reward_model(make_checker(eval_pairs), eval_pairs, probes=gsm8k_probe_items(eval_pairs),
                                min_margin=1.5)
    # the audit runs only the probes it is given: the task's battery comes from the caller
    assert audit_reward_model(make_checker(eval_pairs), eval_pairs).probes == []
    assert set(strict.failures) == {f"probe:{n}" for n in PROBES}


def test_user_probes_from_yaml_and_jsonl(eval_pairs, tmp_path):
    q = eval_pairs[0]["question"]
    answer = eval_pairs[0]["answer"]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"probes": [
        {"name": "hedge", "question": q, "chosen": f"#### {answer}", "rejected": f"{answer} or 3", "min_margin": 0.5},
        {"name": "hedge", "question": q, "chosen": f"So {answer}.\n#### {answer}", "rejected": ""},
    ]}))
    (tmp_path / "p.jsonl").write_text(json.dumps({"name": "shouting", "question": q, "chosen": f"#### {answer}",
                                                  "rejected": "THE ANSWER IS OBVIOUSLY 1234567!!!"}) + "\n")
    probes = load_probes(tmp_path / "p.yaml", build_prompt=build_prompt) + load_probes(tmp_path / "p.jsonl",
                                                                                       build_prompt=build_prompt)
    with pytest.raises(ValueError, match="gives a `question` but no prompt builder"):
        load_probes(tmp_path / "p.jsonl")
    assert [(p.name, len(p.items), p.min_margin) for p in probes] == [("hedge", 2, 0.5), ("shouting", 1, None)]
    good = audit_reward_model(make_checker(eval_pairs), eval_pairs, probes=probes)
    assert [(p.name, p.passed, p.min_margin) for p in good.probes] == [("hedge", True, 0.5), ("shouting", True, 1.0)]
    bad = audit_reward_model(longer_is_better, eval_pairs, probes=probes)
    assert "probe:shouting" in bad.failures
    with pytest.raises(ValueError, match=r"entry 0 lacks \['rejected'\]"):
        (tmp_path / "bad.yaml").write_text(yaml.safe_dump([{"name": "x", "chosen": "a"}]))
        load_probes(tmp_path / "bad.yaml")


def test_a_saved_reward_model_is_scored_as_learned_rm_scores_it(eval_pairs, shared_gsm8k, tmp_path):
    from trl_lab.cli import main
    from trl_lab.reward_models.loading import LoadOptions
    from trl_lab.reward_models.scorer import ScalarRewardModel
    from trl_lab.rewards.learned_rm import LearnedRewardModel
    from trl_lab.testing import save_tiny_classifier

    rm_dir = save_tiny_classifier(tmp_path / "rm")
    pairs = eval_pairs[:12]
    report = audit_reward_model(ScalarRewardModel.load(rm_dir, options=LoadOptions(device="cpu")), pairs)
    assert report.source == str(rm_dir) and audit_reward_model(str(rm_dir), pairs).chosen_scores == pytest.approx(
        report.chosen_scores, abs=1e-5)  # a path is loaded as a ScalarRewardModel
    plugin = LearnedRewardModel(str(rm_dir), device="cpu")
    expected = plugin(prompts=[p["prompt"] for p in pairs], completions=[p["chosen"] for p in pairs])
    assert report.chosen_scores == pytest.approx(expected, abs=1e-5)

    pairs_file = tmp_path / "pairs.jsonl"
    pairs_file.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    status = main(["audit-rm", str(rm_dir), "--data", str(pairs_file), "--out", str(tmp_path / "audit"),
                   "--device", "cpu"])
    saved = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert status == (0 if saved["passed"] else 1)
    assert saved["n_pairs"] == 12 and saved["chosen_scores"] == pytest.approx(expected, abs=1e-5)
    assert (tmp_path / "audit" / "audit_scores.png").is_file()
    # from a GSM8K file: pairs are built and the eval split audited
    status = main(["audit-rm", str(rm_dir), "--data", str(shared_gsm8k / "train.jsonl"), "--limit", "8", "--out",
                   str(tmp_path / "audit2"), "--device", "cpu", "--no_default_probes"])
    assert json.loads((tmp_path / "audit2" / "audit.json").read_text())["n_pairs"] == 8
