"""GSM8K data sources: local jsonl, reasoning-gym's gsm_symbolic, the Hub (mocked/offline), validation."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import datasets  # noqa: E402

from trl_lab.data import (  # noqa: E402
    DEFAULT_SYSTEM_PROMPT,
    GSM8KUnavailableError,
    heldout_gsm8k,
    load_gsm8k,
    generated_split_of,
)
from trl_lab.data import gsm8k as data_gsm8k  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "gsm8k"
needs_shared = pytest.mark.skipif(
    not (SHARED / "train.jsonl").is_file(),
    reason=f"GSM8K jsonl files not found at {SHARED} (the ../shared folder beside the checkout)",
)
COLUMNS = ["prompt", "answer", "question"]
NUMBER = re.compile(r"-?\d+(\.\d+)?")


def _check_rows(ds, system_prompt=DEFAULT_SYSTEM_PROMPT):
    assert ds.column_names == COLUMNS
    for row in ds:
        expected = [{"role": "user", "content": row["question"]}]
        if system_prompt:
            expected.insert(0, {"role": "system", "content": system_prompt})
        assert row["prompt"] == expected
        assert NUMBER.fullmatch(row["answer"]), row


def _write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ local
@needs_shared
def test_local_splits():
    train = load_gsm8k("local", "train", path=SHARED)
    test = load_gsm8k("local", "test", path=SHARED)
    assert (len(train), len(test)) == (7473, 1319)
    _check_rows(test)
    assert train.column_names == COLUMNS
    assert test[0]["answer"] == "18"
    assert test[0]["question"].startswith("Janet’s ducks lay 16 eggs per day.")
    assert test[0]["prompt"][0] == {"role": "system", "content": DEFAULT_SYSTEM_PROMPT}
    assert "####" in DEFAULT_SYSTEM_PROMPT
    assert train[0]["answer"] == "72"


@needs_shared
def test_local_single_file_limit_and_shuffle():
    # One file holds both splits, by question hash: its 'test' part is about a fifth of it, in file order.
    whole = [json.loads(line)["question"] for line in (SHARED / "test.jsonl").read_text().splitlines()]
    part = [q for q in whole if generated_split_of(q) == "test"]
    first = load_gsm8k("local", "test", path=SHARED / "test.jsonl", limit=5)
    assert first["question"] == part[:5] and 0.15 < len(part) / len(whole) < 0.25
    assert len(load_gsm8k("local", "train", path=SHARED / "test.jsonl")) == len(whole) - len(part)
    a = load_gsm8k("local", "test", path=SHARED, limit=20, shuffle=True, seed=1)
    b = load_gsm8k("local", "test", path=SHARED, limit=20, shuffle=True, seed=1)
    c = load_gsm8k("local", "test", path=SHARED, limit=20, shuffle=True, seed=2)
    assert a["question"] == b["question"] != c["question"]


@needs_shared
def test_heldout_sample():
    held = heldout_gsm8k(50, source="local", path=SHARED, seed=3)
    assert len(held) == 50
    _check_rows(held)
    all_test = set(load_gsm8k("local", "test", path=SHARED)["question"])
    assert set(held["question"]) <= all_test
    assert held["question"] == heldout_gsm8k(50, source="local", path=SHARED, seed=3)["question"]
    assert held["question"] != heldout_gsm8k(50, source="local", path=SHARED, seed=4)["question"]


def test_local_missing_split_or_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        load_gsm8k("local", "test", path=tmp_path)
    with pytest.raises(ValueError, match="path="):
        load_gsm8k("local", "test")


# ------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "bad_answer",
    ["She sells the rest, which is a lot.", "She has 5 apples left.", "9 + 9 = 18 so she makes 18 dollars"],
)
def test_bad_row_names_source_split_and_index(tmp_path, bad_answer):
    file = _write_jsonl(
        tmp_path / "train.jsonl",
        [
            {"question": "What is 1 + 1?", "answer": "1 + 1 = 2\n#### 2"},
            {"question": "What is 2 + 2?", "answer": "#### 4"},
            {"question": "Bad row?", "answer": bad_answer},
        ],
    )
    with pytest.raises(ValueError) as info:
        load_gsm8k("local", "train", path=tmp_path)
    message = str(info.value)
    assert "row 2" in message and "'local'" in message and "'train'" in message
    assert "line 3" in message and str(file) in message and "Bad row?" in message
    # the rows before it are fine
    assert load_gsm8k("local", "train", path=file, limit=2)["answer"] == ["2", "4"]


def test_missing_question_and_invalid_json(tmp_path):
    _write_jsonl(tmp_path / "train.jsonl", [{"answer": "#### 3"}])
    with pytest.raises(ValueError, match=r"row 0 .*question"):
        load_gsm8k("local", "train", path=tmp_path)
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "#### 1"}, "{not json"])
    with pytest.raises(ValueError, match=r"row 1 \(line 2.*invalid JSON"):
        load_gsm8k("local", "test", path=tmp_path)


def test_bare_number_answers_and_commas(tmp_path):
    _write_jsonl(
        tmp_path / "train.jsonl",
        [{"question": "q1", "answer": "1,000"}, {"question": "q2", "answer": "x\n#### 1,234"}, {"question": "q3", "answer": 7}],
    )
    assert load_gsm8k("local", "train", path=tmp_path)["answer"] == ["1000", "1234", "7"]


# --------------------------------------------------------------------------------- system prompt
@pytest.mark.parametrize("system_prompt", ["Answer with #### N.", None, ""])
def test_system_prompt(tmp_path, system_prompt):
    _write_jsonl(tmp_path / "test.jsonl", [{"question": "What is 3 * 4?", "answer": "#### 12"}])
    ds = load_gsm8k("local", "test", path=tmp_path, system_prompt=system_prompt)
    _check_rows(ds, system_prompt)
    assert len(ds[0]["prompt"]) == (2 if system_prompt else 1)


# ------------------------------------------------------------------------------------ gsm_symbolic
def test_gsm_symbolic_deterministic_disjoint_and_parsable():
    train = load_gsm8k("gsm_symbolic", "train", limit=300, seed=1)
    again = load_gsm8k("gsm_symbolic", "train", limit=300, seed=1)
    other = load_gsm8k("gsm_symbolic", "train", limit=300, seed=2)
    assert len(train) == 300
    assert train["question"] == again["question"] and train["answer"] == again["answer"]
    assert train["question"] != other["question"]
    assert len(set(train["question"])) == 300  # no duplicates within a split
    _check_rows(train)

    tests = [load_gsm8k("gsm_symbolic", "test", limit=200, seed=s) for s in (1, 2)]
    for test in tests:
        assert len(test) == 200
        _check_rows(test)
        assert not set(test["question"]) & set(train["question"])
        assert not set(test["question"]) & set(other["question"])
        assert all(generated_split_of(q) == "test" for q in test["question"])
    assert all(generated_split_of(q) == "train" for q in train["question"])

    # reasoning-gym's "Give the result as your final answer..." suffix is stripped
    assert not any("Do not include units" in q for q in train["question"])
    # heldout works on the generator too
    held = heldout_gsm8k(20, source="gsm_symbolic", seed=1)
    assert set(held["question"]) <= set(tests[0]["question"])


def test_gsm_symbolic_unknown_split():
    with pytest.raises(ValueError, match="'train' and 'test'"):
        load_gsm8k("gsm_symbolic", "validation", limit=1)


# -------------------------------------------------------------------------------------------- hub
def test_hub_rows_are_converted(monkeypatch):
    calls = []

    def fake_load_dataset(path, name=None, split=None, **kwargs):
        calls.append((path, name, split, kwargs))
        return datasets.Dataset.from_dict(
            {
                "question": ["Janet’s ducks lay 16 eggs per day...", "How many?"],
                "answer": ["16 - 3 - 4 = 9\n9 * 2 = 18\n#### 18", "It is 1,200.\n#### 1,200"],
            }
        )

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    ds = load_gsm8k(split="test", revision="main")
    assert calls == [("openai/gsm8k", "main", "test", {"revision": "main"})]
    _check_rows(ds)
    assert ds["answer"] == ["18", "1200"]
    assert len(load_gsm8k(split="test", limit=1)) == 1


def test_hub_bad_row_names_the_hub_source(monkeypatch):
    monkeypatch.setattr(
        datasets,
        "load_dataset",
        lambda *a, **k: datasets.Dataset.from_dict({"question": ["a", "b"], "answer": ["#### 1", "no number"]}),
    )
    with pytest.raises(ValueError, match=r"hub:openai/gsm8k.*'train'.*row 1"):
        load_gsm8k("hub", "train")


def test_hub_unreachable_suggests_offline_sources(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(GSM8KUnavailableError) as info:
        load_gsm8k("hub", "train")
    message = str(info.value)
    assert isinstance(info.value, ConnectionError)
    assert "source='local'" in message and "path=" in message and "source='gsm_symbolic'" in message
    assert "HF_HUB_OFFLINE" in message


def test_hub_offline_real_load_dataset(monkeypatch):
    """The real ``datasets.load_dataset`` in offline mode (no network needed): a clear error."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    try:
        ds = load_gsm8k("hub", "test", limit=3)
    except GSM8KUnavailableError as err:
        assert "source='gsm_symbolic'" in str(err) and "source='local'" in str(err)
    else:  # pragma: no cover - only where the HF cache already holds openai/gsm8k
        assert ds.column_names == COLUMNS


# ------------------------------------------------------------------------------------------- auto
def test_auto_falls_back(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(data_gsm8k, "_should_try_hub", lambda: False)
    with caplog.at_level(logging.WARNING, logger="trl_lab.data.gsm8k"):
        ds = load_gsm8k("auto", "test", limit=5, seed=1)
    assert ds["question"] == load_gsm8k("gsm_symbolic", "test", limit=5, seed=1)["question"]
    assert "gsm_symbolic" in caplog.text

    _write_jsonl(tmp_path / "test.jsonl", [{"question": "q", "answer": "#### 5"}])
    assert load_gsm8k("auto", "test", path=tmp_path)["answer"] == ["5"]

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(data_gsm8k, "_should_try_hub", lambda: True)
    monkeypatch.setattr(datasets, "load_dataset", offline)
    assert load_gsm8k("auto", "test", path=tmp_path)["answer"] == ["5"]


def test_auto_uses_hub_when_it_answers(monkeypatch):
    monkeypatch.setattr(data_gsm8k, "_should_try_hub", lambda: True)
    monkeypatch.setattr(
        datasets, "load_dataset", lambda *a, **k: datasets.Dataset.from_dict({"question": ["q"], "answer": ["#### 9"]})
    )
    assert load_gsm8k("auto", "train")["answer"] == ["9"]


def test_unknown_source():
    with pytest.raises(ValueError, match="unknown GSM8K source"):
        load_gsm8k("kaggle")


def test_solution_rows_keep_the_worked_solution_and_name_bad_rows(tmp_path, shared_gsm8k):
    from trl_lab.data.gsm8k import gsm8k_solution_rows

    rows = gsm8k_solution_rows("local", "test", path=shared_gsm8k, limit=3)
    with (shared_gsm8k / "test.jsonl").open() as f:
        first = json.loads(f.readline())
    assert len(rows) == 3 and rows[0] == {"question": first["question"], "answer": first["answer"]}
    assert "<<" in rows[0]["answer"] and "####" in rows[0]["answer"]  # the worked solution, annotations kept
    bad = tmp_path / "train.jsonl"
    bad.write_text(json.dumps(first) + "\n\n" + json.dumps({"question": "q", "answer": 3}) + "\n")
    with pytest.raises(ValueError, match=r"row 1 \(line 3 of .*train.jsonl\)"):
        gsm8k_solution_rows("local", "train", path=tmp_path)
    with pytest.raises(ValueError, match="worked solutions are needed"):
        gsm8k_solution_rows("gsm_symbolic")


def test_reasoning_gym_source_splits_a_numeric_task_by_question_and_says_when_it_runs_out():
    one_digit = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    train = load_gsm8k("reasoning_gym", "train", limit=60, task="chain_sum", task_config=one_digit)
    test = load_gsm8k("reasoning_gym", "test", limit=20, task="chain_sum", task_config=one_digit)
    _check_rows(train)
    _check_rows(test)
    assert len(set(train["question"])) == 60 and len(set(test["question"])) == 20
    assert not set(train["question"]) & set(test["question"])  # never trained on
    assert all(generated_split_of(q) == "test" for q in test["question"])
    assert all(q.rstrip().endswith("=") for q in train["question"])  # "... 3 + 5 ="
    assert load_gsm8k("reasoning_gym", "train", limit=60, task="chain_sum",
                      task_config=one_digit)["question"] == train["question"]  # deterministic
    with pytest.raises(ValueError, match=r"has only \d+ distinct test questions, fewer than the 5000"):
        load_gsm8k("reasoning_gym", "test", limit=5000, task="chain_sum", task_config=one_digit)
    with pytest.raises(ValueError, match="needs a task"):
        load_gsm8k("reasoning_gym", "train", limit=2)
    with pytest.raises(ValueError, match="unknown reasoning-gym task 'chain_summ'"):
        load_gsm8k("reasoning_gym", "train", limit=2, task="chain_summ")
    with pytest.raises(ValueError, match="only read by source 'reasoning_gym'"):
        load_gsm8k("gsm_symbolic", "train", limit=2, task="chain_sum")
