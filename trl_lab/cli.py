"""The ``trl-lab`` command.

    trl-lab rewards                      list the reward plugins this environment can use
    trl-lab model-path smollm2-135m-instruct   print (converting once if needed) an embedded model's checkpoint
    trl-lab report OUTPUT_DIR            write OUTPUT_DIR/report.png and report.json from the run's log
    trl-lab report RUN_A RUN_B ... --out overlay.png   a report per run, plus the runs overlaid
    trl-lab audit-rm RM_DIR --data train.jsonl --out DIR   audit a reward model (exit status 1 when it fails)
    trl-lab make-task chain_sum DIR --config '{...}'        a reasoning-gym task as GSM8K-format train/test jsonl
"""

from __future__ import annotations

import argparse
import sys


def _rewards(args: argparse.Namespace) -> int:
    from trl_lab.rewards.registry import describe_rewards

    for name, origin in describe_rewards():
        print(f"{name:24s} {origin}")
    return 0


def _model_path(args: argparse.Namespace) -> int:
    from trl_lab.embedded_model import resolve_model_path

    print(resolve_model_path(args.name, cache_dir=args.cache_dir))
    return 0


def _report(args: argparse.Namespace) -> int:
    import json

    from trl_lab.report import write_overlay_report, write_report

    for run in args.output_dir:
        report = write_report(run)
        summary = {k: v for k, v in report.summary.items() if k != "goodhart"}
        print(f"{report.png}\n{report.json}\n{json.dumps(summary, indent=2)}")
    if len(args.output_dir) > 1:
        write_overlay_report(args.output_dir, args.labels, args.out)
        print(args.out)
    return 0


def _audit_rm(args: argparse.Namespace) -> int:
    from trl_lab.data.gsm8k import build_prompt
    from trl_lab.data.gsm8k_pairs import gsm8k_probe_items, read_pairs
    from trl_lab.reward_models.audit import as_probes, audit_reward_model, load_probes
    from trl_lab.reward_models.loading import LoadOptions
    from trl_lab.reward_models.scorer import ScalarRewardModel

    try:
        pairs = read_pairs(args.data, split=args.split, eval_fraction=args.eval_fraction, limit=args.limit,
                           seed=args.seed)
    except ValueError as exc:
        raise SystemExit(f"trl-lab audit-rm: --data: {exc}") from exc
    probes = [] if args.no_default_probes else as_probes(gsm8k_probe_items(pairs))
    if args.probes:
        probes += load_probes(args.probes, build_prompt=build_prompt)
    scorer = ScalarRewardModel.load(args.path, options=LoadOptions(device=args.device))
    report = audit_reward_model(scorer, pairs, probes=probes, min_margin=args.min_margin,
                                length_r2_threshold=args.length_r2_threshold, min_accuracy=args.min_accuracy)
    paths = report.write(args.out)
    print(report.to_text() + "\n".join(str(p) for p in paths.values()))
    return 0 if report.passed else 1


def _make_task(args: argparse.Namespace) -> int:
    import json

    from trl_lab.data.reasoning_gym_tasks import write_task_jsonl

    try:
        config = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"trl-lab make-task: --config is not JSON ({exc}): {args.config!r}") from exc
    if not isinstance(config, dict):
        raise SystemExit(f"trl-lab make-task: --config must be a JSON object, got {args.config!r}")
    info = write_task_jsonl(args.task, args.out_dir, train_size=args.train_size, test_size=args.test_size,
                            seed=args.seed, **config)
    print(json.dumps(info, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trl-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rewards", help="list available reward plugins").set_defaults(func=_rewards)
    p = sub.add_parser("model-path", help="resolve an embedded model name to its cached checkpoint")
    p.add_argument("name")
    p.add_argument("--cache_dir", default=None)
    p.set_defaults(func=_model_path)
    p = sub.add_parser("report", help="plot a run's reward, held-out accuracy, KL and length; summarise it as JSON")
    p.add_argument("output_dir", nargs="+", help="a run's output_dir (several: also an overlay of the runs)")
    p.add_argument("--out", default="overlay.png", help="overlay PNG when several runs are given")
    p.add_argument("--labels", nargs="+", default=None, help="overlay labels, one per run (default: folder names)")
    p.set_defaults(func=_report)
    p = sub.add_parser("audit-rm", help="audit a reward model: held-out accuracy, length bias, probe battery")
    p.add_argument("path", help="reward-model directory (or hub id, adapter directory), loaded as learned_rm loads it")
    p.add_argument("--data", required=True,
                   help="JSONL of preference pairs, or a GSM8K JSONL (question + worked answer) to build pairs from")
    p.add_argument("--out", required=True, help="folder for audit.json, audit.txt and audit_scores.png")
    p.add_argument("--split", default="eval", choices=["train", "eval"], help="pairs built from GSM8K: which split")
    p.add_argument("--eval_fraction", type=float, default=0.1)
    p.add_argument("--limit", type=int, default=None, help="audit at most this many pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--probes", default=None, help="YAML or JSONL file of extra probes")
    p.add_argument("--no_default_probes", action="store_true", help="skip the GSM8K probe battery")
    p.add_argument("--min_margin", type=float, default=1.0)
    p.add_argument("--length_r2_threshold", type=float, default=0.3)
    p.add_argument("--min_accuracy", type=float, default=0.5)
    p.add_argument("--device", default=None)
    p.set_defaults(func=_audit_rm)
    p = sub.add_parser("make-task", help="write a numeric reasoning-gym task as GSM8K-format train/test jsonl")
    p.add_argument("task", help="reasoning-gym task name, e.g. chain_sum")
    p.add_argument("out_dir", help="folder for train.jsonl, test.jsonl and task.json (--dataset_path of the job)")
    p.add_argument("--train_size", type=int, default=2000)
    p.add_argument("--test_size", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", default="{}", help="the task's reasoning-gym options as a JSON object")
    p.set_defaults(func=_make_task)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
