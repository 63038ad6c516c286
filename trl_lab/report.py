"""The run report: what the proxy reward did against held-out accuracy, as a picture and a JSON summary.

:func:`write_report` reads a run's log (``metrics.jsonl`` written by
:class:`~trl_lab.callbacks.metrics_log.MetricsLoggerCallback`, else ``trainer_state.json``'s ``log_history``,
else the newest checkpoint's) and ``goodhart.json`` if present (``triggered_step``, ``best_step``,
``proxy_at_best``), and writes into the run folder:

* ``report.png``: four stacked panels against step -- reward (and each reward plugin on the held-out answers),
  held-out accuracy (with its 95% Wilson interval, which stays inside [0, 1]),
  KL (TRL's training ``kl`` when ``beta > 0``, and ``heldout/kl_to_ref`` at any ``beta``), mean completion length (training and held-out) -- with the Goodhart trigger and best step as vertical lines;
  when the run logged them, strict accuracy on the accuracy panel and a fifth panel of the held-out answers'
  repetition, distinct-2 and policy entropy;
* ``report.json``: final/best/initial held-out accuracy, final and peak reward, KL, lengths, steps, the
  Goodhart fields and the accuracy at the best step.

:func:`write_overlay_report` overlays several runs (e.g. a KL-coefficient sweep): reward, accuracy, KL, and each
reward plugin on the held-out answers when the runs logged it, and ``heldout/kl_to_ref`` in its own panel.
``trl-lab report OUTPUT_DIR`` runs :func:`write_report` from the command line.

:func:`run_summary` adds to a run's ``report.json`` summary its first held-out completion before and after (from
the held-out tables), and :func:`format_summary` prints the few lines a reward-hacking write-up quotes.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

__all__ = ["RunReport", "format_summary", "load_goodhart", "load_log_history", "mcnemar_exact", "run_summary",
           "series", "write_overlay_report", "write_report"]

METRICS_FILE = "metrics.jsonl"
GOODHART_FILE = "goodhart.json"
REPORT_PNG = "report.png"
REPORT_JSON = "report.json"

REWARD = "reward"
ACCURACY = "heldout/accuracy"
STDERR = "heldout/accuracy_stderr"
HELDOUT_N = "heldout/n"
KL = "kl"
HELDOUT_KL = "heldout/kl_to_ref"
TRAIN_LENGTH = "completions/mean_length"
ZERO_STD = "frac_reward_zero_std"
HELDOUT_LENGTH = "heldout/mean_length"
STRICT_ACCURACY = "heldout/strict_accuracy"
#: Label-free signals on the held-out answers, drawn in their own panel when a run logged them.
ANSWER_SIGNALS = {"heldout/repetition": "repeated 3-grams", "heldout/distinct_2": "distinct-2",
                  "heldout/distinct_answers": "distinct answers"}
HELDOUT_ENTROPY = "heldout/entropy"
Z95 = 1.96

PathLike = str | os.PathLike


@dataclass
class RunReport:
    """What :func:`write_report` wrote: the two paths, the summary it saved, and the figure."""

    png: Path
    json: Path
    summary: dict[str, Any]
    figure: Figure = field(repr=False)


# ---------------------------------------------------------------------------------------------- reading
def load_log_history(output_dir: PathLike, log_path: PathLike | None = None) -> list[dict[str, Any]]:
    """Log entries of a run, each with a ``step``: from ``log_path``, ``metrics.jsonl``, or ``trainer_state.json``.

    ``trainer_state.json`` is looked for in ``output_dir`` and then in its newest ``checkpoint-*`` folder.
    Raises :class:`FileNotFoundError` naming the places tried.
    """
    out = Path(output_dir)
    metrics = Path(log_path) if log_path is not None else out / METRICS_FILE
    if metrics.exists():
        entries = []
        for line in metrics.read_text().splitlines():
            line = line.strip()
            if line:
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
        return entries
    checkpoints = sorted(out.glob("checkpoint-*/trainer_state.json"), key=lambda p: _checkpoint_number(p.parent))
    for state in [out / "trainer_state.json", *reversed(checkpoints)]:
        if state.exists():
            return list(json.loads(state.read_text()).get("log_history", []))
    raise FileNotFoundError(
        f"no run log in {out}: expected {METRICS_FILE} (written by MetricsLoggerCallback) or trainer_state.json "
        "(in the folder or a checkpoint-* folder)"
    )


def _checkpoint_number(path: Path) -> int:
    try:
        return int(path.name.rpartition("-")[2])
    except ValueError:
        return -1


def load_goodhart(output_dir: PathLike) -> dict[str, Any] | None:
    """``goodhart.json`` of a run (``triggered_step``, ``best_step``, ``proxy_at_best``, ...), or None."""
    path = Path(output_dir) / GOODHART_FILE
    return json.loads(path.read_text()) if path.exists() else None


def series(entries: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """``(steps, values)`` of one metric, sorted by step; the last finite value logged at a step wins."""
    by_step: dict[int, float] = {}
    for entry in entries:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            by_step[int(entry.get("step", 0))] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _value_at(steps: list[int], values: list[float], step: int | None) -> float | None:
    """Value at ``step``, else the latest one before it."""
    if step is None or not steps:
        return None
    before = [v for s, v in zip(steps, values) if s <= step]
    return before[-1] if before else None


# ---------------------------------------------------------------------------------------------- summary
def _summary(entries: list[dict[str, Any]], goodhart: dict[str, Any] | None) -> dict[str, Any]:
    rs, rv = series(entries, REWARD)
    a_s, av = series(entries, ACCURACY)
    stderr_at = dict(zip(*series(entries, STDERR)))
    _, kv = series(entries, KL)
    _, hk = series(entries, HELDOUT_KL)
    _, lv = series(entries, TRAIN_LENGTH)
    _, hv = series(entries, HELDOUT_LENGTH)
    _, zero_std = series(entries, ZERO_STD)
    best = max(range(len(av)), key=lambda i: (av[i], -a_s[i])) if av else None  # earliest of the best
    k = max(1, min(3, len(rv) // 3))  # a few steps at each end: one step's reward is a handful of prompts
    steps = [int(e["step"]) for e in entries if isinstance(e.get("step"), (int, float))]
    summary: dict[str, Any] = {
        "steps": max(steps) if steps else 0,
        "n_log_entries": len(entries),
        "final_reward": rv[-1] if rv else None,
        "max_reward": max(rv) if rv else None,
        "max_reward_step": rs[rv.index(max(rv))] if rv else None,
        "first_steps_reward": sum(rv[:k]) / k if rv else None,
        "last_steps_reward": sum(rv[-k:]) / k if rv else None,
        "steps_averaged": k if rv else None,
        # GRPO learns only from groups whose completions got different rewards; PPO's groups are one completion
        # (zero spread by construction) and its advantages come from the critic, so the share means nothing there.
        "groups_with_signal": 1.0 - sum(zero_std) / len(zero_std) if zero_std and not _is_ppo(entries) else None,
        "n_heldout_evals": len(av),
        "initial_accuracy": av[0] if av else None,
        "final_accuracy": av[-1] if av else None,
        "final_accuracy_stderr": stderr_at.get(a_s[-1]) if av else None,
        "final_accuracy_step": a_s[-1] if av else None,
        "best_accuracy": av[best] if best is not None else None,
        "best_accuracy_stderr": stderr_at.get(a_s[best]) if best is not None else None,
        "best_accuracy_step": a_s[best] if best is not None else None,
        "final_kl": kv[-1] if kv else None,
        "max_kl": max(kv) if kv else None,
        "final_heldout_kl_to_ref": hk[-1] if hk else None,
        "max_heldout_kl_to_ref": max(hk) if hk else None,
        "final_mean_length": lv[-1] if lv else None,
        "initial_heldout_mean_length": hv[0] if hv else None,
        "final_heldout_mean_length": hv[-1] if hv else None,
        "goodhart": _compact(goodhart),
    }
    # The training rewards measured on the held-out completions (HeldOutAccuracyCallback's proxy_rewards).
    for key in sorted({k for e in entries for k in e if k.startswith("heldout/proxy/") or k == "heldout/format_rate"}):
        _, values = series(entries, key)
        if values:
            summary[f"initial_{key}"], summary[f"final_{key}"] = values[0], values[-1]
    if goodhart is not None:
        summary["accuracy_at_goodhart_best"] = _value_at(a_s, av, goodhart.get("best_step"))
        summary["accuracy_at_goodhart_trigger"] = _value_at(a_s, av, goodhart.get("triggered_step"))
    return summary


def _compact(goodhart: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scalar fields of ``goodhart.json`` (its per-evaluation history and rule stay in that file)."""
    if goodhart is None:
        return None
    out = {k: v for k, v in goodhart.items() if not isinstance(v, (list, dict))}
    if "proxy_at_best" not in out and "proxy_point" in out:  # GoodhartCallback's name for it
        out["proxy_at_best"] = out["proxy_point"]
    history = goodhart.get("history")
    if isinstance(history, list) and any(isinstance(e, dict) and "smoothed" in e for e in history):
        # evaluations whose smoothed accuracy waits for later ones: they cannot be the best step yet
        out["unsmoothed_evals"] = sum(1 for e in history if isinstance(e, dict) and e.get("smoothed") is None)
    return out


# ---------------------------------------------------------------------------------------------- plotting
def _mark_steps(ax: Any, goodhart: dict[str, Any] | None, legend: bool) -> None:
    if not goodhart:
        return
    trig, best = goodhart.get("triggered_step"), goodhart.get("best_step")
    if isinstance(trig, (int, float)):
        ax.axvline(trig, color="tab:red", linestyle="--", linewidth=1.2, label="Goodhart trigger" if legend else None)
    if isinstance(best, (int, float)):
        ax.axvline(best, color="tab:green", linestyle=":", linewidth=1.5, label="best step" if legend else None)


def _no_data(ax: Any, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} logged", transform=ax.transAxes, ha="center", va="center", color="0.5")


def wilson_interval(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``p`` of ``n`` items: inside [0, 1] always, and honest at the small
    counts and extreme rates of held-out sets (the normal ``p ± z·se`` band of 1/16 reaches below 0)."""
    if n <= 0:
        return float("nan"), float("nan")
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def mcnemar_exact(before: Sequence[bool], after: Sequence[bool]) -> dict[str, Any]:
    """Exact (binomial) two-sided McNemar test of paired outcomes, e.g. the same held-out items before and after.

    Only the discordant items count: ``only_before`` right before and wrong after, ``only_after`` the reverse; under
    no change each discordant item is a fair coin. Returns both counts and ``p`` (1.0 with no discordant item).
    """
    if len(before) != len(after):
        raise ValueError(f"mcnemar_exact: {len(before)} outcomes before but {len(after)} after")
    only_before = sum(bool(a) and not bool(b) for a, b in zip(before, after))
    only_after = sum(bool(b) and not bool(a) for a, b in zip(before, after))
    m, k = only_before + only_after, min(only_before, only_after)
    p = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m) if m else 1.0
    return {"n": len(before), "only_before": only_before, "only_after": only_after, "p": p}


def _accuracy_band(entries: list[dict[str, Any]], steps: list[int], acc: list[float]) -> tuple[list[float], list[float]]:
    """95% band per evaluation: Wilson from ``heldout/n``; without it, the stderr band clipped to [0, 1]."""
    sizes, err = dict(zip(*series(entries, HELDOUT_N))), dict(zip(*series(entries, STDERR)))
    lo, hi = [], []
    for s, a in zip(steps, acc):
        if sizes.get(s):
            low, high = wilson_interval(a, int(sizes[s]))
        else:
            low, high = max(0.0, a - Z95 * err.get(s, 0.0)), min(1.0, a + Z95 * err.get(s, 0.0))
        lo.append(low)
        hi.append(high)
    return lo, hi


def _plot_accuracy(ax: Any, entries: list[dict[str, Any]], color: Any = None, label: str | None = None) -> bool:
    steps, acc = series(entries, ACCURACY)
    if not steps:
        return False
    lo, hi = _accuracy_band(entries, steps, acc)
    (line,) = ax.plot(steps, acc, marker="o", markersize=3, color=color, label=label)
    ax.fill_between(steps, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
    return True


def _report_figure(entries: list[dict[str, Any]], goodhart: dict[str, Any] | None, title: str) -> Figure:
    signals = any(k in e for e in entries for k in (*ANSWER_SIGNALS, HELDOUT_ENTROPY))
    fig = Figure(figsize=(8, 12 if signals else 10), layout="constrained")  # no pyplot: no global backend
    axes = fig.subplots(5 if signals else 4, 1, sharex=True)
    ax_r, ax_a, ax_k, ax_l = axes[:4]

    steps, reward = series(entries, REWARD)
    if steps:
        ax_r.plot(steps, reward, color="tab:blue", label="reward (weighted)")
        components = sorted({k for e in entries for k in e if k.startswith("rewards/") and k.endswith("/mean")})
        for key in components:
            s, v = series(entries, key)
            ax_r.plot(s, v, linewidth=0.8, alpha=0.6, label=key.removeprefix("rewards/").removesuffix("/mean"))
    else:
        _no_data(ax_r, "reward")
    # Each reward plugin on the held-out answers (greedy, fixed prompts): the proxy's drift without sampling noise.
    for key in sorted({k for e in entries for k in e if k.startswith("heldout/proxy/")}):
        s, v = series(entries, key)
        ax_r.plot(s, v, linestyle="--", marker="o", markersize=3,
                  label=f"held-out {key.removeprefix('heldout/proxy/')} (greedy)")
    ax_r.set_ylabel("reward")

    if not _plot_accuracy(ax_a, entries, color="tab:purple", label="held-out accuracy (95% Wilson interval)"):
        _no_data(ax_a, "held-out accuracy")
    s, v = series(entries, STRICT_ACCURACY)
    if s:
        ax_a.plot(s, v, color="tab:purple", linestyle=":", marker="s", markersize=3,
                  label="strict accuracy (and a well-formed #### line)")
    ax_a.set_ylabel("held-out accuracy")

    steps, kl = series(entries, KL)
    if steps:
        ax_k.plot(steps, kl, color="tab:orange", label="KL (training samples, in the loss)")
    h_steps, h_kl = series(entries, HELDOUT_KL)
    if h_steps:
        ax_k.plot(h_steps, h_kl, color="tab:brown", linestyle="--", marker="o", markersize=3,
                  label="KL to reference (held-out answers)")
    if not steps and not h_steps:
        _no_data(ax_k, "KL")
    ax_k.set_ylabel("KL")

    plotted = False
    for key, style, label in ((TRAIN_LENGTH, "-", "training"), (HELDOUT_LENGTH, "--", "held-out (greedy)")):
        s, v = series(entries, key)
        if s:
            ax_l.plot(s, v, linestyle=style, marker="o" if key == HELDOUT_LENGTH else None, markersize=3, label=label)
            plotted = True
    if not plotted:
        _no_data(ax_l, "completion length")
    ax_l.set_ylabel("mean completion\nlength (tokens)")
    if signals:
        ax_s = axes[4]
        for key, label in ANSWER_SIGNALS.items():
            s, v = series(entries, key)
            if s:
                ax_s.plot(s, v, marker="o", markersize=3, label=label)
        ax_s.set_ylabel("held-out answers\n(share)")
        s, v = series(entries, HELDOUT_ENTROPY)
        if s:
            twin = ax_s.twinx()
            twin.plot(s, v, color="tab:gray", linestyle="--", marker="o", markersize=3, label="entropy (nats/token)")
            twin.set_ylabel("policy entropy")
            twin.legend(fontsize=7, loc="lower right")
    axes[-1].set_xlabel("step")

    for ax in axes:
        _mark_steps(ax, goodhart, legend=True)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    return fig


def write_report(output_dir: PathLike, *, log_path: PathLike | None = None, dpi: int = 110) -> RunReport:
    """Write ``report.png`` (4 panels) and ``report.json`` (summary) into ``output_dir``; return both.

    See the module docstring for what is read. Raises :class:`FileNotFoundError` when the run has no log.
    """
    out = Path(output_dir)
    entries = load_log_history(out, log_path)
    goodhart = load_goodhart(out)
    summary = _summary(entries, goodhart)
    fig = _report_figure(entries, goodhart, title=f"run report: {out.name}")
    png, js = out / REPORT_PNG, out / REPORT_JSON
    fig.savefig(png, dpi=dpi)
    summary["png"] = str(png)
    js.write_text(json.dumps(summary, indent=2) + "\n")
    return RunReport(png=png, json=js, summary=summary, figure=fig)


def write_overlay_report(
    run_dirs: Sequence[PathLike], labels: Sequence[str] | None = None, out_png: PathLike = "overlay.png", *, dpi: int = 110
) -> Figure:
    """Overlay runs (reward, held-out accuracy with band, KL, held-out proxies) in one PNG; returns the figure.

    ``labels`` default to the folder names. Goodhart trigger steps are drawn in each run's colour.
    """
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("write_overlay_report needs at least one run folder")
    labels = list(labels) if labels is not None else [d.name for d in run_dirs]
    if len(labels) != len(run_dirs):
        raise ValueError(f"{len(labels)} labels for {len(run_dirs)} runs")
    logs = [load_log_history(run) for run in run_dirs]
    proxies = sorted({k for entries in logs for e in entries for k in e if k.startswith("heldout/proxy/")})
    heldout_kl = any(HELDOUT_KL in e for entries in logs for e in entries)
    length = any(HELDOUT_LENGTH in e for entries in logs for e in entries)
    names = (["reward", "held-out accuracy", "KL\n(training)"] + (["KL to ref\n(held-out)"] if heldout_kl else [])
             + (["held-out length\n(tokens)"] if length else [])
             + [f"held-out\n{k.removeprefix('heldout/proxy/')}" for k in proxies])
    fig = Figure(figsize=(8, 2.7 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1, sharex=True)
    from matplotlib import rcParams

    colors = rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (run, label, entries) in enumerate(zip(run_dirs, labels, logs)):
        color = colors[i % len(colors)]
        s, v = series(entries, REWARD)
        axes[0].plot(s, v, color=color, label=label)
        _plot_accuracy(axes[1], entries, color=color, label=label)
        s, v = series(entries, KL)
        axes[2].plot(s, v, color=color, label=label)
        if heldout_kl:
            s, v = series(entries, HELDOUT_KL)
            axes[3].plot(s, v, color=color, marker="o", markersize=3, label=label)
        if length:
            s, v = series(entries, HELDOUT_LENGTH)
            axes[3 + heldout_kl].plot(s, v, color=color, marker="o", markersize=3, label=label)
        for ax, key in zip(axes[3 + heldout_kl + length:], proxies):  # the proxy on the held-out answers (greedy, fixed prompts)
            s, v = series(entries, key)
            ax.plot(s, v, color=color, marker="o", markersize=3, label=label)
        goodhart = load_goodhart(run)
        if goodhart and isinstance(goodhart.get("triggered_step"), (int, float)):
            for ax in axes:
                ax.axvline(goodhart["triggered_step"], color=color, linestyle="--", linewidth=1, alpha=0.8)
    for ax, name in zip(axes, names):
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="best")
    axes[-1].set_xlabel("step")
    fig.suptitle("runs compared (dashed: Goodhart trigger)")
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=dpi)
    return fig


# ------------------------------------------------------------------------- a run's before/after summary
def _first_completion(table: Path) -> dict[str, Any] | None:
    with table.open(encoding="utf-8") as f:
        line = f.readline()
    return json.loads(line) if line.strip() else None


def _is_ppo(entries: Sequence[dict[str, Any]]) -> bool:
    """Whether the log is a trl_lab PPO run's (it logs ``ppo/*`` critic metrics)."""
    return any(key.startswith("ppo/") for entry in entries for key in entry)


def run_summary(output_dir: PathLike) -> dict[str, Any]:
    """The run's report summary (written now if missing) plus its first/last held-out completion of item 0."""
    out = Path(output_dir)
    report = out / REPORT_JSON
    summary = json.loads(report.read_text()) if report.is_file() else write_report(out).summary
    tables = sorted((out / "heldout").glob("step_*.jsonl"))
    if tables:
        summary["first_heldout_completion"] = _first_completion(tables[0])
        summary["last_heldout_completion"] = _first_completion(tables[-1])
    summary["output_dir"] = str(out)
    return summary


def _fmt(value: Any, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def _untriggered(goodhart: dict[str, Any] | None) -> str:
    """What the detector's best step means when it did not fire: it is chosen on smoothed held-out accuracy, so the
    newest evaluations, whose smoothing waits for later ones, cannot be it yet (say so, or a best step of 0 reads
    as a contradiction of a best held-out accuracy at the last step)."""
    if not goodhart:
        return " (no goodhart.json)"
    text = f" (best step so far {goodhart.get('best_step')}"
    if isinstance(smoothed := goodhart.get("best_gold_smoothed"), (int, float)):
        text += f", smoothed held-out accuracy {smoothed:.3f}"
    if pending := goodhart.get("unsmoothed_evals"):
        text += f"; the last {pending} evaluation(s) are not smoothed yet, so they cannot be its best step"
    return text + ")"


def format_summary(summary: dict[str, Any]) -> str:
    """A few readable lines: what the proxy did, what accuracy did, and what the outputs look like."""
    lines = [f"run {summary.get('output_dir', '')}: {summary.get('steps')} steps"]
    k = summary.get("steps_averaged")
    lines.append(f"  reward (training)        {_fmt(summary.get('first_steps_reward'))} -> "
                 f"{_fmt(summary.get('last_steps_reward'))} (mean of the first / last {k} steps); max "
                 f"{_fmt(summary.get('max_reward'))} at step {summary.get('max_reward_step')}")
    if summary.get("groups_with_signal") is not None:
        lines.append(f"  learning signal          {summary['groups_with_signal']:.0%} of the prompt groups had "
                     "rewards that differ (GRPO learns from those only)")
    lines.append(f"  held-out accuracy        {_fmt(summary.get('initial_accuracy'))} -> "
                 f"{_fmt(summary.get('final_accuracy'))} (± {_fmt(summary.get('final_accuracy_stderr'))}); best "
                 f"{_fmt(summary.get('best_accuracy'))} at step {summary.get('best_accuracy_step')}")
    for key in sorted(k[len("initial_"):] for k in summary if k.startswith("initial_heldout/")):
        lines.append(f"  {key:24s} {_fmt(summary.get('initial_' + key))} -> {_fmt(summary.get('final_' + key))}")
    lines.append(f"  KL                       final {_fmt(summary.get('final_kl'), '.4f')}, max "
                 f"{_fmt(summary.get('max_kl'), '.4f')} (training samples; none when beta = 0)")
    lines.append(f"  KL to ref (held-out)     final {_fmt(summary.get('final_heldout_kl_to_ref'), '.4f')}, max "
                 f"{_fmt(summary.get('max_heldout_kl_to_ref'), '.4f')}")
    lines.append(f"  held-out mean length     {_fmt(summary.get('initial_heldout_mean_length'), '.1f')} -> "
                 f"{_fmt(summary.get('final_heldout_mean_length'), '.1f')} tokens")
    goodhart = summary.get("goodhart")
    if goodhart and goodhart.get("triggered"):
        lines.append(f"  Goodhart detector        triggered at step {goodhart.get('triggered_step')} "
                     f"({goodhart.get('trigger_reason')}), best step {goodhart.get('best_step')}, weights restored: "
                     f"{goodhart.get('restored')}")
    else:
        lines.append(f"  Goodhart detector        did not trigger" + _untriggered(goodhart))
    for when in ("first", "last"):
        item = summary.get(f"{when}_heldout_completion")
        if item:
            text = " ".join(str(item.get("completion", "")).split())
            lines.append(f"  {when} held-out answer (step {item.get('step')}, correct={item.get('correct')}): "
                         f"{text[:300]}")
    return "\n".join(lines)
