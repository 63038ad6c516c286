"""trl_lab.data.gsm8k_pairs: GSM8K preference pairs with typed wrong answers, split by question hash."""

from __future__ import annotations

import random
from collections import Counter
import pytest

from trl_lab.completions import completion_text
from trl_lab.data.gsm8k_pairs import (
    REJECTED_TYPES,
    SHORTCUT_KINDS,
    arithmetic_slip_text,
    build_gsm8k_pairs,
    clean_solution,
    gsm8k_pair_splits,
    gsm8k_probe_items,
    length_stats,
    load_gsm8k_solutions,
    pair_split_sizes,
    sample_by_length,
    shortcut_negative,
    shortcut_negative_pairs,
    wrong_final_twin,
    wrong_final_twin_pairs,
)
from trl_lab.rewards.gsm8k import check_answer, extract_answer

NATALIA = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in "
                       "May. How many clips did Natalia sell altogether in April and May?",
           "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                     "altogether in April and May.\n#### 72"}


@pytest.fixture(scope="module")
def rows(shared_gsm8k):
    """The first 2000 rows of GSM8K's train split (skipped when ../shared/data/gsm8k is absent)."""
    return load_gsm8k_solutions(shared_gsm8k / "train.jsonl", limit=2000)


def test_clean_solution_drops_annotations_and_ends_with_the_answer():
    assert clean_solution(NATALIA["answer"]) == ("Natalia sold 48/2 = 24 clips in May.\n"
                                                 "Natalia sold 48+24 = 72 clips altogether in April and May.\n#### 72")


def test_arithmetic_slip_propagates_to_later_steps_and_the_final_number():
    for seed in range(20):
        text = arithmetic_slip_text(NATALIA["answer"], random.Random(seed))
        lines = text.splitlines()
        may = int(lines[0].split("= ")[1].split()[0])
        total = int(lines[1].split("= ")[1].split()[0])
        if may != 24:  # first step slipped: the second step uses the wrong value and is recomputed
            assert f"48+{may} = {48 + may}" in lines[1]
            assert total == 48 + may
        else:  # the last step slipped
            assert total != 72
        assert lines[-1] == f"#### {total}" and extract_answer(text) != "72"


def test_pairs_have_the_trl_shape_and_every_rejected_answer_is_wrong(rows):
    pairs = build_gsm8k_pairs(rows, seed=0)
    # two rows of the first 2000 ("he correctly answered 5 * 5 - 1 = 24 ... #### 66") declare conflicting answers
    assert len(pairs) == len(rows) - 2
    by_question = {r["question"]: r for r in rows}
    counts = Counter(p["rejected_type"] for p in pairs)
    assert set(counts) == set(REJECTED_TYPES) and min(counts.values()) > 0.15 * len(pairs)
    for p in pairs:
        row = by_question[p["question"]]
        assert p["prompt"][-1] == {"role": "user", "content": row["question"]}
        assert [m["role"] for m in p["chosen"]] == ["assistant"] == [m["role"] for m in p["rejected"]]
        chosen, rejected = completion_text(p["chosen"]), completion_text(p["rejected"])
        assert "<<" not in chosen and chosen.endswith(f"#### {p['answer']}")
        assert check_answer(chosen, row["answer"])
        assert extract_answer(rejected) is not None and extract_answer(rejected) != p["answer"]
    slips = [p for p in pairs if p["rejected_type"] == "arithmetic_slip"]
    # a slip keeps the reasoning's shape: same number of lines as the correct solution
    assert all(len(completion_text(p["rejected"]).splitlines()) == len(completion_text(p["chosen"]).splitlines())
               for p in slips)


def test_mix_and_seed(rows):
    a = build_gsm8k_pairs(rows[:300], seed=1)
    assert a == build_gsm8k_pairs(rows[:300], seed=1)
    assert a != build_gsm8k_pairs(rows[:300], seed=2)
    # the pair of a question does not depend on row order
    assert build_gsm8k_pairs(rows[:300][::-1], seed=1) == a[::-1]
    only = build_gsm8k_pairs(rows[:100], mix={"verbose_wrong": 1.0})
    assert {p["rejected_type"] for p in only} == {"verbose_wrong"}
    with pytest.raises(ValueError, match="unknown rejected type"):
        build_gsm8k_pairs(rows[:3], mix={"sarcastic": 1.0})


def test_splits_share_no_question(rows):
    splits = gsm8k_pair_splits(rows, eval_fraction=0.2, seed=0)
    train_q = {p["question"] for p in splits["train"]}
    eval_q = {p["question"] for p in splits["eval"]}
    assert not train_q & eval_q
    sizes = pair_split_sizes(rows, eval_fraction=0.2)
    assert sizes == {"train": 1611, "eval": 389} and sum(sizes.values()) == len(rows)
    # two train rows are skipped (their references declare conflicting answers)
    assert (len(splits["train"]), len(splits["eval"])) == (1609, 389)


def test_length_stats_and_length_matching(rows):
    pairs = build_gsm8k_pairs(rows, seed=0)
    stats = length_stats(pairs)
    assert stats.n == len(pairs)
    assert stats.chosen_mean_chars == pytest.approx(sum(len(completion_text(p["chosen"])) for p in pairs) / len(pairs))
    assert stats.rejected_mean_chars > stats.chosen_mean_chars  # verbose_wrong pads the rejected side
    assert stats.frac_chosen_longer < 0.4
    matched = build_gsm8k_pairs(rows, seed=0, length_matched=True)
    m = length_stats(matched)
    assert m.frac_chosen_longer == 0.5 and m.n == 2 * round(stats.frac_chosen_longer * stats.n)
    assert all(p in pairs for p in matched[:50])
    hand = [{"chosen": "aaaa", "rejected": "b"}, {"chosen": "a", "rejected": "bbb"}, {"chosen": "a", "rejected": "b"}]
    assert length_stats(hand).to_dict() == {"n": 3, "chosen_mean_chars": 2.0, "rejected_mean_chars": 5 / 3,
                                            "frac_chosen_longer": 1 / 3}


def test_checker_labelled_policy_samples_pair_right_against_wrong_per_question():
    from trl_lab.data.gsm8k_pairs import checker_labelled_pairs

    q1, q2, q3 = "How many apples? Tom has 3 and buys 4.", "What is 10 / 4?", "All wrong here?"
    samples = [
        {"question": q1, "answer": "3 + 4 = <<3+4=7>>7\n#### 7", "completion": "3 + 4 = 7\n#### 7"},
        {"question": q1, "answer": "7", "completion": "He has 8.\n#### 8"},
        {"question": q1, "answer": "7", "completion": "7 or 8"},  # a hedge: the checker says wrong
        {"question": q1, "answer": "7", "completion": "The answer is 7."},
        {"question": q2, "answer": "2.5", "completion": "#### 2.50"},
        {"question": q2, "answer": "2.5", "completion": "#### 2"},
        {"question": q3, "answer": "1", "completion": "#### 2"},
    ]
    pairs = checker_labelled_pairs(samples, max_pairs_per_question=5, seed=0)
    by_q = {}
    for p in pairs:
        by_q.setdefault(p["question"], []).append((p["chosen"][0]["content"], p["rejected"][0]["content"]))
    assert set(by_q) == {q1, q2}  # q3 has no correct sample
    assert len(by_q[q1]) == 2 and {c for c, _ in by_q[q1]} == {"3 + 4 = 7\n#### 7", "The answer is 7."}
    assert {r for _, r in by_q[q1]} <= {"He has 8.\n#### 8", "7 or 8"}
    assert by_q[q2] == [("#### 2.50", "#### 2")]
    assert all(p["rejected_type"] == "policy_sample" and p["prompt"][-1]["content"] == p["question"] for p in pairs)
    assert checker_labelled_pairs(samples, max_pairs_per_question=5, seed=0) == pairs
    assert len(checker_labelled_pairs(samples, max_pairs_per_question=1)) == 2
    with pytest.raises(ValueError, match="policy sample 1 needs string"):
        checker_labelled_pairs([samples[0], {"question": q1, "answer": "7"}])
    with pytest.raises(ValueError, match="policy sample 1 gives reference 9"):
        checker_labelled_pairs([samples[0], {**samples[1], "answer": "9"}])


def _pair(chosen: str, rejected: str, i: int) -> dict:
    return {"chosen": [{"role": "assistant", "content": chosen}], "rejected": [{"role": "assistant", "content": rejected}],
            "i": i}


def test_sample_by_length_keeps_the_asked_share_of_chosen_longer_pairs():
    pairs = [_pair("a long right answer", "short", i) for i in range(10)]
    pairs += [_pair("short", "a long wrong answer", i) for i in range(10, 20)]
    pairs += [_pair("tie", "tie", 20)]  # a tie counts as chosen-not-longer

    def longer(kept):
        return sum(len(completion_text(p["chosen"])) > len(completion_text(p["rejected"])) for p in kept)

    biased = sample_by_length(pairs, 0.9, seed=1)
    # all 10 chosen-longer pairs, and as many others as keep them at 90%: 10 / 0.9 = 11.1 -> 11 pairs
    assert (len(biased), longer(biased)) == (11, 10)
    assert [p["i"] for p in biased] == sorted(p["i"] for p in biased)  # original order
    matched = sample_by_length(pairs, 0.5, seed=1)
    assert (len(matched), longer(matched)) == (20, 10)
    assert (len(sample_by_length(pairs, 0.5, seed=1, n=6)), longer(sample_by_length(pairs, 0.5, seed=1, n=6))) == (6, 3)
    assert longer(sample_by_length(pairs, 1.0, seed=1)) == 10 == len(sample_by_length(pairs, 1.0, seed=1))
    assert sample_by_length(pairs, 0.9, seed=1) == biased and sample_by_length(pairs, 0.9, seed=2) != biased
    with pytest.raises(ValueError, match=r"chosen_longer must be a fraction in \[0, 1\], got 1.5"):
        sample_by_length(pairs, 1.5)


def test_wrong_final_twin_changes_only_the_declared_answer():
    rng = random.Random(0)
    text = "To calculate 4 - 2, we subtract 2 from 4, which is 4 - 2 = 2.\n\nThe answer is 2."
    twin = wrong_final_twin(text, "2", rng)
    assert twin is not None and twin.startswith("To calculate 4 - 2, we subtract 2 from 4, which is 4 - 2 = 2.")
    assert extract_answer(twin) not in (None, "2") and not check_answer(twin, "2")
    # a negative reference, declared without "answer": the last number is the answer, and only it changes
    twin = wrong_final_twin("6 - 8 = -2", "-2", random.Random(1))
    assert twin.startswith("6 - 8 = ") and twin != "6 - 8 = -2" and not check_answer(twin, "-2")
    assert wrong_final_twin("6 - 8 = -12", "-2", rng) is None  # -2 only inside another number: no twin
    assert wrong_final_twin("The answer is 20.", "2", rng) is None


def test_wrong_final_twin_pairs_are_length_matched_and_always_wrong():
    from tests.helpers import task_samples

    samples = task_samples(30)
    pairs = wrong_final_twin_pairs(samples, twins_per_sample=2, seed=3)
    right = [s for s in samples if check_answer(s["completion"], s["answer"])]
    assert len(right) == 60 and 100 <= len(pairs) <= 120  # up to 2 distinct twins per right sample
    assert {p["rejected_type"] for p in pairs} == {"policy_wrong_final"}
    for p in pairs:
        chosen, rejected = completion_text(p["chosen"]), completion_text(p["rejected"])
        assert check_answer(chosen, p["answer"]) and not check_answer(rejected, p["answer"])
        assert abs(len(chosen) - len(rejected)) <= 2
    assert wrong_final_twin_pairs(samples, twins_per_sample=2, seed=3) == pairs  # seeded
    with pytest.raises(ValueError, match="twins_per_sample must be >= 1"):
        wrong_final_twin_pairs(samples, twins_per_sample=0)


def test_shortcut_negative_pairs_cover_each_kind_and_are_always_wrong():
    from tests.helpers import task_samples

    samples = task_samples(30)
    right = [s for s in samples if check_answer(s["completion"], s["answer"])]
    pairs = shortcut_negative_pairs(samples, per_sample=2, seed=3)
    assert len(pairs) == 2 * len(right) == 120
    kinds = Counter(p["rejected_type"] for p in pairs)
    assert set(kinds) == {f"shortcut_{k}" for k in SHORTCUT_KINDS} and max(kinds.values()) - min(kinds.values()) <= 1
    for p in pairs:
        chosen, rejected = completion_text(p["chosen"]), completion_text(p["rejected"])
        assert check_answer(chosen, p["answer"]) and not check_answer(rejected, p["answer"])
    by_right = Counter(completion_text(p["chosen"]) + p["question"] for p in pairs)
    assert set(by_right.values()) == {2}  # two kinds for each right sample...
    firsts = [p["rejected_type"] for p in pairs[::2]]
    assert all(a != b for a, b in zip(firsts, [p["rejected_type"] for p in pairs[1::2]]))  # ...and distinct ones
    assert shortcut_negative_pairs(samples, per_sample=2, seed=3) == pairs  # seeded
    with pytest.raises(ValueError, match="per_sample must be in 1..5"):
        shortcut_negative_pairs(samples, per_sample=6)
    with pytest.raises(ValueError, match="per_sample must be in 1..2 "):
        shortcut_negative_pairs(samples, per_sample=3, kinds=("empty", "non_answer"))
    with pytest.raises(ValueError, match="distinct names from .* got \\['empty', 'rude'\\]"):
        shortcut_negative_pairs(samples, kinds=("empty", "rude"))
    with pytest.raises(ValueError, match="unknown shortcut kind 'rude'"):
        shortcut_negative("rude", "3", random.Random(0))


def test_shortcut_negatives_are_not_the_audit_probes_strings():
    """The RM audit probes empty / refusal / cheerful-wrong / polished-wrong answers: training on its own sentences
    would make passing the probes memorisation. Only the empty answer (there is one) is shared."""
    rows = [{"question": f"Calculate {a} + {b}.", "answer": str(a + b), "prompt": [], "chosen": []}
            for a in range(5) for b in range(4)]
    probe_texts = {it["rejected"][0]["content"] for items in gsm8k_probe_items(rows, n_rows=20).values()
                   for it in items}
    rng = random.Random(0)
    ours = {shortcut_negative(kind, str(r["answer"]), rng, r["question"]) for r in rows for kind in SHORTCUT_KINDS
            for _ in range(5)}
    assert ours & probe_texts == {""}
    assert len(ours) > 40  # varied wording, not one sentence per kind
    # nor any sentence of the probes' padding inside the padded shortcut (a paragraph shared would be memorisable)
    probe_paragraphs = {par for t in probe_texts for par in t.split("\n\n") if len(par) > 40}
    padded = [t for t in ours if "#### " in t and len(t) > 600]
    assert padded and not any(par in t for t in padded for par in probe_paragraphs)


def test_padded_shortcut_is_long_wrong_and_restates_the_question():
    """``padded_wrong`` is the concise-vs-verbose probe's kind of answer: long, restating the question, the look of
    working, a wrong final number; a subset of kinds deals only those (the committed RMs' rebuild: test_study)."""
    rng = random.Random(1)
    text = shortcut_negative("padded_wrong", "17", rng, "What is 9 + 8?")
    assert text.startswith("The question says: What is 9 + 8?") and len(text) > 600
    assert not check_answer(text, "17") and text.rstrip().rpartition("#### ")[2] != "17"
    assert shortcut_negative("padded_wrong", "17", random.Random(1), "What is 9 + 8?") == text  # seeded
    from tests.helpers import task_samples

    samples = task_samples(30)
    v1 = shortcut_negative_pairs(samples, per_sample=2, seed=3, kinds=SHORTCUT_KINDS[:4])
    assert {p["rejected_type"] for p in v1} == {f"shortcut_{k}" for k in SHORTCUT_KINDS[:4]}
