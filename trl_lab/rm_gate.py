"""Gate RL on a reward-model audit, cached by the RM's fingerprint.

:func:`require_audit` audits the reward model at ``path`` with :func:`trl_lab.rm_audit.audit_reward_model`
unless an audit of the same weights *and* the same audit settings is cached, and raises
:class:`RewardModelAuditError` when the audit fails, unless ``override=True`` (then it warns). The cache key is
:func:`rm_fingerprint` (SHA-256 of the model files in the RM directory -- weights, configs, tokenizer, code; not
logs, summaries or checkpoint folders -- by name and content) plus a hash of the eval pairs and thresholds, so
retraining the RM, or auditing it on other pairs, audits again.

:func:`gate_reward_models` is what :class:`trl_lab.grpo.GRPOTrainer` (and so ``PPOTrainer``) runs before the
policy loads, for every ``learned_rm`` reward in ``args.rewards`` and every RM in it (``path``, or each of
``paths``):

* ``rm_audit_data`` set (a pairs JSONL or a GSM8K JSONL, read by :func:`trl_lab.data.gsm8k_pairs.read_pairs`:
  the eval split by question hash, the first ``rm_audit_limit`` pairs): a local RM directory goes through
  :func:`require_audit`, scored with the plugin's loading and rendering options (``device``, ``dtype``,
  ``max_length``, ``with_prompt``...; not its normalisation or clipping). A hub id cannot be fingerprinted, so it
  is audited afresh by :func:`~trl_lab.rm_audit.audit_reward_model` at every start, without a cache.
* not set: the most recent cached verdict in ``<RM>/rm_audit/`` whose fingerprint matches the RM's current files
  (``examples/train_reward_model.py`` audits right after training, so its RMs carry one). No such verdict (or a
  hub id) is a ``ValueError`` naming the plugin and the keys ``rm_audit_data`` and ``rm_audit_override``.

A failing verdict raises :class:`RewardModelAuditError` naming the plugin, the RM and the failed checks;
``rm_audit_override`` turns every refusal (failing, or unaudited) into a warning. ``sentiment`` with
``backend: learned`` is not gated: a sentiment RM is meant to prefer cheer over correctness and cannot pass the
GSM8K probe battery. Reward callables passed directly as ``reward_funcs`` are not gated either.

Cost: the audit scores each RM on the pairs and probes once (a cached verdict costs a fingerprint: hashing the
RM's files). Under ``accelerate launch`` the local main process audits first and the others then read its cached
verdict (a hub id is audited by every process).
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trl_lab.rm_audit import AuditReport, ProbeResult, audit_reward_model

__all__ = ["GatedRewardModel", "RewardModelAuditError", "cached_audit", "gate_reward_models", "gated_reward_models",
           "require_audit", "rm_fingerprint"]


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


def _settings_hash(eval_pairs: Sequence[Mapping[str, Any]], kwargs: Mapping[str, Any]) -> str:
    blob = json.dumps({"pairs": list(eval_pairs), "kwargs": {k: repr(v) for k, v in sorted(kwargs.items())}},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _from_dict(data: Mapping[str, Any]) -> AuditReport:
    fields = {k: v for k, v in data.items() if k != "passed"}
    fields["probes"] = [ProbeResult(**p) for p in fields["probes"]]
    return AuditReport(**fields)


def _audit_cached(path: str | os.PathLike, eval_pairs: Sequence[Mapping[str, Any]], *,
                  cache_dir: str | os.PathLike | None, audit_kwargs: Mapping[str, Any]) -> tuple[AuditReport, Path]:
    """The (possibly cached) audit of the RM directory ``path`` and the folder of its written report."""
    key = f"{rm_fingerprint(path)[:32]}-{_settings_hash(eval_pairs, audit_kwargs)}"
    cache = Path(cache_dir) if cache_dir is not None else Path(path) / "rm_audit"
    cached = cache / f"{key}.json"
    if cached.is_file():
        return _from_dict(json.loads(cached.read_text())), cache / key
    report = audit_reward_model(str(path), eval_pairs, **audit_kwargs)
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
                  cache_dir: str | os.PathLike | None = None, override: bool = False,
                  **audit_kwargs: Any) -> AuditReport:
    """The audit of the RM at ``path`` (cached under ``cache_dir``, default ``<path>/rm_audit``).

    Raises :class:`RewardModelAuditError` naming the failed checks, unless ``override`` (then a warning).
    ``audit_kwargs`` go to :func:`~trl_lab.rm_audit.audit_reward_model`.
    """
    report, where = _audit_cached(path, eval_pairs, cache_dir=cache_dir, audit_kwargs=audit_kwargs)
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
    return _from_dict(json.loads(verdicts[-1].read_text())), verdicts[-1].with_suffix("")


# --------------------------------------------------------------------------- the trainers' gate
# learned_rm options that change how the RM is loaded or what it is shown: the audit scores with them. Its
# normalisation and clipping are left out: the audit's margins and thresholds are on the raw scale.
_SCORING_OPTIONS = ("device", "dtype", "load_in_4bit", "base_model", "trust_remote_code", "batch_size",
                    "max_length", "with_prompt", "append_eos", "chat_template_kwargs")
_OVERRIDE_HINT = "set `rm_audit_override: true` (--rm_audit_override) to train on it anyway"


@dataclass(frozen=True)
class GatedRewardModel:
    """One reward model a run optimises against: the reward plugin (as named in the spec), its RM, scoring options."""

    plugin: str
    path: str
    options: dict[str, Any]


def gated_reward_models(specs: Sequence[Any] | None) -> list[GatedRewardModel]:
    """The reward models of the ``learned_rm`` specs (or ``module:LearnedRewardModel`` subclasses) in ``specs``.

    Specs whose plugin cannot be resolved are skipped: building the rewards reports them.
    """
    from trl_lab.registry import RewardPluginError, plugin_object
    from trl_lab.reward_specs import parse_reward_specs
    from trl_lab.rewards.learned_rm import LearnedRewardModel

    gated = []
    for spec in parse_reward_specs(specs):
        try:
            target = plugin_object(spec.name)
        except RewardPluginError:
            continue
        if not (isinstance(target, type) and issubclass(target, LearnedRewardModel)):
            continue
        sources = spec.kwargs.get("paths") if spec.kwargs.get("path") is None else [spec.kwargs["path"]]
        options = {k: spec.kwargs[k] for k in _SCORING_OPTIONS if k in spec.kwargs}
        gated += [GatedRewardModel(spec.name, str(p), options) for p in (sources or []) if isinstance(p, (str, os.PathLike))]
    return gated


def gate_reward_models(specs: Sequence[Any] | None, *, audit_data: str | os.PathLike | None = None,
                       audit_limit: int | None = 200, override: bool = False) -> dict[str, AuditReport | None]:
    """Audit (or find the cached audit of) every RM of the ``learned_rm`` rewards in ``specs``; see the module doc.

    Returns ``{rm path: report}`` (None for an RM let through unaudited by ``override``). Raises
    :class:`RewardModelAuditError` for a failing RM and ``ValueError`` for one with no audit, unless ``override``.
    """
    gated = gated_reward_models(specs)
    if not gated:
        return {}
    pairs = None
    if audit_data is not None:
        from trl_lab.data.gsm8k_pairs import read_pairs

        try:
            pairs = read_pairs(audit_data, split="eval", limit=audit_limit)
        except ValueError as exc:
            raise ValueError(f"rm_audit_data: {exc}") from exc
        if not pairs:
            raise ValueError(f"rm_audit_data: {str(audit_data)!r} gives no held-out (eval split) pairs to audit on")
    reports: dict[str, AuditReport | None] = {}
    for rm in gated:
        what = f"reward plugin {rm.plugin!r}: reward model {rm.path!r}"
        local = Path(rm.path).is_dir()
        if pairs is not None and local:
            report, where = _audit_cached(rm.path, pairs, cache_dir=None, audit_kwargs=rm.options)
        elif pairs is not None:  # a hub id: nothing to fingerprint, so nothing to cache
            report, where = audit_reward_model(rm.path, pairs, **rm.options), None
        else:
            found = cached_audit(rm.path) if local else None
            if found is None:
                reason = ("has no cached audit of its current weights in "
                          f"{str(Path(rm.path) / 'rm_audit')!r}" if local else
                          "is not a local directory, so it has no cached audit")
                message = (f"{what} {reason}. Set `rm_audit_data` (a JSONL of preference pairs, or a GSM8K JSONL) "
                           f"to audit it before training, or `rm_audit_override: true` to train on it unaudited")
                if not override:
                    raise ValueError(message)
                warnings.warn(message + " (overridden)", stacklevel=2)
                reports[rm.path] = None
                continue
            report, where = found
        _enforce(report, what, where=where, override=override, hint=_OVERRIDE_HINT)
        reports[rm.path] = report
    return reports
