"""Gate RL on a reward-model audit, cached by the RM's fingerprint.

:func:`gate_reward_models` is what :class:`trl_lab.grpo.GRPOTrainer` (and so ``PPOTrainer``) runs on the reward
models of the rewards it has just built, before the policy loads: it audits the very
:class:`~trl_lab.reward_models.scorer.ScalarRewardModel` objects RL will score with (raw scores: a plugin's
normalisation and clipping come after), so nothing is loaded twice and no option list is kept here.

* An audit suite given (``pairs`` and ``probes``; the trainers read it from ``rm_audit_data`` with their
  ``rm_audit_suite`` reader): a local RM directory is audited unless a verdict for the same weights *and* the same
  settings is cached. The cache key is :func:`rm_fingerprint` (SHA-256 of the model files in the RM directory --
  weights, configs, tokenizer, code; not logs, summaries or checkpoint folders -- by name and content) plus a hash of
  the pairs, the probes and the scorer's ``settings``, so retraining the RM, auditing it on other pairs or loading it
  another way audits again. A hub id cannot be fingerprinted, so it is audited afresh at every start, uncached.
* No suite: the most recent cached verdict in ``<RM>/rm_audit/`` whose fingerprint matches the RM's current files
  (the reward-model job, :mod:`trl_lab.scripts.train_reward_model`, audits right after training, so its RMs carry
  one). No such verdict (or a hub id) is a ``ValueError`` naming the plugin and the keys ``rm_audit_data`` and
  ``rm_audit_override``.

A failing verdict raises :class:`RewardModelAuditError` naming the plugin, the RM and the failed checks;
``override`` turns every refusal (failing, or unaudited) into a warning. :func:`require_audit` is the same cached
audit for one RM outside RL (the reward-model job uses it). Under ``accelerate launch`` the trainers let the local
main process audit first; the others then read its cached verdict (a hub id is audited by every process).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from trl_lab.reward_models.audit import AuditReport, Probe, as_probes, audit_reward_model

__all__ = ["AuditSuite", "AuditSuiteReader", "RewardModelAuditError", "cached_audit", "gate_reward_models", "read_pairs_suite",
           "require_audit", "rm_fingerprint"]

#: What an audit runs on: held-out preference pairs and named probes (``{name: items}`` or :class:`Probe` objects).
AuditSuite = tuple[list[dict[str, Any]], "Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Probe]"]
#: Reads ``rm_audit_data`` (a path) with ``rm_audit_limit`` into an :data:`AuditSuite`.
AuditSuiteReader = Callable[[str, "int | None"], AuditSuite]


class RewardModelAuditError(RuntimeError):
    """The reward model failed its audit; ``report`` says which checks."""

    def __init__(self, message: str, report: AuditReport) -> None:
        super().__init__(message)
        self.report = report


# The files that make up a model (weights, configs, tokenizer, code), at the top of its directory: what loading
# reads. Run artefacts beside them (README.md, logs, summaries, training_args.bin, checkpoint-*/ and rm_audit/
# folders) are left out, so writing them after the audit does not orphan its cached verdict.
_MODEL_FILES = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.model", "*.py", "*.jinja", "*.index.json",
                "config.json", "adapter_config.json", "generation_config.json", "tokenizer*.json",
                "special_tokens_map.json", "added_tokens.json", "chat_template.json", "vocab*", "merges.txt")
_NOT_MODEL_FILES = ("training_args.bin",)
_OVERRIDE_HINT = "set `rm_audit_override: true` (--rm_audit_override) to train on it anyway"


def rm_fingerprint(path: str | os.PathLike) -> str:
    """SHA-256 over the names and contents of the model files (weights, configs, tokenizer, code) in ``path``."""
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"rm_gate: {str(root)!r} is not a reward-model directory")
    files = sorted(f for f in root.iterdir() if f.is_file() and f.name not in _NOT_MODEL_FILES
                   and any(f.match(pattern) for pattern in _MODEL_FILES))
    if not files:
        raise ValueError(f"rm_gate: {str(root)!r} holds no model files (weights, config, tokenizer)")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _settings_hash(pairs: Sequence[Mapping[str, Any]], probes: Sequence[Probe], scorer_settings: Mapping[str, Any],
                   audit_kwargs: Mapping[str, Any]) -> str:
    blob = json.dumps({"pairs": list(pairs), "probes": [[p.name, p.items, p.min_margin] for p in probes],
                       "scorer": {k: repr(v) for k, v in sorted(scorer_settings.items())},
                       "audit": {k: repr(v) for k, v in sorted(audit_kwargs.items())}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _audit_cached(path: str | os.PathLike, scorer: Any, pairs: Sequence[Mapping[str, Any]], probes: Sequence[Probe],
                  *, cache_dir: str | os.PathLike | None,
                  audit_kwargs: Mapping[str, Any]) -> tuple[AuditReport, Path]:
    """The (possibly cached) audit of the RM directory ``path`` scored by the loaded ``scorer``, and its folder."""
    settings = getattr(scorer, "settings", None) or {}
    key = f"{rm_fingerprint(path)[:32]}-{_settings_hash(pairs, probes, settings, audit_kwargs)}"
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    cached = cache / f"{key}.json"
    if cached.is_file():
        return AuditReport.from_dict(json.loads(cached.read_text())), cache / key
    report = audit_reward_model(scorer, pairs, probes=probes, **audit_kwargs)
    report.write(cache / key)
    # Written whole or not at all: another process may be reading the cache.
    partial = cache / f".{key}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(report.to_dict()))
    os.replace(partial, cached)
    return report, cache / key


def _enforce(report: AuditReport, what: str, *, where: Path | None, override: bool, hint: str) -> None:
    """Raise :class:`RewardModelAuditError` for a failing ``report`` (``what`` failed ...), or warn if ``override``."""
    if report.passed:
        return
    see = f"; see {where / 'audit.txt'}" if where is not None else ""
    message = f"{what} failed its audit ({', '.join(report.failures)}){see}. Fix the RM, or {hint}"
    if not override:
        raise RewardModelAuditError(message, report)
    warnings.warn(message + " (overridden)", stacklevel=3)


def require_audit(path: str | os.PathLike, eval_pairs: Sequence[Mapping[str, Any]], *,
                  probes: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Probe] | None = None,
                  scorer: Any = None, cache_dir: str | os.PathLike | None = None, override: bool = False,
                  **audit_kwargs: Any) -> AuditReport:
    """The audit of the RM directory ``path`` (cached under ``cache_dir``, default ``<path>/rm_audit``).

    ``scorer``: the loaded scorer to audit with (default: ``path`` loaded as a ``ScalarRewardModel`` with default
    options). Raises :class:`RewardModelAuditError` naming the failed checks, unless ``override`` (then a warning).
    ``audit_kwargs`` (``min_margin``, thresholds) go to :func:`~trl_lab.reward_models.audit.audit_reward_model`.
    """
    if scorer is None:
        from trl_lab.reward_models.scorer import ScalarRewardModel

        scorer = ScalarRewardModel.load(path)
    report, where = _audit_cached(path, scorer, eval_pairs, as_probes(probes), cache_dir=cache_dir,
                                  audit_kwargs=audit_kwargs)
    _enforce(report, f"reward model {str(path)!r}", where=where, override=override,
             hint="pass override=True to train on it anyway")
    return report


def cached_audit(path: str | os.PathLike,
                 cache_dir: str | os.PathLike | None = None) -> tuple[AuditReport, Path] | None:
    """The most recent cached audit of the RM directory ``path`` *as it is now* (any settings), and its folder.

    None when no verdict in ``cache_dir`` (default ``<path>/rm_audit``) matches the RM's current fingerprint.
    """
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    verdicts = sorted(cache.glob(f"{rm_fingerprint(path)[:32]}-*.json"), key=lambda f: (f.stat().st_mtime, f.name))
    if not verdicts:
        return None
    return AuditReport.from_dict(json.loads(verdicts[-1].read_text())), verdicts[-1].with_suffix("")


def read_pairs_suite(path: str, limit: int | None = 200) -> AuditSuite:
    """The trainers' default ``rm_audit_suite``: the first ``limit`` rows of a JSONL of preference pairs
    (``prompt``, ``chosen``, ``rejected``; optional ``rejected_type``), and no probes. Task jobs pass their own reader
    (the GSM8K jobs: :func:`trl_lab.data.gsm8k_pairs.gsm8k_audit_suite`, which also reads a GSM8K JSONL and adds
    the GSM8K probe battery)."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{path!r} is not a file (expected a JSONL of preference pairs)")
    with file.open(encoding="utf-8") as f:
        pairs = [json.loads(line) for line in f if line.strip()]
    bad = next((i for i, p in enumerate(pairs) if not {"chosen", "rejected"} <= set(p)), None)
    if bad is not None:
        raise ValueError(f"{path!r} row {bad} is not a preference pair (it needs `chosen` and `rejected`; has "
                         f"{sorted(pairs[bad])}). A task file (e.g. a GSM8K JSONL) needs its task's reader: build the "
                         "trainer with rm_audit_suite=... (the GSM8K jobs pass trl_lab.data.gsm8k_pairs."
                         "gsm8k_audit_suite)")
    return pairs[:limit] if limit else pairs, {}


def gate_reward_models(reward_models: Sequence[tuple[str, Any]], *, suite: AuditSuite | None = None,
                       override: bool = False) -> dict[str, AuditReport | None]:
    """Audit (or find the cached audit of) each ``(plugin name, scorer)``; see the module doc.

    ``scorer`` is a loaded :class:`~trl_lab.reward_models.scorer.ScalarRewardModel` (its ``source`` is the RM's
    path or hub id). Returns ``{rm source: report}`` (None for an RM let through unaudited by ``override``). Raises
    :class:`RewardModelAuditError` for a failing RM and ``ValueError`` for one with no audit, unless ``override``.
    """
    pairs, probes = (None, []) if suite is None else (suite[0], as_probes(suite[1]))
    if suite is not None and not pairs:
        raise ValueError("rm_audit_data gives no held-out pairs to audit on")
    reports: dict[str, AuditReport | None] = {}
    for plugin, scorer in reward_models:
        source = str(scorer.source)
        what = f"reward plugin {plugin!r}: reward model {source!r}"
        local = Path(source).is_dir()
        if pairs is not None and local:
            report, where = _audit_cached(source, scorer, pairs, probes, cache_dir=None, audit_kwargs={})
        elif pairs is not None:  # a hub id: nothing to fingerprint, so nothing to cache
            report, where = audit_reward_model(scorer, pairs, probes=probes), None
        else:
            found = cached_audit(source) if local else None
            if found is None:
                reason = ("has no cached audit of its current weights in "
                          f"{str(Path(source) / 'rm_audit')!r}" if local else
                          "is not a local directory, so it has no cached audit")
                message = (f"{what} {reason}. Set `rm_audit_data` (a JSONL of preference pairs, or a GSM8K JSONL) "
                           f"to audit it before training, or `rm_audit_override: true` to train on it unaudited")
                if not override:
                    raise ValueError(message)
                warnings.warn(message + " (overridden)", stacklevel=2)
                reports[source] = None
                continue
            report, where = found
        _enforce(report, what, where=where, override=override, hint=_OVERRIDE_HINT)
        reports[source] = report
    return reports
