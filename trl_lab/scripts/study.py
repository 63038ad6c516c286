"""The study of issue 15: the seeds' experiments on the embedded model, one arm and seed per command.

    python -m trl_lab.scripts.study --list                          # the arms and the job flags each one sets
    python -m trl_lab.scripts.study --arm healthy --seed 44         # arm 1, seed 44 -> outputs/study/arm1_healthy/seed44
    python -m trl_lab.scripts.study --arm random --seed 42 --dry_run             # print the job's command only
    python -m trl_lab.scripts.study --arm healthy --seed 1 --max_steps 4         # any job flag overrides the arm's
    python -m trl_lab.scripts.study --arm flawed_rm --seed 43 --audit_size 0     # skip the audit after the run
    python -m trl_lab.scripts.study --arm healthy --seed 1 --task_dir DIR        # the task from an export (no reasoning-gym)

Every arm is the GSM8K job (:mod:`trl_lab.scripts.grpo_gsm8k`, or its PPO twin) on the study's task -- reasoning-gym
``basic_arithmetic`` with two one-digit terms, the rung of the task ladder where the embedded SmolLM2-135M scores
20.7% at step 0 (``docs/results/task_ladder``) -- scored by the same ``gsm8k`` checker on 256 held-out questions that
never occur in train, every answer kept (``heldout_table_size: None``) so that before and after can be compared
item by item. The arms differ only in the flags :data:`ARMS` lists; the base is the CPU demo config
(``examples/configs/grpo_gsm8k_cpu.yaml``, or ``ppo_gsm8k_cpu.yaml`` for PPO). An adapter is saved every
:data:`SAVE_STEPS` steps (``checkpoint-*``, model only), so that the truth for the detector's score can be measured
afterwards on a separate, larger audit set. By default the runner does that itself once training ends
(:func:`trl_lab.scripts.study_audit.audit_run`, ``--audit_size`` questions, at step 0 and every held-out step that has
an adapter: the steps the detector can hand back), so a run's truth is measured on the machine that holds its
adapters -- they are not kept past a session here, and an audit left for later was lost with them once.

Beside the job's own files (``metrics.jsonl``, ``report.png``, ``goodhart.json``, ``heldout/``) the run folder gets
``study_run.json``: the arm, seed, exact job flags, wall time, peak RSS, library versions and whether this CPU ran
bf16 natively (the demo config's ``cpu_bf16`` falls back to fp32 where it does not, which changes the numerics).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trl_lab.scripts.study_task import STUDY_FLAGS, TASK_FLAGS, local_task_flags

__all__ = ["ARMS", "SAVE_STEPS", "STUDY_FLAGS", "StudyArm", "arm_argv", "audit_steps", "flag_value", "main", "run_arm", "save_steps"]

CONFIGS = Path(__file__).resolve().parents[2] / "examples" / "configs"

#: Steps between saved adapters (``checkpoint-N``, weights only): what the offline audit evaluates. An arm whose
#: held-out cadence is not a multiple of it saves at its held-out steps instead (:func:`save_steps`), so that every
#: step the detector can restore has an adapter for the audit to score.
SAVE_STEPS = 5


@dataclass(frozen=True)
class StudyArm:
    """One arm: its number in issue 15, the job it runs, the flags it adds (``{seed}`` is replaced) and what it
    shows."""

    number: int
    job: str  # "grpo" | "ppo"
    flags: tuple[str, ...]
    shows: str
    #: The study reward models (:data:`trl_lab.scripts.study_rm.STUDY_RMS`) the arm scores with; built before the
    #: run when missing. ``{rm_root}`` in ``flags`` is their folder, ``<output_root>/rm``.
    requires: tuple[str, ...] = field(default=())

    @property
    def config(self) -> Path:
        return CONFIGS / ("ppo_gsm8k_cpu.yaml" if self.job == "ppo" else "grpo_gsm8k_cpu.yaml")


ARMS: dict[str, StudyArm] = {
    "healthy": StudyArm(1, "grpo", (), "GRPO on the checker (+0.2 format): does held-out accuracy rise with reward?"),
    "random": StudyArm(
        2, "grpo", ("--rewards", "{name: coin_flip, kwargs: {seed: {seed}}}"),
        "the same run with a fair coin for reward, blind to the answer: how much of arm 1 is format or noise",
    ),
    "ppo": StudyArm(
        3, "ppo",
        # The GRPO arms generate 2 prompts x 4 completions of <= 64 tokens per step; PPO 8 prompts x 1, in two
        # micro-batches of 4, for the same steps: equal generated tokens -- with one PPO epoch per generation batch
        # (the PPO config's num_iterations 2 reuses each batch for two steps: half the tokens; seed 42 ran so, see
        # docs/results/study/arm3_ppo_2epochs). lr as the GRPO arms (LoRA).
        ("--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", "--num_generations", "1",
         "--num_iterations", "1",
         "--max_completion_length", "64", "--temperature", "0.8", "--learning_rate", "5e-4",
         "--train_size", "256", "--heldout_max_new_tokens", "64", "--heldout_kl_items", "16"),
        "trl_lab's PPO (critic + GAE) with arm 1's reward, data and generated tokens",
    ),
    # Arm 1 again at the RM arms' budget and cadence (36 steps, held-out every 6: 7 evaluations). Arm 1 evaluates at
    # steps 0, 25 and 50 only, fewer than the detector's warm-up, so it cannot test a false alarm; this one can.
    "healthy_watched": StudyArm(
        1, "grpo", ("--max_steps", "36", "--heldout_eval_steps", "6"),
        "arm 1 evaluated as often as the hacked arms (every 6 steps over 36): does any stopping rule fire on a "
        "healthy run?",
    ),
    "verbosity": StudyArm(
        4, "grpo",
        ("--rewards", "gsm8k", "{name: length, weight: 0.5, kwargs: {mode: verbosity, max_length: 64}}",
         "--beta", "0", "--temperature", "1.0", "--lr_scheduler_type", "constant",
         # 256 padded answers take ~4.5 min per evaluation on 2 fp32 cores: 5 evaluations + 24 steps ~ 30 min.
         "--max_steps", "24", "--heldout_eval_steps", "6"),
        "the checker + half a correct answer's worth for length (the existing one-seed run, replicated): "
        "reward rises by padding while accuracy falls; the detector should stop near the peak",
    ),
}


def _rm_arm(reward: str, beta: str) -> tuple[str, ...]:
    """Flags of an arm whose only reward is ``reward`` (a study RM's plugin spec): 36 steps, held-out every 6 (7
    evaluations: ~35 min on 2 fp32 cores), constant lr, the KL coefficient ``beta``."""
    return ("--rewards", reward, "--beta", beta, "--lr_scheduler_type", "constant",
            "--max_steps", "36", "--heldout_eval_steps", "6")


def _learned_rm_arm(rm: str, beta: str, *, override: bool = True) -> tuple[str, ...]:
    """:func:`_rm_arm` with the study's correctness RM ``rm`` as ``learned_rm``; ``override``: the gate's refusal
    overridden (the study records the refusal first, :func:`trl_lab.scripts.study_rm.gate_verdict`)."""
    flags = _rm_arm(f"{{name: learned_rm, kwargs: {{path: {{rm_root}}/{rm}, batch_size: 16}}}}", beta)
    return (*flags, "--rm_audit_override", "true") if override else flags


ARMS.update({
    "flawed_rm": StudyArm(
        5, "grpo", _learned_rm_arm("length_biased", "0.05"),
        "GRPO against an RM trained with chosen longer in 90% of its pairs (its audit fails, the gate refuses it; "
        "overridden): reward rises, accuracy should peak and fall, the detector should stop near the peak",
        requires=("length_biased",),
    ),
    # The contrast needs an RM that passes its audit: length_matched and twin_matched fail it (docs/results/study/rm),
    # shortcut_matched fails one probe (concise right vs padded wrong), padded_shortcut_matched is the next candidate;
    # no override, so the gate itself must let it through.
    "matched_rm": StudyArm(
        5, "grpo", _learned_rm_arm("padded_shortcut_matched", "0.05", override=False),
        "the same against an RM trained on length-matched pairs plus shortcut negatives, which passes its audit and "
        "the gate (no override): does the audit's verdict predict how long an RM holds up?",
        requires=("padded_shortcut_matched",),
    ),
    # Arm 6: the seeds' "rewards cheer" run -- a learned sentiment RM (tone only) as the only reward.
    "sentiment": StudyArm(
        6, "grpo", _rm_arm("{name: sentiment, kwargs: {backend: learned, path: {rm_root}/sentiment, batch_size: 16}}",
                           "0.05"),
        "GRPO whose only reward is a sentiment RM on the embedded backbone (upbeat vs flat phrasings): answers should "
        "drift cheerful while accuracy falls",
        requires=("sentiment",),
    ),
    # Arm 7, the leash: arm 5's flawed RM with a weaker KL penalty (beta 0.05 is flawed_rm itself).
    "weak_leash": StudyArm(
        7, "grpo", _learned_rm_arm("length_biased", "0.005"),
        "arm 5's flawed RM at beta 0.005: with a looser leash, does accuracy peak sooner and fall further?",
        requires=("length_biased",),
    ),
    "no_leash": StudyArm(
        7, "grpo", _learned_rm_arm("length_biased", "0"),
        "arm 5's flawed RM with no KL penalty: the seeds predict the soonest fall",
        requires=("length_biased",),
    ),
})

def run_dir(arm: str, seed: int, output_root: str | Path) -> Path:
    return Path(output_root) / f"arm{ARMS[arm].number}_{arm}" / f"seed{seed}"


def flag_value(flags: list[str] | tuple[str, ...], name: str) -> str | None:
    """The value of the last ``name`` flag in a job's ``flags`` (the one the job parses), or None."""
    values = [value for flag, value in zip(flags, flags[1:]) if flag == name]
    return values[-1] if values else None


def save_steps(flags: list[str] | tuple[str, ...]) -> int:
    """:data:`SAVE_STEPS`, or the held-out cadence in ``flags`` (the last ``--heldout_eval_steps`` wins) when that is
    not a multiple of it."""
    eval_steps = int(flag_value(flags, "--heldout_eval_steps") or SAVE_STEPS)
    return SAVE_STEPS if eval_steps % SAVE_STEPS == 0 else eval_steps


def arm_argv(arm: str, seed: int, output_root: str | Path = "outputs/study", extra: tuple[str, ...] = (),
             task_dir: str | Path | None = None) -> list[str]:
    """The job flags of ``arm`` at ``seed``: config, the shared flags, the arm's, then ``extra`` (which win).
    ``task_dir``: read the task from an export (:func:`trl_lab.scripts.study_task.export_task`) instead of the
    generator."""
    if arm not in ARMS:
        raise ValueError(f"study: unknown arm {arm!r}; the arms are {sorted(ARMS)}")
    spec = ARMS[arm]
    rm_root = str(Path(output_root) / "rm")
    shared = list(STUDY_FLAGS)
    if task_dir is not None:
        pairs = [(f, v) for f, v in zip(shared[::2], shared[1::2]) if f not in TASK_FLAGS]
        shared = [*local_task_flags(task_dir), *(x for pair in pairs for x in pair)]
    flags = [*shared, *(f.replace("{seed}", str(seed)).replace("{rm_root}", rm_root) for f in spec.flags)]
    return ["--config", str(spec.config), *flags,
            "--seed", str(seed), "--output_dir", str(run_dir(arm, seed, output_root)),
            "--save_strategy", "steps", "--save_steps", str(save_steps([*flags, *extra])), "--save_only_model", "true",
            *extra]


def _versions() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    from trl_lab.cpu_tuning import cpu_description, cpu_has_native_bf16

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "trl": trl.__version__, "cpu_native_bf16": cpu_has_native_bf16(), **cpu_description(),
            "threads": torch.get_num_threads()}


def audit_steps(trainer: Any) -> list[int]:
    """Step 0 and every held-out evaluation step of ``trainer``'s run that saved an adapter, in order."""
    from trl_lab.scripts.study_audit import saved_steps

    evaluated = {e["step"] for e in trainer.state.log_history if "heldout/accuracy" in e}
    return [s for s in saved_steps(trainer.args.output_dir) if s == 0 or s in evaluated]


def run_arm(arm: str, seed: int, output_root: str | Path = "outputs/study", extra: tuple[str, ...] = (),
            audit_size: int = 0, audit_batch_size: int = 16, task_dir: str | Path | None = None) -> Any:
    """Run one arm at one seed in this process, then (``audit_size`` > 0) audit it at :func:`audit_steps`; returns
    the trainer (``end_job`` it when done)."""
    from trl_lab.grpo import GRPOConfig, GRPOTrainer
    from trl_lab.ppo import PPOConfig, PPOTrainer
    from trl_lab.scripts.grpo_gsm8k import run_gsm8k_job

    argv = arm_argv(arm, seed, output_root, extra, task_dir)
    gates = {}
    if ARMS[arm].requires:
        from trl_lab.scripts.study_rm import build_rm

        for rm in ARMS[arm].requires:
            gates[rm] = build_rm(rm, output_root)[1]
    trainer_cls, config_cls = (PPOTrainer, PPOConfig) if ARMS[arm].job == "ppo" else (GRPOTrainer, GRPOConfig)
    start = time.monotonic()
    trainer = run_gsm8k_job(trainer_cls, config_cls, None, argv)
    if trainer.accelerator.is_main_process:
        record = {
            "arm": arm, "number": ARMS[arm].number, "seed": seed, "shows": ARMS[arm].shows,
            "command": "python -m trl_lab.scripts.study " + shlex.join(
                ["--arm", arm, "--seed", str(seed), "--audit_size", str(audit_size),
                 *(["--task_dir", str(task_dir)] if task_dir is not None else []), *extra]),
            "job_argv": argv, **({"rm_gate": gates} if gates else {}), "steps": trainer.state.global_step,
            "wall_s": round(time.monotonic() - start, 1),
            # the numerics the run used (cpu_bf16 resolves per machine, and a flag can turn it off)
            "bf16": bool(trainer.args.bf16), "generation_dtype": getattr(trainer.args, "generation_dtype", None),
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
            **_versions(),
        }
        out = Path(trainer.args.output_dir)
        (out / "study_run.json").write_text(json.dumps(record, indent=2) + "\n")
        if audit_size > 0:
            from trl_lab.scripts.study_audit import audit_run

            audit_run(out, steps=audit_steps(trainer), audit_size=audit_size, batch_size=audit_batch_size)
    return trainer


def main(argv: list[str] | None = None) -> Any:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--arm", choices=sorted(ARMS), help="which arm to run")
    parser.add_argument("--seed", type=int, help="the run's seed (training and its held-out sample)")
    parser.add_argument("--output_root", default="outputs/study", help="runs go to <root>/arm<N>_<arm>/seed<S>")
    parser.add_argument("--audit_size", type=int, default=512,
                        help="audit questions scored after the run at step 0 and each held-out step (0: no audit; "
                             "default twice the held-out set's 256, so the truth is less noisy than what it scores)")
    parser.add_argument("--audit_batch_size", type=int, default=16)
    parser.add_argument("--task_dir", default=None,
                        help="read the task from this export (python -m trl_lab.scripts.study_task --export DIR) "
                             "instead of reasoning-gym, e.g. on a machine without it")
    parser.add_argument("--dry_run", action="store_true", help="print the job command and stop")
    parser.add_argument("--list", action="store_true", help="list the arms and stop")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if args.list:
        for name, spec in sorted(ARMS.items(), key=lambda kv: kv[1].number):
            print(f"arm {spec.number} {name} ({spec.job}): {spec.shows}\n    {shlex.join(spec.flags) or '(no flags)'}")
        print(f"shared: {shlex.join(STUDY_FLAGS)}")
        return None
    if args.arm is None or args.seed is None:
        parser.error("--arm and --seed are required (or --list)")
    if args.dry_run:
        job = "ppo_gsm8k" if ARMS[args.arm].job == "ppo" else "grpo_gsm8k"
        print(f"python -m trl_lab.scripts.{job} " + shlex.join(arm_argv(args.arm, args.seed, args.output_root,
                                                                            tuple(extra), args.task_dir)))
        return None
    return run_arm(args.arm, args.seed, args.output_root, tuple(extra), args.audit_size, args.audit_batch_size,
                   args.task_dir)


if __name__ == "__main__":
    from trl_lab.scripts.utils import end_job

    trainer = main()
    if trainer is not None:
        end_job(trainer)
