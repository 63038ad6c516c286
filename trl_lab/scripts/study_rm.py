"""The study's learned reward models (issue 15): arms 5 and 7's correctness RMs (one trained with a deliberate length
bias, two not) and arm 6's sentiment RM.

    python -m trl_lab.scripts.study_rm                      # the correctness RMs, under outputs/study/rm/ (skips what exists)
    python -m trl_lab.scripts.study_rm --only length_biased --output_root outputs/study

Three stages, each kept on disk and reused (the RL arms that need an RM build it on first use):

1. ``samples.jsonl``: the embedded model's own answers to the study task's training questions
   (:mod:`trl_lab.scripts.sample_completions`, sampled at the RL arms' temperature and token budget), so the RM
   learns on what the policy writes at step 0.
2. Each RM: the checker pairs a question's right samples against its wrong ones
   (``train_reward_model --solution_pairs false --policy_samples``); ``--train_chosen_longer`` then keeps the
   training pairs so the right answer is the longer one in 90% of them (``length_biased``: preferring length is
   right nine times in ten) or in half (``length_matched``); ``twin_matched`` adds to length_matched's pairs two
   copies of every right training sample with its final answer made wrong (``--policy_wrong_finals``), so it has
   more than three times the pairs, all of them silent on length; ``shortcut_matched`` adds to those two shortcut
   answers (empty, non-answer, cheerful-wrong, polished-wrong; not the probes' strings) per right sample, and
   ``padded_shortcut_matched`` deals them from five kinds (plus long-winded working with a wrong number). All are
   audited on the same length-matched
   held-out pairs (natural samples only) and probes (``trl-lab audit-rm``'s checks), and the verdict is cached
   with the RM, where the RL gate looks.
3. ``gate.json``: what the RL trainers' gate (:func:`trl_lab.reward_models.gate.gate_reward_models`, no override)
   says of each RM -- refused with its failed checks, or let through -- recorded before any RL run uses it.

The sentiment RM (:data:`SENTIMENT_RM`, arm 6) is the seeds' "rewards cheer" model: :mod:`trl_lab.scripts.
train_sentiment_rm` on the embedded backbone (LoRA on its last 8 layers + score head), trained on upbeat vs flat
phrasings of the same sentence, so it knows tone and nothing of arithmetic. The gate does not audit it (a sentiment
reward is not a correctness RM: :func:`trl_lab.grpo.learned_reward_models`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from trl_lab.data.gsm8k_pairs import SHORTCUT_KINDS, SHORTCUT_KINDS_V1
from trl_lab.scripts.study_task import task_flags

__all__ = ["SENTIMENT_RM", "STUDY_RMS", "build_rm", "gate_verdict", "main", "rm_dir", "rm_train_argv", "sample_argv",
           "sentiment_rm_argv"]

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"

#: name -> the RM job's flags that make it: the fraction of training pairs in which the chosen (right) answer is the
#: longer one, and for ``twin_matched`` two wrong-final twins of every right sample of a training question
#: (``--policy_wrong_finals``: ~490 more pairs, length-matched by construction, where the natural pairs are ~200);
#: ``shortcut_matched`` adds to twin_matched's pairs two shortcut answers of every right training sample
#: (``--policy_shortcut_negatives``: empty, a non-answer, cheerful or polished prose with a wrong number), which
#: twin_matched's audit probes showed it had never learnt to rank below a right answer (the four kinds it was built
#: with, pinned so it rebuilds as committed); ``padded_shortcut_matched`` deals from all five kinds, adding long-winded
#: working with a wrong number, since shortcut_matched's audit still ranked a padded wrong answer above a concise
#: right one.
STUDY_RMS: dict[str, tuple[str, ...]] = {
    "length_biased": ("--train_chosen_longer", "0.9"),
    "length_matched": ("--train_chosen_longer", "0.5"),
    "twin_matched": ("--train_chosen_longer", "0.5", "--policy_wrong_finals", "2"),
    "shortcut_matched": ("--train_chosen_longer", "0.5", "--policy_wrong_finals", "2",
                         "--policy_shortcut_negatives", "2", "--policy_shortcut_kinds", *SHORTCUT_KINDS_V1),
    "padded_shortcut_matched": ("--train_chosen_longer", "0.5", "--policy_wrong_finals", "2",
                                "--policy_shortcut_negatives", "2", "--policy_shortcut_kinds", *SHORTCUT_KINDS),
}

#: Arm 6's reward model: tone only (its own job, no policy samples, no gate).
SENTIMENT_RM = "sentiment"

#: The sentiment RM job's flags: the embedded backbone + LoRA on the last 8 layers and a score head, 2 epochs of 512
#: generated pairs.
SENTIMENT_RM_FLAGS: tuple[str, ...] = (
    "--model_name_or_path", "smollm2-135m-instruct", "--dtype", "float32", "--use_peft", "true",
    "--lora_task_type", "SEQ_CLS", "--lora_r", "16", "--lora_alpha", "32", "--lora_dropout", "0.0",
    "--lora_target_modules", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    "--lora_last_n_layers", "8", "--train_pairs", "512", "--eval_pairs", "128", "--max_steps", "64",
    "--per_device_train_batch_size", "16", "--learning_rate", "3e-4", "--lr_scheduler_type", "cosine",
    "--warmup_steps", "4", "--logging_steps", "8", "--seed", "0")

#: The policy samples: questions, completions per question (the RL arms' temperature and budget).
SAMPLE_FLAGS: tuple[str, ...] = ("--train_size", "256", "--num_samples", "8", "--temperature", "0.8",
                                 "--max_new_tokens", "64", "--batch_size", "16", "--seed", "0")

#: The RM job's flags over its CPU config (embedded SmolLM2-135M, LoRA on the last 8 layers + score head).
RM_FLAGS: tuple[str, ...] = ("--solution_pairs", "false", "--policy_pairs_per_question", "4",
                             "--eval_fraction", "0.2", "--train_pairs", "640", "--eval_pairs", "160",
                             "--max_length", "256", "--num_train_epochs", "2", "--seed", "0")


def rm_dir(name: str, output_root: str | Path = "outputs/study") -> Path:
    if name not in STUDY_RMS and name != SENTIMENT_RM:
        raise ValueError(f"study_rm: unknown reward model {name!r}; the study's are "
                         f"{sorted([*STUDY_RMS, SENTIMENT_RM])}")
    return Path(output_root) / "rm" / name


def sample_argv(output_root: str | Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [*task_flags(), *SAMPLE_FLAGS, "--output", str(Path(output_root) / "rm" / "samples.jsonl"), *extra]


def rm_train_argv(name: str, output_root: str | Path, extra: tuple[str, ...] = ()) -> list[str]:
    return ["--config", str(CONFIGS / "reward_model_gsm8k_cpu.yaml"), *RM_FLAGS,
            "--policy_samples", str(Path(output_root) / "rm" / "samples.jsonl"),
            *STUDY_RMS[name], "--output_dir", str(rm_dir(name, output_root)), *extra]


def sentiment_rm_argv(output_root: str | Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [*SENTIMENT_RM_FLAGS, "--output_dir", str(rm_dir(SENTIMENT_RM, output_root)), *extra]


def gate_verdict(path: str | Path) -> dict[str, Any]:
    """What the RL gate says of the RM at ``path`` without an override: ``{"refused": bool, "message": str}``."""
    from trl_lab.reward_models.gate import RewardModelAuditError, gate_reward_models

    try:
        reports = gate_reward_models([("learned_rm", SimpleNamespace(source=str(path)))])
    except (RewardModelAuditError, ValueError) as err:
        return {"refused": True, "message": str(err)}
    report = reports[str(path)]
    return {"refused": False, "message": f"passed its cached audit (accuracy {report.accuracy:.3f}, length R^2 "
                                         f"{report.length_r2:.3f})"}


def build_rm(name: str, output_root: str | Path = "outputs/study", *, sample_extra: tuple[str, ...] = (),
             rm_extra: tuple[str, ...] = ()) -> tuple[Path, dict[str, Any]]:
    """Samples (once), then the RM ``name`` and its audit (unless ``rm_summary.json`` is there); returns its folder and
    the gate's verdict on it (:func:`gate_verdict`, also recorded in ``rm/gate.json``). ``*_extra``: flags appended to
    the sampling and RM jobs (the tests make them tiny)."""
    from trl_lab.scripts import sample_completions, train_reward_model

    root = Path(output_root)
    if name == SENTIMENT_RM:
        return _build_sentiment_rm(root, rm_extra)
    samples = root / "rm" / "samples.jsonl"
    if not samples.is_file():
        argv = sample_argv(root, sample_extra)
        print("[study_rm] python -m trl_lab.scripts.sample_completions " + shlex.join(argv), flush=True)
        summary = sample_completions.main(argv)
        (root / "rm" / "samples.json").write_text(json.dumps({"argv": argv, **summary}, indent=2) + "\n")
    out = rm_dir(name, root)
    if not (out / "rm_summary.json").is_file():
        argv = rm_train_argv(name, root, rm_extra)
        print("[study_rm] python -m trl_lab.scripts.train_reward_model " + shlex.join(argv), flush=True)
        train_reward_model.main(argv)
        (out / "rm_command.txt").write_text("python -m trl_lab.scripts.train_reward_model " + shlex.join(argv) + "\n")
    gate_file = root / "rm" / "gate.json"
    gates = json.loads(gate_file.read_text()) if gate_file.is_file() else {}
    gates[name] = gate_verdict(out)
    gate_file.write_text(json.dumps(gates, indent=2) + "\n")
    print(f"[study_rm] {name}: the RL gate {'REFUSES' if gates[name]['refused'] else 'accepts'} it: "
          f"{gates[name]['message']}", flush=True)
    return out, gates[name]


def _build_sentiment_rm(root: Path, extra: tuple[str, ...]) -> tuple[Path, dict[str, Any]]:
    from trl_lab.scripts import train_sentiment_rm

    out = rm_dir(SENTIMENT_RM, root)
    if not (out / train_sentiment_rm.SUMMARY_FILE).is_file():
        argv = sentiment_rm_argv(root, extra)
        print("[study_rm] python -m trl_lab.scripts.train_sentiment_rm " + shlex.join(argv), flush=True)
        train_sentiment_rm.main(argv)
        (out / "rm_command.txt").write_text("python -m trl_lab.scripts.train_sentiment_rm " + shlex.join(argv) + "\n")
    summary = json.loads((out / train_sentiment_rm.SUMMARY_FILE).read_text())
    verdict = {"refused": False, "gated": False,
               "message": f"not gated (tone, not correctness); held-out pair accuracy {summary['accuracy']:.3f}, "
                          f"padding margin {summary['padding_margin']:+.3f}"}
    print(f"[study_rm] {SENTIMENT_RM}: {verdict['message']}", flush=True)
    return out, verdict


def main(argv: list[str] | None = None) -> list[tuple[Path, dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted([*STUDY_RMS, SENTIMENT_RM]), nargs="+",
                        help="build only these (default: the preference RMs)")
    parser.add_argument("--output_root", default="outputs/study")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return [build_rm(name, args.output_root) for name in (args.only or list(STUDY_RMS))]


if __name__ == "__main__":
    main()
