"""trl_lab.reward_models.gate: audit before RL, cached by the RM's fingerprint and the audit settings, with an override;
the GRPO and PPO trainers build their rewards once and refuse a failing learned_rm before the policy loads."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest
from datasets import Dataset

import trl_lab.reward_models.gate as rm_gate
from tests.helpers import tiny_config
from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.data.gsm8k_pairs import build_gsm8k_pairs, gsm8k_audit_suite, gsm8k_probe_items, pair_split_of
from trl_lab.grpo import learned_reward_models
from trl_lab.ppo import PPOConfig, PPOTrainer
from trl_lab.reward_models.audit import AuditReport
from trl_lab.reward_models.gate import (RewardModelAuditError, gate_reward_models, read_pairs_suite, require_audit,
                                        rm_fingerprint)
from trl_lab.rewards.specs import build_rewards
from trl_lab.testing import save_tiny_classifier

ROWS = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                 "How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
                 "How much did she earn?",
     "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = "
               "$<<0.2*50=10>>10.\n#### 10"},
]


@pytest.fixture
def counted(monkeypatch):
    calls = []
    real = rm_gate.audit_reward_model

    def audit(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(rm_gate, "audit_reward_model", audit)
    return calls


def test_failing_rm_is_refused_then_cached_and_overridable(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")  # random head: margins far below +1.0
    pairs = build_gsm8k_pairs(ROWS)
    with pytest.raises(RewardModelAuditError, match=r"failed its audit \(.*probe:correct_vs_empty") as err:
        require_audit(rm, pairs, probes=gsm8k_probe_items(pairs))
    assert not err.value.report.passed and len(counted) == 1
    with pytest.warns(UserWarning, match="overridden"):
        report = require_audit(rm, pairs, probes=gsm8k_probe_items(pairs), override=True)
    assert len(counted) == 1  # served from the cache
    assert report.failures == err.value.report.failures
    assert report.chosen_scores == pytest.approx(err.value.report.chosen_scores)


def test_new_weights_or_settings_audit_again(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")
    pairs = build_gsm8k_pairs(ROWS)
    lenient = dict(min_margin=-100.0, length_r2_threshold=1.0, min_accuracy=0.0)
    assert require_audit(rm, pairs, **lenient).passed
    assert require_audit(rm, pairs, **lenient).passed and len(counted) == 1
    require_audit(rm, pairs[:1], **lenient)  # other pairs
    assert len(counted) == 2
    require_audit(rm, pairs, probes=gsm8k_probe_items(pairs), **lenient)  # other probes
    assert len(counted) == 3
    from trl_lab.reward_models.loading import LoadOptions
    from trl_lab.reward_models.scorer import ScalarRewardModel

    short = ScalarRewardModel.load(rm, options=LoadOptions(device="cpu"), max_length=64)
    require_audit(rm, pairs, scorer=short, **lenient)  # the same weights scored another way
    assert len(counted) == 4
    before = rm_fingerprint(rm)
    save_tiny_classifier(rm, seed=1)  # retrained weights
    assert rm_fingerprint(rm) != before
    require_audit(rm, pairs, **lenient)
    assert len(counted) == 5


def test_fingerprint_covers_the_model_files_not_run_artefacts(tmp_path):
    rm = save_tiny_classifier(tmp_path / "rm")
    before = rm_fingerprint(rm)
    (rm / "rm_summary.json").write_text("{}")  # what a training script writes after auditing
    (rm / "README.md").write_text("model card")
    (rm / "checkpoint-5").mkdir()
    (rm / "checkpoint-5" / "model.safetensors").write_bytes(b"older weights")
    assert rm_fingerprint(rm) == before
    config = json.loads((rm / "config.json").read_text())
    (rm / "config.json").write_text(json.dumps({**config, "pad_token_id": 1}))
    assert rm_fingerprint(rm) != before
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="holds no model files"):
        rm_fingerprint(tmp_path / "logs")


# --------------------------------------------------------------------------- the trainers' gate
def rm_spec(rm, **kwargs) -> dict:
    return {"name": "learned_rm", "kwargs": {"path": str(rm), "device": "cpu", **kwargs}}


def prompts() -> Dataset:
    return Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}]} for i in range(4)])


def grpo_args(tmp_path, rm, config_cls=GRPOConfig, **overrides):
    return tiny_config(config_cls, tmp_path, rewards=[rm_spec(rm)], num_generations=2, **overrides)


@pytest.fixture
def pairs_file(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in build_gsm8k_pairs(ROWS)))
    return path


def passing_report(source: str, failures=()) -> AuditReport:
    """A report as audit_reward_model makes one (default thresholds, scores that give its numbers)."""
    return AuditReport(source=source, n_pairs=1, accuracy=1.0, mean_margin=1.0, accuracy_by_type={}, length_r2=0.0,
                       length_r2_threshold=0.3, min_accuracy=0.5, probes=[], failures=list(failures),
                       chosen_scores=[1.0], rejected_scores=[0.0], min_margin=1.0)


@pytest.fixture
def passes(monkeypatch):
    """The audit passes, with the default thresholds (a random tiny RM cannot pass them for real)."""
    monkeypatch.setattr(rm_gate, "audit_reward_model", lambda scorer, pairs, **kw: passing_report(str(scorer.source)))


def test_trainer_refuses_a_failing_rm_naming_plugin_and_checks_unless_overridden(tmp_path, tiny_model_dir, pairs_file,
                                                                                   counted):
    rm = save_tiny_classifier(tmp_path / "rm")  # random head: prefers length by chance, margins far below +1.0
    args = grpo_args(tmp_path, rm, rm_audit_data=str(pairs_file))
    with pytest.raises(RewardModelAuditError) as err:
        GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=prompts(), rm_audit_suite=gsm8k_audit_suite)
    message = str(err.value)
    assert f"reward plugin 'learned_rm': reward model {str(rm)!r} failed its audit" in message
    assert "length_bias" in message and "probe:concise_correct_vs_verbose_wrong" in message
    assert all(check in message for check in err.value.report.failures)
    assert "rm_audit_override" in message and str(rm / "rm_audit") in message
    assert len(counted) == 1 and len(list((rm / "rm_audit").glob("*.json"))) == 1  # the verdict is cached

    args = grpo_args(tmp_path, rm, rm_audit_data=str(pairs_file), rm_audit_override=True)
    with pytest.warns(UserWarning, match=r"'learned_rm'.*failed its audit \(.*length_bias.*\(overridden\)"):
        trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=prompts(),
                              rm_audit_suite=gsm8k_audit_suite)
    assert trainer.reward_func_names == ["learned_rm"]
    assert len(counted) == 1  # served from the cache


def test_cached_passing_verdict_lets_training_start_without_audit_data(tmp_path, tiny_model_dir, monkeypatch, passes):
    rm = save_tiny_classifier(tmp_path / "rm")
    # what the reward-model job leaves behind: an audit of the RM's weights, cached beside them
    assert require_audit(rm, build_gsm8k_pairs(ROWS)).passed

    def no_audit(*args, **kwargs):
        raise AssertionError("the cached verdict should have been used")

    monkeypatch.setattr(rm_gate, "audit_reward_model", no_audit)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*audit.*")
        trainer = GRPOTrainer(model=str(tiny_model_dir), args=grpo_args(tmp_path, rm), train_dataset=prompts())
    assert trainer.reward_func_names == ["learned_rm"]

    save_tiny_classifier(rm, seed=1)  # retrained: the cached verdict is of other weights
    with pytest.raises(ValueError, match="has no cached audit of its current weights"):
        GRPOTrainer(model=str(tiny_model_dir), args=grpo_args(tmp_path, rm), train_dataset=prompts())


def test_no_cached_audit_and_no_audit_data_is_refused_naming_the_keys(tmp_path, tiny_model_dir):
    rm = save_tiny_classifier(tmp_path / "rm")
    with pytest.raises(ValueError) as err:
        GRPOTrainer(model=str(tiny_model_dir), args=grpo_args(tmp_path, rm), train_dataset=prompts())
    message = str(err.value)
    assert "'learned_rm'" in message and str(rm) in message
    assert "`rm_audit_data`" in message and "`rm_audit_override: true`" in message
    assert not isinstance(err.value, RewardModelAuditError)
    with pytest.warns(UserWarning, match="unaudited"):
        assert gate_reward_models([("learned_rm", fake_scorer(str(rm)))], override=True) == {str(rm): None}


def test_ppo_audits_before_the_policy_loads(tmp_path, pairs_file):
    rm = save_tiny_classifier(tmp_path / "rm")
    with pytest.warns(UserWarning, match="overridden"):
        require_audit(rm, build_gsm8k_pairs(ROWS), probes=gsm8k_probe_items(build_gsm8k_pairs(ROWS)),
                      override=True)  # a cached failing verdict
    missing_policy = str(tmp_path / "no-such-policy")
    with pytest.raises(RewardModelAuditError, match=r"'learned_rm'.*probe:correct_vs_empty"):
        PPOTrainer(model=missing_policy, args=grpo_args(tmp_path, rm, PPOConfig), train_dataset=prompts())
    with pytest.raises(Exception) as err:  # the same run without the RM gets as far as loading the policy
        PPOTrainer(model=missing_policy, args=tiny_config(PPOConfig, tmp_path, rewards=["gsm8k_format"]),
                   train_dataset=prompts())
    assert not isinstance(err.value, RewardModelAuditError) and "no-such-policy" in str(err.value)


def fake_scorer(source: str) -> SimpleNamespace:
    return SimpleNamespace(source=source, settings={"device": "cpu"}, __call__=None)


def test_ensemble_members_are_gated_sentiment_is_not(tmp_path):
    rm, rm2 = save_tiny_classifier(tmp_path / "rm"), save_tiny_classifier(tmp_path / "rm2", seed=1)
    funcs, _ = build_rewards([{"name": "learned_rm", "kwargs": {"paths": [str(rm), str(rm2)], "device": "cpu",
                                                                "normalize": "running", "clip": 3.0}},
                              {"name": "sentiment", "kwargs": {"backend": "learned", "path": str(rm), "device": "cpu"}},
                              "gsm8k_format"])
    gated = learned_reward_models(funcs)
    assert [(name, scorer.source) for name, scorer in gated] == [("learned_rm", str(rm)), ("learned_rm", str(rm2))]
    # the gate gets the very objects the reward scores with
    assert [scorer for _, scorer in gated] == funcs[0].fn.models


def test_hub_ids_are_audited_every_time_local_rms_from_the_cache(tmp_path, pairs_file, monkeypatch):
    rm = save_tiny_classifier(tmp_path / "rm")
    scorers = [("learned_rm", fake_scorer(str(rm))), ("learned_rm", fake_scorer("org/hub-rm"))]
    calls = []

    def audit(scorer, pairs, **kwargs):
        calls.append((scorer.source, len(pairs)))
        return passing_report(scorer.source, [] if scorer.source == str(rm) else ["held_out_accuracy"])

    monkeypatch.setattr(rm_gate, "audit_reward_model", audit)
    suite = read_pairs_suite(str(pairs_file))
    with pytest.raises(RewardModelAuditError, match=r"'org/hub-rm' failed its audit \(held_out_accuracy\)\. Fix"):
        gate_reward_models(scorers, suite=suite)
    assert calls == [(str(rm), 2), ("org/hub-rm", 2)]
    assert len(list((rm / "rm_audit").glob("*.json"))) == 1 and not (tmp_path / "org").exists()
    with pytest.warns(UserWarning, match="hub-rm"):
        reports = gate_reward_models(scorers, suite=suite, override=True)
    assert [c[0] for c in calls[2:]] == ["org/hub-rm"]  # the local RM's verdict came from the cache
    assert reports[str(rm)].passed and reports["org/hub-rm"].failures == ["held_out_accuracy"]
    with pytest.raises(ValueError, match="'org/hub-rm' is not a local directory"):
        gate_reward_models(scorers)  # the local member has a cached pass; the hub id cannot have one


def test_gsm8k_audit_suite_uses_the_eval_split_and_the_default_reader_refuses_it(tmp_path):
    rows = [{"question": f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?",
             "answer": f"{i}+{i + 3} = <<{i}+{i + 3}={2 * i + 3}>>{2 * i + 3}\n#### {2 * i + 3}"} for i in range(1, 61)]
    data = tmp_path / "gsm8k.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    held_out = {r["question"] for r in rows if pair_split_of(r["question"]) == "eval"}
    pairs, probes = gsm8k_audit_suite(str(data))
    assert held_out and {p["question"] for p in pairs} == held_out
    assert set(probes) >= {"correct_vs_empty", "concise_correct_vs_verbose_wrong"}
    assert len(gsm8k_audit_suite(str(data), 1)[0]) == 1
    with pytest.raises(ValueError, match="needs its task's reader: build the trainer with rm_audit_suite"):
        read_pairs_suite(str(data))
    train_only = tmp_path / "train_only.jsonl"
    train_only.write_text("".join(json.dumps(r) + "\n" for r in rows if r["question"] not in held_out))
    with pytest.raises(ValueError, match="gives no held-out pairs"):
        gate_reward_models([("learned_rm", fake_scorer("x"))], suite=gsm8k_audit_suite(str(train_only)))


def test_a_learned_rm_run_parses_its_specs_once_and_loads_each_rm_once(tmp_path, tiny_model_dir, pairs_file,
                                                                        monkeypatch):
    import trl_lab.reward_models.scorer as scorer_module
    import trl_lab.rewards.specs as specs_module

    rm, rm2 = save_tiny_classifier(tmp_path / "rm"), save_tiny_classifier(tmp_path / "rm2", seed=1)
    args = tiny_config(GRPOConfig, tmp_path, num_generations=2, rm_audit_data=str(pairs_file), rm_audit_override=True,
                       rewards=[{"name": "learned_rm", "kwargs": {"paths": [str(rm), str(rm2)], "device": "cpu"}},
                                "gsm8k_format=0.5"])
    loads, parses = [], []
    real_load, real_parse = scorer_module.load_sequence_classifier, specs_module.parse_reward_spec
    monkeypatch.setattr(scorer_module, "load_sequence_classifier",
                        lambda path, **kw: loads.append(str(path)) or real_load(path, **kw))
    monkeypatch.setattr(specs_module, "parse_reward_spec", lambda item, **kw: parses.append(item) or real_parse(item, **kw))
    with pytest.warns(UserWarning, match="overridden"):
        trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=prompts())
    assert sorted(loads) == sorted([str(rm), str(rm2)])  # the audit scored with the loaded reward's models
    assert len(parses) == 2  # one parse per spec after the config's
    assert len(list((rm / "rm_audit").glob("*.json"))) == 1 and len(list((rm2 / "rm_audit").glob("*.json"))) == 1
    assert trainer.reward_func_names == ["learned_rm", "gsm8k_format"] and args.reward_weights == [1.0, 0.5]


def test_audit_keys_parse_from_the_command_line(tmp_path):
    from trl import TrlParser

    (config,) = TrlParser((PPOConfig,)).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--use_cpu", "--report_to", "none", "--rm_audit_data", "pairs.jsonl",
         "--rm_audit_limit", "50", "--rm_audit_override"])
    assert (config.rm_audit_data, config.rm_audit_limit, config.rm_audit_override) == ("pairs.jsonl", 50, True)
    assert GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none").rm_audit_limit == 200
    with pytest.raises(ValueError, match="rm_audit_limit must be >= 1"):
        GRPOConfig(output_dir=str(tmp_path), use_cpu=True, report_to="none", rm_audit_limit=0)


# --------------------------------------------------------------------------- only verdicts made with the thresholds in force
def verdict_files(rm):
    return sorted((rm / "rm_audit").glob("*.json"))


def test_a_hand_written_passed_verdict_is_not_accepted(tmp_path):
    """Any `"passed": true` file named after the RM's fingerprint used to let training start."""
    rm = save_tiny_classifier(tmp_path / "rm")
    (rm / "rm_audit").mkdir()
    forged = {"source": str(rm), "n_pairs": 1, "accuracy": 0.1, "mean_margin": 1.0, "accuracy_by_type": {},
              "length_r2": 0.0, "length_r2_threshold": 0.3, "min_accuracy": 0.5, "probes": [], "failures": [],
              "passed": True}
    (rm / "rm_audit" / f"{rm_fingerprint(rm)[:32]}-0123456789abcdef.json").write_text(json.dumps(forged))
    with pytest.raises(ValueError, match="no cached audit of its current weights made with the thresholds in force.*"
                                         "does not record the RM's current fingerprint"):
        gate_reward_models([("learned_rm", fake_scorer(str(rm)))])
    # the right fingerprint and thresholds, numbers that do not give the verdict
    forged.update(fingerprint=rm_fingerprint(rm), min_margin=1.0, chosen_scores=[1.0], rejected_scores=[0.0])
    (rm / "rm_audit" / f"{rm_fingerprint(rm)[:32]}-0123456789abcdef.json").write_text(json.dumps(forged))
    with pytest.raises(ValueError, match=r"accuracy 0\.1 is not that of its own scores"):
        gate_reward_models([("learned_rm", fake_scorer(str(rm)))])
    failed = {**forged, "accuracy": 0.0, "chosen_scores": [0.0], "mean_margin": -0.0}  # consistent, but failing...
    (rm / "rm_audit" / f"{rm_fingerprint(rm)[:32]}-0123456789abcdef.json").write_text(json.dumps(failed))
    with pytest.raises(ValueError, match=r"failures \[\] are not the \['held_out_accuracy'\]"):  # ...marked passed
        gate_reward_models([("learned_rm", fake_scorer(str(rm)))])


def test_a_verdict_of_lenient_thresholds_is_not_accepted_by_the_gate(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")
    lenient = dict(min_margin=-100.0, length_r2_threshold=1.0, min_accuracy=0.0)
    assert require_audit(rm, build_gsm8k_pairs(ROWS), **lenient).passed  # a real audit, cached, of other thresholds
    assert require_audit(rm, build_gsm8k_pairs(ROWS), **lenient).passed and len(counted) == 1  # reused for those
    with pytest.raises(ValueError, match=r"made with \{'length_r2_threshold': 1\.0, 'min_margin': -100\.0\}|"
                                         r"made with \{'min_accuracy': 0\.0"):
        gate_reward_models([("learned_rm", fake_scorer(str(rm)))])


def test_a_tampered_cached_verdict_is_audited_again(tmp_path, counted):
    rm = save_tiny_classifier(tmp_path / "rm")
    pairs = build_gsm8k_pairs(ROWS)
    with pytest.raises(RewardModelAuditError):
        require_audit(rm, pairs, probes=gsm8k_probe_items(pairs))
    (file,) = verdict_files(rm)
    verdict = json.loads(file.read_text())
    assert verdict["fingerprint"] == rm_fingerprint(rm) and verdict["min_margin"] == 1.0
    file.write_text(json.dumps({**verdict, "failures": [], "probes": [{**p, "passed": True} for p in verdict["probes"]]}))
    with pytest.warns(UserWarning, match="ignoring the cached verdict.*auditing again"):
        with pytest.raises(RewardModelAuditError, match="probe:correct_vs_empty"):
            require_audit(rm, pairs, probes=gsm8k_probe_items(pairs))
    assert len(counted) == 2
    assert json.loads(file.read_text())["failures"] == verdict["failures"]  # the honest verdict is back
