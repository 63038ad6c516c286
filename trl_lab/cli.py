"""The ``trl-lab`` command.

    trl-lab rewards                      list the reward plugins this environment can use
    trl-lab model-path smollm2-135m-instruct   print (converting once if needed) an embedded model's checkpoint
    trl-lab report OUTPUT_DIR            write OUTPUT_DIR/report.png and report.json from the run's log
    trl-lab report RUN_A RUN_B ... --out overlay.png   a report per run, plus the runs overlaid
"""

from __future__ import annotations

import argparse
import sys


def _rewards(args: argparse.Namespace) -> int:
    from trl_lab.registry import describe_rewards

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
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
