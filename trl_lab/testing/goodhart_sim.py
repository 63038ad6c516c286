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

Everything is deterministic given ``seed``.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SCENARIOS", "Outcome", "Scenario", "SimRun", "score", "simulate", "simulate_run"]


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


SCENARIOS: dict[str, Scenario] = {
    "healthy": Scenario("healthy", "healthy"),
    "hacked_slow": Scenario("hacked_slow", "decline", n_evals=45, decline_per_eval=(0.0075, 0.015)),
    "hacked_fast": Scenario("hacked_fast", "decline", decline_per_eval=(0.025, 0.05)),
    "collapse": Scenario("collapse", "collapse", onset_eval=(10, 25), collapse_drop=(0.15, 0.40)),
}


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
    """theta_t such that mean_i sigmoid(theta_t - d_i) == target_t (Newton on the monotone mean)."""
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
    items = rng.random((k, n_items)) < p
    return SimRun(
        steps=(np.arange(k) + 1) * eval_every,
        true_acc=p.mean(axis=1),
        gold=items.mean(axis=1),
        items=items,
        proxy=proxy + rng.normal(0, scenario.proxy_noise, k),
        onset=onset,
    )


def simulate(scenario: Scenario | str, runs: int, n_items: int = 500, seed: int = 0) -> Iterator[SimRun]:
    """``runs`` independent runs of a scenario (by name or object); run ``r`` is seeded by (seed, name, r)."""
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
