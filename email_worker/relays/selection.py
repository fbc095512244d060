"""The order in which one message tries the relays.

Two modes, from ``RELAYS``:

- **Priority** (no relay carries ``weight``): the relays in the order given. All traffic goes
  to the first available relay; the next ones take over only while it rests (or for the one
  message it just failed).
- **Weights** (any relay carries ``weight``; one without counts as ``weight=1``): the first
  relay is chosen by smooth weighted round robin among the *available* relays of weight above
  0, so their weights share the traffic exactly over each cycle and a resting relay's share is
  spread over the others in proportion to their weights. Should that relay fail, the other
  weighted relays follow in the order given, then the ``weight=0`` relays: backups that take
  traffic only when no weighted relay can.

Smooth weighted round robin (nginx's): each pick adds every candidate's weight to its running
score, takes the highest score, and subtracts the candidates' total from it. Deterministic and
free of bursts (weights 5,1,1 give a a b a c a a, not a a a a a b c). Thread-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence


class RelayOrder:
    """``order(available)`` for relays known by position (0 = first in ``RELAYS``)."""

    def __init__(self, weights: Sequence[int | None]) -> None:
        self._weighted = any(weight is not None for weight in weights)
        self._weights = [1 if weight is None else weight for weight in weights]
        self._scores = [0] * len(weights)
        self._lock = threading.Lock()

    @property
    def weighted(self) -> bool:
        return self._weighted

    def order(self, available: Sequence[int]) -> list[int]:
        """The positions of ``available`` relays in the order to try them (see module)."""
        if not self._weighted:
            return sorted(available)
        weighted = sorted(i for i in available if self._weights[i] > 0)
        backups = sorted(i for i in available if self._weights[i] == 0)
        if not weighted:
            return backups
        first = self._pick(weighted)
        return [first] + [i for i in weighted if i != first] + backups

    def _pick(self, candidates: list[int]) -> int:
        with self._lock:
            total = 0
            for i in candidates:
                self._scores[i] += self._weights[i]
                total += self._weights[i]
            best = max(candidates, key=lambda i: (self._scores[i], -i))
            self._scores[best] -= total
            return best
