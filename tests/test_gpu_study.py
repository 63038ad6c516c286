"""The study on a lent GPU (bench/gpu_study.py, bench/gpu_study.sh) and the task export it reads, on CPU: the plan,
the deadline, what is packed and what comes back; the export parses into the same job on local files."""

from __future__ import annotations

import json
import sys
import tarfile

import pytest

from tests.helpers import load_bench
from trl_lab.scripts import study
from trl_lab.scripts.study_task import export_task, local_task_flags


def test_the_plan_interleaves_the_arms_and_reads_the_export(tmp_path):
    gpu_study = load_bench("gpu_study")
    plan = gpu_study.commands(["healthy", "ppo"], [42, 43], str(tmp_path / "task"), str(tmp_path / "runs"))
    assert [(arm, seed) for arm, seed, _ in plan] == [("healthy", 42), ("ppo", 42), ("healthy", 43), ("ppo", 43)]
    argv = plan[1][2]
    assert argv[:3] == [sys.executable, "-m", "trl_lab.scripts.study"]
    assert argv[argv.index("--task_dir") + 1] == str(tmp_path / "task")
    assert argv[argv.index("--audit_size") + 1] == "0"  # no audit set: the GPU runs score the held-out set
    assert tuple(argv[-len(gpu_study.GPU_FLAGS):]) == gpu_study.GPU_FLAGS


@pytest.mark.parametrize("arm", ["healthy", "ppo"])
def test_the_gpu_flags_keep_equal_generated_tokens_and_parse(arm, tmp_path):
    from trl_lab.grpo import GRPOConfig
    from trl_lab.ppo import PPOConfig
    from trl_lab.scripts.grpo_gsm8k import parse_args

    gpu_study = load_bench("gpu_study")
    (_, _, argv), = gpu_study.commands([arm], [7], str(tmp_path / "task"), str(tmp_path / "runs"))
    extra = argv[argv.index("--task_dir") + 2:]
    assert extra[extra.index("--bf16") + 1] == "true"
    extra[extra.index("--bf16") + 1] = "false"  # transformers refuses bf16 on a CPU without a GPU: parse in fp32
    job_argv = study.arm_argv(arm, 7, tmp_path / "runs", tuple(extra), task_dir=tmp_path / "task")
    config_cls = PPOConfig if arm == "ppo" else GRPOConfig
    script, training, _ = parse_args(config_cls, None, job_argv)
    assert (script.dataset_source, script.dataset_path) == ("local", str(tmp_path / "task"))
    assert script.dataset_task is None and script.dataset_task_config is None
    assert script.heldout_size == 512
    # GRPO 8 prompts x 4 completions, PPO 32 x 1: both generate 32 completions a step
    assert training.per_device_train_batch_size * training.gradient_accumulation_steps == 32
    assert training.num_generations == (1 if arm == "ppo" else 4)


def test_the_deadline_stops_what_runs_and_reports_what_never_started(tmp_path):
    gpu_study = load_bench("gpu_study")
    quick = [sys.executable, "-c", "pass"]
    slow = [sys.executable, "-c", "import time; time.sleep(60)"]
    plan = [("healthy", 1, quick), ("ppo", 1, slow), ("healthy", 2, quick)]
    runs = gpu_study.launch(plan, parallel=2, deadline_s=4, log_dir=tmp_path / "logs")
    status = {(r["arm"], r["seed"]): r["status"] for r in runs}
    assert status[("healthy", 1)] == "ok" and status[("ppo", 1)] == "stopped at the deadline"
    # the second quick run starts once the first frees its slot, before the deadline
    assert status[("healthy", 2)] == "ok"
    assert (tmp_path / "logs" / "ppo_1.log").exists()
    late = gpu_study.launch([("ppo", 1, slow), ("ppo", 2, quick)], parallel=1, deadline_s=2, log_dir=tmp_path / "l2")
    assert [r["status"] for r in late] == ["not started", "stopped at the deadline"]
    failed = gpu_study.launch([("ppo", 3, [sys.executable, "-c", "raise SystemExit(3)"])], 1, 30, tmp_path / "l3")
    assert failed[0]["status"] == "failed (exit 3)"


def test_pack_keeps_the_figures_and_answers_not_the_weights_and_unpack_checks_names(tmp_path):
    gpu_study = load_bench("gpu_study")
    root = tmp_path / "runs"
    run = root / "arm1_healthy" / "seed42"
    for name in ("metrics.jsonl", "goodhart.json", "study_run.json", "report.png", "heldout/step_0.jsonl",
                 "adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "checkpoint-5/metrics.jsonl",
                 "goodhart_best/adapter_model.safetensors"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("x")
    (root / "study.json").write_text("{}")
    (root / "logs").mkdir()
    (root / "logs" / "healthy_42.log").write_text("log")
    names = gpu_study.pack(root, tmp_path / "out.tar.gz")
    assert sorted(names) == sorted(["arm1_healthy/seed42/" + n for n in (
        "metrics.jsonl", "goodhart.json", "study_run.json", "report.png", "heldout/step_0.jsonl")]
        + ["study.json", "logs/healthy_42.log"])
    got = gpu_study.unpack(tmp_path / "out.tar.gz", tmp_path / "back")
    assert sorted(got) == sorted(names)
    assert (tmp_path / "back" / "arm1_healthy" / "seed42" / "heldout" / "step_0.jsonl").read_text() == "x"

    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(root / "study.json", arcname="../outside.json")
    with pytest.raises(ValueError, match="outside.json"):
        gpu_study.unpack(evil, tmp_path / "back2")
    assert not (tmp_path / "outside.json").exists()


def test_dry_run_prints_one_command_per_run(tmp_path, capsys):
    gpu_study = load_bench("gpu_study")
    result = gpu_study.main(["--dry_run", "--task_dir", str(tmp_path), "--arms", "ppo", "--seeds", "1", "2"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(result["plan"]) == 2 and "--arm ppo --seed 2" in lines[1]


def test_the_exported_task_is_the_generators_splits_and_loads_as_local_files(tmp_path):
    from trl_lab.data.gsm8k import load_gsm8k
    from trl_lab.data.questions import normalise_question
    from trl_lab.grpo import GRPOConfig
    from trl_lab.scripts.grpo_gsm8k import load_heldout_set, parse_args

    counts = export_task(tmp_path, {"train": 48, "test": 32})
    assert counts == {"train": 48, "test": 32}
    rows = {split: [json.loads(line) for line in (tmp_path / f"{split}.jsonl").read_text().splitlines()]
            for split in counts}
    assert all(r["answer"].startswith("#### ") and r["question"] for split in rows.values() for r in split)
    questions = {split: {normalise_question(r["question"]) for r in split_rows} for split, split_rows in rows.items()}
    assert len(questions["train"]) == 48 and len(questions["test"]) == 32  # distinct
    assert not questions["train"] & questions["test"]  # the generator's split, kept
    assert json.loads((tmp_path / "export.json").read_text())["task"] == "basic_arithmetic"

    # the export reads back through the job's own loader, as the study's runs on the GPU read it
    argv = study.arm_argv("healthy", 3, tmp_path / "runs", ("--heldout_size", "16", "--train_size", "24"),
                          task_dir=tmp_path)
    assert argv[argv.index("--dataset_source") + 1:argv.index("--dataset_source") + 2] == ["local"]
    assert local_task_flags(tmp_path)[-4:] == ["--dataset_task", "none", "--dataset_task_config", "null"]
    script, training, _ = parse_args(GRPOConfig, None, argv)
    train = load_gsm8k(split=script.dataset_train_split, limit=script.train_size, seed=training.seed,
                       **script.dataset_kwargs())
    heldout = load_heldout_set(script, training.seed)
    assert len(train) == 24 and len(heldout) == 16


def test_dataset_task_none_on_the_command_line_unsets_the_configs_task(tmp_path):
    from trl_lab.grpo import GRPOConfig
    from trl_lab.scripts.grpo_gsm8k import parse_args

    config = tmp_path / "c.yaml"
    config.write_text(f"dataset_source: reasoning_gym\ndataset_task: chain_sum\nbf16: false\noutput_dir: {tmp_path}\n")
    script, _, _ = parse_args(GRPOConfig, None, ["--config", str(config), "--dataset_source", "local",
                                                  "--dataset_path", str(tmp_path), "--dataset_task", "none"])
    assert script.dataset_task is None and script.dataset_source == "local"
    with pytest.raises(ValueError, match="dataset_task goes with dataset_source"):
        parse_args(GRPOConfig, None, ["--config", str(config), "--dataset_source", "local",
                                      "--dataset_path", str(tmp_path)])
