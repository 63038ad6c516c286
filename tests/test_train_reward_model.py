"""The reward-model job (trl_lab.scripts.train_reward_model) on a tiny model: GSM8K pairs -> LoRA RM -> saved for learned_rm -> audited,
and the RL gate reads the verdict the script cached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from peft import LoraConfig
from safetensors import safe_open

from tests.helpers import task_samples, tiny_config
from trl_lab import GRPOConfig, GRPOTrainer
from trl_lab.data.gsm8k_pairs import pair_split_of
from trl_lab.reward_models.training import lora_on_last_layers
from trl_lab.reward_models.gate import RewardModelAuditError

from trl_lab.scripts import train_reward_model as rm_job

CPU_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "configs" / "reward_model_gsm8k_cpu.yaml"



def test_lora_on_last_layers_sets_layers_to_transform_and_refuses_all_linear():
    config = lora_on_last_layers(LoraConfig(task_type="SEQ_CLS", target_modules=["q_proj", "v_proj"]), 30, 8)
    assert config.layers_to_transform == list(range(22, 30))
    with pytest.raises(ValueError, match="needs lora_target_modules as a list"):
        lora_on_last_layers(LoraConfig(task_type="SEQ_CLS", target_modules="all-linear"), 30, 8)
    with pytest.raises(ValueError, match=r"lora_last_n_layers must be in \[1, 30\]"):
        lora_on_last_layers(LoraConfig(task_type="SEQ_CLS", target_modules=["q_proj"]), 30, 31)


def test_mix_parsing_names_the_bad_item():
    assert rm_job.parse_mix(["arithmetic_slip=2", "wrong_final"]) == {"arithmetic_slip": 2.0,
                                                                                    "wrong_final": 1.0}
    with pytest.raises(ValueError, match="'verbose_wrong=lots'"):
        rm_job.parse_mix(["verbose_wrong=lots"])


def test_trains_saves_audits_and_the_gate_reads_the_cached_verdict(tmp_path, tiny_model_dir, shared_gsm8k):
    out = tmp_path / "rm"
    summary = rm_job.main([
        "--model_name_or_path", str(tiny_model_dir), "--dataset_source", "local", "--dataset_path", str(shared_gsm8k),
        "--train_pairs", "24", "--eval_pairs", "16", "--max_steps", "3", "--lora_r", "4", "--lora_alpha", "8",
        "--lora_target_modules", "q_proj", "v_proj", "--lora_last_n_layers", "1", "--max_length", "512",
        "--output_dir", str(out), "--disable_tqdm", "true",
    ], default_config=CPU_CONFIG)
    assert summary["steps"] == 3
    data = summary["data"]
    assert data["train"]["pairs"] == 24 and data["eval"]["pairs"] == 16
    assert sum(data["train"]["by_type"].values()) == 24
    assert data["pairs_built"]["eval"] < data["pairs_built"]["train"]  # 10% of the questions, by hash
    # The adapter only touches the last of the tiny model's two layers, and carries the score head.
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    lora = [n for n in names if "lora_" in n]
    assert lora and all(".layers.1." in n for n in lora)
    assert any("score" in n for n in names)
    # Audited on the held-out pairs; a 3-step tiny RM fails, and the summary says which checks.
    saved = json.loads((out / "rm_summary.json").read_text())
    assert saved["audit"]["n_pairs"] == 16 and saved["audit_passed"] is False
    assert saved["audit"]["failures"] and set(saved["audit"]["accuracy_by_type"]) <= {
        "arithmetic_slip", "confident_wrong", "verbose_wrong", "wrong_final"}
    assert list((out / "rm_audit").glob("*.json"))
    # Its pairs are saved beside it: `trl-lab audit-rm` on them reruns the same audit, with exit status 1.
    from trl_lab.cli import main as cli_main

    assert len((out / rm_job.EVAL_PAIRS_FILE).read_text().splitlines()) == 16
    assert cli_main(["audit-rm", str(out), "--data", str(out / rm_job.EVAL_PAIRS_FILE), "--out",
                     str(tmp_path / "cli_audit")]) == 1
    cli = json.loads((tmp_path / "cli_audit" / "audit.json").read_text())
    assert cli["n_pairs"] == 16 and sorted(cli["failures"]) == sorted(saved["audit"]["failures"])
    assert cli["accuracy"] == pytest.approx(saved["audit"]["accuracy"])
    # The fingerprints of its training questions, which the RL job checks its held-out set against.
    from trl_lab.data.leakage import overlapping_questions, read_trained_questions
    trained = read_trained_questions(out)
    assert 0 < len(trained) <= 24
    test_questions = [json.loads(x)["question"] for x in (shared_gsm8k / "test.jsonl").read_text().splitlines()]
    assert overlapping_questions(trained, test_questions, fingerprints=True) == []
    # The RL gate finds that cached verdict (no rm_audit_data given) and refuses the failing RM by name.
    args = tiny_config(GRPOConfig, tmp_path, rewards=[{"name": "learned_rm", "kwargs": {"path": str(out)}}],
                       num_generations=2)
    with pytest.raises(RewardModelAuditError, match="learned_rm") as err:
        GRPOTrainer(model=str(tiny_model_dir), args=args)
    assert all(check in str(err.value) for check in saved["audit"]["failures"])


def test_eval_questions_never_train(shared_gsm8k):
    module = rm_job
    script_args = module.RMScriptArguments(dataset_source="local", dataset_path=str(shared_gsm8k), train_pairs=300,
                                           eval_pairs=100, eval_fraction=0.2)
    pairs, stats = module.build_pairs(script_args, seed=3)
    assert all(pair_split_of(p["question"], 0.2) == "eval" for p in pairs["eval"])
    assert all(pair_split_of(p["question"], 0.2) == "train" for p in pairs["train"])
    assert stats["eval"]["pairs"] == 100 and stats["train"]["pairs"] == 300
    assert pairs == module.build_pairs(script_args, seed=3)[0]  # deterministic for a seed


def test_policy_samples_join_the_split_of_their_question(tmp_path, shared_gsm8k):
    from trl_lab.data.gsm8k import gsm8k_solution_rows
    from trl_lab.rewards.gsm8k import parse_reference

    rows = gsm8k_solution_rows("local", "train", path=shared_gsm8k, limit=60)
    samples = []
    for row in rows:
        ref = parse_reference(row["answer"])
        samples += [{"question": row["question"], "answer": ref, "completion": f"#### {ref}"},
                    {"question": row["question"], "answer": ref, "completion": f"#### {int(float(ref)) + 1}"}]
    file = tmp_path / "samples.jsonl"
    file.write_text("\n".join(json.dumps(s) for s in samples))
    module = rm_job
    script_args = module.RMScriptArguments(dataset_source="local", dataset_path=str(shared_gsm8k), train_pairs=None,
                                           eval_pairs=None, eval_fraction=0.2, policy_samples=str(file))
    pairs, stats = module.build_pairs(script_args, seed=0)
    policy = {s: [p for p in pairs[s] if p["rejected_type"] == "policy_sample"] for s in ("train", "eval")}
    assert len(policy["train"]) + len(policy["eval"]) == 60
    assert stats["train"]["by_type"]["policy_sample"] == len(policy["train"]) > 0
    assert all(pair_split_of(p["question"], 0.2) == s for s in policy for p in policy[s])


def test_rm_pairs_on_the_rl_heldout_split_are_refused_unless_allowed(shared_gsm8k):
    script_args = rm_job.RMScriptArguments(dataset_source="local", dataset_path=str(shared_gsm8k), train_pairs=50,
                                           eval_pairs=10, dataset_train_split="test")
    pairs, _ = rm_job.build_pairs(script_args, seed=0)
    n = len({p["question"] for p in pairs["train"]})
    with pytest.raises(ValueError, match=rf"{n} of the 1319 held-out questions \(dataset_test_split 'test', which the "
                                         r"RL jobs hold out\) are also in the RM's training pairs \(dataset_train_split "
                                         r"'test'\).*--allow_heldout_overlap true"):
        rm_job.check_rl_heldout_leakage(script_args, pairs["train"])
    script_args.allow_heldout_overlap = True
    rm_job.check_rl_heldout_leakage(script_args, pairs["train"])
    script_args = rm_job.RMScriptArguments(dataset_source="local", dataset_path=str(shared_gsm8k), train_pairs=50)
    rm_job.check_rl_heldout_leakage(script_args, rm_job.build_pairs(script_args, seed=0)[0]["train"])  # disjoint


def test_policy_samples_alone_with_a_deliberate_length_bias(tmp_path):
    from trl_lab.completions import completion_text

    file = tmp_path / "samples.jsonl"
    file.write_text("".join(json.dumps(s) + "\n" for s in task_samples()))
    script_args = rm_job.RMScriptArguments(solution_pairs=False, policy_samples=str(file), eval_fraction=0.2,
                                           policy_pairs_per_question=2, train_pairs=None, eval_pairs=None,
                                           train_chosen_longer=0.9)
    pairs, stats = rm_job.build_pairs(script_args, seed=0)
    assert stats["rows"] == 0 and stats["policy_samples"] == 240  # no GSM8K solutions read

    def frac_longer(ps):
        return sum(len(completion_text(p["chosen"])) > len(completion_text(p["rejected"])) for p in ps) / len(ps)

    assert stats["train"]["frac_chosen_longer"] == pytest.approx(frac_longer(pairs["train"]))
    assert len(pairs["train"]) >= 20 and abs(frac_longer(pairs["train"]) - 0.9) <= 0.05  # the bias asked for
    assert frac_longer(pairs["eval"]) == 0.5  # the audit's pairs are length-matched whatever the training bias
    assert {p["rejected_type"] for s in pairs.values() for p in s} == {"policy_sample"}
    rm_job.check_rl_heldout_leakage(script_args, pairs["train"])  # said, not checked against GSM8K's test split
    with pytest.raises(ValueError, match="--solution_pairs false leaves only --policy_samples, which is not set"):
        rm_job.build_pairs(rm_job.RMScriptArguments(solution_pairs=False), seed=0)
    with pytest.raises(ValueError, match="--length_matched and --train_chosen_longer both set"):
        rm_job.build_pairs(rm_job.RMScriptArguments(solution_pairs=False, policy_samples=str(file),
                                                    length_matched=True, train_chosen_longer=0.9), seed=0)


def test_wrong_final_twins_join_the_training_split_after_the_length_sampling(tmp_path):
    from trl_lab.completions import completion_text

    file = tmp_path / "samples.jsonl"
    file.write_text("".join(json.dumps(s) + "\n" for s in task_samples()))
    args = dict(solution_pairs=False, policy_samples=str(file), eval_fraction=0.2, policy_pairs_per_question=2,
                train_pairs=None, eval_pairs=None, train_chosen_longer=0.5)
    plain, _ = rm_job.build_pairs(rm_job.RMScriptArguments(**args), seed=0)
    pairs, stats = rm_job.build_pairs(rm_job.RMScriptArguments(**args, policy_wrong_finals=1), seed=0)
    twins = [p for p in pairs["train"] if p["rejected_type"] == "policy_wrong_final"]
    assert pairs["train"][: len(plain["train"])] == plain["train"] and pairs["eval"] == plain["eval"]
    assert len(twins) == stats["pairs_built"]["train_wrong_final_twins"] > 0
    assert stats["train"]["by_type"] == {"policy_sample": len(plain["train"]), "policy_wrong_final": len(twins)}
    eval_questions = {p["question"] for p in pairs["eval"]}
    assert not eval_questions & {p["question"] for p in twins}  # twins of train questions only
    assert all(abs(len(completion_text(p["chosen"])) - len(completion_text(p["rejected"]))) <= 2 for p in twins)
    both, stats = rm_job.build_pairs(rm_job.RMScriptArguments(**args, policy_wrong_finals=1,
                                                              policy_shortcut_negatives=2), seed=0)
    shortcuts = [p for p in both["train"] if p["rejected_type"].startswith("shortcut_")]
    assert both["train"][: len(pairs["train"])] == pairs["train"] and both["eval"] == plain["eval"]
    assert len(shortcuts) == stats["pairs_built"]["train_shortcut_negatives"] > 0 and len(shortcuts) % 2 == 0
    assert not eval_questions & {p["question"] for p in shortcuts}
    assert {t for t in stats["train"]["by_type"] if t.startswith("shortcut_")} == {
        "shortcut_empty", "shortcut_non_answer", "shortcut_cheerful_wrong", "shortcut_polished_wrong",
        "shortcut_padded_wrong"}
    two, _ = rm_job.build_pairs(rm_job.RMScriptArguments(**args, policy_shortcut_negatives=1,
                                                         policy_shortcut_kinds=["empty", "padded_wrong"]), seed=0)
    assert {p["rejected_type"] for p in two["train"]} == {"policy_sample", "shortcut_empty", "shortcut_padded_wrong"}
    with pytest.raises(ValueError, match="--policy_shortcut_negatives needs --policy_samples"):
        rm_job.build_pairs(rm_job.RMScriptArguments(policy_shortcut_negatives=1, solution_pairs=True,
                                                    dataset_source="local", dataset_path="/nonexistent"), seed=0)
    with pytest.raises(ValueError, match="--policy_wrong_finals needs --policy_samples"):
        rm_job.build_pairs(rm_job.RMScriptArguments(policy_wrong_finals=1, solution_pairs=True,
                                                    dataset_source="local", dataset_path="/nonexistent"), seed=0)
