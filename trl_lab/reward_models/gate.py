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

A cached verdict is used only when it was made with the thresholds in force (``min_accuracy``,
``length_r2_threshold``, ``min_margin``, each probe's limit; the gate's are
:data:`~trl_lab.reward_models.audit.DEFAULT_THRESHOLDS`), records the RM's current fingerprint, and its verdict follows
from its own numbers (:meth:`~trl_lab.reward_models.audit.AuditReport.inconsistency`: accuracy and margins recomputed
from the stored scores, failures from those and the thresholds). Anything else -- a hand-written ``"passed": true``,
a verdict of lenient thresholds, another RM's -- is ignored: with a suite the RM is audited afresh (with a warning
saying why), without one it counts as unaudited. This is an **integrity cache, not a security boundary**: it
stops stale, mismatched and inconsistent verdicts, but whoever can write ``<RM>/rm_audit/`` can forge a consistent
one (or replace the weights); protect the folder as you protect the weights.

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

from trl_lab.reward_models.audit import DEFAULT_THRESHOLDS, AuditReport, Probe, as_probes, audit_reward_model

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
    fingerprint = rm_fingerprint(path)
    key = f"{fingerprint[:32]}-{_settings_hash(pairs, probes, settings, audit_kwargs)}"
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    cached = cache / f"{key}.json"
    if cached.is_file():
        report, problem = _read_verdict(cached, fingerprint, _thresholds(audit_kwargs), probes)
        if problem is None:
            return report, cache / key
        warnings.warn(f"rm_gate: ignoring the cached verdict {str(cached)!r}: {problem}; auditing again", stacklevel=3)
    report = audit_reward_model(scorer, pairs, probes=probes, **audit_kwargs)
    report.fingerprint = fingerprint
    report.write(cache / key)
    # Written whole or not at all: another process may be reading the cache.
    partial = cache / f".{key}.{os.getpid()}.tmp"
    partial.write_text(json.dumps(report.to_dict()))
    os.replace(partial, cached)
    return report, cache / key


def _thresholds(audit_kwargs: Mapping[str, Any]) -> dict[str, float]:
    """The thresholds in force: :data:`DEFAULT_THRESHOLDS` with the given ones."""
    return {k: float(audit_kwargs.get(k, v)) for k, v in DEFAULT_THRESHOLDS.items()}


def _read_verdict(file: Path, fingerprint: str, thresholds: Mapping[str, float],
                  probes: Sequence[Probe] | None) -> tuple[AuditReport | None, str | None]:
    """The cached verdict in ``file`` and None, or None and why it may not be used (see the module doc).

    ``probes``: the probes in force (each limit checked), or None when unknown (then no probe may have been held to a
    limit below ``min_margin``)."""
    try:
        report = AuditReport.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        return None, f"it is not a readable audit report ({type(exc).__name__}: {exc})"
    if report.fingerprint != fingerprint:
        return None, "it does not record the RM's current fingerprint"
    made_with = {"min_accuracy": report.min_accuracy, "length_r2_threshold": report.length_r2_threshold,
                 "min_margin": report.min_margin}
    other = {k: v for k, v in made_with.items() if v is None or float(v) != thresholds[k]}
    if other:
        return None, (f"it was made with {other}, not the thresholds in force "
                      f"{ {k: thresholds[k] for k in other} }")
    if probes is not None:
        wanted = {p.name: float(thresholds["min_margin"] if p.min_margin is None else p.min_margin) for p in probes}
        made = {r.name: float(r.min_margin) for r in report.probes}
        if made != wanted:
            return None, f"its probes and limits {made} are not the ones in force {wanted}"
    else:
        lenient = [r.name for r in report.probes if r.min_margin < thresholds["min_margin"]]
        if lenient:
            return None, f"probe(s) {lenient} were held to a limit below min_margin {thresholds['min_margin']:g}"
    problem = report.inconsistency()
    return (None, problem) if problem is not None else (report, None)


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


def cached_audit(path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 thresholds: Mapping[str, float] | None = None) -> tuple[AuditReport, Path] | None:
    """The most recent usable cached audit of the RM directory ``path`` *as it is now* (any pairs, probes and
    scorer settings), and its folder.

    Usable: made with ``thresholds`` (default :data:`DEFAULT_THRESHOLDS`), recording the RM's current fingerprint,
    and consistent (see the module doc). None when no verdict in ``cache_dir`` (default ``<path>/rm_audit``) is.
    """
    return _find_cached_audit(path, cache_dir, thresholds)[0]


def _find_cached_audit(path: str | os.PathLike, cache_dir: str | os.PathLike | None,
                       thresholds: Mapping[str, float] | None) -> tuple[tuple[AuditReport, Path] | None, dict[str, str]]:
    """:func:`cached_audit`, and why each verdict of the RM's fingerprint that was not used was not (by file name)."""
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    fingerprint = rm_fingerprint(path)
    in_force = _thresholds(thresholds or {})
    verdicts = sorted(cache.glob(f"{fingerprint[:32]}-*.json"), key=lambda f: (f.stat().st_mtime, f.name))
    rejected: dict[str, str] = {}
    for file in reversed(verdicts):
        report, problem = _read_verdict(file, fingerprint, in_force, None)
        if report is not None:
            return (report, file.with_suffix("")), rejected
        rejected[file.name] = problem or "?"
    return None, rejected


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
            found, rejected = _find_cached_audit(source, None, None) if local else (None, {})
            if found is None:
                ignored = "; ".join(f"{name}: {why}" for name, why in rejected.items())
                reason = ("has no cached audit of its current weights made with the thresholds in force in "
                          f"{str(Path(source) / 'rm_audit')!r}" + (f" (ignored {ignored})" if ignored else "")
                          if local else "is not a local directory, so it has no cached audit")
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
