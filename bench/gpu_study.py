"""Study arms 1 and 3 on a lent GPU: more seeds, larger batches, a larger held-out set (issue 15).

    bash bench/gpu_study.sh --run                      # on the device machine, after the two staging calls
    python bench/gpu_study.py --dry_run --task_dir T   # here: print the commands it would run
    python bench/gpu_study.py --unpack gpu_study.tar.gz --into docs/results/study_gpu   # here, with what came back

Each run is the study runner itself (``python -m trl_lab.scripts.study --arm A --seed S``) on the task exported
to ``--task_dir`` (:func:`trl_lab.scripts.study_task.export_task`; the device has no reasoning-gym), with
:data:`GPU_FLAGS` on top of the arm's flags: bf16, 4x the completions per step for both arms alike (GRPO 8 prompts
x 4 completions, PPO 32 x 1: equal generated tokens still) and 512 held-out questions. The runs go ``--parallel``
at a time on the one GPU (a 135M model leaves it mostly idle); any still running at ``--deadline_s`` are stopped
and reported as such, so that a call always returns its figures. Then :mod:`trl_lab.scripts.study_summary` reads the
runs, and the run folders -- without adapters -- are packed into ``<out>/gpu_study.tar.gz`` beside
``gpu_study.json`` (per run: command, exit status, wall time) and ``summary.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

#: On top of each arm's flags (the study's budget of 50 steps and its cadence are kept).
GPU_FLAGS: tuple[str, ...] = (
    "--bf16", "true", "--per_device_train_batch_size", "16", "--gradient_accumulation_steps", "2",
    "--heldout_size", "512", "--heldout_batch_size", "64", "--heldout_kl_items", "64",
)
ARMS = ("healthy", "ppo")
SEEDS = tuple(range(42, 48))
#: What is packed from a run folder: the files the study summary reads and the reports (not adapters or checkpoints).
PACKED = ("metrics.jsonl", "goodhart.json", "study_run.json", "report.json", "report.png")


def commands(arms: tuple[str, ...] | list[str], seeds: tuple[int, ...] | list[int], task_dir: str, output_root: str,
             extra: tuple[str, ...] = GPU_FLAGS) -> list[tuple[str, int, list[str]]]:
    """``(arm, seed, argv)`` of every run, the arms interleaved so that a deadline cuts seeds, not a whole arm."""
    return [(arm, seed, [sys.executable, "-m", "trl_lab.scripts.study", "--arm", arm, "--seed", str(seed),
                         "--output_root", output_root, "--audit_size", "0", "--task_dir", task_dir, *extra])
            for seed in seeds for arm in arms]


def launch(plan: list[tuple[str, int, list[str]]], parallel: int, deadline_s: float, log_dir: Path) -> list[dict]:
    """Run ``plan`` ``parallel`` at a time; stop what is still running at ``deadline_s``. One record per run."""
    log_dir.mkdir(parents=True, exist_ok=True)
    start, queue, running, done = time.monotonic(), list(plan), [], []
    while queue or running:
        while queue and len(running) < parallel and time.monotonic() - start < deadline_s:
            arm, seed, argv = queue.pop(0)
            log = open(log_dir / f"{arm}_{seed}.log", "w")
            running.append((arm, seed, argv, subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT), log,
                            time.monotonic()))
        if time.monotonic() - start >= deadline_s:
            done += [{"arm": a, "seed": s, "argv": v, "status": "not started"} for a, s, v in queue]
            queue = []
            for arm, seed, argv, proc, log, t0 in running:
                proc.kill()
                proc.wait()
                log.close()
                done.append({"arm": arm, "seed": seed, "argv": argv, "status": "stopped at the deadline",
                             "wall_s": round(time.monotonic() - t0, 1)})
            running = []
            break
        for item in list(running):
            arm, seed, argv, proc, log, t0 = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                done.append({"arm": arm, "seed": seed, "argv": argv, "wall_s": round(time.monotonic() - t0, 1),
                             "status": "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"})
                print(f"[gpu_study] {arm} seed {seed}: {done[-1]['status']} in {done[-1]['wall_s']} s", flush=True)
        time.sleep(1)
    return done


def pack(output_root: Path, tar_path: Path) -> list[str]:
    """The run folders' :data:`PACKED` files and held-out answers (plus the summary's study.json and figures) into
    ``tar_path``; returns the names packed."""
    names = []
    with tarfile.open(tar_path, "w:gz") as tar:
        for path in sorted(output_root.rglob("*")):
            rel = path.relative_to(output_root)
            if not path.is_file() or any(p.startswith("checkpoint-") or p == "goodhart_best" for p in rel.parts):
                continue
            keep = (path.name in PACKED or (rel.parts[-2:-1] == ("heldout",) and path.suffix == ".jsonl")
                    or len(rel.parts) <= 2 and path.suffix in (".json", ".png", ".md") or rel.parts[0] == "logs")
            if keep and path.name not in ("adapter_config.json", "tokenizer.json", "tokenizer_config.json"):
                tar.add(path, arcname=str(rel))
                names.append(str(rel))
    return names


def unpack(tar_path: str | Path, into: str | Path) -> list[str]:
    """Extract a :func:`pack` archive into ``into`` (names are checked: no absolute or parent paths)."""
    into = Path(into)
    with tarfile.open(tar_path, "r:gz") as tar:
        members = tar.getmembers()
        for m in members:
            if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                raise ValueError(f"gpu_study: refusing archive member {m.name!r}")
        tar.extractall(into, filter="data")
    return [m.name for m in members if m.isfile()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--task_dir", help="an export of the study task (python -m trl_lab.scripts.study_task --export)")
    parser.add_argument("--output_root", default="outputs/study_gpu")
    parser.add_argument("--out", default="outputs/gpu_study_out", help="where the archive, JSON and summary go")
    parser.add_argument("--parallel", type=int, default=6)
    parser.add_argument("--deadline_s", type=float, default=420.0, help="stop runs still going after this long")
    parser.add_argument("--dry_run", action="store_true")
    parser.add_argument("--unpack", metavar="TAR", help="extract a returned archive (with --into) and stop")
    parser.add_argument("--into", default="docs/results/study_gpu")
    args, extra = parser.parse_known_args(argv)
    if args.unpack:
        names = unpack(args.unpack, args.into)
        print(f"gpu_study: {len(names)} files into {args.into}")
        return {"unpacked": names}
    if not args.task_dir:
        parser.error("--task_dir is required (the exported study task)")
    plan = commands(args.arms, args.seeds, args.task_dir, args.output_root, (*GPU_FLAGS, *extra))
    if args.dry_run:
        for _, _, cmd in plan:
            print(" ".join(cmd))
        return {"plan": plan}
    import torch

    from trl_lab.embedded_model import resolve_model_path

    t0 = time.monotonic()
    model = resolve_model_path("smollm2-135m-instruct")  # convert the GGUF file once, before the runs share it
    env = {"cuda": torch.cuda.is_available(), "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available()
           else None, "torch": torch.__version__, "model": model, "convert_s": round(time.monotonic() - t0, 1)}
    print(f"[gpu_study] {env}", flush=True)
    root = Path(args.output_root)
    runs = launch(plan, args.parallel, args.deadline_s, root / "logs")
    summary = io.StringIO()
    try:
        from trl_lab.scripts.study_summary import main as summarise

        with contextlib.redirect_stdout(summary):
            summarise([str(root)])
    except Exception as exc:  # the runs' own files still come back
        summary.write(f"study_summary failed: {type(exc).__name__}: {exc}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(summary.getvalue())
    packed = pack(root, out / "gpu_study.tar.gz")
    report = {"environment": env, "gpu_flags": list(GPU_FLAGS), "extra": extra, "runs": runs,
              "wall_s": round(time.monotonic() - t0, 1), "packed": len(packed),
              "command": "bash bench/gpu_study.sh --run " + " ".join(argv if argv is not None else sys.argv[1:])}
    (out / "gpu_study.json").write_text(json.dumps(report, indent=2) + "\n")
    print(summary.getvalue())
    print(f"[gpu_study] {sum(r['status'] == 'ok' for r in runs)}/{len(runs)} runs ok in {report['wall_s']} s; "
          f"{len(packed)} files in {out / 'gpu_study.tar.gz'}", flush=True)
    return report


if __name__ == "__main__":
    report = main()
    sys.exit(0 if all(r["status"] == "ok" for r in report.get("runs", [])) else 1)
