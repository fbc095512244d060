"""Rate limits shared by every replica, and adaptive throttling (CONTRACT section 12). Pure:
no adapter library; the shared store is a port (``store.RateStore``) implemented over Postgres
(``email_worker.ledger.rate_routes``) and Redis (``email_worker.redis_store``).

    routes.py    route names, DOMAIN_RATE_LIMITS, bounded metric labels
    adaptive.py  halving, pause and recovery of a throttled route; the observed success rate
    store.py     the store port and the slot arithmetic (GCRA) the stores apply
    memory.py    the store's semantics in one process (tests, benchmarks)
    limiter.py   one route's slots in this replica, by priority, with a maximum wait
    pacer.py     the ``Pacer`` and ``RelayPacer`` ports: which routes a send waits for (a
                 relay's own route once the relay router chose it), what a throttle does
"""

from __future__ import annotations

from email_worker.pacing.adaptive import Recovery
from email_worker.pacing.limiter import TurnRefused
from email_worker.pacing.pacer import PacerConfig, PacerEvents, RoutePacer
from email_worker.pacing.routes import parse_domain_limits
from email_worker.pacing.store import RateStore

__all__ = [
    "PacerConfig",
    "PacerEvents",
    "RateStore",
    "Recovery",
    "RoutePacer",
    "TurnRefused",
    "parse_domain_limits",
]
