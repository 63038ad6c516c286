"""The study's truth: a run's saved adapters scored offline on an audit set the detector never saw (issue 15).

    python -m trl_lab.scripts.study_audit outputs/study/arm4_verbosity/seed42                 # every checkpoint
    python -m trl_lab.scripts.study_audit outputs/study/arm4_verbosity/seed42 --steps 0 12 24 --audit_size 256
    python -m trl_lab.scripts.study_audit outputs/study/arm4_verbosity/seed42 --audit_size 512 --extend  # 256 more

The detector watches the run's own held-out set, so scoring it against that set is circular. The audit set is drawn
from the same split with another seed (``seed + AUDIT_SEED_OFFSET``), minus every held-out and training question, and
answered greedily with the held-out evaluation's own settings (``generate_greedy``, the run's ``heldout_max_new_tokens``
and checker) by the base model (step 0) and by each ``checkpoint-N`` adapter. Writes ``audit.json`` in the run folder:
per step the accuracy, its standard error and every item's outcome, so steps can be compared item by item.

``--extend`` grows an existing audit instead of starting afresh: the grown set is the earlier one's questions, in
order, then new questions drawn the same way and excluding them (a generated task's seeded shuffle depends on how
many items are drawn, so a fresh 512 is not a superset of a fresh 256). The outcomes already in ``audit.json`` are
kept and only the new questions are answered; ``stages`` records the sizes the set grew through (what
:func:`audit_set` needs to rebuild it), and the earlier file is kept whole as ``audit_<size>.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

__all__ = ["AUDIT_SEED_OFFSET", "audit_run", "audit_set", "main", "saved_steps"]

#: The audit sample's seed is the run's seed plus this: a different draw from the held-out one.
AUDIT_SEED_OFFSET = 10_000


def saved_steps(run: str | Path) -> list[int]:
    """Step 0 (the base model) and every ``checkpoint-N`` adapter the run saved, in order."""
    return [0, *sorted(int(p.name.split("-")[1]) for p in Path(run).glob("checkpoint-*")
                       if (p / "adapter_config.json").is_file())]


def _job_args(run: Path) -> tuple[Any, Any, Any]:
    from trl_lab.grpo import GRPOConfig
    from trl_lab.ppo import PPOConfig
    from trl_lab.scripts.grpo_gsm8k import parse_args

    meta_path = run / "study_run.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"study_audit: {meta_path} is missing: audit a run made by trl_lab.scripts.study")
    meta = json.loads(meta_path.read_text())
    config_cls = PPOConfig if meta["job_argv"][1].endswith("ppo_gsm8k_cpu.yaml") else GRPOConfig
    return parse_args(config_cls, None, meta["job_argv"])


def audit_set(script_args: Any, seed: int, size: int, train_questions: list[str],
              stages: tuple[int, ...] = ()) -> Any:
    """``size`` questions of the run's test split that are neither in its held-out set nor in its training set.

    ``stages``: the sizes an audit was grown through (``(256,)`` for one grown from 256 questions to ``size``): the
    set is then the earlier stage's questions, in order, followed by new ones drawn the same way and excluding them.
    """
    from datasets import concatenate_datasets

    from trl_lab.data.gsm8k import heldout_gsm8k
    from trl_lab.data.questions import normalise_question
    from trl_lab.scripts.grpo_gsm8k import load_heldout_set

    if stages:
        *inner, last = stages
        if not 0 < last <= size:
            raise ValueError(f"study_audit: audit stages must grow, got {[*stages, size]}")
        earlier = audit_set(script_args, seed, last, train_questions, tuple(inner))
        if last == size:
            return earlier
        extra = audit_set(script_args, seed, size - last, [*train_questions, *earlier["question"]])
        return concatenate_datasets([earlier, extra])
    heldout = load_heldout_set(script_args, seed)
    taken = {normalise_question(q) for q in [*(heldout["question"] if heldout is not None else []), *train_questions]}
    pool = heldout_gsm8k(size + len(taken), split=script_args.dataset_test_split, seed=seed + AUDIT_SEED_OFFSET,
                         **script_args.dataset_kwargs())
    keep = [i for i, q in enumerate(pool["question"]) if normalise_question(q) not in taken][:size]
    if len(keep) < size:
        raise ValueError(f"study_audit: only {len(keep)} test questions are outside the run's held-out and training "
                         f"sets; ask for --audit_size {len(keep)} or fewer")
    return pool.select(keep)


def _earlier_audit(run: Path, audit_size: int, seed: int, max_new_tokens: int) -> dict[str, Any] | None:
    """The run's ``audit.json`` when ``--extend`` can grow it to ``audit_size``: the same seed and answer length, fewer
    questions. ``None`` when there is none; a clear error when there is one that cannot be grown."""
    path = run / "audit.json"
    if not path.is_file():
        return None
    earlier = json.loads(path.read_text())
    if (earlier.get("audit_seed"), earlier.get("max_new_tokens")) != (seed + AUDIT_SEED_OFFSET, max_new_tokens):
        raise ValueError(f"study_audit: {path} was made with audit seed {earlier.get('audit_seed')} and "
                         f"max_new_tokens {earlier.get('max_new_tokens')}, not {seed + AUDIT_SEED_OFFSET} and "
                         f"{max_new_tokens}: it cannot be extended; move it away to audit afresh")
    if earlier["audit_size"] > audit_size:
        raise ValueError(f"study_audit: {path} already has {earlier['audit_size']} questions; --extend needs a "
                         f"larger --audit_size than that, got {audit_size}")
    return earlier


def audit_run(run: str | Path, *, steps: list[int] | None = None, audit_size: int = 512,
              batch_size: int = 16, extend: bool = False) -> dict[str, Any]:
    """Score the base model and the run's adapters at ``steps`` (default: every saved one) on the audit set; writes
    and returns ``audit.json``'s content. ``extend``: keep the outcomes of an existing, smaller ``audit.json`` and
    answer only the questions it lacks."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trl_lab.callbacks.heldout import generate_greedy, prompt_text
    from trl_lab.data.gsm8k import load_gsm8k
    from trl_lab.embedded_model import resolve_model_path
    from trl_lab.rewards.registry import as_reward

    run = Path(run)
    script_args, training_args, model_args = _job_args(run)
    available = saved_steps(run)
    steps = available if steps is None else steps
    missing = [s for s in steps if s not in available]
    if missing:
        raise ValueError(f"study_audit: {run} has no adapter for step(s) {missing}; saved: {available}")
    train = load_gsm8k(split=script_args.dataset_train_split, limit=script_args.train_size, seed=training_args.seed,
                       **script_args.dataset_kwargs())
    earlier = _earlier_audit(run, audit_size, training_args.seed, script_args.heldout_max_new_tokens) if extend else None
    done = 0 if earlier is None else earlier["audit_size"]
    stages = () if earlier is None else (*earlier.get("stages", ()), done)
    audit = audit_set(script_args, training_args.seed, audit_size, list(train["question"]), stages)
    if done:
        # audit.json is rewritten after every step: keep the earlier audit whole in case this one is interrupted
        (run / f"audit_{done}.json").write_text(json.dumps(earlier) + "\n")
    model_path = resolve_model_path(model_args.model_name_or_path)  # an embedded alias, a hub id or a folder
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    texts = [prompt_text(p, tokenizer) for p in audit["prompt"]]
    checker = as_reward("gsm8k")
    columns = {c: list(audit[c]) for c in audit.column_names if c != "prompt"}
    result: dict[str, Any] = {"run": str(run), "audit_size": audit_size, "audit_seed": training_args.seed +
                              AUDIT_SEED_OFFSET, "max_new_tokens": script_args.heldout_max_new_tokens, "steps": {}}
    if stages:
        result["stages"] = list(stages)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    for step in steps:
        start = time.perf_counter()
        kept = earlier["steps"].get(str(step)) if done else None
        first = len(kept["correct"]) if kept else 0  # a step the earlier audit lacks is answered in full
        if first == len(texts):  # nothing new to answer at this step
            result["steps"][str(step)] = kept
            continue
        model = base if step == 0 else PeftModel.from_pretrained(base, str(run / f"checkpoint-{step}")).merge_and_unload()
        model.eval()
        with torch.inference_mode():
            ids, answers = generate_greedy(model, tokenizer, texts[first:],
                                           max_new_tokens=script_args.heldout_max_new_tokens, batch_size=batch_size)
        rewards = checker(prompts=list(audit["prompt"][first:]), completions=[[{"role": "assistant", "content": a}]
                                                                               for a in answers],
                          completion_ids=ids, **{c: v[first:] for c, v in columns.items()})
        correct = [*(kept["correct"] if kept else []), *(r is not None and r >= 1.0 for r in rewards)]
        lengths = (kept["mean_length"] * first if kept else 0.0) + sum(map(len, ids))
        accuracy = sum(correct) / len(correct)
        result["steps"][str(step)] = {
            "accuracy": accuracy, "stderr": math.sqrt(accuracy * (1 - accuracy) / len(correct)),
            "mean_length": lengths / len(correct), "correct": correct,
            "seconds": round(time.perf_counter() - start + (kept["seconds"] if kept else 0.0), 1)}
        print(f"audit {run} step {step}: accuracy {accuracy:.3f} on {len(correct)} items "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
        if step != 0:
            base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
        (run / "audit.json").write_text(json.dumps(result) + "\n")  # after every step: an interrupted audit keeps them
    best = max(result["steps"], key=lambda s: (result["steps"][s]["accuracy"], -int(s)))
    result["true_peak_step"] = int(best)
    (run / "audit.json").write_text(json.dumps(result) + "\n")
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="a run folder made by trl_lab.scripts.study (study_run.json, checkpoint-*)")
    parser.add_argument("--steps", type=int, nargs="+", help="steps to score (default: 0 and every checkpoint)")
    parser.add_argument("--audit_size", type=int, default=512, help="audit questions (default 512)")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--extend", action="store_true",
                        help="keep the outcomes of the run's smaller audit.json and answer only the new questions")
    args = parser.parse_args(argv)
    return audit_run(args.run, steps=args.steps, audit_size=args.audit_size, batch_size=args.batch_size,
                     extend=args.extend)


if __name__ == "__main__":
    main()
