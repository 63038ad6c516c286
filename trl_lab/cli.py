"""The ``trl-lab`` command.

    trl-lab rewards                      list the reward plugins this environment can use
    trl-lab model-path smollm2-135m-instruct   print (converting once if needed) an embedded model's checkpoint
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="trl-lab", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("rewards", help="list available reward plugins").set_defaults(func=_rewards)
    p = sub.add_parser("model-path", help="resolve an embedded model name to its cached checkpoint")
    p.add_argument("name")
    p.add_argument("--cache_dir", default=None)
    p.set_defaults(func=_model_path)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
