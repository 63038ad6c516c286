"""Sample a model's completions on a task's training questions: the policy samples a reward model learns from.

    python -m trl_lab.scripts.sample_completions --dataset_source reasoning_gym --dataset_task basic_arithmetic \\
        --dataset_task_config '{"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}' \\
        --train_size 384 --num_samples 8 --temperature 0.8 --max_new_tokens 64 --output outputs/samples.jsonl

Writes one JSON line per completion, ``{"question", "answer", "completion", "correct"}`` (``answer``: the reference;
``correct``: the ``gsm8k`` checker's verdict), which is what ``train_reward_model --policy_samples`` reads: the
checker pairs a question's right samples against its wrong ones. The prompts are the RL job's own (the same data
flags, :class:`~trl_lab.scripts.grpo_gsm8k.GSM8KScriptArguments`, the same system prompt and chat template), drawn
from ``--dataset_train_split``, so an RM trained on them never sees a held-out question (the RL job checks that
too). Defaults to the embedded model; ``--model_name_or_path`` takes a hub id or a folder.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl import TrlParser

from trl_lab.scripts.grpo_gsm8k import GSM8KScriptArguments

__all__ = ["SampleArguments", "main", "sample_completions"]


@dataclass
class SampleArguments:
    """The model and the sampling: completions per question, temperature, length, batch, and where they go."""

    output: str = field(metadata={"help": "JSONL file to write (its folder is created)."})
    model_name_or_path: str = field(default="smollm2-135m-instruct",
                                    metadata={"help": "Embedded model name, hub id or folder."})
    num_samples: int = field(default=8, metadata={"help": "Completions per question."})
    temperature: float = field(default=0.8, metadata={"help": "Sampling temperature (the RL job's, for its samples)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens per completion (the RL job's budget)."})
    batch_size: int = field(default=8, metadata={"help": "Questions per generate call (x num_samples sequences)."})
    seed: int = field(default=0, metadata={"help": "Seed of the question draw and of the sampling."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Run a hub model's own code (off by default)."})


def sample_completions(script_args: GSM8KScriptArguments, args: SampleArguments) -> dict[str, Any]:
    """Sample, check and write the completions; returns a summary (also printed)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed

    from trl_lab.callbacks.heldout import generate_completions, prompt_text
    from trl_lab.data.gsm8k import load_gsm8k
    from trl_lab.embedded_model import resolve_model_path
    from trl_lab.rewards.gsm8k import check_answer

    if args.num_samples < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("sample_completions: num_samples, batch_size and max_new_tokens must be >= 1")
    if args.temperature <= 0:
        raise ValueError(f"sample_completions: temperature must be > 0 (this samples), got {args.temperature}")
    dataset = load_gsm8k(split=script_args.dataset_train_split, limit=script_args.train_size, seed=args.seed,
                         **script_args.dataset_kwargs())
    path = resolve_model_path(args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=args.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, trust_remote_code=args.trust_remote_code)
    model.eval()
    set_seed(args.seed)
    texts = [prompt_text(p, tokenizer) for p in dataset["prompt"]]
    start = time.perf_counter()
    with torch.inference_mode(), tqdm(total=len(texts), desc="sampling", unit="question") as bar:
        ids, completions = generate_completions(
            model, tokenizer, texts, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, progress=bar,
            num_return_sequences=args.num_samples, do_sample=True, temperature=args.temperature, top_p=1.0, top_k=0)
    seconds = time.perf_counter() - start
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_correct = 0
    with out.open("w", encoding="utf-8") as f:
        for i, (question, answer) in enumerate(zip(dataset["question"], dataset["answer"])):
            for completion in completions[i * args.num_samples:(i + 1) * args.num_samples]:
                correct = bool(check_answer(completion, answer))
                n_correct += correct
                f.write(json.dumps({"question": question, "answer": answer, "completion": completion,
                                    "correct": correct}) + "\n")
    summary = {"output": str(out), "model": args.model_name_or_path, "questions": len(texts),
               "completions": len(completions), "accuracy": n_correct / len(completions),
               "mean_tokens": sum(map(len, ids)) / len(ids), "seconds": round(seconds, 1),
               "tokens_per_second": round(sum(map(len, ids)) / seconds, 1), "temperature": args.temperature,
               "max_new_tokens": args.max_new_tokens, "seed": args.seed}
    print(f"[samples] {summary['completions']} completions of {summary['questions']} questions -> {out}: checker "
          f"accuracy {summary['accuracy']:.3f}, {summary['mean_tokens']:.1f} tokens on average, {seconds:.0f} s")
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    script_args, args = TrlParser((GSM8KScriptArguments, SampleArguments)).parse_args_and_config(argv)
    return sample_completions(script_args, args)


if __name__ == "__main__":
    main(sys.argv[1:])
