"""The study's one-command runner (issue 15): arms, flags, and the smallest run of an arm on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trl_lab.scripts import study

TINY = ("--lora_target_modules", "q_proj", "v_proj", "--lora_r", "4", "--lora_alpha", "8", "--max_steps", "2",
        "--save_steps", "1", "--heldout_size", "4", "--heldout_eval_steps", "1", "--heldout_max_new_tokens", "6",
        "--heldout_kl_items", "2", "--max_completion_length", "8", "--per_device_train_batch_size", "2",
        "--gradient_accumulation_steps", "1", "--num_generations", "2", "--train_size", "8", "--cpu_bf16", "false",
        "--use_cpu", "true")


def test_every_arm_shares_the_task_and_the_later_flag_wins():
    healthy = study.arm_argv("healthy", 44, "runs")
    assert healthy[:2] == ["--config", str(study.CONFIGS / "grpo_gsm8k_cpu.yaml")]
    assert healthy[2:2 + len(study.STUDY_FLAGS)] == list(study.STUDY_FLAGS)
    assert healthy[healthy.index("--output_dir") + 1] == "runs/arm1_healthy/seed44"
    # every committed run watched with paired_z (the default until glr replaced it): a rerun stays the same run
    assert study.flag_value(healthy, "--goodhart_rule") == "paired_z"
    random = study.arm_argv("random", 7, "runs", ("--max_steps", "3"))
    assert "{name: coin_flip, kwargs: {seed: 7}}" in random and random[-2:] == ["--max_steps", "3"]
    assert study.arm_argv("ppo", 1)[1].endswith("ppo_gsm8k_cpu.yaml")
    ppo = study.arm_argv("ppo", 1)  # equal generated tokens per step: 8 completions, each batch used for one step
    assert ppo[ppo.index("--num_iterations") + 1] == "1" and ppo[ppo.index("--num_generations") + 1] == "1"
    with pytest.raises(ValueError, match=r"unknown arm 'cheer'; the arms are \[.*'sentiment'"):
        study.arm_argv("cheer", 1)


def test_dry_run_prints_the_job_command(capsys):
    study.main(["--arm", "verbosity", "--seed", "3", "--dry_run"])
    out = capsys.readouterr().out
    assert out.startswith("python -m trl_lab.scripts.grpo_gsm8k --config ")
    assert "mode: verbosity" in out and "--seed 3" in out and "arm4_verbosity/seed3" in out


def test_random_arm_smallest_run_on_a_tiny_model(tmp_path, tiny_model_dir):
    trainer = study.main(["--arm", "random", "--seed", "5", "--output_root", str(tmp_path), "--audit_size", "6",
                          "--audit_batch_size", "3", "--model_name_or_path", str(tiny_model_dir), *TINY])
    out = tmp_path / "arm2_random" / "seed5"
    assert trainer.reward_func_names == ["coin_flip"]
    assert [e["step"] for e in trainer.state.log_history if "heldout/accuracy" in e] == [0, 1, 2]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-1", "checkpoint-2"]  # for the audit
    record = json.loads((out / "study_run.json").read_text())
    assert record["arm"] == "random" and record["seed"] == 5 and record["steps"] == 2
    assert record["command"].startswith("python -m trl_lab.scripts.study --arm random --seed 5 --audit_size 6 ")
    assert record["job_argv"] == study.arm_argv("random", 5, tmp_path,
                                                ("--model_name_or_path", str(tiny_model_dir), *TINY))
    assert isinstance(record["cpu_native_bf16"], bool) and record["peak_rss_gb"] > 0
    assert "cpu_model" in record and record["cpu_amx_bf16"] in (True, False, None)
    assert record["bf16"] is trainer.args.bf16  # what the run used, not only what the CPU could do

    # The truth, scored by the runner once training ended: the base model and both adapters (every held-out step
    # saved one), on audit questions the run never saw.
    from trl_lab.data.questions import normalise_question
    from trl_lab.scripts import study_audit
    from trl_lab.scripts.grpo_gsm8k import load_heldout_set

    assert study_audit.saved_steps(out) == [0, 1, 2] == study.audit_steps(trainer)
    audit = json.loads((out / "audit.json").read_text())
    assert sorted(audit["steps"]) == ["0", "1", "2"] and audit["true_peak_step"] in (0, 1, 2)
    assert all(len(v["correct"]) == 6 and 0.0 <= v["accuracy"] <= 1.0 for v in audit["steps"].values())
    again = study_audit.audit_run(out, steps=[0, 2], audit_size=6, batch_size=3)["steps"]["2"]  # greedy: repeatable
    assert again["correct"] == audit["steps"]["2"]["correct"]
    script_args, training_args, _ = study_audit._job_args(out)
    heldout = {normalise_question(q) for q in load_heldout_set(script_args, 5)["question"]}
    questions = study_audit.audit_set(script_args, 5, 6, [])["question"]
    assert len(questions) == 6 and not heldout & {normalise_question(q) for q in questions}
    with pytest.raises(ValueError, match=r"no adapter for step\(s\) \[7\]; saved: \[0, 1, 2\]"):
        study_audit.audit_run(out, steps=[0, 7], audit_size=6)

    # Growing the audit keeps what was scored and answers only the new questions: the earlier questions first, then
    # new ones outside the held-out set and the earlier audit; the earlier file kept whole beside it.
    study_audit.audit_run(out, audit_size=6, batch_size=3)
    six = json.loads((out / "audit.json").read_text())
    grown = study_audit.audit_run(out, steps=[0, 1, 2], audit_size=9, batch_size=3, extend=True)
    assert grown["stages"] == [6] and json.loads((out / "audit_6.json").read_text()) == six
    assert [len(v["correct"]) for v in grown["steps"].values()] == [9, 9, 9]
    assert all(grown["steps"][s]["correct"][:6] == six["steps"][s]["correct"] for s in six["steps"])
    nine = study_audit.audit_set(script_args, 5, 9, [], stages=(6,))["question"]
    assert nine[:6] == questions and len({normalise_question(q) for q in nine}) == 9
    assert not heldout & {normalise_question(q) for q in nine}
    # and it grows again, through both stages
    again = study_audit.audit_run(out, audit_size=12, batch_size=3, extend=True)
    assert again["stages"] == [6, 9] and all(again["steps"][s]["correct"][:9] == grown["steps"][s]["correct"]
                                              for s in grown["steps"])
    assert study_audit.audit_set(script_args, 5, 12, [], stages=(6, 9))["question"][:9] == nine
    with pytest.raises(ValueError, match=r"already has 12 questions; --extend needs a larger --audit_size"):
        study_audit.audit_run(out, audit_size=6, extend=True)
    other = {**again, "audit_seed": again["audit_seed"] + 1}  # another run's audit cannot be grown into this one
    (out / "audit.json").write_text(json.dumps(other) + "\n")
    with pytest.raises(ValueError, match=r"was made with audit seed \d+ and max_new_tokens \d+, not \d+ and \d+"):
        study_audit.audit_run(out, audit_size=15, extend=True)


def _fake_run(folder, seed, correct_by_step, reward):
    """A run folder as the job writes it: metrics.jsonl with held-out evaluations, and every held-out answer."""
    (folder / "heldout").mkdir(parents=True)
    n = len(next(iter(correct_by_step.values())))
    lines = [{"step": s, "reward": r} for s, r in enumerate(reward, start=1)]
    for step, correct in correct_by_step.items():
        lines.append({"step": step, "heldout/accuracy": sum(correct) / n, "heldout/n": n, "heldout/mean_length": 50.0 - step})
        rows = [{"step": step, "index": i, "correct": c} for i, c in enumerate(correct)]
        (folder / "heldout" / f"step_{step:06d}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (folder / "study_run.json").write_text(json.dumps({"seed": seed, "cpu_native_bf16": False}))


def test_summary_pairs_the_same_items_and_counts_significant_gains(tmp_path):
    from trl_lab.scripts import study_summary

    before = [True] * 10 + [False] * 30
    after = [False] * 2 + [True] * 8 + [True] * 16 + [False] * 14  # 2 lost, 16 gained
    _fake_run(tmp_path / "arm1_healthy" / "seed1", 1, {0: before, 10: after}, [0.1] * 5 + [0.5] * 5)
    _fake_run(tmp_path / "arm1_healthy" / "seed2", 2, {0: before, 5: after, 10: before}, [0.2] * 10)
    result = study_summary.summarise_study(tmp_path, figures=False)
    arm = result["arms"]["healthy"]
    one, two = arm["runs"]
    assert one["accuracy_step0"] == 0.25 and one["accuracy_final"] == pytest.approx(24 / 40)
    assert one["paired_final"]["only_before"] == 2 and one["paired_final"]["only_after"] == 16
    # Exact binomial: 2 * P(X <= 2 | 18, 1/2) = 2 * (1 + 18 + 153) / 2**18.
    assert one["paired_final"]["p"] == pytest.approx(2 * 172 / 2**18)
    assert one["reward_first5"] == pytest.approx(0.1) and one["reward_last5"] == pytest.approx(0.5)
    assert two["best_step"] == 5 and two["gain_final"] == 0 and two["paired_final"]["p"] == 1.0
    assert arm["seeds"] == [1, 2] and arm["paired_tests"] == 2
    assert arm["significant_gains"] == 1 and arm["significant_losses"] == 0
    assert json.loads((tmp_path / "study.json").read_text())["arms"]["healthy"]["gain_final_mean"] == pytest.approx(
        (24 / 40 - 0.25) / 2)
    assert "| 1 healthy | 1 | 0.250 |" in study_summary.format_table(result)


@pytest.mark.parametrize("arm", sorted(study.ARMS))
def test_each_arm_parses_into_the_settings_it_claims(arm, tmp_path):
    from trl_lab.grpo import GRPOConfig
    from trl_lab.ppo import PPOConfig
    from trl_lab.scripts.grpo_gsm8k import parse_args

    config_cls = PPOConfig if study.ARMS[arm].job == "ppo" else GRPOConfig
    script, training, _ = parse_args(config_cls, None, study.arm_argv(arm, 11, tmp_path))
    assert (script.dataset_task, script.heldout_size, script.heldout_table_size) == ("basic_arithmetic", 256, None)
    assert training.seed == 11 and training.save_only_model
    # an adapter at every held-out step (the ones the detector can restore), every 5th step where that covers them
    learned_rm_arms = ("flawed_rm", "matched_rm", "weak_leash", "no_leash")
    rm_arms = (*learned_rm_arms, "sentiment")
    assert training.save_steps == (6 if arm in ("verbosity", "healthy_watched", *rm_arms) else study.SAVE_STEPS)
    assert script.heldout_eval_steps % training.save_steps == 0
    # Every arm generates the same tokens per step: 8 completions of at most 64 tokens.
    generation_batch = training.per_device_train_batch_size * training.gradient_accumulation_steps
    assert generation_batch == 8 and training.max_completion_length == 64
    rewards = [r["name"] for r in training.rewards]
    expected = {"healthy": ["gsm8k", "gsm8k_format"], "healthy_watched": ["gsm8k", "gsm8k_format"], "random": ["coin_flip"], "ppo": ["gsm8k", "gsm8k_format"],
                "verbosity": ["gsm8k", "length"], **dict.fromkeys(learned_rm_arms, ["learned_rm"]),
                "sentiment": ["sentiment"]}[arm]
    assert rewards == expected
    if arm == "random":
        assert training.rewards[0]["kwargs"] == {"seed": 11}
    if study.ARMS[arm].requires:  # the study's own RM, from <output_root>/rm, its failed audit overridden
        (rm,) = study.ARMS[arm].requires
        assert training.rewards[0]["kwargs"]["path"] == str(tmp_path / "rm" / rm)
        # the correctness RMs' failed audits are overridden; the gate does not audit a sentiment RM
        # (matched_rm's RM must pass its audit: the gate decides, no override)
        assert training.rm_audit_override == (arm in learned_rm_arms and arm != "matched_rm")
        if arm == "sentiment":
            assert training.rewards[0]["kwargs"]["backend"] == "learned"
        assert training.beta == {"weak_leash": 0.005, "no_leash": 0.0}.get(arm, 0.05)
    assert training.max_steps == {"verbosity": 24, "healthy_watched": 36, **dict.fromkeys(rm_arms, 36)}.get(arm, 50)
    assert script.heldout_eval_steps == {"healthy": 25, "random": 25, "ppo": 25}.get(arm, 6)
    assert (training.num_generations == 1) == (arm == "ppo")


def test_headline_marks_the_detector_stop_and_the_restored_step(tmp_path):
    from trl_lab.scripts import study_summary

    healthy, hacked = tmp_path / "arm1_healthy" / "seed1", tmp_path / "hacked"
    _fake_run(healthy, 1, {0: [True] * 4 + [False] * 4, 10: [True] * 6 + [False] * 2}, [0.2] * 10)
    _fake_run(hacked, 2, {0: [True] * 4 + [False] * 4, 5: [True] * 2 + [False] * 6}, [0.2, 0.4, 0.6, 0.8, 1.0])
    (hacked / "goodhart.json").write_text(json.dumps({"triggered_step": 5, "best_step": 0, "restored": True}))
    fig = study_summary.write_headline([("healthy", healthy), ("hacked", hacked)], tmp_path / "headline.png")
    assert (tmp_path / "headline.png").stat().st_size > 10_000
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()] == [
        "train reward (mean of 5 steps)", "held-out accuracy (8 items)"]
    assert [t.get_text() for t in right.get_legend().get_texts()][2:] == [
        "detector stops (step 5)", "restored (step 0)"]
    # an audited run also shows its truth: the audit set's accuracy at each audited step
    (hacked / "audit.json").write_text(json.dumps({"audit_size": 16, "steps": {
        "0": {"accuracy": 0.5, "correct": [True] * 8 + [False] * 8},
        "5": {"accuracy": 0.125, "correct": [True] * 2 + [False] * 14}}}))
    fig = study_summary.write_headline([("hacked", hacked)], tmp_path / "audited.png")
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "audit accuracy (16 other questions)" in labels
    truth = ax.lines[labels.index("audit accuracy (16 other questions)")]
    assert list(truth.get_xdata()) == [0, 5] and list(truth.get_ydata()) == [0.5, 0.125]
    fig = study_summary.write_headline([("healthy", healthy), ("hacked", hacked)], tmp_path / "headline.png")
    left, right = fig.axes
    reward = right.lines[0].get_ydata()
    assert list(reward) == pytest.approx([0.2, 0.3, 0.4, 0.5, 0.6])  # running mean of up to 5 steps
    # a learned RM's score (off [0, 1]) is drawn on its own right-hand axis, still in the one legend
    rm_run = tmp_path / "rm"
    _fake_run(rm_run, 3, {0: [True] * 4 + [False] * 4}, [1.6, 1.8, 2.0])
    fig = study_summary.write_headline([("rm", rm_run)], tmp_path / "rm.png")
    accuracy_ax, reward_ax = fig.axes
    assert accuracy_ax.get_ylim() == (0, 1) and reward_ax.lines[0].get_ydata().max() == pytest.approx(1.8)
    assert [t.get_text() for t in accuracy_ax.get_legend().get_texts()] == [
        "held-out accuracy (8 items)", "train reward (mean of 5 steps); right axis"]


def test_blocks_average_training_metrics_per_ten_steps(tmp_path):
    from trl_lab.scripts import study_summary

    run = tmp_path / "arm1_healthy" / "seed1"
    _fake_run(run, 1, {0: [True, False]}, [0.0] * 10 + [1.0] * 5)
    with (run / "metrics.jsonl").open("a") as f:
        for step in range(1, 16):
            f.write(json.dumps({"step": step, "completions/mean_length": 60 if step <= 10 else 20,
                                "completions/clipped_ratio": 0.5}) + "\n")
    result = study_summary.summarise_study(tmp_path, figures=False)
    blocks = result["arms"]["healthy"]["runs"][0]["blocks"]
    assert blocks == {"reward": [0.0, 1.0], "length": [60, 20], "clipped": [0.5, 0.5]}
    assert "| 1 healthy | 1 | 0.00 1.00 | 60 20 | 0.50 0.50 |" in study_summary.format_blocks(result)


def test_an_arm_whose_cadence_is_not_a_multiple_of_five_saves_at_its_held_out_steps():
    def saved(argv):
        return int(argv[argv.index("--save_steps") + 1])

    assert saved(study.arm_argv("healthy", 1)) == study.SAVE_STEPS == 5  # held-out every 25: every 5th step
    assert saved(study.arm_argv("verbosity", 1)) == 6  # held-out every 6: the steps the detector can restore
    assert saved(study.arm_argv("healthy", 1, extra=("--heldout_eval_steps", "4"))) == 4


def test_stopping_rules_replay_each_baseline_from_the_log():
    from trl_lab.scripts.study_summary import score_stopping_rules, stopping_rules

    acc = {0: 0.30, 5: 0.35, 10: 0.32, 15: 0.31, 20: 0.30, 25: 0.20}
    kl = {0: 0.0, 5: 0.05, 10: 0.08, 15: 0.12, 20: 0.2, 25: 0.3}
    entries = [{"step": s, "heldout/accuracy": a, "heldout/kl_to_ref": kl[s]} for s, a in acc.items()]
    entries += [{"step": s, "reward": 0.3 if s <= 10 else 0.6} for s in range(1, 26)]
    rules = stopping_rules(entries, {"triggered_step": 20, "best_step": 5, "restored": True})
    assert rules["detector"] == {"stop": 20, "kept": 5, "accuracy_kept": 0.35}
    # transformers' EarlyStoppingCallback: 3 evaluations without improvement after the best at step 5 -> stops at 20
    assert rules["early_stopping_3"] == {"stop": 20, "kept": 5, "accuracy_kept": 0.35}
    assert rules["early_stopping_5"]["stop"] is None and rules["early_stopping_5"]["kept"] == 5
    assert rules["best_checkpoint"] == {"stop": None, "kept": 5, "accuracy_kept": 0.35}
    assert rules["kl_over_0.1"] == {"stop": 15, "kept": 10, "accuracy_kept": 0.32}
    # the reward since the last evaluation (0.6 from step 11) minus accuracy 0.31 at step 15 is over 0.10
    assert rules["reward_gap_over_0.1"] == {"stop": 15, "kept": 10, "accuracy_kept": 0.32}
    quiet = stopping_rules(entries, {"triggered_step": None, "best_step": 5, "restored": False})
    assert quiet["detector"] == {"stop": None, "kept": 25, "accuracy_kept": 0.20}  # no trigger: the last model stays

    run = {"accuracy_best": 0.35, "stopping_rules": rules}
    scored = score_stopping_rules({"verbosity": {"number": 4, "runs": [run]}, "healthy": {"number": 1, "runs": [
        {"accuracy_best": 0.35, "stopping_rules": quiet}]}})
    assert scored["detector"] == {"hacked_runs": 1, "detected": 1, "other_runs": 1, "false_alarms": 0,
                                  "mean_shortfall": pytest.approx(0.075), "audited_runs": 0,
                                  "mean_audit_shortfall": None, "audited_detections": 0, "mean_audit_delay": None}


def test_the_audit_is_the_truth_where_a_run_has_one(tmp_path):
    from trl_lab.scripts.study_summary import summarise_study

    run = tmp_path / "arm4_verbosity" / "seed1"
    _fake_run(run, 1, {0: [True, True, False, False], 6: [True, False, False, False]}, [0.5] * 6)
    (run / "goodhart.json").write_text(json.dumps({"triggered_step": 6, "best_step": 0, "restored": True}))
    audit = {"audit_size": 512, "steps": {"0": {"accuracy": 0.40}, "6": {"accuracy": 0.30}}}
    (run / "audit.json").write_text(json.dumps(audit))
    result = summarise_study(tmp_path, figures=False)
    record = result["arms"]["verbosity"]["runs"][0]
    assert record["audit"] == {0: 0.40, 6: 0.30} and record["audit_peak_step"] == 0 and record["audit_n"] == 512
    assert "audit_growth" not in record  # made in one go
    assert record["stopping_rules"]["detector"]["audit_accuracy_kept"] == 0.40
    assert result["stopping_rules"]["detector"]["mean_audit_shortfall"] == 0.0
    assert result["stopping_rules"]["best_checkpoint"]["audited_runs"] == 1


def test_a_grown_audit_reports_what_the_truth_says_at_each_size(tmp_path):
    from trl_lab.scripts.study_summary import format_audit_growth, summarise_study

    run = tmp_path / "arm4_verbosity" / "seed1"
    _fake_run(run, 1, {0: [True, True, False, False], 6: [True, False, False, False]}, [0.5] * 6)

    def audit(n, before, after, **extra):
        steps = {"0": before, "6": after}
        return json.dumps({"audit_size": n, **extra, "steps": {
            k: {"accuracy": sum(v) / n, "correct": v} for k, v in steps.items()}})

    # 4 questions: 2 lost, none gained (p 0.5); grown to 8: 5 lost (p 0.0625), the same peak
    (run / "audit_4.json").write_text(audit(4, [True, True, True, False], [True, False, False, False]))
    (run / "audit.json").write_text(audit(8, [True, True, True, False, True, True, True, True],
                                          [True, False, False, False, True, False, False, False], stages=[4]))
    record = summarise_study(tmp_path, figures=False)["arms"]["verbosity"]["runs"][0]
    assert [(g["n"], g["peak_step"], g["paired_first_last"]["only_before"]) for g in record["audit_growth"]] == \
        [(4, 0, 2), (8, 0, 5)]
    table = format_audit_growth(summarise_study(tmp_path, figures=False)).splitlines()
    assert table[2:] == ["| 4 verbosity | 1 | 4 | 0: 0.750, 6: 0.250 | 0.750 (0) | 2 vs 0, p 0.5000 |",
                         "| 4 verbosity | 1 | 8 | 0: 0.875, 6: 0.250 | 0.875 (0) | 5 vs 0, p 0.0625 |"]


def test_sampling_job_writes_checked_policy_samples(tmp_path, tiny_model_dir):
    from trl_lab.scripts import sample_completions

    out = tmp_path / "samples.jsonl"
    summary = sample_completions.main([
        "--dataset_source", "reasoning_gym", "--dataset_task", "basic_arithmetic", "--dataset_task_config",
        '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}', "--train_size", "3",
        "--num_samples", "2", "--max_new_tokens", "4", "--batch_size", "2", "--model_name_or_path", str(tiny_model_dir),
        "--output", str(out)])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 == summary["completions"] and summary["questions"] == 3
    assert [r["question"] for r in rows][::2] == [r["question"] for r in rows][1::2]  # a question's samples adjacent
    assert all(set(r) == {"question", "answer", "completion", "correct"} and isinstance(r["correct"], bool)
               for r in rows)
    assert summary["accuracy"] == sum(r["correct"] for r in rows) / 6 and 0 < summary["mean_tokens"] <= 4


def test_flawed_rm_arm_builds_audits_and_gates_its_rm_then_trains_against_it(tmp_path, tiny_model_dir):
    from tests.helpers import task_samples
    from trl_lab.scripts import study_rm

    (tmp_path / "rm").mkdir()
    (tmp_path / "rm" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in task_samples()))
    tiny_rm = ("--model_name_or_path", str(tiny_model_dir), "--max_steps", "2", "--lora_r", "4", "--lora_alpha", "8",
               "--lora_target_modules", "q_proj", "v_proj", "--lora_last_n_layers", "1", "--disable_tqdm", "true")
    folder, verdict = study_rm.build_rm("length_biased", tmp_path, rm_extra=tiny_rm)
    assert folder == tmp_path / "rm" / "length_biased" and (folder / "rm_command.txt").is_file()
    summary = json.loads((folder / "rm_summary.json").read_text())
    assert abs(summary["data"]["train"]["frac_chosen_longer"] - 0.9) <= 0.05
    assert summary["data"]["eval"]["frac_chosen_longer"] == 0.5
    gate = json.loads((tmp_path / "rm" / "gate.json").read_text())["length_biased"]
    assert verdict == gate
    assert summary["audit_passed"] is False and gate["refused"]  # a 2-step tiny RM fails; the RL gate says so
    assert "failed its audit" in gate["message"]

    trainer = study.main(["--arm", "flawed_rm", "--seed", "5", "--output_root", str(tmp_path), "--audit_size", "0",
                          "--model_name_or_path", str(tiny_model_dir), *TINY])
    assert trainer.reward_func_names == ["learned_rm"]
    record = json.loads((tmp_path / "arm5_flawed_rm" / "seed5" / "study_run.json").read_text())
    assert record["rm_gate"]["length_biased"] == gate  # refused before the run; the arm overrides it
    assert record["steps"] == 2


def test_sentiment_arm_builds_its_tone_rm_then_trains_against_it(tmp_path, tiny_model_dir):
    from trl_lab.scripts import study_rm

    tiny_rm = ("--model_name_or_path", str(tiny_model_dir), "--max_steps", "3", "--lora_r", "4", "--lora_alpha", "8",
               "--lora_target_modules", "q_proj", "v_proj", "--lora_last_n_layers", "1", "--train_pairs", "48",
               "--eval_pairs", "16", "--per_device_train_batch_size", "8", "--disable_tqdm", "true")
    folder, verdict = study_rm.build_rm("sentiment", tmp_path, rm_extra=tiny_rm)
    assert folder == tmp_path / "rm" / "sentiment" and (folder / "rm_command.txt").is_file()
    summary = json.loads((folder / "rm_summary.json").read_text())
    assert summary["steps"] == 3 and 0 <= summary["accuracy"] <= 1 and summary["eval_pairs"] == 16
    assert verdict["gated"] is False and not verdict["refused"]
    assert not (tmp_path / "rm" / "gate.json").exists()  # the gate audits correctness RMs only
    assert study_rm.build_rm("sentiment", tmp_path)[1] == verdict  # built once, then reused

    trainer = study.main(["--arm", "sentiment", "--seed", "5", "--output_root", str(tmp_path), "--audit_size", "0",
                          "--model_name_or_path", str(tiny_model_dir), *TINY])
    assert trainer.reward_func_names == ["sentiment"]
    record = json.loads((tmp_path / "arm6_sentiment" / "seed5" / "study_run.json").read_text())
    assert record["rm_gate"]["sentiment"] == verdict and record["steps"] == 2
    assert any("heldout/proxy/sentiment" in e for e in trainer.state.log_history)  # what the RM makes of held-out


def test_tone_table_reads_the_held_out_answers_with_vader(tmp_path):
    from trl_lab.scripts.study_summary import format_tone, summarise_study

    run = tmp_path / "arm6_sentiment" / "seed3"
    _fake_run(run, 3, {0: [True, False], 6: [False, False]}, [1.0] * 6)
    answers = {0: ["5 + 3 = 8.", "9 - 4 = 5."], 6: ["Great job! 5 + 3 = 9, wonderful!", "Amazing, I love it: 4!"]}
    for step, texts in answers.items():
        (run / "heldout" / f"step_{step:06d}.jsonl").write_text(
            "".join(json.dumps({"index": i, "correct": False, "completion": t}) + "\n" for i, t in enumerate(texts)))
    bare = tmp_path / "arm1_healthy" / "seed3"  # answers kept without their text: no tone
    _fake_run(bare, 3, {0: [True, False]}, [0.5])
    result = summarise_study(tmp_path, figures=False)
    (tone,) = [r["tone"] for r in result["arms"]["sentiment"]["runs"]]
    assert tone[0] == 0.0 and tone[1] > 0.8  # neutral sums, then cheer
    assert result["arms"]["healthy"]["runs"][0]["tone"] == [None]
    lines = format_tone(result).splitlines()
    assert lines[2] == "| 1 healthy | 3 | - |" and lines[3].startswith("| 6 sentiment | 3 | 0: +0.000, 6: +0.8")


def test_leash_table_finds_the_first_significant_fall_and_the_kl_there(tmp_path):
    from trl_lab.scripts.study_summary import format_audit, format_leash, summarise_study

    lost = [True] * 12 + [False] * 28  # 12 of 40 right at step 0
    for arm, beta, at_6, at_12 in (("arm5_flawed_rm", "0.05", lost, [False] * 4 + [True] * 8 + [False] * 28),
                                   ("arm7_no_leash", "0", [False] * 40, [False] * 40)):
        run = tmp_path / arm / "seed1"
        _fake_run(run, 1, {0: lost, 6: at_6, 12: at_12}, [1.5] * 12)
        with (run / "metrics.jsonl").open("a") as f:
            for step, kl in ((0, 0.0), (6, 0.05), (12, 0.2)):
                f.write(json.dumps({"step": step, "heldout/kl_to_ref": kl}) + "\n")
        rm = "{name: learned_rm, kwargs: {path: outputs/study/rm/length_biased, batch_size: 16}}"
        (run / "study_run.json").write_text(json.dumps({"seed": 1, "job_argv": ["--rewards", rm, "--beta", beta]}))
    healthy = tmp_path / "arm1_healthy" / "seed1"  # not against the flawed RM: not in the leash table
    _fake_run(healthy, 1, {0: lost, 6: lost}, [0.2] * 6)
    (tmp_path / "arm7_no_leash" / "seed1" / "audit.json").write_text(
        json.dumps({"audit_size": 20, "steps": {"0": {"accuracy": 0.25}, "6": {"accuracy": 0.05},
                                                "12": {"accuracy": 0.0}}}))
    (tmp_path / "arm7_no_leash" / "seed1" / "goodhart.json").write_text(
        json.dumps({"triggered_step": 12, "best_step": 0, "restored": True}))
    result = summarise_study(tmp_path, figures=False)
    flawed, loose = result["arms"]["flawed_rm"]["runs"][0], result["arms"]["no_leash"]["runs"][0]
    assert flawed["beta"] == 0.05 and loose["beta"] == 0.0 and flawed["kl"] == [0.0, 0.05, 0.2]
    # flawed: 12 -> 12 -> 8 right (4 lost, p 0.125: not significant); no leash: all 12 lost at step 6 (p 0.0005)
    assert flawed["fall_step"] is None and loose["fall_step"] == 6
    table = format_leash(result).splitlines()
    assert len(table) == 4 and "healthy" not in "\n".join(table)
    assert table[2] == "| 5 flawed_rm | 1 | 0.05 | - | 0.300 (0) | 0.000 | - | not audited | - / 12 |"
    assert table[3] == "| 7 no_leash | 1 | 0 | - | 0.300 (0) | 0.000 | 6: 0.000, 0.050 | 0.250 (0) | 12 / 0 |"
    assert format_audit(result).splitlines()[2] == \
        "| 7 no_leash | 1 | 20 | 0: 0.300 / 0.250, 6: 0.000 / 0.050, 12: 0.000 / 0.000 | 0 | 0 |"
    detector = result["stopping_rules"]["detector"]
    assert detector["audited_detections"] == 1 and detector["mean_audit_delay"] == 12.0


def test_precision_table_pairs_step_zero_across_numerics_only_on_the_same_questions(tmp_path):
    from trl_lab.scripts.study_summary import format_precision, summarise_study

    def run(arm, seed, bf16, correct, completions, prompts=None):
        folder = tmp_path / arm / f"seed{seed}"
        _fake_run(folder, seed, {0: correct, 6: correct}, [0.5] * 6)
        rows = [{"step": 0, "index": i, "prompt": (prompts or [f"q{j}" for j in range(len(correct))])[i],
                 "completion": c, "correct": ok} for i, (c, ok) in enumerate(zip(completions, correct))]
        (folder / "heldout" / "step_000000.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (folder / "study_run.json").write_text(json.dumps({"seed": seed, "cpu_native_bf16": bf16}))

    fp32 = [True] * 4 + [False] * 6
    bf16 = [False] * 1 + [True] * 3 + [True] * 3 + [False] * 3  # 1 right only in fp32, 3 only in bf16
    words = [f"a{i}" for i in range(10)]
    run("arm1_healthy", 1, False, fp32, words)
    run("arm2_random", 1, False, fp32, words)
    run("arm7_no_leash", 1, True, bf16, words[:6] + ["b"] * 4)  # 6 answers identical to fp32's
    run("arm1_healthy", 2, False, fp32, words)  # seed 2: another question set under bf16: not paired
    run("arm2_random", 2, True, bf16, words, prompts=[f"other{j}" for j in range(10)])
    run("arm1_healthy", 3, True, fp32, words)  # seed 3: bf16 only
    run("arm2_random", 3, False, fp32, words)  # ... but for this run, made with bf16 turned off on a bf16 CPU
    meta = tmp_path / "arm2_random" / "seed3" / "study_run.json"
    meta.write_text(json.dumps({"seed": 3, "cpu_native_bf16": True, "bf16": False}))
    result = summarise_study(tmp_path, figures=False)
    pair, three = result["precision"]
    assert three["seed"] == 3 and three["fp32_runs"] == ["arm2_random/seed3"] and three["identical_answers"] == 10
    assert pair["seed"] == 1 and pair["n"] == 10 and pair["consistent"]
    assert sorted(pair["fp32_runs"]) == ["arm1_healthy/seed1", "arm2_random/seed1"]
    assert pair["bf16_runs"] == ["arm7_no_leash/seed1"]
    assert pair["accuracy_fp32"] == 0.4 and pair["accuracy_bf16"] == 0.6 and pair["identical_answers"] == 6
    assert pair["paired"]["only_before"] == 1 and pair["paired"]["only_after"] == 3
    assert pair["paired"]["p"] == pytest.approx(2 * (1 + 4) / 2**4)
    assert format_precision(result).splitlines()[2] == "| 1 | 2 / 1 | 0.400 | 0.600 | 6/10 | 1 / 3 | 0.62 | yes |"
    assert json.loads((tmp_path / "study.json").read_text())["precision"][0]["identical_answers"] == 6
    # a bf16 run on an AMX CPU answers otherwise: a numerics of its own, neither paired nor breaking bf16's agreement
    run("arm6_sentiment", 1, True, fp32, ["d"] * 10)
    meta = tmp_path / "arm6_sentiment" / "seed1" / "study_run.json"
    meta.write_text(json.dumps({"seed": 1, "cpu_native_bf16": True, "bf16": True, "cpu_amx_bf16": True}))
    again = summarise_study(tmp_path, figures=False)
    assert again["precision"][0]["bf16_runs"] == ["arm7_no_leash/seed1"] and again["precision"][0]["consistent"]
    from trl_lab.scripts.study_summary import _numerics

    amx = [r for r in again["arms"]["sentiment"]["runs"] if r["seed"] == 1]
    assert [_numerics(r) for r in amx] == ["bf16-amx"]
    run("arm4_verbosity", 1, False, fp32, ["c"] * 10)  # an fp32 run that answers otherwise: flagged, not hidden
    assert not summarise_study(tmp_path, figures=False)["precision"][0]["consistent"]


@pytest.mark.parametrize("name", ["length_biased", "length_matched", "twin_matched", "shortcut_matched",
                                  "padded_shortcut_matched"])
def test_each_study_rm_parses_into_the_pairs_it_claims(name, tmp_path):
    from trl_lab.data.gsm8k_pairs import SHORTCUT_KINDS, SHORTCUT_KINDS_V1
    from trl_lab.scripts import study_rm, train_reward_model

    script, args, _ = train_reward_model.parse_args(study_rm.rm_train_argv(name, tmp_path))
    shortcuts = name.endswith("shortcut_matched")
    assert script.train_chosen_longer == {"length_biased": 0.9}.get(name, 0.5)
    assert script.policy_wrong_finals == (2 if name == "twin_matched" or shortcuts else 0)
    assert script.policy_shortcut_negatives == (2 if shortcuts else 0)
    # shortcut_matched stays the four kinds it was built (and committed) with; padded_ adds padded_wrong
    assert script.policy_shortcut_kinds == {"shortcut_matched": list(SHORTCUT_KINDS_V1),
                                            "padded_shortcut_matched": list(SHORTCUT_KINDS)}.get(
                                                name, list(SHORTCUT_KINDS))
    assert SHORTCUT_KINDS_V1 == ("empty", "non_answer", "cheerful_wrong", "polished_wrong")
    assert script.policy_samples == str(tmp_path / "rm" / "samples.jsonl") and not script.solution_pairs
    assert args.output_dir == str(tmp_path / "rm" / name)


RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "study"


@pytest.mark.parametrize("name", ["shortcut_matched", "padded_shortcut_matched"])
def test_committed_shortcut_rms_rebuild_their_training_pairs(name, tmp_path):
    """From the committed policy samples, each shortcut RM's recipe builds the training pairs its committed
    rm_summary.json records, type by type (shortcut_matched still four kinds after padded_wrong was added)."""
    import json
    import shutil

    from trl_lab.scripts import study_rm, train_reward_model

    (tmp_path / "rm").mkdir()
    shutil.copy(RESULTS / "rm" / "samples.jsonl", tmp_path / "rm" / "samples.jsonl")
    script, args, _ = train_reward_model.parse_args(study_rm.rm_train_argv(name, tmp_path))
    _, stats = train_reward_model.build_pairs(script, seed=args.seed)
    committed = json.loads((RESULTS / "rm" / name / "rm_summary.json").read_text())["data"]
    assert stats["train"]["by_type"] == committed["train"]["by_type"]
    assert stats["pairs_built"] == committed["pairs_built"]


@pytest.mark.parametrize("run", sorted(str(p.relative_to(RESULTS)) for p in RESULTS.glob("arm*/seed*") if p.is_dir()))
def test_replayed_detector_reproduces_each_committed_run(run):
    from trl_lab.report import load_goodhart, load_log_history
    from trl_lab.scripts.study_summary import replay_detector

    folder = RESULTS / run
    entries, goodhart = load_log_history(folder), load_goodhart(folder)
    replayed = replay_detector(folder, entries, goodhart)
    assert replayed["stop"] == goodhart["triggered_step"]
    if goodhart["triggered_step"] is not None:
        assert replayed["kept"] == goodhart["best_step"]


def test_a_shorter_warm_up_stops_the_sentiment_run_an_evaluation_sooner():
    from trl_lab.report import load_goodhart, load_log_history
    from trl_lab.scripts.study_summary import REPLAYED_DETECTORS, replay_detector

    folder = RESULTS / "arm6_sentiment" / "seed44"  # ran with a warm-up of 3 evaluations: stopped at 18
    entries, goodhart = load_log_history(folder), load_goodhart(folder)
    assert replay_detector(folder, entries, goodhart, **REPLAYED_DETECTORS["detector_warmup_1"]) == {"stop": 12,
                                                                                                     "kept": 0}
    # flawed_rm 43's proxy was below where it started at step 12 (1.70 vs 1.82): no Goodhart verdict before 18
    folder = RESULTS / "arm5_flawed_rm" / "seed43"
    entries, goodhart = load_log_history(folder), load_goodhart(folder)
    assert replay_detector(folder, entries, goodhart, **REPLAYED_DETECTORS["detector_warmup_1"])["stop"] == 18


def test_glr_at_4_25_lets_the_contrast_run_go_and_stops_the_sentiment_run_a_step_later():
    """matched_rm 44 (the RM that passed its audit): glr at 4.0 stops it at 36, at 4.25 not; sentiment 43: 18 at
    4.0, 24 at 4.25 -- the two places where the stricter threshold changes a verdict on the committed runs."""
    from trl_lab.report import load_goodhart, load_log_history
    from trl_lab.scripts.study_summary import REPLAYED_DETECTORS, replay_detector

    stops = {}
    for run in ("arm5_matched_rm/seed44", "arm6_sentiment/seed43"):
        folder = RESULTS / run
        entries, goodhart = load_log_history(folder), load_goodhart(folder)
        stops[run] = [replay_detector(folder, entries, goodhart, **REPLAYED_DETECTORS[name])["stop"]
                      for name in ("glr_warmup_1", "glr_4.25_warmup_1")]
    assert stops == {"arm5_matched_rm/seed44": [36, None], "arm6_sentiment/seed43": [18, 24]}


def test_watching_the_reward_parts_stops_the_verbosity_run_whose_total_stayed_flat():
    """Arm 4 seed 45: held-out accuracy 0.188 -> 0.039 by step 18 (z 4.3, 5.8), but checker + length bonus stayed
    flat (0.56 -> 0.55, below its first value 0.67), so the detector as it ran did not stop it; with
    proxy_components the length part's rise makes the verdict at 18 and step 0 is restored."""
    from trl_lab.report import load_goodhart, load_log_history
    from trl_lab.scripts.study_summary import REPLAYED_DETECTORS, replay_detector

    folder = RESULTS / "arm4_verbosity" / "seed45"
    entries, goodhart = load_log_history(folder), load_goodhart(folder)
    assert goodhart["triggered_step"] is None and "proxy_components" not in goodhart["rule"]
    assert replay_detector(folder, entries, goodhart) == {"stop": None, "kept": 24}
    assert replay_detector(folder, entries, goodhart, **REPLAYED_DETECTORS["detector_components"]) == {"stop": 18,
                                                                                                       "kept": 0}


def test_a_rise_then_a_fall_is_found_against_the_best_earlier_evaluation_and_tabled(tmp_path):
    """matched_rm's shape: accuracy rises (12 -> 24 of 40 right), then falls back to step 0's level. Against step 0
    nothing is lost; against the best earlier evaluation the fall is significant, and the RM table, the health
    table (an entropy collapse replayed before that fall) and the PPO-vs-GRPO table say so."""
    from trl_lab.scripts.study_summary import format_health, format_ppo_vs_grpo, format_rm_holdup, summarise_study

    start = [True] * 12 + [False] * 28
    peak = [True] * 24 + [False] * 16          # 12 gained, none lost
    back = [True] * 12 + [False] * 28          # the same 12 lost again
    run = tmp_path / "arm5_matched_rm" / "seed1"
    _fake_run(run, 1, {0: start, 6: peak, 12: peak, 18: back}, [4.0] * 18)
    with (run / "metrics.jsonl").open("a") as f:
        for step, entropy in ((0, 1.0), (6, 0.95), (12, 0.45), (18, 0.4)):
            f.write(json.dumps({"step": step, "heldout/accuracy": [12, 24, 24, 12][step // 6] / 40, "heldout/n": 40,
                                "heldout/entropy": entropy}) + "\n")
        for step in range(1, 19):
            f.write(json.dumps({"step": step, "num_tokens": 100.0 * step, "step_time": 2.0 + step % 2}) + "\n")
    (run / "study_run.json").write_text(json.dumps({
        "seed": 1, "wall_s": 600.0, "peak_rss_gb": 3.5, "bf16": False,
        "rm_gate": {"padded_shortcut_matched": {"refused": False, "message": "passed"}}}))
    healthy = tmp_path / "arm1_healthy" / "seed1"
    _fake_run(healthy, 1, {0: start, 6: peak}, [0.2] * 6)
    result = summarise_study(tmp_path, figures=False)
    r = result["arms"]["matched_rm"]["runs"][0]
    assert r["fall_step"] is None and r["fall_from_best"] == (6, 18)
    assert r["health_replayed"] == ["entropy_collapse@12", "entropy_collapse@18"]
    assert r["num_tokens"] == 1800.0 and r["step_time_median"] == 2.5 and r["peak_rss_gb"] == 3.5
    assert format_rm_holdup(result).splitlines()[2] == (
        "| 5 matched_rm | 1 |  | padded_shortcut_matched: passed | 0.600 (6) | 6 -> 18: 0.300 | not audited |")
    health = format_health(result).splitlines()
    assert health[3] == ("| 5 matched_rm | 1 | no | entropy_collapse@12, entropy_collapse@18 | - / 6 -> 18 | "
                         "before the fall |")
    assert health[2].endswith("| no warning |") and "before the fall: 1; no warning: 1" in health[-1]
    ppo = format_ppo_vs_grpo(result, arms=("healthy", "matched_rm")).splitlines()
    assert ppo[3] == ("| 5 matched_rm | 1 | fp32 | 0.300 / 0.600 (6) / 0.300 | 0 vs 0, p 1.0000 | 1,800 | 2.5 | "
                      "10.0 | 3.50 |")
    assert ppo[-1].startswith("| **matched_rm** | 1 seeds | | gain +0.000, sd nan")


def test_health_replay_recomputes_distinct_answers_from_the_kept_answers(tmp_path):
    """replay_run fires diversity_collapse from the held-out tables when the log predates the metric, and
    bench/health_signals.py prints what it returns."""
    from trl_lab.callbacks.health import replay_run

    (tmp_path / "heldout").mkdir()
    answers = {0: [f"answer {i}" for i in range(10)], 6: ["I'm ready."] * 8 + ["a", "b"]}
    lines = []
    for step, texts in answers.items():
        lines.append({"step": step, "heldout/accuracy": 0.5, "heldout/n": 10})
        (tmp_path / "heldout" / f"step_{step:06d}.jsonl").write_text(
            "".join(json.dumps({"index": i, "completion": t}) + "\n" for i, t in enumerate(texts)))
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    steps, logged, warnings = replay_run(tmp_path)
    assert steps == [0, 6] and logged == {"diversity_collapse"}
    assert [(w["signal"], w["step"], w["value"]) for w in warnings] == [("diversity_collapse", 6, 0.3)]


def _with_answers(folder, text_by_index):
    """Give a fake run's held-out rows completion texts (the rerun check compares the text of every answer)."""
    for table in (folder / "heldout").glob("step_*.jsonl"):
        rows = [json.loads(line) for line in table.read_text().splitlines()]
        for row in rows:
            row["completion"] = text_by_index(row["step"], row["index"])
        table.write_text("".join(json.dumps(r) + "\n" for r in rows))
    lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for e in lines:
        if "reward" in e:
            e["loss"] = 0.1 * e["step"]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))


def test_a_rerun_that_reproduces_the_run_lends_it_its_audit_and_any_difference_refuses(tmp_path):
    from trl_lab.scripts import study_rerun

    correct = {0: [True, False, True, False], 6: [False, False, True, False]}
    original, rerun = tmp_path / "docs" / "seed1", tmp_path / "outputs" / "seed1"
    for folder in (original, rerun):
        _fake_run(folder, 1, correct, [0.2, 0.4, 0.6])
        _with_answers(folder, lambda step, i: f"answer {step}/{i}")
    (rerun / "audit.json").write_text(json.dumps({"audit_size": 8, "steps": {"0": {"accuracy": 0.5}}}))
    (rerun / "study_run.json").write_text(json.dumps({"command": "python -m trl_lab.scripts.study --arm x --seed 1"}))
    record = study_rerun.main([str(original), str(rerun)])
    assert json.loads((original / "audit.json").read_text())["audit_size"] == 8
    saved = json.loads((original / "rerun.json").read_text())
    assert saved["heldout_identical"] == {"0": {"items": 4, "same_completion": 4, "same_correct": 4},
                                          "6": {"items": 4, "same_completion": 4, "same_correct": 4}}
    assert saved["command"].endswith("--seed 1") and record["train_steps_compared"] == 3
    assert "replaced_audit" not in saved and "lost before its audit was committed" in saved["why"]
    # A rerun made to grow an audit the original has: the audit it replaces is recorded, not silently dropped.
    (rerun / "audit.json").write_text(json.dumps({"audit_size": 16, "steps": {"0": {"accuracy": 0.375}}}))
    study_rerun.main([str(original), str(rerun)])
    saved = json.loads((original / "rerun.json").read_text())
    assert saved["replaced_audit"] == {"audit_size": 8, "accuracy": {"0": 0.5}}
    assert "8-question audit was made on adapters since lost" in saved["why"]
    assert json.loads((original / "audit.json").read_text())["audit_size"] == 16
    # One answer worded differently, or a train reward off by more than the tolerance: two runs, nothing copied.
    (original / "audit.json").unlink()
    _with_answers(rerun, lambda step, i: "another answer" if (step, i) == (6, 2) else f"answer {step}/{i}")
    with pytest.raises(ValueError, match=r"step_000006.jsonl, item 2: the rerun answered differently"):
        study_rerun.compare_runs(original, rerun)
    with pytest.raises(SystemExit, match="nothing copied"):
        study_rerun.main([str(original), str(rerun)])
    assert not (original / "audit.json").exists()
    # With the train logs equal, an answer decoded differently can be allowed explicitly; it is listed, not hidden.
    lent = study_rerun.compare_runs(original, rerun, max_answer_differences=1)
    assert lent["heldout_identical"]["6"] == {"items": 4, "same_completion": 3, "same_correct": 4}
    assert lent["heldout_differences"] == [{"step": 6, "index": 2, "original_correct": True, "rerun_correct": True,
                                            "original": "answer 6/2", "rerun": "another answer"}]
    study_rerun.main([str(original), str(rerun), "--max_answer_differences", "1"])
    saved = json.loads((original / "rerun.json").read_text())
    assert "1 held-out answer(s) decoded differently" in saved["why"] and len(saved["heldout_differences"]) == 1
    (original / "audit.json").unlink()
    _with_answers(rerun, lambda step, i: f"answer {step}/{i}")
    lines = [json.loads(line) for line in (rerun / "metrics.jsonl").read_text().splitlines()]
    lines[1]["reward"] += 0.01
    (rerun / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    with pytest.raises(ValueError, match=r"metrics.jsonl step 2: reward"):
        study_rerun.compare_runs(original, rerun)
    assert study_rerun.compare_runs(original, rerun, tolerance=0.1)["max_abs_diff/reward"] == pytest.approx(0.01)


def test_the_audit_verdict_relabels_runs_by_whether_their_audit_fell(tmp_path):
    from trl_lab.scripts.study_summary import format_stopping_rules_by_audit, summarise_study

    def audit(run, by_step):
        (run / "audit.json").write_text(json.dumps({"audit_size": 40, "steps": {
            str(k): {"accuracy": sum(v) / len(v), "correct": v} for k, v in by_step.items()}}))

    same = [True] * 20 + [False] * 20
    fell = [True] * 6 + [False] * 34  # 14 of the 20 lost, none gained: exact McNemar p = 1.2e-4
    # a hacked-arm run whose audit never fell, and a healthy-arm run whose audit did
    hacked = tmp_path / "arm4_verbosity" / "seed1"
    _fake_run(hacked, 1, {0: [True, True, False, False], 6: [True, False, False, False]}, [0.5] * 6)
    (hacked / "goodhart.json").write_text(json.dumps({"triggered_step": 6, "best_step": 0, "restored": True}))
    audit(hacked, {0: same, 6: same})
    healthy = tmp_path / "arm1_healthy" / "seed2"
    _fake_run(healthy, 2, {0: [True, True, False, False], 6: [True, True, False, False],
                           12: [True, True, False, False]}, [0.5] * 12)
    audit(healthy, {0: same, 6: same, 12: fell})
    result = summarise_study(tmp_path, figures=False)
    assert result["arms"]["verbosity"]["runs"][0]["audit_fall"] is None
    assert result["arms"]["healthy"]["runs"][0]["audit_fall"] == (0, 12)  # against the earliest of equal bests
    detector = result["stopping_rules_by_audit"]["detector"]
    # the detector's stop at 6 on the verbosity run is a false alarm by the audit; the healthy run's fall is missed
    assert (detector["detected"], detector["fell_runs"], detector["false_alarms"], detector["other_runs"]) == \
        (0, 1, 1, 1)
    assert result["audit_relabelled"] == ["healthy 2", "verbosity 1"]
    assert result["stopping_rules_by_audit"]["best_checkpoint"]["mean_delay_from_fall"] is None
    table = format_stopping_rules_by_audit(result)
    assert "| detector | 0/1 | 1/1 | - |" in table and "healthy 2, verbosity 1" in table
