"""The weighted sum of a run's rewards must stay finite where TRL computes it: in float32.

TRL stores every reward in a float32 ``rewards_per_func`` tensor and adds them up as
``(rewards_per_func * reward_weights).nansum(dim=1)``. Each reward can be finite and its weighted value finite while
the sum is ``inf`` (two rewards of 2e38), and then TRL logs ``reward: inf``, the advantages are NaN and training goes
on. :class:`WeightedSumCheck` sees each plugin's checked output for a batch (TRL passes every reward function the same
``completions`` list, which is how the outputs of one batch are grouped) and, once every plugin of the run has
scored it, raises naming the plugins when the sum of the absolute weighted rewards of a sample exceeds float32's
range -- a bound that holds in any summation order. ``None`` ("does not apply"; NaN, which TRL's ``nansum`` skips)
adds nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

#: The largest finite float32: TRL's reward tensors are float32.
FLOAT32_MAX = 3.4028234663852886e38

# Batches whose outputs are being collected. A batch that some plugin never finishes (it raised, or a held-out
# callback scores with only some of the plugins) is dropped once this many newer batches have started.
_OPEN_BATCHES = 8


class WeightedSumCheck:
    """Checks, per sample, that the weighted rewards of ``names`` (with ``weights``) add up to a finite float32."""

    def __init__(self, names: Sequence[str], weights: Sequence[float]) -> None:
        if len(names) != len(weights):
            raise ValueError(f"{len(names)} reward names but {len(weights)} weights")
        self.weights = dict(zip(names, (float(w) for w in weights)))
        self._open: OrderedDict[int, tuple[Any, dict[str, list[float | None]]]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, name: str, batch: Any, values: list[float | None]) -> None:
        """Plugin ``name`` scored ``batch`` (the ``completions`` object TRL passed) with ``values``; checks the sum
        when every plugin has. Raises ``OverflowError`` naming the plugins."""
        if name not in self.weights or len(self.weights) < 2:
            return  # one reward alone is checked by its own wrapper
        with self._lock:
            key = id(batch)
            entry = self._open.get(key)
            if entry is None or entry[0] is not batch:  # holding `batch` keeps its id from being reused meanwhile
                entry = self._open[key] = (batch, {})
                while len(self._open) > _OPEN_BATCHES:
                    self._open.popitem(last=False)
            entry[1][name] = values
            if len(entry[1]) < len(self.weights):
                return
            del self._open[key]
        self._check(entry[1])

    def _check(self, outputs: dict[str, list[float | None]]) -> None:
        n = len(next(iter(outputs.values())))
        for i in range(n):
            terms = [(name, values[i]) for name, values in outputs.items() if values[i] is not None]
            total = sum(abs(v * self.weights[name]) for name, v in terms)
            if total > FLOAT32_MAX:
                parts = " + ".join(f"{name!r} {v:g} x {self.weights[name]:g}" for name, v in terms)
                raise OverflowError(
                    f"the weighted rewards of sample {i} overflow float32 (TRL's reward dtype) when summed: {parts}; "
                    f"each is finite, the sum is not. Rescale reward plugins {sorted(n for n, _ in terms)} or lower "
                    "their weights"
                )
