"""Question identity: one normal form and one hash, shared by every split and every dedupe of questions.

Two questions are the same when their :func:`normalise_question` forms are equal (white space folded, case
ignored). :func:`question_hash_fraction` maps a question to a fixed number in ``[0, 1)`` from the SHA-256 of that
form, so a split by ``fraction < f`` is stable across runs, machines and Python versions, and puts every
copy of a question on the same side.
"""

from __future__ import annotations

import hashlib

__all__ = ["normalise_question", "question_fingerprint", "question_hash_fraction"]


def normalise_question(question: str) -> str:
    """The question with white space folded to single spaces and lower-cased."""
    return " ".join(question.split()).lower()


def question_fingerprint(question: str) -> str:
    """The SHA-256 (hex) of the normalised question: its identity, recorded without the text."""
    return hashlib.sha256(normalise_question(question).encode("utf-8")).hexdigest()


def question_hash_fraction(question: str) -> float:
    """A number in ``[0, 1)`` fixed by the normalised question (the first 8 bytes of its SHA-256)."""
    return int(question_fingerprint(question)[:16], 16) / 2**64
