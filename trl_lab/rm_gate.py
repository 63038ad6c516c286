"""Gate RL on a reward-model audit, cached by the RM's fingerprint (a sketch; not yet wired into the trainers).

:func:`require_audit` audits the reward model at ``path`` with :func:`trl_lab.rm_audit.audit_reward_model`
unless an audit of the same weights *and* the same audit settings is cached, and raises
:class:`RewardModelAuditError` when the audit fails, unless ``override=True`` (then it warns). The cache key is
:func:`rm_fingerprint` (SHA-256 of every file in the RM directory, by relative name and content) plus a hash
of the eval pairs and thresholds, so retraining the RM, or auditing it on other pairs, audits again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_lab.rm_audit import AuditReport, ProbeResult, audit_reward_model

__all__ = ["RewardModelAuditError", "require_audit", "rm_fingerprint"]


class RewardModelAuditError(RuntimeError):
    """The reward model failed its audit; ``report`` says which checks."""

    def __init__(self, message: str, report: AuditReport) -> None:
        super().__init__(message)
        self.report = report


def rm_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the relative names and contents of every file under the RM directory ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"rm_gate: {str(root)!r} is not a reward-model directory")
    digest = hashlib.sha256()
    for file in sorted(p for p in root.rglob("*") if p.is_file() and "rm_audit" not in p.relative_to(root).parts):
        digest.update(str(file.relative_to(root)).encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _settings_hash(eval_pairs: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> str:
    blob = json.dumps({"pairs": list(eval_pairs), "kwargs": {k: repr(v) for k, v in sorted(kwargs.items())}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _from_dict(data: Mapping[str, Any]) -> AuditReport:
    fields = {k: v for k, v in data.items() if k != "passed"}
    fields["probes"] = [ProbeResult(**p) for p in fields["probes"]]
    return AuditReport(**fields)


def require_audit(path: str | os.PathLike, eval_pairs: Sequence[Mapping[str, Any]], *,
                  cache_dir: str | os.PathLike | None = None, override: bool = False,
                  **audit_kwargs: Any) -> AuditReport:
    """The audit of the RM at ``path`` (cached under ``cache_dir``, default ``<path>/rm_audit``).

    Raises :class:`RewardModelAuditError` naming the failed checks, unless ``override`` (then a warning).
    ``audit_kwargs`` go to :func:`~trl_lab.rm_audit.audit_reward_model`.
    """
    key = f"{rm_fingerprint(path)[:32]}-{_settings_hash(eval_pairs, audit_kwargs)}"
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    cached = cache / f"{key}.json"
    if cached.is_file():
        report = _from_dict(json.loads(cached.read_text()))
    else:
        report = audit_reward_model(str(path), eval_pairs, **audit_kwargs)
        report.write(cache / key)
        cached.write_text(json.dumps(report.to_dict()))
    if not report.passed:
        message = (f"reward model {str(path)!r} failed its audit ({', '.join(report.failures)}); see "
                   f"{cache / key}/audit.txt. Fix the RM, or pass override=True to train on it anyway")
        if not override:
            raise RewardModelAuditError(message, report)
        warnings.warn(message + " (overridden)", stacklevel=2)
    return report
