"""Train a GSM8K correctness reward model (Bradley-Terry, scalar head), then audit it.

    python examples/train_reward_model.py                      # embedded SmolLM2-135M + LoRA, local GSM8K, CPU
    python examples/train_reward_model.py --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --dataset_source hub \\
        --load_in_4bit --max_steps 1000                        # any hub model; 4-bit on a GPU
    python -m trl_lab.scripts.train_reward_model --config examples/configs/reward_model_gsm8k_cpu.yaml

The launcher in ``examples/`` makes the CPU config ``examples/configs/reward_model_gsm8k_cpu.yaml`` the default; the
command line overrides it. Flags: TRL's ``RewardConfig`` and ``ModelConfig`` (``--use_peft``, ``--lora_*``,
``--load_in_4bit``, …), trl_lab's :class:`~trl_lab.reward_models.training.RewardConfig` additions, and
:class:`RMScriptArguments` below (a ``trl.ScriptArguments``: ``--dataset_name`` is the hub dataset).

Steps:

1. GSM8K worked solutions (``openai/gsm8k`` from the hub, or ``--dataset_source local --dataset_path DIR``) become
   preference pairs (:mod:`trl_lab.data.gsm8k_pairs`): a correct solution against a plausible wrong one, split
   by a hash of the question so no question is in both splits. Split sizes and chosen-vs-rejected length
   statistics are printed and saved. Pairs on questions of ``--dataset_test_split`` (the RL jobs' held-out split)
   are refused unless ``--allow_heldout_overlap``; the saved RM records its training questions' fingerprints in
   ``OUTPUT_DIR/rm_train_questions.json``, which the RL job checks its held-out set against.
2. :class:`trl_lab.reward_models.training.RewardTrainer` trains the RM (LoRA with ``lora_task_type: SEQ_CLS`` trains the
   adapter and the score head) and saves it, with its tokenizer, to ``output_dir``; the ``learned_rm`` reward
   plugin loads that directory as it is (``{name: learned_rm, kwargs: {path: OUTPUT_DIR}}``).
3. The saved RM is audited on the held-out pairs (:func:`trl_lab.reward_models.gate.require_audit`): pair accuracy by
   rejected type, length-bias R² and the GSM8K probe battery (:func:`trl_lab.data.gsm8k_pairs.gsm8k_probe_items`). The verdict is cached in ``OUTPUT_DIR/rm_audit/`` under
   the RM's fingerprint, which is where the RL trainers' gate looks for it. ``OUTPUT_DIR/rm_summary.json``
   holds everything printed here; the exit status is 1 when the audit fails. The audit's pairs are saved in
   ``OUTPUT_DIR/rm_eval_pairs.jsonl``: ``trl-lab audit-rm OUTPUT_DIR --data OUTPUT_DIR/rm_eval_pairs.jsonl --out DIR``
   reruns the same audit from the command line.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trl
from trl import ModelConfig, get_peft_config, get_quantization_config

from trl_lab.data.gsm8k import GSM8KUnavailableError, gsm8k_solution_rows
from trl_lab.data.gsm8k_pairs import (REJECTED_TYPES, SHORTCUT_KINDS, checker_labelled_pairs, gsm8k_pair_splits,
                                      gsm8k_probe_items, length_stats, pair_split_of, sample_by_length,
                                      shortcut_negative_pairs, wrong_final_twin_pairs)
from trl_lab.data.leakage import overlapping_questions, refuse_heldout_overlap, write_trained_questions
from trl_lab.reward_models.gate import RewardModelAuditError, require_audit
from trl_lab.reward_models.training import RewardConfig, RewardTrainer, lora_on_last_layers_of
from trl_lab.scripts.utils import apply_model_config, parse_job_args

__all__ = ["EVAL_PAIRS_FILE", "RMScriptArguments", "build_pairs", "check_rl_heldout_leakage", "main", "parse_args", "parse_mix"]

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
#: The held-out pairs the job audits the RM on, saved beside it (one JSON pair per line).
EVAL_PAIRS_FILE = "rm_eval_pairs.jsonl"


@dataclass
class RMScriptArguments(trl.ScriptArguments):
    """Where the GSM8K solutions come from, how many pairs to train and audit on, and the rejected-type mix."""

    dataset_name: str | None = field(default="openai/gsm8k",
                                     metadata={"help": "Hub dataset id for dataset_source=hub."})
    dataset_config: str | None = field(default="main", metadata={"help": "Hub dataset configuration."})
    dataset_source: str = field(default="hub", metadata={"help": "hub (dataset_name) | local (folder of train.jsonl)",
                                                         "choices": ["hub", "local"]})
    dataset_path: str | None = field(default=None, metadata={"help": "For dataset_source=local: folder or .jsonl."})
    eval_fraction: float = field(default=0.1, metadata={"help": "Fraction of questions (by hash) held out."})
    train_pairs: int | None = field(default=None, metadata={"help": "Train on at most N pairs (seeded sample)."})
    eval_pairs: int | None = field(default=300, metadata={"help": "Audit on at most N held-out pairs (seeded)."})
    mix: list[str] | None = field(
        default=None,
        metadata={"help": f"Rejected-type weights 'type=weight' (types: {', '.join(REJECTED_TYPES)}); default equal."},
    )
    policy_samples: str | None = field(
        default=None,
        metadata={"help": "JSONL of policy samples {question, answer, completion} (e.g. a GRPO run's completions): "
                          "the GSM8K checker labels them and correct-vs-wrong samples of a question become extra "
                          "pairs (rejected_type policy_sample), split by the same question hash."},
    )
    policy_pairs_per_question: int = field(default=2, metadata={"help": "At most this many policy pairs a question."})
    policy_wrong_finals: int = field(
        default=0,
        metadata={"help": "Also train on each right policy sample against N copies of itself with a wrong final "
                          "answer (rejected_type policy_wrong_final: length-matched by construction), added to the "
                          "training split after any length sampling. The held-out pairs stay natural right-vs-wrong "
                          "samples, so the audit measures whether the RM generalises to real wrong answers."},
    )
    policy_shortcut_negatives: int = field(
        default=0,
        metadata={"help": "Also train on each right policy sample against N shortcut answers of distinct kinds "
                          "(--policy_shortcut_kinds) -- empty, a non-answer, cheerful or polished prose with a wrong "
                          "number, long-winded working with a wrong number (rejected_type shortcut_<kind>, none of "
                          "them the audit's probe strings) -- added to the training split after any length sampling, "
                          "like --policy_wrong_finals."},
    )
    policy_shortcut_kinds: list[str] = field(
        default_factory=lambda: list(SHORTCUT_KINDS),
        metadata={"help": f"The shortcut kinds --policy_shortcut_negatives deals from, in order (default all: "
                          f"{' '.join(SHORTCUT_KINDS)})."},
    )
    length_matched: bool = field(default=False, metadata={"help": "Sample pairs so chosen is longer in half of them."})
    solution_pairs: bool = field(
        default=True,
        metadata={"help": "Build pairs from GSM8K's worked solutions; false: train on --policy_samples only (a task "
                          "without worked solutions, e.g. a reasoning-gym task sampled by trl_lab.scripts."
                          "sample_completions)."},
    )
    train_chosen_longer: float | None = field(
        default=None,
        metadata={"help": "Sample the training pairs so chosen is the longer answer in this fraction of them: 0.9 "
                          "builds a deliberately length-biased RM, 0.5 a length-matched one. The held-out pairs are "
                          "then length-matched, so the audit measures correctness, not length."},
    )
    lora_last_n_layers: int | None = field(
        default=None,
        metadata={"help": "With --use_peft: put LoRA on the last N decoder layers only, so the backward pass stops "
                          "there (about 2x faster steps for SmolLM2 with N=8). None: every layer."},
    )
    allow_heldout_overlap: bool = field(
        default=False,
        metadata={"help": "Train even on questions of dataset_test_split (the RL jobs' held-out split); refused by "
                          "default, since the RM would carry those answers into RL."},
    )
    audit: bool = field(default=True, metadata={"help": "Audit the saved RM on the held-out pairs."})
    audit_min_margin: float = field(default=1.0, metadata={"help": "Minimum margin every probe item must reach."})


def parse_mix(items: list[str] | None) -> dict[str, float] | None:
    """``["arithmetic_slip=2", "wrong_final=1"]`` -> ``{"arithmetic_slip": 2.0, "wrong_final": 1.0}``."""
    if not items:
        return None
    mix = {}
    for item in items:
        name, sep, weight = item.partition("=")
        try:
            mix[name.strip()] = float(weight) if sep else 1.0
        except ValueError:
            raise ValueError(f"--mix: {item!r} is not 'type=weight' with a number weight") from None
    return mix


def parse_args(argv: list[str] | None = None, *, default_config: str | os.PathLike | None = None,
               ) -> tuple[RMScriptArguments, RewardConfig, ModelConfig]:
    return parse_job_args(RMScriptArguments, RewardConfig, ModelConfig, default_config=default_config, argv=argv)


def _sample(pairs: list[dict[str, Any]], n: int | None, seed: int) -> list[dict[str, Any]]:
    if n is None or n >= len(pairs):
        return pairs
    return random.Random(seed).sample(pairs, n)


def build_pairs(script_args: RMScriptArguments, seed: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """Train/eval pairs (sampled to the requested sizes) and their statistics."""
    if not script_args.solution_pairs and not script_args.policy_samples:
        raise ValueError("train_reward_model: --solution_pairs false leaves only --policy_samples, which is not set")
    if script_args.train_chosen_longer is not None and script_args.length_matched:
        raise ValueError("train_reward_model: --length_matched and --train_chosen_longer both set the length balance; "
                         "give one (--train_chosen_longer 0.5 is length-matched training pairs)")
    for flag in ("policy_wrong_finals", "policy_shortcut_negatives"):
        if getattr(script_args, flag) and not script_args.policy_samples:
            raise ValueError(f"train_reward_model: --{flag} needs --policy_samples (the right answers it pairs)")
    rows: list[dict[str, Any]] = []
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "eval": []}
    if script_args.solution_pairs:
        rows = gsm8k_solution_rows(script_args.dataset_source, script_args.dataset_train_split,
                                   path=script_args.dataset_path, hub_id=script_args.dataset_name,
                                   hub_config=script_args.dataset_config)
        splits = gsm8k_pair_splits(rows, eval_fraction=script_args.eval_fraction, seed=seed,
                                   mix=parse_mix(script_args.mix), length_matched=script_args.length_matched)
    policy_samples = 0
    if script_args.policy_samples:
        with open(script_args.policy_samples, encoding="utf-8") as f:
            samples = [json.loads(line) for line in f if line.strip()]
        policy_samples = len(samples)
        for pair in checker_labelled_pairs(samples, max_pairs_per_question=script_args.policy_pairs_per_question,
                                           seed=seed):
            splits[pair_split_of(pair["question"], script_args.eval_fraction)].append(pair)
    stats: dict[str, Any] = {"rows": len(rows), "policy_samples": policy_samples,
                             "pairs_built": {k: len(v) for k, v in splits.items()}}
    if script_args.train_chosen_longer is not None:
        sampled = {"train": sample_by_length(splits["train"], script_args.train_chosen_longer, seed=seed,
                                             n=script_args.train_pairs),
                   "eval": sample_by_length(splits["eval"], 0.5, seed=seed + 1, n=script_args.eval_pairs)}
    else:
        sampled = {"train": _sample(splits["train"], script_args.train_pairs, seed),
                   "eval": _sample(splits["eval"], script_args.eval_pairs, seed + 1)}
    if script_args.policy_wrong_finals:
        twins = [p for p in wrong_final_twin_pairs(samples, twins_per_sample=script_args.policy_wrong_finals, seed=seed)
                 if pair_split_of(p["question"], script_args.eval_fraction) == "train"]
        stats["pairs_built"]["train_wrong_final_twins"] = len(twins)
        sampled["train"] = sampled["train"] + twins
    if script_args.policy_shortcut_negatives:
        shortcuts = [p for p in shortcut_negative_pairs(samples, per_sample=script_args.policy_shortcut_negatives,
                                                        kinds=script_args.policy_shortcut_kinds, seed=seed)
                     if pair_split_of(p["question"], script_args.eval_fraction) == "train"]
        stats["pairs_built"]["train_shortcut_negatives"] = len(shortcuts)
        sampled["train"] = sampled["train"] + shortcuts
    for name, pairs in sampled.items():
        if not pairs:
            raise ValueError(f"train_reward_model: the {name} split has no pairs (eval_fraction="
                             f"{script_args.eval_fraction}, {len(rows)} GSM8K rows, {policy_samples} policy samples)")
        stats[name] = {"pairs": len(pairs), **length_stats(pairs).to_dict(),
                       "by_type": dict(sorted(Counter(p["rejected_type"] for p in pairs).items()))}
    overlap = {p["question"] for p in sampled["train"]} & {p["question"] for p in sampled["eval"]}
    if overlap:  # the hash split makes this impossible; checked because the audit's meaning depends on it
        raise AssertionError(f"train_reward_model: {len(overlap)} question(s) in both splits")
    return sampled, stats


def check_rl_heldout_leakage(script_args: RMScriptArguments, train_pairs: list[dict[str, Any]]) -> None:
    """Refuse (unless ``allow_heldout_overlap``) training pairs on questions of ``dataset_test_split``, the split the RL
    jobs hold out: an RM trained on them would teach the policy the held-out answers. A source without that split
    is said, not skipped silently. Policy samples alone (``--solution_pairs false``) come from another task than
    GSM8K: the RL job checks its own held-out set against the RM's recorded training questions instead."""
    if not script_args.solution_pairs:
        print("[rm] policy samples only: their questions are recorded in rm_train_questions.json, which the RL job "
              "checks its held-out set against", file=sys.stderr)
        return
    split = script_args.dataset_test_split
    try:
        heldout = gsm8k_solution_rows(script_args.dataset_source, split, path=script_args.dataset_path,
                                      hub_id=script_args.dataset_name, hub_config=script_args.dataset_config)
    except (FileNotFoundError, GSM8KUnavailableError) as exc:
        print(f"[rm] WARNING: the RL held-out split {split!r} could not be read ({exc}); the RM's training questions "
              "are not checked against it", file=sys.stderr)
        return
    refuse_heldout_overlap(
        overlapping_questions([p["question"] for p in train_pairs], [r["question"] for r in heldout]), len(heldout),
        train=f"the RM's training pairs (dataset_train_split {script_args.dataset_train_split!r})",
        heldout=f"dataset_test_split {split!r}, which the RL jobs hold out", allow=script_args.allow_heldout_overlap,
        fix="Train the RM on another split than the one RL holds out (--dataset_train_split)")


def main(argv: list[str] | None = None, *, default_config: str | os.PathLike | None = None) -> dict[str, Any]:
    """Build pairs, train, save, audit; returns the summary (also written to ``<output_dir>/rm_summary.json``)."""
    script_args, args, model_args = parse_args(argv, default_config=default_config)
    apply_model_config(model_args, args)  # 4-bit probed before the pairs are built, loading options for TRL
    pairs, stats = build_pairs(script_args, args.seed)
    check_rl_heldout_leakage(script_args, pairs["train"])
    print(f"[rm] pairs: train {stats['train']['pairs']} / eval {stats['eval']['pairs']} (built "
          f"{stats['pairs_built']['train']} / {stats['pairs_built']['eval']} from {stats['rows']} rows and "
          f"{stats['policy_samples']} policy samples); chosen "
          f"longer in {stats['train']['frac_chosen_longer']:.0%} of train pairs (chosen "
          f"{stats['train']['chosen_mean_chars']:.0f} vs rejected {stats['train']['rejected_mean_chars']:.0f} chars)")

    from datasets import Dataset

    train_dataset = Dataset.from_list([{k: p[k] for k in PAIR_COLUMNS} for p in pairs["train"]])
    peft_config = get_peft_config(model_args)
    if script_args.lora_last_n_layers is not None:
        peft_config = lora_on_last_layers_of(peft_config, model_args.model_name_or_path, script_args.lora_last_n_layers,
                                             trust_remote_code=args.trust_remote_code)
    trainer = RewardTrainer(model=model_args.model_name_or_path, args=args, train_dataset=train_dataset,
                            peft_config=peft_config,
                            quantization_config=get_quantization_config(model_args))
    start = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - start
    trainer.save_model(args.output_dir)
    if trainer.accelerator.is_main_process:  # what an RL job checks its held-out set against
        write_trained_questions(args.output_dir, [p["question"] for p in pairs["train"]])
        # the audit's pairs, so `trl-lab audit-rm OUTPUT_DIR --data OUTPUT_DIR/rm_eval_pairs.jsonl` reruns it
        with (Path(args.output_dir) / EVAL_PAIRS_FILE).open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(pair) + "\n" for pair in pairs["eval"])
    summary: dict[str, Any] = {"output_dir": args.output_dir, "model": model_args.model_name_or_path,
                               "steps": trainer.state.global_step, "train_seconds": round(train_seconds, 1),
                               "data": stats}
    if script_args.audit and trainer.accelerator.is_main_process:
        try:
            report = require_audit(args.output_dir, pairs["eval"], probes=gsm8k_probe_items(pairs["eval"]),
                                   min_margin=script_args.audit_min_margin)
        except RewardModelAuditError as err:
            report = err.report
        print(report.to_text())
        summary["audit"] = {k: v for k, v in report.to_dict().items()
                            if k not in ("chosen_scores", "rejected_scores")}
        summary["audit_passed"] = report.passed
    if trainer.accelerator.is_main_process:
        Path(args.output_dir, "rm_summary.json").write_text(json.dumps(summary, indent=2))
        print(f"[rm] saved to {args.output_dir} after {summary['steps']} steps in {train_seconds:.0f} s"
              + (f"; audit {'PASSED' if summary['audit_passed'] else 'FAILED'}" if "audit_passed" in summary else ""))
    return summary


if __name__ == "__main__":
    sys.exit(0 if main().get("audit_passed", True) else 1)
