"""Command-line/YAML arguments shared by the GSM8K example scripts (parsed with TRL's ``TrlParser``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class GSM8KScriptArguments:
    """Where the GSM8K prompts come from.

    ``dataset_source``: ``hub`` (``openai/gsm8k``), ``local`` (a folder of ``{split}.jsonl`` files given by
    ``dataset_path``), ``gsm_symbolic`` (reasoning-gym's generator: offline, no files needed) or ``auto``
    (the hub when reachable, else ``gsm_symbolic``).
    """

    dataset_source: str = field(
        default="auto",
        metadata={"help": "hub | local | gsm_symbolic | auto", "choices": ["hub", "local", "gsm_symbolic", "auto"]},
    )
    dataset_path: str | None = field(
        default=None, metadata={"help": "For dataset_source=local: a folder with train.jsonl/test.jsonl, or one jsonl file."}
    )
    dataset_hub_id: str = field(default="openai/gsm8k", metadata={"help": "Hub dataset id for dataset_source=hub."})
    dataset_train_split: str = field(default="train", metadata={"help": "Split to train on."})
    train_size: int | None = field(default=None, metadata={"help": "Use only the first N training prompts."})
    system_prompt: str | None = field(
        default=None,
        metadata={"help": "System prompt; default asks for a final line '#### <number>'. Empty string: none."},
    )
