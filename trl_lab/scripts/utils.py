"""What every job does with its arguments: parse them with TRL's ``TrlParser`` (a default config YAML unless
``--config`` is given; the command line overrides the YAML), and pass TRL's ``ModelConfig`` on as loading options."""

from __future__ import annotations

import os
import sys
from typing import Any

from trl import ModelConfig, TrlParser

from trl_lab.quantization import check_bitsandbytes, wants_quantization

__all__ = ["apply_model_config", "parse_job_args"]


def parse_job_args(*dataclass_types: type, default_config: str | os.PathLike | None = None,
                   argv: list[str] | None = None) -> tuple[Any, ...]:
    """Parse ``argv`` (default ``sys.argv[1:]``) into ``dataclass_types`` with ``TrlParser``; without ``--config``,
    ``default_config`` (if given) is the YAML."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if default_config is not None and "--config" not in argv:
        argv = ["--config", str(default_config), *argv]
    return TrlParser(dataclass_types).parse_args_and_config(argv)


def apply_model_config(model_args: ModelConfig, training_args: Any) -> None:
    """Check TRL's ``ModelConfig`` early (a model is named; 4-bit runs on this process's device) and pass its loading
    options to the trainer through ``training_args.model_init_kwargs`` (options already set there win)."""
    if wants_quantization(model_args):
        check_bitsandbytes(training_args.device.type)  # before minutes of loading, not after
    if not model_args.model_name_or_path:
        raise ValueError("model_name_or_path is not set (use an embedded name such as smollm2-135m-instruct, a hub id "
                         "or a path)")
    training_args.model_init_kwargs = {
        "revision": model_args.model_revision,
        "dtype": model_args.dtype,
        "attn_implementation": model_args.attn_implementation,
        "trust_remote_code": training_args.trust_remote_code,
        **(training_args.model_init_kwargs or {}),
    }
