"""reasoning-gym tasks as GSM8K-format files: disjoint splits, '#### N' answers the checker scores, clear errors."""

from __future__ import annotations

import json

import pytest

from trl_lab.cli import main as cli_main
from trl_lab.data import load_gsm8k
from trl_lab.data.reasoning_gym_tasks import task_rows, write_task_jsonl
from trl_lab.rewards.registry import as_reward

CHAIN_SUM = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 2}


def test_rows_have_numeric_answers_the_checker_accepts():
    rows = task_rows("chain_sum", 20, seed=0, **CHAIN_SUM)
    assert len(rows) == 20 and all(r["answer"].startswith("#### ") for r in rows)
    check = as_reward("gsm8k")
    for row in rows[:5]:
        # The true sum, computed here from the question text, is what the answer says.
        a, op, b = row["question"].rstrip(" =").split()[-3:]
        value = int(a) + int(b) if op == "+" else int(a) - int(b)
        assert row["answer"] == f"#### {value}"
        assert check(prompts=["q"], completions=[f"so it is {value}"], answer=[str(value)]) == [1.0]


def test_splits_are_disjoint_and_load_as_local_gsm8k(tmp_path):
    info = write_task_jsonl("chain_sum", tmp_path, train_size=300, test_size=100, **CHAIN_SUM)
    train = [json.loads(line) for line in (tmp_path / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line) for line in (tmp_path / "test.jsonl").read_text().splitlines()]
    assert len(train) == info["train"] == 300
    assert len(test) == info["test"] == 100 - info["test_dropped_as_repeats"] > 0
    assert not {r["question"] for r in train} & {r["question"] for r in test}
    assert len({r["question"] for r in test}) == len(test)  # each held-out question once
    # Seeds s and s+1 would give the same items shifted by one: the test stream must not be that.
    shifted = task_rows("chain_sum", 100, seed=1, **CHAIN_SUM)
    assert len({r["question"] for r in shifted} & {r["question"] for r in train}) > 90  # (why the offset exists)
    assert json.loads((tmp_path / "task.json").read_text())["config"] == CHAIN_SUM
    ds = load_gsm8k("local", "test", path=tmp_path, system_prompt=None)
    assert len(ds) == len(test) and ds[0]["answer"] == test[0]["answer"].removeprefix("#### ")


def test_non_numeric_and_unknown_tasks_are_refused(tmp_path):
    with pytest.raises(ValueError, match="'letter_jumble', item 0 .* not a number"):
        task_rows("letter_jumble", 2, seed=0)
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'no_such_task'"):
        task_rows("no_such_task", 2, seed=0)


def test_cli_make_task(tmp_path, capsys):
    assert cli_main(["make-task", "chain_sum", str(tmp_path), "--train_size", "50", "--test_size", "20",
                     "--config", json.dumps(CHAIN_SUM)]) == 0
    assert json.loads(capsys.readouterr().out)["train"] == 50
    with pytest.raises(SystemExit, match="--config is not JSON"):
        cli_main(["make-task", "chain_sum", str(tmp_path), "--config", "{min_terms: 2"])
