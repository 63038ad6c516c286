"""GSM8K (and GSM8K-style) prompt datasets for GRPO.

Every source returns a :class:`datasets.Dataset` with the same three columns:

* ``prompt`` -- a conversation, ``[{"role": "system", "content": system_prompt},
  {"role": "user", "content": question}]`` (no system message when ``system_prompt`` is ``None``
  or ``""``). TRL applies the model's chat template to it.
* ``answer`` -- the reference answer as a canonical number string (``"18"``, ``"-3"``, ``"2.5"``),
  produced by :func:`trl_lab.rewards.gsm8k.parse_reference`. TRL passes it to reward functions as
  the ``answer`` keyword.
* ``question`` -- the problem text, kept for reference and logging.

Every selected row is checked *before* training: a row whose reference answer does not parse to a
number raises :class:`ValueError` naming the source, the split, the row index and a snippet of the row.

Sources (``load_gsm8k(source=...)``)
------------------------------------
``"hub"`` (default)
    ``datasets.load_dataset(hub_id, hub_config, split=split)`` -- ``openai/gsm8k`` / ``main`` unless
    told otherwise; rows are ``{"question", "answer"}`` with the worked solution ending in ``#### N``.
    If the Hub cannot be reached, :class:`GSM8KUnavailableError` (a :class:`ConnectionError`) is raised
    and its message points at the two offline sources below.
``"local"``
    ``path`` is a folder holding ``{split}.jsonl`` (``train.jsonl``, ``test.jsonl``) in the GSM8K
    release format, or a single ``.jsonl`` file. One file holds both splits, partitioned as the generated
    sources are: a question is in ``test`` when the hash of its normal form falls in the lowest fifth, else in
    ``train`` (:func:`generated_split_of`), so the training and held-out sets drawn from one file never share a
    question; any other ``split`` of a single file is an error.
``"gsm_symbolic"``
    reasoning-gym's ``gsm_symbolic`` procedural generator -- the offline stand-in for a fresh machine
    with neither network nor data files. It is a re-implementation of Apple's GSM-Symbolic idea: about
    85 GSM8K test problems turned into templates whose names, objects and numbers are re-drawn at
    random, each item carrying a worked solution that ends in ``#### N``. Answers are whole numbers in
    ~99.8 % of items; a few templates yield decimals (``"937.5"``) and, rarely, negative numbers
    (``"-2"``); magnitudes run up to a few hundred thousand. reasoning-gym appends "Give the result as your final answer. Do not include
    units." to every question; that sentence is stripped so the prompts read like GSM8K's (the system
    prompt already asks for a bare number).

    *Train/test split.* The generator has no splits, and item ``i`` of a generator seeded ``s`` is
    drawn from ``Random(s + i)``, so two nearby seeds produce overlapping streams. Both splits are
    therefore read from one stream (seeded ``seed * 2**32``, so streams of different ``seed`` values
    never share a random state) and each problem goes to ``test`` when the SHA-256 of its whitespace-
    normalised text falls in the lowest fifth of the hash range, else to ``train``. The partition
    depends only on the question text, so ``train`` and ``test`` are disjoint for *any* pair of seeds;
    duplicates within a split are dropped. Templates are shared by both splits (only names and numbers
    differ), so held-out accuracy on ``gsm_symbolic`` measures within-template generalisation and is
    more optimistic than GSM8K's test split. Without ``limit`` the splits have GSM8K's sizes
    (7,473 train, 1,319 test).
``"reasoning_gym"``
    Any numeric reasoning-gym task (``task``, ``task_config``), split and deduplicated as ``gsm_symbolic`` is:
    e.g. one-digit ``chain_sum``, which the embedded 135M model solves about 40% of (GSM8K: about 3%), so its
    accuracy can rise or fall measurably. Answers are bare numbers.
``"auto"``
    The Hub when it answers; otherwise ``path`` with ``"local"`` if a ``path`` was given; otherwise
    ``gsm_symbolic``. Each fallback is logged as a warning. Before calling ``load_dataset`` a TCP
    connection to the Hub endpoint is tried (3 s timeout) so an unreachable Hub costs seconds, not the
    ~25 s of retries ``huggingface_hub`` would spend; with ``HF_HUB_OFFLINE=1`` (a local HF cache may
    still hold the dataset) or an HTTP(S) proxy configured, ``load_dataset`` is tried directly.

``limit`` keeps the first ``limit`` rows, after a seeded shuffle when ``shuffle=True``.
:func:`heldout_gsm8k` is a seeded random sample of the test split for held-out accuracy.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from datasets import Dataset

from trl_lab.data.questions import normalise_question, question_hash_fraction

logger = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step, showing your reasoning. "
    "Then give the final answer on the last line in the form '#### <number>', "
    "with only the number on that line (no units)."
)

SOURCES = ("hub", "local", "gsm_symbolic", "reasoning_gym", "auto")

#: Split sizes of GSM8K (``openai/gsm8k``, config ``main``); also the default sizes of ``gsm_symbolic``.
GSM8K_SPLIT_SIZES = {"train": 7473, "test": 1319}

#: Fraction of the hash range of generated questions (gsm_symbolic, reasoning_gym) that goes to ``test``.
GENERATED_TEST_FRACTION = 0.2

_SYMBOLIC_SUFFIX = " Give the result as your final answer. Do not include units."
_GENERATED_SEED_STRIDE = 2**32
_MAX_MISSES_IN_A_ROW = 5000  # a task whose questions are used up

__all__ = [
    "DEFAULT_SYSTEM_PROMPT",
    "GSM8K_SPLIT_SIZES",
    "GSM8KUnavailableError",
    "SOURCES",
    "build_prompt",
    "heldout_gsm8k",
    "load_gsm8k",
    "gsm8k_solution_rows",
    "generated_split_of",
    "parse_gsm8k_reference",
]


class GSM8KUnavailableError(ConnectionError):
    """GSM8K could not be loaded from the Hugging Face Hub."""


def parse_gsm8k_reference(text: str) -> str:
    """Canonical reference number of a GSM8K answer: a bare number, or a solution ending in ``#### N``.

    Stricter than :func:`trl_lab.rewards.gsm8k.parse_reference` on one point: free text without a
    ``####`` line ("She has 5 apples") is rejected even when it holds a single number, since in a GSM8K
    file that means a truncated or foreign row.
    """
    from trl_lab.rewards.gsm8k import parse_reference  # lazy: keeps ``import trl_lab.data`` light

    if "####" not in text and len(text.split()) > 1:
        raise ValueError("no '#### <number>' line, and not a bare number")
    return parse_reference(text)


def build_prompt(question: str, system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> list[dict[str, str]]:
    """The conversational prompt for one question (no system message if ``system_prompt`` is empty)."""
    messages = [] if not system_prompt else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": question})
    return messages


def _snippet(row: Any, width: int = 160) -> str:
    text = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _build_dataset(
    rows: Iterable[tuple[int, Any]],
    *,
    source: str,
    split: str,
    system_prompt: str | None,
    where: Callable[[int], str] = lambda i: f"row {i}",
) -> Dataset:
    """Validate ``(index, raw_row)`` pairs and turn them into the common columns."""
    prompts, answers, questions = [], [], []
    for index, row in rows:
        label = f"GSM8K source {source!r}, split {split!r}, {where(index)}"
        if not isinstance(row, dict):
            raise ValueError(f"{label}: expected an object with 'question' and 'answer', got {_snippet(row)}")
        question, reference = row.get("question"), row.get("answer")
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{label}: missing or empty 'question': {_snippet(row)}")
        if reference is None:
            raise ValueError(f"{label}: missing 'answer': {_snippet(row)}")
        try:
            answer = parse_gsm8k_reference(str(reference))
        except ValueError as err:
            raise ValueError(
                f"{label}: the reference answer does not parse to a number ({err}): {_snippet(row)}"
            ) from err
        questions.append(question)
        answers.append(answer)
        prompts.append(build_prompt(question, system_prompt))
    return Dataset.from_dict({"prompt": prompts, "answer": answers, "question": questions})


def _select(n: int, *, limit: int | None, shuffle: bool, seed: int) -> list[int]:
    """Indices of the rows to keep: all, or the first ``limit`` after an optional seeded shuffle."""
    import random

    indices = list(range(n))
    if shuffle:
        random.Random(seed).shuffle(indices)
    if limit is not None:
        indices = indices[:limit]
    return indices


# --------------------------------------------------------------------------------------------- hub
def _offline_hint(split: str) -> str:
    return (
        "Without the Hub, load GSM8K from files with "
        f"load_gsm8k(source='local', split={split!r}, path='<folder with train.jsonl and test.jsonl>') "
        "(rows {'question', 'answer'} with the answer ending in '#### N'), or use the offline generator "
        f"load_gsm8k(source='gsm_symbolic', split={split!r}) (reasoning-gym's GSM8K-style problems); "
        "source='auto' picks the Hub when it answers and falls back to those."
    )


def _load_hub(hub_id: str, hub_config: str | None, split: str, **load_kwargs: Any):
    import datasets

    try:
        return datasets.load_dataset(hub_id, hub_config, split=split, **load_kwargs)
    except (OSError, ConnectionError) as err:  # ConnectionError, DatasetNotFoundError, HTTP errors, timeouts
        offline = " (HF_HUB_OFFLINE is set)" if _hub_offline_env() else ""
        raise GSM8KUnavailableError(
            f"Could not load {hub_id!r} (config {hub_config!r}, split {split!r}) from the Hugging Face "
            f"Hub{offline}: {type(err).__name__}: {err}. {_offline_hint(split)}"
        ) from err


def _hub_offline_env() -> bool:
    return any(
        os.environ.get(var, "").strip().upper() in {"1", "ON", "YES", "TRUE"}
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether a TCP connection to the Hub endpoint opens within ``timeout`` seconds (DNS included)."""
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host = parsed.hostname or "huggingface.co"
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _should_try_hub() -> bool:
    if _hub_offline_env():
        return True  # fails fast, and a local HF cache may hold the dataset
    if any(os.environ.get(var) for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True  # a direct TCP probe says nothing about a proxied route
    return _hub_reachable()


# ------------------------------------------------------------------------------------------- local
def _local_file(path: str | os.PathLike, split: str) -> Path:
    p = Path(path).expanduser()
    if p.is_dir():
        f = p / f"{split}.jsonl"
        if not f.is_file():
            found = sorted(x.name for x in p.glob("*.jsonl"))
            raise FileNotFoundError(f"GSM8K source 'local': no {f.name} in {p} (found: {found or 'no .jsonl files'})")
        return f
    if p.is_file():
        return p
    raise FileNotFoundError(f"GSM8K source 'local': {p} is neither a folder of <split>.jsonl files nor a .jsonl file")


def _read_local(path: str | os.PathLike, split: str, *, whole_file: bool = False) -> tuple[Path, list[Any], list[int]]:
    """The file, rows and line numbers of ``split``: the split's file in a folder, or its hash part of one file
    (every row of it with ``whole_file``)."""
    file = _local_file(path, split)
    rows, lines = _read_jsonl(file, split)
    if whole_file or Path(path).expanduser().is_dir():
        return file, rows, lines
    if split not in GSM8K_SPLIT_SIZES:
        raise ValueError(f"GSM8K source 'local': one file ({file}) holds the splits 'train' and 'test' (by question "
                         f"hash), not {split!r}; give a folder with {split}.jsonl instead")
    # A row without a string question stays in every split, so that its error is raised whichever is read.
    keep = [i for i, row in enumerate(rows) if not isinstance(row, dict) or not isinstance(row.get("question"), str)
            or generated_split_of(row["question"]) == split]
    return file, [rows[i] for i in keep], [lines[i] for i in keep]


def _read_jsonl(file: Path, split: str) -> tuple[list[Any], list[int]]:
    """Rows of a jsonl file (blank lines skipped) and the 1-based line number of each. UTF-8, a BOM allowed; other
    bytes are an error naming the file and line."""
    rows, lines = [], []
    with file.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as err:
                raise ValueError(f"GSM8K source 'local', split {split!r}: line {lineno} of {file} is not UTF-8 "
                                 f"({err.reason} at byte {err.start}); save the file as UTF-8") from err
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"GSM8K source 'local', split {split!r}, row {len(rows)} (line {lineno} of {file}): "
                    f"invalid JSON ({err}): {_snippet(line)}"
                ) from err
            lines.append(lineno)
    return rows, lines


# ------------------------------------------------------------------------- generated tasks (gsm_symbolic, ...)
def generated_split_of(question: str) -> str:
    """The split (``"train"`` or ``"test"``) a generated question belongs to (hash partition of its text)."""
    return "test" if question_hash_fraction(question) < GENERATED_TEST_FRACTION else "train"


def _task_stream(task: str, seed: int, config: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(index, item)`` from reasoning-gym's ``task`` generator, without end."""
    import reasoning_gym

    base_seed = seed * _GENERATED_SEED_STRIDE
    start, size = 0, 4096
    while True:
        # reasoning-gym draws item i from Random(seed + i) (gsm_symbolic picks its template from Random(seed)
        # .choices(k=size), which is prefix-stable): a bigger size only appends items.
        ds = reasoning_gym.create_dataset(task, size=size, seed=base_seed, **config)
        for i in range(start, size):
            yield i, ds[i]
        start, size = size, size * 2


def _generated_rows(task: str, split: str, n: int, seed: int,
                    config: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The first ``n`` distinct questions of ``split`` in the task's stream. A task with fewer distinct questions
    (one-digit sums have a few hundred) is an error naming how many it has, not an endless scan."""
    seen: set[str] = set()
    taken = misses = 0  # misses: items in a row that gave no new question of this split
    for index, item in _task_stream(task, seed, config):
        if taken >= n:
            return
        question = str(item["question"]).strip()
        if question.endswith(_SYMBOLIC_SUFFIX.strip()):
            question = question[: -len(_SYMBOLIC_SUFFIX.strip())].rstrip()
        key = normalise_question(question)
        if key in seen or generated_split_of(question) != split:
            misses += 1
            if misses > _MAX_MISSES_IN_A_ROW:
                raise ValueError(f"reasoning-gym task {task!r} ({config or 'default config'}) has only {taken} "
                                 f"distinct {split} questions, fewer than the {n} asked for; ask for fewer")
            continue
        seen.add(key)
        taken, misses = taken + 1, 0
        yield index, {"question": question, "answer": item["answer"]}


# -------------------------------------------------------------------------------------------- API
def load_gsm8k(
    source: str = "hub",
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    hub_id: str = "openai/gsm8k",
    hub_config: str | None = "main",
    limit: int | None = None,
    seed: int = 0,
    shuffle: bool = False,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    task: str | None = None,
    task_config: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> Dataset:
    """Load GSM8K (or a GSM8K-style stand-in) as ``prompt``/``answer``/``question`` rows.

    Args:
        source: ``"hub"``, ``"local"``, ``"gsm_symbolic"``, ``"reasoning_gym"`` or ``"auto"`` (see the module
            docstring).
        split: ``"train"`` or ``"test"`` (the Hub accepts any split expression ``datasets`` does).
        path: for ``"local"`` (and ``"auto"``'s fallback) a folder of ``{split}.jsonl`` files or one file.
        hub_id, hub_config: the Hub dataset (``openai/gsm8k``, ``main``).
        limit: keep at most this many rows (the first ones, after the shuffle if ``shuffle``). For
            ``gsm_symbolic`` it is the number of problems generated (default: GSM8K's split size).
        seed: seed of the shuffle, and of the ``gsm_symbolic`` stream.
        shuffle: shuffle (seeded) before applying ``limit``.
        system_prompt: the system message; ``None`` or ``""`` for none.
        task, task_config: for ``"reasoning_gym"``, the numeric task (``chain_sum``, ``basic_arithmetic``, ...) and
            its options.
        **load_kwargs: passed to ``datasets.load_dataset`` for the Hub (``revision``, ``cache_dir``, …).

    Raises:
        ValueError: a selected row has no question or its reference answer does not parse to a number;
            unknown source/split; negative limit.
        GSM8KUnavailableError: ``source="hub"`` and the Hub could not be reached.
        FileNotFoundError: ``source="local"`` and ``path`` has no such split file.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown GSM8K source {source!r}; expected one of {', '.join(SOURCES)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if load_kwargs and source not in ("hub", "auto"):
        raise TypeError(f"unexpected keyword arguments for source {source!r}: {sorted(load_kwargs)}")
    if (task is not None or task_config) and source != "reasoning_gym":
        raise ValueError(f"a reasoning-gym task ({task!r}) is only read by source 'reasoning_gym', not {source!r}")
    common = dict(limit=limit, seed=seed, shuffle=shuffle, system_prompt=system_prompt)

    if source == "auto":
        if _should_try_hub():
            try:
                return load_gsm8k("hub", split, hub_id=hub_id, hub_config=hub_config, **common, **load_kwargs)
            except GSM8KUnavailableError as err:
                reason = str(err.__cause__ or err)
        else:
            reason = "no connection to the Hub endpoint"
        fallback = "local" if path is not None else "gsm_symbolic"
        where = f" from {path}" if path is not None else " (reasoning-gym's offline generator)"
        logger.warning("GSM8K: the Hub is unavailable (%s); using source=%r%s.", reason, fallback, where)
        return load_gsm8k(fallback, split, path=path, **common)

    if source == "hub":
        raw = _load_hub(hub_id, hub_config, split, **load_kwargs)
        indices = _select(len(raw), limit=limit, shuffle=shuffle, seed=seed)
        rows = ((i, raw[i]) for i in indices) if indices != list(range(len(raw))) else enumerate(raw)
        return _build_dataset(rows, source=f"hub:{hub_id}", split=split, system_prompt=system_prompt)

    if source == "local":
        if path is None:
            raise ValueError(
                "GSM8K source 'local' needs path= (a folder of train.jsonl/test.jsonl, or one .jsonl file)"
            )
        file, raw_rows, lines = _read_local(path, split)
        indices = _select(len(raw_rows), limit=limit, shuffle=shuffle, seed=seed)
        return _build_dataset(
            ((i, raw_rows[i]) for i in indices),
            source="local",
            split=split,
            system_prompt=system_prompt,
            where=lambda i: f"row {i} (line {lines[i]} of {file})",
        )

    # generated: gsm_symbolic, or any numeric reasoning-gym task
    if source == "reasoning_gym":
        if not task:
            raise ValueError("GSM8K source 'reasoning_gym' needs a task (e.g. chain_sum; --dataset_task)")
        from reasoning_gym.factory import DATASETS

        if task not in DATASETS:
            raise ValueError(f"unknown reasoning-gym task {task!r}; e.g. chain_sum, basic_arithmetic, leg_counting")
    else:
        task = "gsm_symbolic"
    if split not in GSM8K_SPLIT_SIZES:
        raise ValueError(f"GSM8K source {source!r} has splits 'train' and 'test', not {split!r}")
    n = GSM8K_SPLIT_SIZES[split] if limit is None else limit
    rows = list(_generated_rows(task, split, n, seed, dict(task_config or {})))
    if shuffle:
        rows = [rows[i] for i in _select(len(rows), limit=None, shuffle=True, seed=seed)]
    return _build_dataset(
        rows,
        source=source if source == "gsm_symbolic" else f"reasoning_gym:{task}",
        split=split,
        system_prompt=system_prompt,
        where=lambda i: f"generator item {i} (seed {seed})",
    )


def gsm8k_solution_rows(
    source: str = "hub",
    split: str = "train",
    *,
    path: str | os.PathLike | None = None,
    hub_id: str = "openai/gsm8k",
    hub_config: str | None = "main",
    limit: int | None = None,
    whole_file: bool = False,
) -> list[dict[str, str]]:
    """Raw GSM8K rows ``{"question", "answer"}`` with the *worked* solution, for preference pairs.

    ``source``: ``"hub"`` (``openai/gsm8k``) or ``"local"`` (``path``: a folder of ``{split}.jsonl`` files or one
    file, split by question hash as :func:`load_gsm8k` splits it; ``whole_file``: all of that file). ``gsm_symbolic``
    items carry only the final number, so they cannot make pairs; asking for it is an error. ``limit`` keeps the
    first rows, in file order.
    """
    if source == "hub":
        raw = _load_hub(hub_id, hub_config, split)
        rows = raw.select(range(min(limit, len(raw)))) if limit is not None else raw
        return [{"question": r["question"], "answer": r["answer"]} for r in rows]
    if source == "local":
        if path is None:
            raise ValueError("GSM8K solutions from source 'local' need path= (a folder of train.jsonl/test.jsonl)")
        file, raw_rows, lines = _read_local(path, split, whole_file=whole_file)
        out = []
        for i, row in enumerate(raw_rows[:limit] if limit is not None else raw_rows):
            if not isinstance(row, dict) or not isinstance(row.get("question"), str) \
                    or not isinstance(row.get("answer"), str):
                raise ValueError(f"GSM8K source 'local', row {i} (line {lines[i]} of {file}) needs string "
                                 f"'question' and 'answer' fields: {_snippet(row)}")
            out.append({"question": row["question"], "answer": row["answer"]})
        return out
    raise ValueError(f"GSM8K solutions: source must be 'hub' or 'local' (worked solutions are needed), got {source!r}")


def heldout_gsm8k(
    n: int = 200,
    *,
    source: str = "hub",
    split: str = "test",
    seed: int = 0,
    path: str | os.PathLike | None = None,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
    **kwargs: Any,
) -> Dataset:
    """A seeded random sample of ``n`` problems of the held-out ``split``, for held-out accuracy.

    Same columns and sources as :func:`load_gsm8k` (``shuffle=True``, ``limit=n``).
    """
    return load_gsm8k(
        source, split, path=path, limit=n, seed=seed, shuffle=True, system_prompt=system_prompt, **kwargs
    )

