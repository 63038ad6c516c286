"""Audit a reward model before RL: does it prefer correct answers, or length, confidence and cheer?

:func:`audit_reward_model` scores held-out preference pairs with a scorer -- the
:class:`~trl_lab.reward_models.scorer.ScalarRewardModel` RL will use, or any callable -- and checks:

* **held-out pair accuracy** (``chosen`` above ``rejected``), the mean margin, and the accuracy per
  ``rejected_type``; below ``min_accuracy`` (default 0.5, chance) is a failure ``held_out_accuracy``;
* **length bias**: R² of a linear fit of reward against response length (characters) over every held-out
  response; above ``length_r2_threshold`` (default 0.3) is a failure ``length_bias``;
* **probes**: named sets of pairs where the right preference is not in doubt, given by the caller -- for GSM8K,
  :func:`trl_lab.data.gsm8k_pairs.gsm8k_probe_items` (correct vs polished-wrong, concise-correct vs verbose-wrong,
  correct vs empty, correct vs refusal, correct vs cheerful-wrong), which the GSM8K jobs and ``trl-lab audit-rm``
  pass -- plus any the user loads with :func:`load_probes` (YAML or JSONL). A probe passes when every one of its
  items has ``score(chosen) - score(rejected) >= min_margin`` (default +1.0); a failed probe is a failure
  ``probe:<name>``.

``scorer_or_path`` is a reward-model directory or hub id (loaded as a
:class:`~trl_lab.reward_models.scorer.ScalarRewardModel` with default options), a loaded scorer, or any callable
``scorer(prompts=..., completions=...) -> list[float]``. Nothing here knows a task: the data and probes come in.
:meth:`AuditReport.write` saves ``audit.json``, a text table ``audit.txt`` and ``audit_scores.png`` (histograms
of chosen and rejected scores). ``trl-lab audit-rm PATH --data FILE --out DIR`` runs it from the shell.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from trl_lab.completions import completion_text

__all__ = ["DEFAULT_THRESHOLDS", "AuditReport", "Probe", "ProbeResult", "as_probes", "audit_reward_model", "length_r2", "load_probes",
           "load_scorer"]

Scorer = Callable[..., Sequence[float]]

#: The thresholds of :func:`audit_reward_model` when none are given: what "passed" means by default.
DEFAULT_THRESHOLDS: dict[str, float] = {"min_margin": 1.0, "length_r2_threshold": 0.3, "min_accuracy": 0.5}


@dataclass
class Probe:
    """A named set of (prompt, chosen, rejected) items; passes when every item's margin is >= ``min_margin``."""

    name: str
    items: list[dict[str, Any]]
    min_margin: float | None = None  # None: the audit's min_margin


@dataclass
class ProbeResult:
    name: str
    n: int
    min_margin: float
    mean_margin: float
    worst_margin: float
    passed: bool


@dataclass
class AuditReport:
    """What :func:`audit_reward_model` found; ``passed`` when ``failures`` is empty.

    ``min_margin`` is the probes' default limit the audit ran with; ``fingerprint`` the RM files' SHA-256 when the
    gate cached it (:mod:`trl_lab.reward_models.gate`). :meth:`inconsistency` says whether the verdict follows from
    the report's own numbers.
    """

    source: str
    n_pairs: int
    accuracy: float
    mean_margin: float
    accuracy_by_type: dict[str, float]
    length_r2: float
    length_r2_threshold: float
    min_accuracy: float
    probes: list[ProbeResult]
    failures: list[str]
    chosen_scores: list[float] = field(repr=False, default_factory=list)
    rejected_scores: list[float] = field(repr=False, default_factory=list)
    min_margin: float | None = None
    fingerprint: str | None = None

    @property
    def passed(self) -> bool:
        return not self.failures

    def inconsistency(self) -> str | None:
        """Why this report's verdict does not follow from its own scores and thresholds; None when it does.

        Recomputes pair accuracy and mean margin from the stored scores, each probe's pass from its worst margin and
        limit, and the failures from all of them (length R² cannot be recomputed: the lengths are not stored).
        """
        n = self.n_pairs
        if n < 1 or len(self.chosen_scores) != n or len(self.rejected_scores) != n:
            return f"it holds {len(self.chosen_scores)}/{len(self.rejected_scores)} scores for {n} pairs"
        pairs = list(zip(self.chosen_scores, self.rejected_scores))
        if sum(c > r for c, r in pairs) / n != self.accuracy:
            return f"its accuracy {self.accuracy} is not that of its own scores"
        if not math.isclose(statistics.fmean(c - r for c, r in pairs), self.mean_margin, rel_tol=1e-9, abs_tol=1e-12):
            return f"its mean margin {self.mean_margin} is not that of its own scores"
        bad = [p.name for p in self.probes if p.passed != (p.worst_margin >= p.min_margin)]
        if bad:
            return f"probe(s) {bad} are marked passed/failed against their own worst margin and limit"
        expected = _failures(self.accuracy, self.min_accuracy, self.length_r2, self.length_r2_threshold, self.probes)
        if sorted(expected) != sorted(self.failures):
            return f"its failures {self.failures} are not the {expected} its numbers give"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditReport:
        """The report :meth:`to_dict` wrote (``passed`` is derived, so it is not read back)."""
        known = {f for f in cls.__dataclass_fields__}
        fields = {k: v for k, v in data.items() if k in known}
        fields["probes"] = [ProbeResult(**p) for p in fields.get("probes", [])]
        return cls(**fields)

    def to_text(self) -> str:
        """A readable table of every check."""
        ok = {True: "ok", False: "FAIL"}
        lines = [f"Reward-model audit of {self.source}: {'PASSED' if self.passed else 'FAILED'}", "",
                 f"{'check':56s} {'value':>10s} {'limit':>10s}  result",
                 f"{'held-out pair accuracy':56s} {self.accuracy:10.3f} {'>= ' + format(self.min_accuracy, 'g'):>10s}"
                 f"  {ok[self.accuracy >= self.min_accuracy]}",
                 f"{'mean margin (chosen - rejected)':56s} {self.mean_margin:10.3f} {'':>10s}",
                 f"{'length bias R^2':56s} {self.length_r2:10.3f} {'<= ' + format(self.length_r2_threshold, 'g'):>10s}"
                 f"  {ok[self.length_r2 <= self.length_r2_threshold]}"]
        for kind, acc in sorted(self.accuracy_by_type.items()):
            lines.append(f"{'  accuracy vs ' + kind:56s} {acc:10.3f}")
        for p in self.probes:
            lines.append(f"{'probe ' + p.name + f' (n={p.n}, worst margin)':56s} {p.worst_margin:10.3f} "
                         f"{'>= ' + format(p.min_margin, 'g'):>10s}  {ok[p.passed]}")
        lines += ["", f"{self.n_pairs} held-out pairs; failures: {', '.join(self.failures) or 'none'}"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``audit.json``, ``audit.txt`` and ``audit_scores.png`` under ``out_dir``; returns their paths."""
        from matplotlib.figure import Figure

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "audit.json", "text": out / "audit.txt", "png": out / "audit_scores.png"}
        paths["json"].write_text(json.dumps(self.to_dict(), indent=2))
        paths["text"].write_text(self.to_text())
        fig = Figure(figsize=(6, 4))  # no pyplot: leaves matplotlib's backend alone (notebooks too)
        ax = fig.subplots()
        scores = self.chosen_scores + self.rejected_scores
        bins = 30 if scores and max(scores) > min(scores) else 1
        ax.hist(self.chosen_scores, bins=bins, alpha=0.6, label="chosen")
        ax.hist(self.rejected_scores, bins=bins, alpha=0.6, label="rejected")
        ax.set_xlabel("reward")
        ax.set_ylabel("pairs")
        ax.set_title(f"accuracy {self.accuracy:.3f}, length R² {self.length_r2:.2f}")
        ax.legend()
        fig.tight_layout()
        fig.savefig(paths["png"], dpi=100)
        return paths


# --------------------------------------------------------------------------- scoring
def load_scorer(scorer_or_path: Any) -> tuple[Scorer, str]:
    """``(scorer, source)``: a path or hub id is loaded as a ``ScalarRewardModel``; a callable is kept."""
    if isinstance(scorer_or_path, (str, os.PathLike)):
        from trl_lab.reward_models.scorer import ScalarRewardModel

        return ScalarRewardModel.load(scorer_or_path), str(scorer_or_path)
    if callable(scorer_or_path):
        source = getattr(scorer_or_path, "source", None) or getattr(scorer_or_path, "__name__", None)
        return scorer_or_path, str(source or type(scorer_or_path).__name__)
    raise TypeError(f"rm_audit: expected a reward-model path or a callable scorer, got {type(scorer_or_path).__name__}")


def _score(scorer: Scorer, prompts: Sequence[Any], completions: Sequence[Any]) -> list[float]:
    scores = [float(s) for s in scorer(prompts=list(prompts), completions=list(completions))]
    if len(scores) != len(completions):
        raise ValueError(f"rm_audit: the scorer returned {len(scores)} scores for {len(completions)} completions")
    return scores


def length_r2(lengths: Sequence[float], scores: Sequence[float]) -> float:
    """R² of the least-squares line of ``scores`` on ``lengths`` (0 when either is constant)."""
    if len(lengths) < 2 or len(set(lengths)) < 2 or len(set(scores)) < 2:
        return 0.0
    r = statistics.correlation([float(x) for x in lengths], [float(y) for y in scores])
    return r * r


# --------------------------------------------------------------------------- probes
def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def as_probes(probes: Sequence[Probe] | Mapping[str, Sequence[Mapping[str, Any]]] | None) -> list[Probe]:
    """Probes from :class:`Probe` objects or a ``{name: [{prompt, chosen, rejected}, ...]}`` mapping."""
    if probes is None:
        return []
    if isinstance(probes, Mapping):
        return [Probe(name, [dict(item) for item in items]) for name, items in probes.items()]
    return list(probes)


def load_probes(path: str | os.PathLike, *, build_prompt: Callable[[str], Any] | None = None) -> list[Probe]:
    """User probes from a YAML (a list, or ``{probes: [...]}``) or JSONL file.

    Each entry: ``name``, ``chosen``, ``rejected`` (text or assistant messages), and ``prompt`` (used as is) or
    ``question`` (wrapped by ``build_prompt``, e.g. :func:`trl_lab.data.gsm8k.build_prompt`, which
    ``trl-lab audit-rm`` passes); optional ``min_margin``. Entries with the same ``name`` form one probe.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"rm_audit: probes file {str(path)!r} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".jsonl", ".json"):
        entries = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        import yaml

        entries = yaml.safe_load(text) or []
        if isinstance(entries, dict):
            entries = entries.get("probes", [])
    if not isinstance(entries, list):
        raise ValueError(f"rm_audit: {path} must hold a list of probes")
    probes: dict[str, Probe] = {}
    for i, e in enumerate(entries):
        missing = [k for k in ("name", "chosen", "rejected") if not isinstance(e, dict) or k not in e]
        if missing:
            raise ValueError(f"rm_audit: {path} entry {i} lacks {missing}")
        if "prompt" not in e and "question" in e and build_prompt is None:
            raise ValueError(f"rm_audit: {path} entry {i} gives a `question` but no prompt builder was passed "
                             "(build_prompt=...); give a `prompt` instead")
        prompt = e["prompt"] if "prompt" in e else build_prompt(e["question"]) if "question" in e else None
        item = {"prompt": prompt,
                "chosen": _assistant(e["chosen"]) if isinstance(e["chosen"], str) else e["chosen"],
                "rejected": _assistant(e["rejected"]) if isinstance(e["rejected"], str) else e["rejected"]}
        probe = probes.setdefault(e["name"], Probe(e["name"], [], e.get("min_margin")))
        probe.items.append(item)
    return list(probes.values())


def _run_probe(scorer: Scorer, probe: Probe, min_margin: float) -> ProbeResult:
    prompts = [it.get("prompt") for it in probe.items]
    chosen = _score(scorer, prompts, [it["chosen"] for it in probe.items])
    rejected = _score(scorer, prompts, [it["rejected"] for it in probe.items])
    margins = [c - r for c, r in zip(chosen, rejected)]
    limit = probe.min_margin if probe.min_margin is not None else min_margin
    return ProbeResult(probe.name, len(margins), float(limit), statistics.fmean(margins), min(margins),
                       min(margins) >= limit)


# --------------------------------------------------------------------------- audit
def _failures(accuracy: float, min_accuracy: float, r2: float, r2_threshold: float,
              probes: Sequence[ProbeResult]) -> list[str]:
    return (["held_out_accuracy"] if accuracy < min_accuracy else []) \
        + (["length_bias"] if r2 > r2_threshold else []) \
        + [f"probe:{r.name}" for r in probes if not r.passed]


def audit_reward_model(scorer_or_path: Any, eval_pairs: Sequence[Mapping[str, Any]], *,
                       probes: Sequence[Probe] | Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                       min_margin: float = DEFAULT_THRESHOLDS["min_margin"],
                       length_r2_threshold: float = DEFAULT_THRESHOLDS["length_r2_threshold"],
                       min_accuracy: float = DEFAULT_THRESHOLDS["min_accuracy"]) -> AuditReport:
    """Audit a reward model on held-out pairs and a probe battery; see the module docstring.

    ``probes``: :class:`Probe` objects, or ``{name: items}`` as :func:`trl_lab.data.gsm8k_pairs.gsm8k_probe_items`
    builds them; None or empty runs none.
    """
    if not eval_pairs:
        raise ValueError("rm_audit: eval_pairs is empty")
    scorer, source = load_scorer(scorer_or_path)
    prompts = [p.get("prompt") for p in eval_pairs]
    chosen = _score(scorer, prompts, [p["chosen"] for p in eval_pairs])
    rejected = _score(scorer, prompts, [p["rejected"] for p in eval_pairs])
    wins = [c > r for c, r in zip(chosen, rejected)]
    by_type: dict[str, list[bool]] = defaultdict(list)
    for p, w in zip(eval_pairs, wins):
        by_type[str(p.get("rejected_type", "unknown"))].append(w)
    lengths = [len(completion_text(p[side])) for side in ("chosen", "rejected") for p in eval_pairs]
    r2 = length_r2(lengths, chosen + rejected)
    results = [_run_probe(scorer, probe, min_margin) for probe in as_probes(probes)]
    accuracy = sum(wins) / len(wins)
    failures = _failures(accuracy, min_accuracy, r2, length_r2_threshold, results)
    return AuditReport(source=source, n_pairs=len(eval_pairs), accuracy=accuracy,
                       mean_margin=statistics.fmean(c - r for c, r in zip(chosen, rejected)),
                       accuracy_by_type={k: sum(v) / len(v) for k, v in sorted(by_type.items())},
                       length_r2=r2, length_r2_threshold=length_r2_threshold, min_accuracy=min_accuracy,
                       probes=results, failures=failures, chosen_scores=chosen, rejected_scores=rejected,
                       min_margin=min_margin)
