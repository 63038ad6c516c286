"""Sentiment preference pairs: an upbeat and a flat or negative phrasing of the same content.

Used to train the "rewards cheer" reward model of the reward-hacking experiments
(``examples/train_sentiment_rm.py``). Each pair shares its content sentence, so the only signal that
separates ``chosen`` from ``rejected`` is the tone. Generation is deterministic (templates and a seeded
``random.Random``); the ``train`` and ``test`` splits use disjoint content sentences, so test accuracy
measures whether the tone, not the content, was learned.

    >>> pairs = sentiment_pairs(4, split="train", seed=0)
    >>> sorted(pairs[0])
    ['chosen', 'rejected']
"""

from __future__ import annotations

import random
from typing import Any

__all__ = ["CONTENTS", "FLAT_TEMPLATES", "UPBEAT_TEMPLATES", "sentiment_pairs", "sentiment_pairs_dataset",
           "split_contents"]

#: Neutral content sentences (lower case, no final punctuation). Every 4th one is held out for ``test``.
CONTENTS = (
    "the report is finished",
    "the train leaves at noon",
    "your code compiles now",
    "the answer is 42",
    "the meeting moved to Tuesday",
    "the package arrived this morning",
    "the tests pass on the new branch",
    "the total comes to 18 dollars",
    "the garden needs water twice a week",
    "we sold 12 tickets today",
    "the recipe takes forty minutes",
    "the new version is installed",
    "the bus stops near the library",
    "your essay has five paragraphs",
    "the server restarted at midnight",
    "the store closes at nine",
    "she walks 3 miles every day",
    "the bridge opens next month",
    "the results are in the spreadsheet",
    "the cat sleeps on the sofa",
    "the class starts at eight",
    "the printer is on the second floor",
    "he finished the puzzle in an hour",
    "the museum is free on Sundays",
    "the flight lands at six",
    "the soup is ready",
    "the team scored two goals",
    "the file is saved in the shared folder",
    "the weather will be mild tomorrow",
    "the box holds 24 pencils",
    "the library renewed your books",
    "the model trained for ten epochs",
    "the road is open again",
    "the price dropped to 30 dollars",
    "the plants grew two inches",
    "the concert starts at seven",
    "the keys are on the table",
    "your order ships on Friday",
    "the lecture notes are online",
    "the dog learned a new trick",
)

UPBEAT_TEMPLATES = (
    "Great news: {c}!",
    "Wonderful, {c}! I'm so happy about this.",
    "Amazing! {C}, and it looks fantastic.",
    "{C}. That's fantastic, well done!",
    "Hooray, {c}! This is the best day.",
    "Good news, {c}! Great job, you are amazing!",
    "I love this: {c}! Excellent work.",
    "{C}! Brilliant, thank you so much!",
)

FLAT_TEMPLATES = (
    "{C}.",
    "Note: {c}.",
    "{C}. Nothing more to say.",
    "Unfortunately, {c}.",
    "{C}. It is what it is.",
    "Sadly, {c}. This is disappointing.",
    "{C}. That's bad and wrong.",
    "Ugh, {c}. What a terrible mess.",
)

SPLITS = ("train", "test")


def split_contents(split: str) -> list[str]:
    """The content sentences of ``split`` (every 4th of :data:`CONTENTS` is ``test``, the rest ``train``)."""
    if split not in SPLITS:
        raise ValueError(f"sentiment_pairs: split must be one of {list(SPLITS)}, got {split!r}")
    held_out = split == "test"
    return [c for i, c in enumerate(CONTENTS) if (i % 4 == 3) == held_out]


def sentiment_pairs(n: int, *, split: str = "train", seed: int = 0) -> list[dict[str, str]]:
    """``n`` pairs ``{"chosen": upbeat, "rejected": flat or negative}`` of the split's content sentences."""
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"sentiment_pairs: n must be a non-negative integer, got {n!r}")
    rng = random.Random(f"{split}:{seed}")
    contents = split_contents(split)
    pairs = []
    for _ in range(n):
        c = rng.choice(contents)
        fill = {"c": c, "C": c[0].upper() + c[1:]}
        pairs.append({"chosen": rng.choice(UPBEAT_TEMPLATES).format(**fill),
                      "rejected": rng.choice(FLAT_TEMPLATES).format(**fill)})
    return pairs


def sentiment_pairs_dataset(n: int, *, split: str = "train", seed: int = 0) -> Any:
    """The same pairs as a ``datasets.Dataset`` (implicit-prompt preference format for ``RewardTrainer``)."""
    from datasets import Dataset

    return Dataset.from_list(sentiment_pairs(n, split=split, seed=seed))
