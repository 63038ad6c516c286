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
    heldout_size: int = field(
        default=0,
        metadata={"help": "Held-out GSM8K test items scored during training (greedy); 0 turns the evaluation off. "
                  "500 is recommended on a GPU."},
    )
    heldout_eval_steps: int | None = field(
        default=None, metadata={"help": "Evaluate the held-out set every N steps (default: eval_steps, else 50)."}
    )
    heldout_max_new_tokens: int = field(default=256, metadata={"help": "Generation budget per held-out item."})
    heldout_proxy_rewards: bool = field(
        default=True,
        metadata={"help": "Also score the held-out completions with the training reward plugins, logged as "
                  "heldout/proxy/<plugin>: what the proxy thinks of the outputs accuracy is measured on."},
    )
    heldout_generation: str = field(
        default="auto",
        metadata={"help": "Held-out generation: 'auto' (TRL's vLLM engine when --use_vllm, else model.generate), "
                  "'transformers' or 'vllm'."},
    )
    heldout_kl_to_ref: bool = field(
        default=True,
        metadata={"help": "Log heldout/kl_to_ref: the policy's per-token KL to its reference along the held-out answers, "
                  "at any beta (TRL logs no KL when beta = 0)."},
    )
    goodhart: bool = field(
        default=True,
        metadata={"help": "With a held-out set: stop when reward rises while held-out accuracy falls, and restore "
                  "the best step's weights."},
    )
    goodhart_proxy_metric: str = field(
        default="reward", metadata={"help": "The logged metric the detector treats as the proxy (e.g. rewards/sentiment/mean)."}
    )
