"""Bad job inputs a new user hits, refused early with the culprit named (issue 14's first items), and the run log
every job writes."""

from __future__ import annotations

import json

import pytest

from tests.helpers import tiny_config, write_tiny_run_config
from tests.test_grpo_e2e import gsm_rows
from trl_lab import GRPOConfig, GRPOTrainer, parse_reward_specs
from trl_lab.rewards.specs import RewardSpec
from trl_lab.scripts import grpo_gsm8k


@pytest.mark.parametrize("rewards", ["gsm8k", {"name": "gsm8k"}])
def test_a_single_reward_spec_where_a_list_is_expected_means_that_one(rewards, tmp_path):
    """`rewards: gsm8k` in YAML used to say "unknown reward 'g'"; `rewards: {name: gsm8k}` "unknown reward 'name'"."""
    assert parse_reward_specs(rewards) == [RewardSpec("gsm8k")]
    config = tiny_config(GRPOConfig, tmp_path, rewards=rewards, num_generations=2)
    assert config.rewards == [{"name": "gsm8k", "weight": 1.0, "kwargs": {}}]


def test_max_steps_zero_and_an_empty_training_set_are_errors(tmp_path, tiny_model_dir):
    with pytest.raises(ValueError, match="max_steps is 0"):
        tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2, max_steps=0)
    with pytest.raises(ValueError, match="the training set is empty"):
        GRPOTrainer(model=str(tiny_model_dir), train_dataset=gsm_rows(0),
                    args=tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2))


@pytest.mark.parametrize("flag, value, message", [
    ("--heldout_size", "-5", "heldout_size must be >= 0"),
    ("--heldout_eval_steps", "0", "heldout_eval_steps must be >= 1"),
    ("--train_size", "0", "train_size must be >= 1"),
    ("--heldout_kl_items", "0", "heldout_kl_items must be >= 1"),
])
def test_bad_heldout_and_data_sizes_are_refused_naming_the_key(flag, value, message, tmp_path, tiny_model_dir,
                                                                shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k)
    with pytest.raises(ValueError, match=message):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true", flag, value])


def test_a_heldout_size_larger_than_the_test_split_is_refused_before_the_model_loads(tmp_path, tiny_model_dir,
                                                                                      monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        (data / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": f"What is {i} + {split}?", "answer": f"#### {i}"}) + "\n" for i in range(n)))
    monkeypatch.setattr(grpo_gsm8k, "GRPOTrainer", lambda *a, **k: pytest.fail("the model loaded first"))
    config = write_tiny_run_config(tmp_path, tiny_model_dir, data, heldout_size=10)
    with pytest.raises(ValueError, match=r"heldout_size is 10, but the 'test' split has 3 items"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])


def test_a_run_without_a_heldout_set_still_writes_its_log_and_report(tmp_path, tiny_model_dir, shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_size=0)
    grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])
    run = tmp_path / "run"
    assert (run / "metrics.jsonl").stat().st_size > 0 and (run / "report.png").exists()


def test_a_goodhart_proxy_metric_typo_stops_at_the_first_training_log(tmp_path, tiny_model_dir, shared_gsm8k):
    """It used to switch the Goodhart rule off for the whole run after one vague warning."""
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_size=2, heldout_max_new_tokens=4,
                                   goodhart_proxy_metric="rewards/gsm8kk/mean")
    with pytest.raises(ValueError, match=r"proxy_metric 'rewards/gsm8kk/mean' is not in the training log; the reward "
                                         r"metrics logged are \[.*'rewards/gsm8k/mean'.*\]"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])


def test_a_non_utf8_data_file_names_file_and_line_and_a_bom_is_accepted(tmp_path):
    from trl_lab.data.gsm8k import load_gsm8k

    good = json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}).encode()
    (tmp_path / "train.jsonl").write_bytes(b"\xef\xbb\xbf" + good + b"\n" + good.replace(b"1 + 1", b"2 + 0") + b"\n")
    assert load_gsm8k("local", "train", path=tmp_path)["answer"] == ["2", "2"]
    (tmp_path / "train.jsonl").write_bytes(good + b"\n" + "{\"question\": \"Caf\xe9\"}".encode("latin-1") + b"\n")
    with pytest.raises(ValueError, match=r"line 2 of .*train.jsonl is not UTF-8"):
        load_gsm8k("local", "train", path=tmp_path)


def test_an_unwritable_output_dir_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    import trl

    monkeypatch.setattr(trl.GRPOTrainer, "__init__", lambda *a, **k: pytest.fail("the model loaded first"))
    (tmp_path / "a_file").write_text("not a folder")
    args = tiny_config(GRPOConfig, tmp_path, rewards=["gsm8k"], num_generations=2)
    args.output_dir = str(tmp_path / "a_file" / "run")
    with pytest.raises(ValueError, match=r"output_dir .*a_file/run' is not writable"):
        GRPOTrainer(model="unused", args=args, train_dataset=gsm_rows())


def test_a_missing_model_path_or_a_near_miss_of_an_embedded_name_is_named(tmp_path):
    from trl_lab.embedded_model import resolve_model_path

    with pytest.raises(ValueError, match=r"model '\./no/such/model': no such file or directory"):
        resolve_model_path("./no/such/model")
    with pytest.raises(ValueError, match=r"not an embedded model name \(did you mean 'smollm2-135m-instruct'\?\)"):
        resolve_model_path("smollm2-135m-instruc")
    assert resolve_model_path("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"  # hub
    assert resolve_model_path(str(tmp_path)) == str(tmp_path)  # a local folder as it is


@pytest.mark.parametrize("key, value", [("beta", float("nan")), ("learning_rate", float("inf")),
                                        ("vf_coef", float("nan"))])
def test_non_finite_hyperparameters_are_refused_naming_the_key(key, value, tmp_path):
    from trl_lab import PPOConfig

    config_cls = PPOConfig if key == "vf_coef" else GRPOConfig
    with pytest.raises(ValueError, match=f"{key} must be a finite number, got {value}"):
        tiny_config(config_cls, tmp_path, rewards=["gsm8k"], num_generations=2, **{key: value})


def huge_reward(completions, **kwargs):
    return [1e308 for _ in completions]


def test_a_weighted_reward_that_overflows_is_an_error_naming_the_plugin():
    """A finite 1e308 reward times weight 10 logged `reward: inf` with loss 0, and training went on."""
    from trl_lab import build_rewards

    (reward,), weights = build_rewards([{"name": "tests.test_job_guards:huge_reward", "weight": 10.0}])
    assert weights == [10.0] and reward.weight == 10.0
    with pytest.raises(Exception, match=r"'huge_reward' returned 1e\+308 for sample 0, which times its weight 10"):
        reward(prompts=["p"], completions=["c"])
    (plain,), _ = build_rewards([{"name": "tests.test_job_guards:huge_reward", "weight": 1.0}])
    with pytest.raises(Exception, match="overflows float32"):  # TRL's rewards are float32: 1e308 is inf there too
        plain(prompts=["p"], completions=["c"])


# ------------------------------------------------------------------------------ issue 14: leakage, data loss, length
class ModelLoaded(Exception):
    """Raised in place of building the trainer: every check before the model load has passed."""


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise ModelLoaded
    monkeypatch.setattr(grpo_gsm8k, "GRPOTrainer", refuse)


def write_splits(folder, **splits):
    folder.mkdir(exist_ok=True)
    for split, questions in splits.items():
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"question": q, "answer": f"#### {i}"}) + "\n" for i, q in enumerate(questions)))
    return folder


def run_job(tmp_path, tiny_model_dir, data, *flags, **config):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, data, **{"train_size": None, **config})
    return grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true", *flags])


def test_training_on_the_heldout_split_is_refused_before_the_model_loads(tmp_path, tiny_model_dir, no_model_load):
    data = write_splits(tmp_path / "data", train=[f"What is {i} + 1?" for i in range(6)],
                        test=[f"What is {i} + 2?" for i in range(4)])
    with pytest.raises(ValueError, match=r"4 of the 4 held-out questions \(dataset_test_split 'test'\) are also in "
                                         r"the training set \(dataset_train_split 'test', 4 questions\).*"
                                         r"--allow_heldout_overlap true"):
        run_job(tmp_path, tiny_model_dir, data, "--dataset_train_split", "test", heldout_size=4)
    with pytest.raises(ModelLoaded):  # the splits themselves are disjoint
        run_job(tmp_path, tiny_model_dir, data, heldout_size=4)


def test_overlapping_train_and_test_files_are_refused_unless_allowed(tmp_path, tiny_model_dir, no_model_load, caplog):
    test = ["What is 1 + 2?", "What is 2 + 2?", "What is 3 + 2?"]
    data = write_splits(tmp_path / "data", test=test,  # two test questions again, spaced and cased differently
                        train=["What is 9 + 9?", "what is  1 + 2?", "WHAT IS 3 + 2?\n", "What is 8 + 8?"])
    with pytest.raises(ValueError, match=r"2 of the 3 held-out questions \(dataset_test_split 'test'\) are also in the "
                                         r"training set \(dataset_train_split 'train', 4 questions\) \(e\.g\. "
                                         r"'What is [13] \+ 2\?'\)"):
        run_job(tmp_path, tiny_model_dir, data, heldout_size=3)
    with pytest.raises(ModelLoaded):
        run_job(tmp_path, tiny_model_dir, data, "--allow_heldout_overlap", "true", heldout_size=3)
    assert "2 of the 3 held-out questions" in caplog.text and "running anyway" in caplog.text


def test_one_data_file_is_split_by_question_hash_into_disjoint_train_and_heldout_sets(tmp_path, tiny_model_dir,
                                                                                     no_model_load):
    """One --dataset_path file used to serve as both splits: every held-out item was a training item."""
    from trl_lab.data.gsm8k import generated_split_of, load_gsm8k

    questions = [f"Tom has {i} apples and buys {i + 3}. How many now?" for i in range(60)]
    file = tmp_path / "all.jsonl"
    file.write_text("".join(json.dumps({"question": q, "answer": f"#### {2 * i + 3}"}) + "\n"
                            for i, q in enumerate(questions)))
    train, test = (load_gsm8k("local", split, path=file) for split in ("train", "test"))
    assert sorted(list(train["question"]) + list(test["question"])) == sorted(questions)
    assert set(test["question"]) == {q for q in questions if generated_split_of(q) == "test"} and len(test) == 17
    with pytest.raises(ValueError, match=r"one file .* holds the splits 'train' and 'test' \(by question hash\), "
                                         r"not 'validation'"):
        load_gsm8k("local", "validation", path=file)
    with pytest.raises(ModelLoaded):
        run_job(tmp_path, tiny_model_dir, file, heldout_size=8)


def test_heldout_questions_or_audit_pairs_a_learned_rm_trained_on_are_refused(tmp_path):
    from types import SimpleNamespace

    from datasets import Dataset

    from trl_lab.data.leakage import TRAINED_QUESTIONS_FILE, write_trained_questions

    rm = tmp_path / "rm"
    rm.mkdir()
    write_trained_questions(rm, ["What is 2 + 2?", "What is 7 + 7?"])
    assert "What is 2 + 2?" not in (rm / TRAINED_QUESTIONS_FILE).read_text()  # fingerprints, not the text
    heldout = Dataset.from_list([{"question": f"What is {i} + {i}?"} for i in range(4)])
    train = Dataset.from_list([{"question": "What is 9 + 1?"}])
    script_args = grpo_gsm8k.GSM8KScriptArguments(dataset_source="local", dataset_path=str(tmp_path))
    args = SimpleNamespace(rewards=[{"name": "learned_rm", "kwargs": {"path": str(rm)}}], rm_audit_data=None)
    with pytest.raises(ValueError, match=rf"1 of the 4 held-out questions .* are also in the training pairs of the "
                                         rf"learned_rm {rm} .*train_reward_model reads its dataset_train_split"):
        grpo_gsm8k.check_heldout_leakage(script_args, args, train, heldout)
    args.rm_audit_data = str(tmp_path / "audit.jsonl")
    (tmp_path / "audit.jsonl").write_text("".join(json.dumps(
        {"prompt": [{"role": "user", "content": q}], "chosen": [{"role": "assistant", "content": "#### 1"}],
         "rejected": [{"role": "assistant", "content": "#### 2"}], "question": q}) + "\n"
        for q in ("What is 7 + 7?", "What is 9 + 9?")))
    with pytest.raises(ValueError, match=rf"1 of the 2 held-out questions \(rm_audit_data {args.rm_audit_data}\) .* "
                                         rf"training pairs of the learned_rm {rm}"):
        grpo_gsm8k.check_heldout_leakage(script_args, args, train, heldout.select([1, 3]))
    script_args.allow_heldout_overlap = True
    grpo_gsm8k.check_heldout_leakage(script_args, args, train, heldout)


def test_an_output_dir_with_a_previous_run_is_refused_unless_resuming_or_overwriting(tmp_path, tiny_model_dir,
                                                                                     shared_gsm8k, no_model_load):
    """Re-running into it used to truncate its metrics.jsonl (20 -> 4 rows) and leave its checkpoints beside the new."""
    run = tmp_path / "run"
    (run / "checkpoint-4").mkdir(parents=True)
    (run / "checkpoint-12").mkdir()
    (run / "metrics.jsonl").write_text('{"loss": 1.0, "step": 1}\n')
    (run / "goodhart.json").write_text("{}")
    with pytest.raises(ValueError, match=r"output_dir '.*run' holds a previous run \(metrics.jsonl, 2 checkpoint-\* "
                                         r"folder\(s\)\).*--resume_from_checkpoint .*checkpoint-12.*"
                                         r"--overwrite_output_dir true"):
        run_job(tmp_path, tiny_model_dir, shared_gsm8k, train_size=8)
    assert (run / "metrics.jsonl").read_text() == '{"loss": 1.0, "step": 1}\n'
    with pytest.raises(ModelLoaded):  # resuming goes on (the checkpoint folders here are fakes: no further)
        run_job(tmp_path, tiny_model_dir, shared_gsm8k, "--resume_from_checkpoint", str(run / "checkpoint-12"),
                train_size=8)
    with pytest.raises(ModelLoaded):
        run_job(tmp_path, tiny_model_dir, shared_gsm8k, "--overwrite_output_dir", "true", train_size=8)
    assert sorted(p.name for p in run.iterdir()) == []


def test_an_over_long_prompt_is_refused_naming_the_row_or_dropped(tmp_path, tiny_model_dir, no_model_load, caplog):
    """One 100 kB question used to stall a run for minutes; the tiny model's context is 2048 tokens."""
    long_question = "What is 2 + 2? " + "Think about it. " * 400
    data = write_splits(tmp_path / "data", train=["What is 1 + 1?", long_question, "What is 3 + 3?"],
                        test=["What is 5 + 5?"])
    with pytest.raises(ValueError, match=r"1 prompt\(s\) of the training set \(dataset_train_split 'train'\) have more "
                                         r"than 2040 tokens; the first is row 1 \(\d+ tokens, 6415 characters: 'What is "
                                         r"2 \+ 2\? Think.*--max_prompt_tokens; default 2040: the model's context minus "
                                         r"max_completion_length"):
        run_job(tmp_path, tiny_model_dir, data)
    with pytest.raises(ValueError, match=r"3 prompt\(s\) of the training set .* more than 5 tokens; the first is row 0"):
        run_job(tmp_path, tiny_model_dir, data, "--max_prompt_tokens", "5")
    with pytest.raises(ModelLoaded):
        run_job(tmp_path, tiny_model_dir, data, "--long_prompts", "drop")
    assert "1 prompt(s) of the training set" in caplog.text and "dropping them" in caplog.text


def test_a_resume_that_fails_leaves_the_previous_log_whole_and_one_that_works_cuts_it_back(tmp_path, tiny_model_dir):
    """A corrupt rng_state.pth used to truncate metrics.jsonl to the resumed step before the resume failed."""
    import shutil

    from tests.test_grpo_e2e import tiny_args
    from trl_lab.callbacks import MetricsLoggerCallback

    def trainer():
        args = tiny_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2, max_completion_length=4)
        t = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows())
        t.add_callback(MetricsLoggerCallback(write_report=False))
        return t

    trainer().train()
    log = tmp_path / "out" / "metrics.jsonl"
    before = log.read_text()
    assert [json.loads(x)["step"] for x in before.splitlines()] == [1, 2, 3, 4, 4]  # the last: the train summary
    checkpoint = tmp_path / "out" / "checkpoint-2"
    rng = (checkpoint / "rng_state.pth").read_bytes()
    (checkpoint / "rng_state.pth").write_bytes(rng[: len(rng) // 3])
    with pytest.raises(Exception):
        trainer().train(resume_from_checkpoint=str(checkpoint))
    assert log.read_text() == before

    (checkpoint / "rng_state.pth").write_bytes(rng)
    trainer().train(resume_from_checkpoint=str(checkpoint))
    after = [json.loads(x) for x in log.read_text().splitlines()]
    assert [r["step"] for r in after] == [1, 2, 3, 4, 4] and log.read_text().splitlines()[:2] == before.splitlines()[:2]
    shutil.rmtree(tmp_path / "out")


def mark_started(completions, **kwargs):
    """A reward that records that training has reached its first reward call (for the SIGTERM test)."""
    import os
    from pathlib import Path

    Path(os.environ["TRL_LAB_TEST_STARTED"]).touch()
    return [0.0 for _ in completions]


@pytest.mark.slow  # a job in a subprocess: about 30 s
def test_sigterm_saves_a_checkpoint_and_the_run_ends_with_its_report(tmp_path, tiny_model_dir, shared_gsm8k):
    """Preemption (SIGTERM) used to kill the job with no checkpoint, goodhart.json or report."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.helpers import REPO

    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, max_steps=200, heldout_size=2,
                                   heldout_max_new_tokens=4, heldout_eval_steps=100, max_completion_length=4,
                                   rewards=[{"name": "gsm8k"}, {"name": "tests.test_job_guards:mark_started"}])
    started = tmp_path / "started"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TRL_LAB_TEST_STARTED": str(started)}
    job = subprocess.Popen([sys.executable, "-m", "trl_lab.scripts.grpo_gsm8k", "--config", str(config),
                            "--use_cpu", "true"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        while not started.exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert started.exists(), job.communicate()[0][-3000:]
        job.send_signal(signal.SIGTERM)
        output = job.communicate(timeout=240)[0]
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode == 0, output[-3000:]
    run = tmp_path / "run"
    checkpoints = [p.name for p in run.glob("checkpoint-*")]
    assert len(checkpoints) == 1, (checkpoints, output[-3000:])
    step = int(checkpoints[0].split("-")[1])
    assert 1 <= step < 200 and f"Stopped by SIGTERM at step {step}" in output
    assert (run / checkpoints[0] / "trainer_state.json").is_file()
    assert (run / "report.png").is_file() and (run / "goodhart.json").is_file()
    assert (run / "adapter_model.safetensors").is_file()  # the job's own final save_model
    assert max(json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()) == step


def sigterm_on_second_call(completions, **kwargs):
    import os
    import signal

    sigterm_on_second_call.calls = getattr(sigterm_on_second_call, "calls", 0) + 1
    if sigterm_on_second_call.calls == 2:
        os.kill(os.getpid(), signal.SIGTERM)
    return [0.0 for _ in completions]


def test_preemption_callback_saves_and_stops_at_the_step_a_sigterm_arrives_in(tmp_path, tiny_model_dir):
    import signal

    from tests.test_grpo_e2e import tiny_args
    from trl_lab.callbacks.preemption import PreemptionCallback

    sigterm_on_second_call.calls = 0
    before = signal.getsignal(signal.SIGTERM)
    args = tiny_args(tmp_path, max_steps=50, max_completion_length=4,
                     rewards=["tests.test_job_guards:sigterm_on_second_call"])
    trainer = GRPOTrainer(model=str(tiny_model_dir), args=args, train_dataset=gsm_rows())
    preemption = PreemptionCallback()
    trainer.add_callback(preemption)
    trainer.train()
    assert preemption.stopped_at == trainer.state.global_step == 2
    assert [p.name for p in (tmp_path / "out").glob("checkpoint-*")] == ["checkpoint-2"]  # save_strategy is "no"
    assert signal.getsignal(signal.SIGTERM) == before


def test_end_job_waits_for_every_rank_then_ends_then_settles(monkeypatch):
    """The order that keeps a gloo rank from hanging in ~ProcessGroupGloo at exit (see end_job's docstring)."""
    from trl_lab.scripts import utils

    calls = []

    class Accelerator:
        def wait_for_everyone(self):
            calls.append("wait")

    class Trainer:
        accelerator = Accelerator()

        def end(self):
            calls.append("end")

    monkeypatch.setattr(utils.time, "sleep", lambda s: calls.append(("sleep", s)))
    utils.end_job(Trainer())
    assert calls == ["wait", "end", ("sleep", utils.SETTLE_S)] and utils.SETTLE_S > 0


def test_a_bad_goodhart_rule_in_the_yaml_is_refused_naming_the_key(tmp_path, tiny_model_dir, shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, goodhart_rule="cusum")
    with pytest.raises(ValueError, match="goodhart_rule must be one of 'paired_z', 'glr', got 'cusum'"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])


def test_a_bad_heldout_kl_precision_in_the_yaml_is_refused_naming_the_key(tmp_path, tiny_model_dir, shared_gsm8k):
    config = write_tiny_run_config(tmp_path, tiny_model_dir, shared_gsm8k, heldout_kl_precision="fp16")
    with pytest.raises(ValueError, match="heldout_kl_precision must be 'fp32', 'bf16' or 'train', got 'fp16'"):
        grpo_gsm8k.main(["--config", str(config), "--use_cpu", "true"])
