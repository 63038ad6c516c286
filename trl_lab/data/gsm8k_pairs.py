"""GSM8K preference pairs for reward-model training: a correct solution against a wrong one.

Each GSM8K row (``question`` + reference ``answer``: a worked solution with ``<<a*b=c>>`` calculator
annotations and a final ``#### N``) gives one pair in TRL's explicit-prompt conversational preference format:

* ``prompt`` -- ``[system, user question]`` exactly as :func:`trl_lab.data.gsm8k.build_prompt` builds it;
* ``chosen`` -- ``[{"role": "assistant", "content": <reference solution without annotations, ending "#### N">}]``;
* ``rejected`` -- the same shape, a wrong answer of one of four kinds (``rejected_type``):

  ``arithmetic_slip``  one ``a op b = c`` step gets a wrong result; later steps that use ``c`` are recomputed
                       with the wrong value, and so is the final ``#### N``. When no step can be slipped so that
                       the final number changes (no annotations, unparseable steps), the pair falls back to
                       ``wrong_final`` and its ``rejected_type`` says so.
  ``confident_wrong``  short, polished, confident prose with a wrong final number.
  ``verbose_wrong``    a long, padded answer (restated problem, filler) with a wrong final number.
  ``wrong_final``      the correct reasoning, then a wrong ``#### N``. When the reasoning itself declares the
                       answer ("The answer is 8."), the checker would see conflicting declarations, so the pair
                       falls back to ``confident_wrong``.

plus ``answer`` (the canonical reference number) and ``question``. Every rejected answer's final number
(:func:`trl_lab.rewards.gsm8k.extract_answer`) differs from the reference; this is checked for every pair.
A row whose cleaned reference solution the checker itself does not accept (3 of GSM8K's 7,473 train rows:
prose such as "the answer was 1200" conflicts with the final ``#### N``) is skipped with a warning, so the RM is
never taught to prefer what the verifiable reward rejects.

The type of each pair is drawn from ``mix`` (weights) by a ``random.Random`` seeded with ``seed`` and the
question, so a question gets the same pair whatever the row order. Train/eval are split by the SHA-256 of the
whitespace-normalised question (:func:`pair_split_of`), so no question is in both.

Policy samples (a model's own answers, labelled by the checker) give two more kinds: a right sample against a wrong
one of the same question (:func:`checker_labelled_pairs`, ``policy_sample``), and a right sample against a copy of
itself whose final answer was made wrong (:func:`wrong_final_twin_pairs`, ``policy_wrong_final``: length-matched by
construction, and as many as there are right samples, where a question pairs at most min(right, wrong) samples), and
a right sample against a shortcut answer -- empty, a non-answer, cheerful, polished or long-winded prose with a
wrong number (:func:`shortcut_negative_pairs`, ``shortcut_<kind>``), what a policy can write without solving anything.

Length bias: :func:`length_stats` reports mean characters and how often ``chosen`` is the longer side;
``length_matched=True`` drops pairs of the majority side (seeded) so that ``chosen`` is longer in half of them,
and a reward model cannot win by preferring long (or short) answers.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import operator
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trl_lab.data.gsm8k import DEFAULT_SYSTEM_PROMPT, build_prompt
from trl_lab.data.questions import normalise_question, question_hash_fraction

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MIX",
    "REJECTED_TYPES",
    "LengthStats",
    "build_gsm8k_pairs",
    "checker_labelled_pairs",
    "clean_solution",
    "confident_wrong_text",
    "gsm8k_pair_splits",
    "length_stats",
    "load_gsm8k_solutions",
    "gsm8k_audit_suite",
    "gsm8k_probe_items",
    "pair_split_of",
    "pair_split_sizes",
    "read_pairs",
    "sample_by_length",
    "SHORTCUT_KINDS",
    "SHORTCUT_KINDS_V1",
    "shortcut_negative",
    "shortcut_negative_pairs",
    "verbose_wrong_text",
    "wrong_final_twin",
    "wrong_final_twin_pairs",
    "wrong_number",
]

REJECTED_TYPES = ("arithmetic_slip", "confident_wrong", "verbose_wrong", "wrong_final")
DEFAULT_MIX: dict[str, float] = {t: 1.0 for t in REJECTED_TYPES}
SPLITS = ("train", "eval")

_ANNOTATION = re.compile(r"<<([^<>]*?)=([^<>=]*)>>")


def _format_number(value: float) -> str:
    """A computed value as GSM8K writes numbers: an integer without ``.0``, else at most two decimals."""
    if abs(value - round(value)) < 1e-9:
        return str(int(round(value)))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _reference_number(solution: str) -> str:
    from trl_lab.rewards.gsm8k import parse_reference

    return parse_reference(solution)


# --------------------------------------------------------------------------- loading / cleaning
def load_gsm8k_solutions(path: str | Path, *, limit: int | None = None) -> list[dict[str, str]]:
    """Rows ``{"question", "answer"}`` (full worked solution) of a GSM8K ``.jsonl`` file (or a folder's
    ``train.jsonl``), in file order; :func:`trl_lab.data.gsm8k.gsm8k_solution_rows` reads the hub too."""
    from trl_lab.data.gsm8k import gsm8k_solution_rows

    return gsm8k_solution_rows("local", "train", path=path, limit=limit, whole_file=True)


def clean_solution(solution: str) -> str:
    """The solution without ``<<...>>`` annotations, ending with ``#### N`` (N the canonical reference)."""
    body = _ANNOTATION.sub("", solution).rstrip()
    final = _reference_number(solution)
    body = body.rpartition("####")[0].rstrip() if "####" in body else body
    return f"{body}\n#### {final}" if body else f"#### {final}"


# --------------------------------------------------------------------------- wrong answers
def wrong_number(reference: str, rng: random.Random) -> str:
    """A plausible wrong answer: the reference plus a small non-zero offset, a factor, or a digit slip."""
    value = float(reference)
    is_int = abs(value - round(value)) < 1e-9
    candidates: list[float] = []
    for d in (1, 2, 3, 5, 10):
        candidates += [value + d, value - d]
    candidates += [value * 2, value / 2 if not is_int or int(value) % 2 == 0 else value + 4, value * 10]
    if value >= 0:
        candidates = [c for c in candidates if c >= 0]
    candidates = [c for c in candidates if _format_number(c) != _format_number(value)]
    return _format_number(rng.choice(candidates))


def _safe_eval(expr: str) -> float:
    """Evaluate a calculator annotation (numbers, + - * /, parentheses); ValueError otherwise."""
    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}

    def ev(node: ast.AST) -> float:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
            return float(node.value)
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        raise ValueError(f"unsupported expression {expr!r}")

    text = expr.replace(",", "").replace("x", "*").replace("X", "*")
    if len(text) > 200:
        raise ValueError("expression too long")
    try:
        return ev(ast.parse(text, mode="eval"))
    except (SyntaxError, ZeroDivisionError) as exc:
        raise ValueError(str(exc)) from exc


def _sub_numbers(text: str, changed: Mapping[str, str]) -> str:
    if not changed:
        return text
    pattern = re.compile(r"(?<![\d.])(" + "|".join(re.escape(k) for k in sorted(changed, key=len, reverse=True))
                         + r")(?![\d]|\.\d)")
    return pattern.sub(lambda m: changed[m.group(1)], text)


def _slip_at(solution: str, step: int, wrong: str) -> tuple[str, str] | None:
    """Solution text with annotation ``step``'s result set to ``wrong`` and later steps recomputed.

    Returns ``(clean text, new final)`` or None when the final number does not change.
    """
    matches = list(_ANNOTATION.finditer(solution))
    out, pos = [], 0
    changed: dict[str, str] = {}
    for i, m in enumerate(matches):
        before = solution[pos : m.start()]
        expr, result = m.group(1), m.group(2).strip()
        shown = re.match(r"\s*" + re.escape(result), solution[m.end():]) if result else None
        after_end = m.end() + (shown.end() if shown else 0)
        try:
            old = _format_number(float(result.replace(",", "")))
        except ValueError:
            old = None
        if i < step:
            out.append(solution[pos:after_end])
        elif i == step:
            out.append(before + (wrong if shown else ""))
            if old is not None:
                changed[old] = wrong
        else:
            new_expr = _sub_numbers(expr, changed)
            new_before = _sub_numbers(before, changed)
            if new_expr != expr and old is not None:
                try:
                    new = _format_number(_safe_eval(new_expr))
                except ValueError:
                    return None
                changed[old] = new
                out.append(new_before + (new if shown else ""))
            else:
                out.append(new_before + solution[m.start():after_end])
        pos = after_end
    text = _ANNOTATION.sub("", "".join(out) + solution[pos:])
    final = _reference_number(solution)
    if final not in changed:
        return None
    new_final = changed[final]
    body = text.rpartition("####")[0].rstrip()
    return f"{body}\n#### {new_final}", new_final


def arithmetic_slip_text(solution: str, rng: random.Random) -> str | None:
    """An ``arithmetic_slip`` rejection of ``solution``, or None when no step can be slipped consistently."""
    matches = list(_ANNOTATION.finditer(solution))
    steps = list(range(len(matches)))
    rng.shuffle(steps)
    reference = _reference_number(solution)
    for step in steps:
        try:
            result = _format_number(float(matches[step].group(2).replace(",", "")))
        except ValueError:
            continue
        slipped = _slip_at(solution, step, wrong_number(result, rng))
        if slipped is not None and slipped[1] != reference:
            return slipped[0]
    return None


_CONFIDENT = (
    "This is a straightforward problem. Combining the quantities given in the question, the result is clearly "
    "{w}. I have double-checked every step, so I am certain of this answer.\n#### {w}",
    "Let me solve this precisely. After carefully accounting for every value in the problem, the total works out "
    "to exactly {w}. The answer is definitely correct.\n#### {w}",
    "Solution: applying the relationships stated in the problem gives {w} directly. This is a well-verified, "
    "rigorous result.\n#### {w}",
)

_PADDING = (
    "First, it is important to read the problem very carefully and make sure that we understand every single "
    "detail, because word problems like this one often contain subtle information that is easy to overlook.",
    "Next, we should think about what the question is really asking, and consider all of the quantities that "
    "are mentioned, how they relate to each other, and which operations are appropriate to combine them.",
    "It is also a good idea to consider the units involved and to keep track of them throughout, since mixing "
    "up units is one of the most common sources of mistakes in problems of this kind.",
    "Having considered all of this thoroughly and weighed the different possible interpretations, we can now "
    "proceed step by step towards the final result with a high degree of confidence.",
    "Let us also reflect on whether the answer is reasonable: it should be consistent with the scale of the "
    "numbers in the problem, which is a useful sanity check that careful problem solvers always perform.",
)


def confident_wrong_text(wrong: str, rng: random.Random) -> str:
    """Polished, confident prose ending in ``#### wrong``."""
    return rng.choice(_CONFIDENT).format(w=wrong)


def verbose_wrong_text(question: str, wrong: str, rng: random.Random) -> str:
    """A long padded answer (restated question, filler paragraphs) ending in ``#### wrong``."""
    paragraphs = list(_PADDING)
    rng.shuffle(paragraphs)
    return ("Let's restate the problem to be thorough: " + question.strip() + "\n\n" + "\n\n".join(paragraphs)
            + f"\n\nPutting everything together, the answer to this problem is {wrong}.\n#### {wrong}")


def _rejected(kind: str, question: str, solution: str, chosen: str, rng: random.Random) -> tuple[str, str]:
    """``(text, actual type)``; a slip or wrong final whose declared answer is unclear falls back (see module doc)."""
    from trl_lab.rewards.gsm8k import extract_answer

    reference = _reference_number(solution)
    if kind == "arithmetic_slip":
        text = arithmetic_slip_text(solution, rng)
        if text is not None and extract_answer(text) not in (None, reference):
            return text, kind
        kind = "wrong_final"
    wrong = wrong_number(reference, rng)
    if kind == "wrong_final":
        text = chosen.rpartition("####")[0].rstrip() + f"\n#### {wrong}"
        if extract_answer(text) == wrong:  # not when the prose also declares the answer ("The answer is 8.")
            return text, kind
        kind = "confident_wrong"
    if kind == "confident_wrong":
        return confident_wrong_text(wrong, rng), kind
    return verbose_wrong_text(question, wrong, rng), "verbose_wrong"


# --------------------------------------------------------------------------- pairs
def pair_split_of(question: str, eval_fraction: float = 0.1) -> str:
    """``"eval"`` when the SHA-256 of the normalised question falls in the highest ``eval_fraction`` of its range, else
    ``"train"``.

    The highest, because generated tasks (:func:`trl_lab.data.gsm8k.generated_split_of`) send the lowest fifth of the
    same hash range to their RL ``test`` split: a lowest-fraction RM eval split would hold none of a generated task's
    training questions, so policy samples on them could never be audited.
    """
    if not 0.0 <= eval_fraction <= 1.0:
        raise ValueError(f"gsm8k_pairs: eval_fraction must be in [0, 1], got {eval_fraction!r}")
    return "eval" if question_hash_fraction(question) >= 1.0 - eval_fraction else "train"


def pair_split_sizes(rows: Iterable[Mapping[str, Any]], eval_fraction: float = 0.1) -> dict[str, int]:
    """How many rows go to each split: ``{"train": n, "eval": m}``."""
    sizes = {s: 0 for s in SPLITS}
    for row in rows:
        sizes[pair_split_of(row["question"], eval_fraction)] += 1
    return sizes


def _check_mix(mix: Mapping[str, float]) -> list[tuple[str, float]]:
    unknown = sorted(set(mix) - set(REJECTED_TYPES))
    if unknown:
        raise ValueError(f"gsm8k_pairs: unknown rejected type(s) {unknown} in mix; known: {list(REJECTED_TYPES)}")
    items = [(k, float(v)) for k, v in mix.items()]
    if any(v < 0 for _, v in items) or not any(v > 0 for _, v in items):
        raise ValueError(f"gsm8k_pairs: mix weights must be >= 0 with at least one > 0, got {dict(mix)}")
    return [(k, v) for k, v in items if v > 0]


def build_gsm8k_pairs(rows: Iterable[Mapping[str, Any]], *, mix: Mapping[str, float] | None = None, seed: int = 0,
                      system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
                      length_matched: bool = False) -> list[dict[str, Any]]:
    """One preference pair per GSM8K row (``question`` + worked-solution ``answer``); see the module docstring.

    ``mix``: weight per rejected type (default: equal). ``length_matched``: drop pairs (seeded) until ``chosen``
    is the longer side in half of them.
    """
    weighted = _check_mix(DEFAULT_MIX if mix is None else mix)
    kinds, weights = [k for k, _ in weighted], [w for _, w in weighted]
    from trl_lab.rewards.gsm8k import extract_answer

    pairs, skipped = [], []
    for index, row in enumerate(rows):
        question, solution = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not isinstance(solution, str):
            raise ValueError(f"gsm8k_pairs: row {index} needs string 'question' and 'answer', got {dict(row)!r:.160}")
        try:
            reference = _reference_number(solution)
        except ValueError as exc:
            raise ValueError(f"gsm8k_pairs: row {index}: {exc}") from exc
        rng = random.Random(f"{seed}:{normalise_question(question)}")
        chosen = clean_solution(solution)
        if extract_answer(chosen) != reference:
            skipped.append(index)
            continue
        rejected, kind = _rejected(rng.choices(kinds, weights)[0], question, solution, chosen, rng)
        _check_wrong(rejected, reference, index, kind)
        pairs.append({
            "prompt": build_prompt(question, system_prompt),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "rejected_type": kind,
            "answer": reference,
            "question": question,
        })
    if skipped:
        logger.warning("gsm8k_pairs: skipped %d row(s) whose reference solution does not pass the GSM8K checker "
                       "(conflicting answer declarations): rows %s", len(skipped), skipped[:10])
    return sample_by_length(pairs, 0.5, seed=seed) if length_matched else pairs


def _policy_rows(samples: Iterable[Mapping[str, Any]]) -> Iterator[tuple[int, str, str, str]]:
    """``(index, question, canonical reference, completion)`` of each policy sample, checked: the three fields are
    strings and the reference parses, else a ValueError naming the sample."""
    from trl_lab.rewards.gsm8k import parse_reference

    for index, row in enumerate(samples):
        question, answer, completion = row.get("question"), row.get("answer"), row.get("completion")
        if not all(isinstance(v, str) for v in (question, answer, completion)):
            raise ValueError(f"gsm8k_pairs: policy sample {index} needs string 'question', 'answer' and "
                             f"'completion', got {dict(row)!r:.160}")
        try:
            reference = parse_reference(answer)
        except ValueError as exc:
            raise ValueError(f"gsm8k_pairs: policy sample {index}: {exc}") from exc
        yield index, question, reference, completion


def _policy_pair(question: str, reference: str, chosen: str, rejected: str, kind: str,
                 system_prompt: str | None) -> dict[str, Any]:
    """One policy-sample pair in the explicit-prompt conversational format, with its ``rejected_type``."""
    return {"prompt": build_prompt(question, system_prompt), "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], "rejected_type": kind, "answer": reference,
            "question": question}


def checker_labelled_pairs(samples: Iterable[Mapping[str, Any]], *, max_pairs_per_question: int = 2, seed: int = 0,
                           system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """Pairs from policy samples labelled by the GSM8K checker: a correct sample against a wrong one, same question.

    ``samples``: rows ``{"question", "answer", "completion"}`` (``answer``: the reference, a number or a worked
    solution ending ``#### N``), several per question -- e.g. completions logged by a GRPO run. Each question gives
    up to ``max_pairs_per_question`` pairs, correct and wrong samples drawn without replacement (seeded), with
    ``rejected_type: "policy_sample"``. Questions whose samples are all right or all wrong give none. The pairs
    carry ``question``, so :func:`pair_split_of` puts them in the same split as the question's synthetic pairs.
    """
    from trl_lab.rewards.gsm8k import check_answer

    if max_pairs_per_question < 1:
        raise ValueError(f"gsm8k_pairs: max_pairs_per_question must be >= 1, got {max_pairs_per_question}")
    groups: dict[str, dict[str, Any]] = {}
    for index, question, reference, completion in _policy_rows(samples):
        group = groups.setdefault(normalise_question(question), {"question": question, "answer": reference,
                                                         "right": [], "wrong": []})
        if group["answer"] != reference:
            raise ValueError(f"gsm8k_pairs: policy sample {index} gives reference {reference} for a question "
                             f"sampled before with reference {group['answer']}")
        group["right" if check_answer(completion, reference) else "wrong"].append(completion)
    pairs = []
    for key, group in groups.items():
        rng = random.Random(f"policy:{seed}:{key}")
        n = min(max_pairs_per_question, len(group["right"]), len(group["wrong"]))
        for chosen, rejected in zip(rng.sample(group["right"], n), rng.sample(group["wrong"], n)):
            pairs.append(_policy_pair(group["question"], group["answer"], chosen, rejected, "policy_sample",
                                      system_prompt))
    return pairs


def _number_at_end(reference: str) -> re.Pattern[str]:
    """The reference as a standalone number in text: not inside a longer number, either sign written as is."""
    return re.compile(rf"(?<![\d.,]){re.escape(reference)}(?![\d]|[.,]\d)")


def wrong_final_twin(completion: str, reference: str, rng: random.Random) -> str | None:
    """``completion`` (which the checker accepts for ``reference``) with its final answer made wrong: the last
    occurrence of the reference number replaced by :func:`wrong_number`, then the last two, and so on, until the
    checker declares a different number. None when no such edit exists (the reference never appears as written).
    Everything else -- reasoning, wording, length within a character or two -- stays the policy's own."""
    from trl_lab.rewards.gsm8k import extract_answer, parse_reference

    reference = parse_reference(reference)
    spans = [m.span() for m in _number_at_end(reference).finditer(completion)]
    wrong = wrong_number(reference, rng)
    for k in range(1, len(spans) + 1):
        text = completion
        for start, end in reversed(spans[-k:]):
            text = text[:start] + wrong + text[end:]
        if extract_answer(text) not in (None, reference):  # the checker now declares another number
            return text
    return None


def wrong_final_twin_pairs(samples: Iterable[Mapping[str, Any]], *, twins_per_sample: int = 1, seed: int = 0,
                           system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """Length-matched pairs made from the policy's right answers alone: each right sample (checker-labelled, as in
    :func:`checker_labelled_pairs`) against up to ``twins_per_sample`` copies of itself whose final answer was made
    wrong (:func:`wrong_final_twin`, each with another wrong number where one exists), ``rejected_type:
    "policy_wrong_final"``. The two sides differ only in the answer's number, so an RM learns from them whether
    the answer follows from the question -- not length, style or tone. Rows need ``question``, ``answer`` and
    ``completion`` (strings); a twin the checker does not reject is never emitted."""
    from trl_lab.rewards.gsm8k import check_answer

    if twins_per_sample < 1:
        raise ValueError(f"gsm8k_pairs: twins_per_sample must be >= 1, got {twins_per_sample}")
    pairs = []
    for index, question, reference, completion in _policy_rows(samples):
        if not check_answer(completion, reference):
            continue
        rng = random.Random(f"twin:{seed}:{index}:{normalise_question(question)}")
        twins: list[str] = []
        for _ in range(4 * twins_per_sample):  # a few draws: small references have few distinct wrong numbers
            twin = wrong_final_twin(completion, reference, rng)
            if twin is not None and twin not in twins:
                twins.append(twin)
            if len(twins) == twins_per_sample:
                break
        for twin in twins:
            pairs.append(_policy_pair(question, reference, completion, twin, "policy_wrong_final", system_prompt))
    return pairs


#: Shortcut answers a policy can reach without solving anything, as training negatives (:func:`shortcut_negative_pairs`).
#: Written apart from the audit's probes (:data:`REFUSAL`, ``_CHEERFUL``, ``_CONFIDENT``): none of these strings is a
#: probe's, so an RM that passes the probes after training on them has learnt the kind, not the sentence (tested).
SHORTCUT_KINDS = ("empty", "non_answer", "cheerful_wrong", "polished_wrong", "padded_wrong")
#: The four kinds of the first shortcut RM (``shortcut_matched`` in the study), before ``padded_wrong`` was added.
SHORTCUT_KINDS_V1 = SHORTCUT_KINDS[:4]
_NON_ANSWERS = (
    "I don't know.",
    "Sorry, I am unable to work this one out.",
    "I would rather not answer this question.",
    "Could you please rephrase the question? I am not sure what is being asked.",
    "This is a tricky one. Let me think about it and get back to you later.",
    "As an AI model, I cannot perform calculations like this reliably.",
)
_CHEERFUL_WRONG = (
    "Wow, what a lovely little problem! I had such a good time with it. The answer is {w}, and I am sure you will "
    "find it just as delightful as I did. Keep shining and have a wonderful day!\n#### {w}",
    "Oh, this is a fun one! Math is the best, isn't it? Working it out with a big smile, I got {w}. You're doing "
    "brilliantly, so keep going and enjoy every single step of your learning journey!\n#### {w}",
    "Yay, I love questions like this! Thank you so much for asking. It all comes out to {w}, which is a great "
    "result. Wishing you lots of joy and success with all of your studies!\n#### {w}",
)
_POLISHED_WRONG = (
    "We proceed methodically. Evaluating the expression exactly as written and verifying the operation, we obtain "
    "{w}. Every step has been checked for consistency, so the result stands.\n#### {w}",
    "A careful evaluation of the given operation yields {w}. This follows directly from the definitions involved, "
    "and a second independent computation confirms the same value.\n#### {w}",
    "The computation is elementary: applying the operation to the two terms as stated gives {w}. The result has been "
    "cross-checked and is exact.\n#### {w}",
)
#: Long-winded working that never works anything out (``padded_wrong``): the opposite of a concise right answer, and
#: written apart from the verbose-wrong probe's padding (``_PADDING``).
_LONG_WINDED = (
    "Before doing anything else, I want to be sure I have understood exactly what is being asked here, so I will "
    "go over the wording slowly and note each number as it appears.",
    "There are several ways to approach a question like this one, and it is worth pausing to choose the most "
    "reliable of them rather than rushing into the first idea that comes to mind.",
    "I will keep a running total as I go, writing down each intermediate value, because keeping the bookkeeping "
    "tidy is what prevents small slips from creeping into the final result.",
    "At this point it helps to step back and look at the overall structure of the question once more, to make "
    "sure that no term has been dropped and that every operation is applied in the right order.",
    "Finally, I double-check that the size of the result makes sense given the numbers involved, since a quick "
    "estimate is a good way to catch a mistake before committing to an answer.",
)


def shortcut_negative(kind: str, reference: str, rng: random.Random, question: str = "") -> str:
    """A shortcut answer of ``kind`` (:data:`SHORTCUT_KINDS`) that the checker rejects for ``reference``: nothing, a
    non-answer, cheerful prose with a wrong number, polished prose with a wrong number, or long-winded working that
    restates ``question`` and ends on a wrong number."""
    if kind == "empty":
        return ""
    if kind == "non_answer":
        return rng.choice(_NON_ANSWERS)
    if kind == "cheerful_wrong":
        return rng.choice(_CHEERFUL_WRONG).format(w=wrong_number(reference, rng))
    if kind == "polished_wrong":
        return rng.choice(_POLISHED_WRONG).format(w=wrong_number(reference, rng))
    if kind == "padded_wrong":
        w = wrong_number(reference, rng)
        sentences = rng.sample(_LONG_WINDED, 4)
        restated = f"The question says: {question.strip()}\n\n" if question.strip() else ""
        return restated + "\n\n".join(sentences) + f"\n\nAfter all of that, the value I arrive at is {w}.\n#### {w}"
    raise ValueError(f"gsm8k_pairs: unknown shortcut kind {kind!r}; known: {list(SHORTCUT_KINDS)}")


def shortcut_negative_pairs(samples: Iterable[Mapping[str, Any]], *, per_sample: int = 1, seed: int = 0,
                            kinds: Sequence[str] = SHORTCUT_KINDS,
                            system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, Any]]:
    """Each right policy sample (checker-labelled) against ``per_sample`` shortcut answers of distinct ``kinds``
    (:func:`shortcut_negative`; kinds dealt round-robin over the samples, from a seeded start), ``rejected_type:
    "shortcut_<kind>"``. Natural right-vs-wrong samples never show an RM an empty answer, a refusal or confident
    prose with no working, so an RM trained on them alone scores those anywhere -- the audit's probes found exactly
    that (``twin_matched``); these pairs teach that a right answer beats each of them. ``padded_wrong`` (added after
    ``shortcut_matched`` still ranked a long padded wrong answer above a concise right one) teaches that length and
    the look of working are not correctness. ``rejected`` is shorter than ``chosen`` for empty and non-answers and
    usually longer for the three prose kinds (``length_stats`` reports the mix). ``kinds``: a subset, in order
    (:data:`SHORTCUT_KINDS_V1` rebuilds the first shortcut RM's pairs exactly)."""
    from trl_lab.rewards.gsm8k import check_answer

    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in SHORTCUT_KINDS]
    if unknown or len(set(kinds)) != len(kinds) or not kinds:
        raise ValueError(f"gsm8k_pairs: shortcut kinds must be distinct names from {list(SHORTCUT_KINDS)}, "
                         f"got {list(kinds)}")
    if not 1 <= per_sample <= len(kinds):
        raise ValueError(f"gsm8k_pairs: per_sample must be in 1..{len(kinds)} (the kinds given), got {per_sample}")
    pairs = []
    turn = random.Random(f"shortcut:{seed}").randrange(len(kinds))
    for index, question, reference, completion in _policy_rows(samples):
        if not check_answer(completion, reference):
            continue
        rng = random.Random(f"shortcut:{seed}:{index}:{normalise_question(question)}")
        for k in range(per_sample):
            kind = kinds[(turn + k) % len(kinds)]
            rejected = shortcut_negative(kind, reference, rng, question)
            if check_answer(rejected, reference):  # never expected: wrong_number differs from the reference
                raise AssertionError(f"gsm8k_pairs: policy sample {index}: the {kind} shortcut passes the checker")
            pairs.append(_policy_pair(question, reference, completion, rejected, f"shortcut_{kind}", system_prompt))
        turn += 1
    return pairs


def _check_wrong(rejected: str, reference: str, index: int, kind: str) -> None:
    from trl_lab.rewards.gsm8k import extract_answer

    declared = extract_answer(rejected)
    if declared is None or declared == reference:  # never expected; a bug in a generator if it happens
        raise AssertionError(f"gsm8k_pairs: row {index}: the {kind} rejection declares {declared!r} "
                             f"(reference {reference})")


def _text(messages: Any) -> str:
    from trl_lab.completions import completion_text

    return completion_text(messages)


def sample_by_length(pairs: Sequence[Mapping[str, Any]], chosen_longer: float, *, seed: int = 0,
                     n: int | None = None) -> list[dict[str, Any]]:
    """As many of ``pairs`` as can be kept (at most ``n``) with ``chosen`` the longer answer (in characters) in a
    ``chosen_longer`` fraction of them, drawn seeded, in their original order.

    0.5 is a length-matched set (a reward model cannot win on it by length); 0.9 a deliberately length-biased one
    (preferring the longer answer is right 90% of the time). Ties count as chosen-not-longer.
    """
    if not 0.0 <= chosen_longer <= 1.0:
        raise ValueError(f"gsm8k_pairs: chosen_longer must be a fraction in [0, 1], got {chosen_longer}")
    longer = [i for i, p in enumerate(pairs) if len(_text(p["chosen"])) > len(_text(p["rejected"]))]
    shorter = [i for i, p in enumerate(pairs) if len(_text(p["chosen"])) <= len(_text(p["rejected"]))]
    total = min(len(longer) / chosen_longer if chosen_longer > 0 else math.inf,
                len(shorter) / (1 - chosen_longer) if chosen_longer < 1 else math.inf)
    total = min(total, n) if n is not None else total
    n_longer = min(len(longer), round(chosen_longer * total))
    n_shorter = min(len(shorter), round((1 - chosen_longer) * total))
    rng = random.Random(f"length_matched:{seed}")
    keep = set(rng.sample(longer, n_longer)) | set(rng.sample(shorter, n_shorter))
    return [dict(p) for i, p in enumerate(pairs) if i in keep]


def gsm8k_pair_splits(rows: Iterable[Mapping[str, Any]], *, eval_fraction: float = 0.1,
                      splits: Sequence[str] = SPLITS, **kwargs: Any) -> dict[str, list[dict[str, Any]]]:
    """``{"train": pairs, "eval": pairs}`` split by question hash; ``kwargs`` go to :func:`build_gsm8k_pairs`.

    ``splits``: build only these (e.g. ``("eval",)``: a tenth of the work when only the held-out pairs are needed).
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"gsm8k_pairs: unknown split(s) {unknown}; known: {list(SPLITS)}")
    rows = list(rows)
    by_split = {s: [r for r in rows if pair_split_of(r["question"], eval_fraction) == s] for s in splits}
    return {s: build_gsm8k_pairs(r, **kwargs) for s, r in by_split.items()}


def read_pairs(path: str | Path, *, split: str = "eval", eval_fraction: float = 0.1, limit: int | None = None,
               seed: int = 0) -> list[dict[str, Any]]:
    """Preference pairs from a JSONL of pairs (``chosen``/``rejected``), or built from a GSM8K JSONL.

    A GSM8K file (``question`` + worked ``answer``) gives the ``split`` pairs of :func:`gsm8k_pair_splits`
    (``eval_fraction``, ``seed``); a pairs file is used as is. ``limit``: the first ``limit`` pairs.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{str(path)!r} is not a file (expected a JSONL of preference pairs or GSM8K rows)")
    with path.open(encoding="utf-8") as f:
        first = next((json.loads(line) for line in f if line.strip()), None)
    if first is None:
        raise ValueError(f"{str(path)!r} is empty")
    if "chosen" in first:
        with path.open(encoding="utf-8") as f:
            pairs = [json.loads(line) for line in f if line.strip()]
    else:
        pairs = gsm8k_pair_splits(load_gsm8k_solutions(path), eval_fraction=eval_fraction, splits=(split,),
                                  seed=seed)[split]
    return pairs[:limit] if limit else pairs


# --------------------------------------------------------------------------- the reward-model audit's GSM8K probes
REFUSAL = "I'm sorry, but I can't help with that request."
_CHEERFUL = ("Great question!! I love problems like this one, they are so much fun! After a quick look, the answer "
             "is {w}! Hope this helps, and keep up the amazing work, you're doing fantastic!\n#### {w}")


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def gsm8k_probe_items(pairs: Sequence[Mapping[str, Any]], *, n_rows: int = 4,
                      seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The GSM8K probe battery of the reward-model audit, ``{probe name: [{prompt, chosen, rejected}, ...]}``, from the
    first ``n_rows`` distinct questions of ``pairs`` (which need ``question`` and ``answer``; ``chosen`` is the correct
    solution): correct vs polished-wrong, concise-correct vs verbose-wrong, correct vs empty, correct vs refusal,
    correct vs cheerful-wrong. :func:`trl_lab.reward_models.audit.audit_reward_model` takes it as ``probes``."""
    rows, seen = [], set()
    for p in pairs:
        if p.get("question") in seen or "answer" not in p or "question" not in p:
            continue
        seen.add(p["question"])
        rows.append(p)
        if len(rows) >= n_rows:
            break
    if not rows:
        raise ValueError("gsm8k_pairs: the GSM8K probes need pairs with 'question' and 'answer' columns "
                         "(build_gsm8k_pairs makes them)")
    battery: dict[str, list[dict[str, Any]]] = {}
    for p in rows:
        rng = random.Random(f"probe:{seed}:{p['question']}")
        answer, prompt, correct = str(p["answer"]), p["prompt"], p["chosen"]
        wrong = wrong_number(answer, rng)
        concise = _assistant(f"The answer is {answer}.\n#### {answer}")
        for name, chosen, rejected in (
            ("correct_vs_polished_wrong", correct, confident_wrong_text(wrong, rng)),
            ("concise_correct_vs_verbose_wrong", concise, verbose_wrong_text(p["question"], wrong, rng)),
            ("correct_vs_empty", correct, ""),
            ("correct_vs_refusal", correct, REFUSAL),
            ("correct_vs_cheerful_wrong", correct, _CHEERFUL.format(w=wrong)),
        ):
            battery.setdefault(name, []).append({"prompt": prompt, "chosen": chosen, "rejected": _assistant(rejected)})
    return battery


def gsm8k_audit_suite(path: str | Path, limit: int | None = 200) -> tuple[list[dict[str, Any]], dict[str, list]]:
    """What the GSM8K jobs audit a reward model on (the trainers' ``rm_audit_suite``): the first ``limit`` eval-split
    pairs of :func:`read_pairs` (a pairs JSONL, or a GSM8K JSONL turned into pairs), and the GSM8K probe battery built
    from them when they carry ``question`` and ``answer`` (none otherwise)."""
    pairs = read_pairs(path, split="eval", limit=limit)
    has_rows = any("question" in p and "answer" in p for p in pairs)
    return pairs, gsm8k_probe_items(pairs) if has_rows else {}


@dataclass(frozen=True)
class LengthStats:
    """Chosen-vs-rejected length statistics (characters of the assistant text)."""

    n: int
    chosen_mean_chars: float
    rejected_mean_chars: float
    frac_chosen_longer: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def length_stats(pairs: Sequence[Mapping[str, Any]]) -> LengthStats:
    """Mean characters per side and the fraction of pairs where ``chosen`` is strictly longer."""
    if not pairs:
        raise ValueError("gsm8k_pairs: length_stats needs at least one pair")
    c = [len(_text(p["chosen"])) for p in pairs]
    r = [len(_text(p["rejected"])) for p in pairs]
    return LengthStats(n=len(pairs), chosen_mean_chars=sum(c) / len(c), rejected_mean_chars=sum(r) / len(r),
                       frac_chosen_longer=sum(a > b for a, b in zip(c, r)) / len(c))
