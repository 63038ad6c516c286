"""Leakage between the data a model trains on and the data it is judged on.

Held-out accuracy is the truth a run is read by; it means nothing for a question the model trained on. Two question
sets overlap where their :func:`~trl_lab.data.questions.normalise_question` forms meet (white space and case
ignored). :func:`refuse_heldout_overlap` is the check every job runs before a model loads: by default an overlap is
an error saying how many items overlap and how to fix it; ``allow=True`` (the jobs' ``--allow_heldout_overlap``) runs
anyway, with a warning giving the same count.

A trained reward model records the fingerprints (:func:`~trl_lab.data.questions.question_fingerprint`) of the
questions it trained on in ``<RM>/rm_train_questions.json`` (:func:`write_trained_questions`), so an RL job can check
its held-out set (and the pairs it audits the RM on) against them without the RM's data.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

from trl_lab.data.questions import normalise_question, question_fingerprint

logger = logging.getLogger(__name__)

#: File in a reward model's folder: the fingerprints of the questions of its training pairs.
TRAINED_QUESTIONS_FILE = "rm_train_questions.json"

__all__ = ["TRAINED_QUESTIONS_FILE", "HeldOutLeakageError", "overlapping_questions", "read_trained_questions",
           "refuse_heldout_overlap", "write_trained_questions"]


class HeldOutLeakageError(ValueError):
    """Held-out questions are also in the training data."""


def overlapping_questions(train: Iterable[str], heldout: Iterable[str], *, fingerprints: bool = False) -> list[str]:
    """The held-out questions (in their order, each once) whose normal form is among ``train``'s.

    ``fingerprints=True``: ``train`` holds :func:`question_fingerprint` values instead of question texts.
    """
    key = question_fingerprint if fingerprints else normalise_question
    seen_train = set(train) if fingerprints else {normalise_question(q) for q in train}
    out, seen = [], set()
    for question in heldout:
        k = key(question)
        if k in seen_train and k not in seen:
            seen.add(k)
            out.append(question)
    return out


def refuse_heldout_overlap(overlap: list[str], n_heldout: int, *, train: str, heldout: str, fix: str,
                           flag: str = "--allow_heldout_overlap true", allow: bool = False) -> None:
    """Raise :class:`HeldOutLeakageError` when ``overlap`` (from :func:`overlapping_questions`) is not empty, naming
    what overlaps (``train``, ``heldout``: where each set comes from), how many, one example, ``fix`` and ``flag``;
    with ``allow`` log a warning instead."""
    if not overlap:
        return
    example = " ".join(overlap[0].split())
    example = example if len(example) <= 80 else example[:79] + "…"
    message = (f"{len(overlap)} of the {n_heldout} held-out questions ({heldout}) are also in {train} (e.g. "
               f"{example!r}), so held-out accuracy would score answers to questions the model trained on")
    if allow:
        logger.warning("%s; running anyway (%s).", message, flag)
        return
    raise HeldOutLeakageError(f"{message}. {fix}; or pass {flag} to run anyway.")


def write_trained_questions(folder: str | os.PathLike, questions: Iterable[str]) -> Path:
    """Record the fingerprints of ``questions`` in ``folder/rm_train_questions.json``; returns the path."""
    path = Path(folder) / TRAINED_QUESTIONS_FILE
    fingerprints = sorted({question_fingerprint(q) for q in questions})
    path.write_text(json.dumps({"normal_form": "sha256 of normalise_question", "fingerprints": fingerprints}) + "\n",
                    encoding="utf-8")
    return path


def read_trained_questions(folder: str | os.PathLike) -> set[str] | None:
    """The fingerprints recorded by :func:`write_trained_questions` in ``folder``; ``None`` when none were."""
    path = Path(folder) / TRAINED_QUESTIONS_FILE
    if not path.is_file():
        return None
    try:
        return set(json.loads(path.read_text(encoding="utf-8"))["fingerprints"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a list of question fingerprints ({exc}); delete it or re-train the RM") \
            from exc
