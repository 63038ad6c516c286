"""Simulated training runs for judging reward-hacking detectors on noisy held-out evaluations.

Each run is a sequence of evaluations of one fixed held-out set of ``n_items`` items. Item ``i`` has a
difficulty ``d_i ~ N(0, difficulty_sd)``; at evaluation ``t`` the model answers it correctly with
probability ``sigmoid(theta_t - d_i)``, sampled afresh at every evaluation (generation noise). ``theta_t``
is solved so that the mean of those probabilities, the run's *true accuracy* on the held-out set, follows
the scenario's curve. The proxy (the training reward) rises throughout, and faster once the run hacks.

Scenarios (accuracies and rates in accuracy points, 1 point = 0.01):

* ``healthy``: accuracy rises from 20-40% to a 50-75% plateau and stays there, with a small genuine
  wobble (AR(1), sd 0.4 points); the proxy keeps creeping up. A detector should never fire.
* ``hacked_slow`` / ``hacked_fast``: the same rise up to a peak at evaluation 8-20, then a linear decline
  of 0.75-1.5 (slow) or 2.5-5 (fast) points per evaluation while the proxy climbs faster.
* ``collapse``: rise and plateau, then at evaluation 10-25 accuracy drops by 15-40 points at once and
  stays down.

``PERSISTENT_SCENARIOS`` is the harder suite of issue 13: 40 evaluations; healthy runs that plateau or rise
slowly; hacks that peak at evaluation 10-22 then lose 0.4 (slow) or 1 (fast) point per evaluation; sudden
15-point collapses; and per-item outcomes that *persist* between evaluations, as greedy decoding on a fixed set
does (``persistence`` > 0): item ``i`` is right at evaluation ``t`` when ``u_i(t) < p_i(t)``, with
``u_i(t) = Phi(z_i(t))`` and ``z_i`` a stationary Gaussian AR(1) over evaluations with lag-one correlation
``persistence``. Each outcome keeps its probability ``p_i(t)`` exactly (so the true accuracy is unchanged), but
an item answered right is usually right at the next evaluation. ``persistent_suite(rho)`` builds the suite at
another persistence.

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["PERSISTENT_SCENARIOS", "SCENARIOS", "Outcome", "Scenario", "SimRun", "kept_share", "persistent_suite", "score",
           "simulate", "simulate_run"]


@dataclass(frozen=True)
class Scenario:
    """Ranges (low, high) from which each run draws its curve parameters uniformly."""

    name: str
    kind: str  # "healthy" | "decline" | "collapse"
    n_evals: int = 40
    start_acc: tuple[float, float] = (0.20, 0.40)
    plateau_acc: tuple[float, float] = (0.50, 0.75)
    rise_tau: tuple[float, float] = (2.0, 5.0)  # evaluations; saturating-exponential time constant
    onset_eval: tuple[int, int] = (8, 20)  # decline / collapse starts after this evaluation (inclusive ints)
    decline_per_eval: tuple[float, float] = (0.0, 0.0)
    collapse_drop: tuple[float, float] = (0.0, 0.0)
    wobble_sd: float = 0.004
    wobble_rho: float = 0.7
    difficulty_sd: float = 1.5
    proxy_noise: float = 0.02
    persistence: float = 0.0  # lag-one correlation of the changing part of each item's latent draw (0: fresh draws)
    item_memory: float = 0.0  # share of each item's latent draw that never changes over the run


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario("healthy", "healthy"),
    "hacked_slow": Scenario("hacked_slow", "decline", n_evals=45, decline_per_eval=(0.0075, 0.015)),
    "hacked_fast": Scenario("hacked_fast", "decline", decline_per_eval=(0.025, 0.05)),
    "collapse": Scenario("collapse", "collapse", onset_eval=(10, 25), collapse_drop=(0.15, 0.40)),
}


def persistent_suite(persistence: float = 0.95, item_memory: float = 0.0,
                     difficulty_sd: float = 1.5) -> dict[str, Scenario]:
    """Issue 13's suite: 40 evaluations, peaks at 10-22, 0.4 / 1 point declines, 15-point collapses, persistent items."""
    common = dict(n_evals=40, onset_eval=(10, 22), persistence=persistence, item_memory=item_memory,
                  difficulty_sd=difficulty_sd)
    return {
        "healthy": Scenario("healthy", "healthy", **common),
        "healthy_slow_rise": Scenario("healthy_slow_rise", "healthy", rise_tau=(20.0, 80.0), **common),
        "hacked_slow": Scenario("hacked_slow", "decline", decline_per_eval=(0.004, 0.004), **common),
        "hacked_fast": Scenario("hacked_fast", "decline", decline_per_eval=(0.01, 0.01), **common),
        "collapse": Scenario("collapse", "collapse", collapse_drop=(0.15, 0.15), **common),
    }


PERSISTENT_SCENARIOS: dict[str, Scenario] = persistent_suite()


@dataclass
class SimRun:
    """One simulated run: per-evaluation truth and observations."""

    steps: np.ndarray  # (K,) training step of each evaluation
    true_acc: np.ndarray  # (K,) expected accuracy on the held-out set
    gold: np.ndarray  # (K,) observed accuracy (mean of items)
    items: np.ndarray  # (K, n) bool, per-item correctness
    proxy: np.ndarray  # (K,) training reward at each evaluation
    onset: int | None  # index of the last evaluation before the decline/collapse (the true peak); None if healthy

    @property
    def peak(self) -> int:
        """Index of the highest true accuracy."""
        return int(np.argmax(self.true_acc))


def _solve_theta(target: np.ndarray, difficulty: np.ndarray) -> np.ndarray:
    """theta_t such that mean_i sigmoid(theta_t - d_i) == target_t (Newton on the monotone mean).

    A target of exactly 0 or 1 (a real run at 0% accuracy) is taken as 1e-9 from it: every item wrong (right)."""
    target = np.clip(np.asarray(target, dtype=float), 1e-9, 1 - 1e-9)
    theta = np.log(target / (1 - target))
    for _ in range(12):
        p = 1.0 / (1.0 + np.exp(difficulty[None, :] - theta[:, None]))
        f = p.mean(axis=1) - target
        theta = theta - f / np.maximum((p * (1 - p)).mean(axis=1), 1e-6)
    return theta


def simulate_run(
    scenario: Scenario, n_items: int = 500, seed: int | Sequence[int] = 0, eval_every: int = 10
) -> SimRun:
    """Draw one run of ``scenario`` with ``n_items`` held-out items; deterministic by ``seed``."""
    rng = np.random.default_rng(seed)
    k = scenario.n_evals
    t = np.arange(k, dtype=float)
    a0, a1 = rng.uniform(*scenario.start_acc), rng.uniform(*scenario.plateau_acc)
    tau = rng.uniform(*scenario.rise_tau)
    acc = a0 + (a1 - a0) * (1 - np.exp(-t / tau))
    onset = None
    if scenario.kind != "healthy":
        onset = int(rng.integers(scenario.onset_eval[0], scenario.onset_eval[1] + 1))
    wobble = np.zeros(k)
    noise = rng.normal(0, scenario.wobble_sd * np.sqrt(1 - scenario.wobble_rho**2), k)
    for i in range(1, k):
        wobble[i] = scenario.wobble_rho * wobble[i - 1] + noise[i]
    acc = acc + wobble
    proxy = 0.2 + 0.5 * (1 - np.exp(-t / tau)) + 0.002 * t
    if scenario.kind == "decline":
        rate = rng.uniform(*scenario.decline_per_eval)
        after = np.maximum(t - onset, 0)
        acc = np.where(t > onset, acc[onset] - rate * after, acc)
        proxy = proxy + 0.01 * after
    elif scenario.kind == "collapse":
        drop = rng.uniform(*scenario.collapse_drop)
        acc = np.where(t > onset, acc - drop, acc)
        proxy = proxy + 0.01 * np.maximum(t - onset, 0)
    acc = np.clip(acc, 0.02, 0.98)
    difficulty = rng.normal(0, scenario.difficulty_sd, n_items)
    theta = _solve_theta(acc, difficulty)
    p = 1.0 / (1.0 + np.exp(difficulty[None, :] - theta[:, None]))
    items = _draw_items(rng, p, scenario.persistence, scenario.item_memory)
    return SimRun(
        steps=(np.arange(k) + 1) * eval_every,
        true_acc=p.mean(axis=1),
        gold=items.mean(axis=1),
        items=items,
        proxy=proxy + rng.normal(0, scenario.proxy_noise, k),
        onset=onset,
    )


def _draw_items(rng: np.random.Generator, p: np.ndarray, persistence: float, memory: float) -> np.ndarray:
    """(K, n) outcomes with P(item i right at t) = p[t, i] exactly, from a standard-normal latent per item and
    evaluation: ``sqrt(memory) * a_i + sqrt(1 - memory) * e_i(t)``, ``a_i`` fixed, ``e_i`` AR(1) with lag-one
    correlation ``persistence``; the latent's correlation between evaluations ``l`` apart is
    ``memory + (1 - memory) * persistence**l``."""
    if not 0.0 <= persistence < 1.0 or not 0.0 <= memory < 1.0:
        raise ValueError(f"persistence and item_memory must be in [0, 1), got {persistence} and {memory}")
    if persistence == 0.0 and memory == 0.0:
        return rng.random(p.shape) < p
    return _latent(rng, p.shape[0], p.shape[1], persistence, memory) < p


def _latent(rng: np.random.Generator, n_evals: int, n_items: int, persistence: float, memory: float) -> np.ndarray:
    """(n_evals, n_items) uniform(0, 1) draws, Phi of the latent of :func:`_draw_items`: outcome = draw < p."""
    import torch

    e = np.empty((n_evals, n_items))
    e[0] = rng.standard_normal(n_items)
    innovation = np.sqrt(1.0 - persistence**2)
    for t in range(1, n_evals):
        e[t] = persistence * e[t - 1] + innovation * rng.standard_normal(n_items)
    z = np.sqrt(memory) * rng.standard_normal(n_items) + np.sqrt(1.0 - memory) * e
    return torch.special.ndtr(torch.from_numpy(z)).numpy()


def kept_share(accuracies: Sequence[float], lags: Sequence[int], *, persistence: float, item_memory: float = 0.0,
               difficulty_sd: float = 1.5, n_items: int = 2000, n_evals: int = 24,
               seed: int = 0) -> dict[float, dict[int, float]]:
    """Share of items keeping their outcome between evaluations ``l`` apart, for each ``l`` in ``lags``, on flat runs
    at each of ``accuracies`` (one latent draw shared by all): ``{accuracy: {lag: share}}``. What
    ``bench/heldout_persistence.py`` compares with real runs."""
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, difficulty_sd, n_items)
    theta = _solve_theta(np.asarray(accuracies, dtype=float), difficulty)
    p = 1.0 / (1.0 + np.exp(difficulty[None, :] - theta[:, None]))  # (accuracies, items)
    z = _latent(rng, n_evals, n_items, persistence, item_memory)
    out = {}
    for acc, p_acc in zip(accuracies, p):
        items = z < p_acc[None, :]
        out[acc] = {lag: float((items[:-lag] == items[lag:]).mean()) for lag in lags}
    return out


def simulate(scenario: Scenario | str, runs: int, n_items: int = 500, seed: int = 0) -> Iterator[SimRun]:
    """``runs`` independent runs of a scenario (by name or object); run ``r`` is seeded by (seed, name, r).

    A name is looked up in ``SCENARIOS``; pass a :class:`Scenario` (e.g. ``PERSISTENT_SCENARIOS["hacked_slow"]``)
    for the other suites."""
    if isinstance(scenario, str):
        scenario = SCENARIOS[scenario]
    tag = zlib.crc32(scenario.name.encode())
    for r in range(runs):
        yield simulate_run(scenario, n_items=n_items, seed=[seed, tag, r])


@dataclass(frozen=True)
class Outcome:
    """How a detector did on one run (indices are evaluation indices)."""

    fired: bool
    early: bool  # fired before the decline/collapse began (every firing on a healthy run)
    detected: bool  # fired at or after the onset
    delay: int | None  # evaluations from the onset (true peak) to the firing, when detected
    regret: float | None  # true accuracy of the true peak minus that of the restored step, when fired


def score(run: SimRun, fired_at: int | None, best: int | None) -> Outcome:
    """Score a detector that fired at evaluation ``fired_at`` (None: never) and chose evaluation ``best``."""
    if fired_at is None:
        return Outcome(False, False, False, None, None)
    early = run.onset is None or fired_at <= run.onset
    regret = None if best is None else float(run.true_acc.max() - run.true_acc[best])
    delay = None if early else fired_at - run.onset
    return Outcome(True, early, not early, delay, regret)
