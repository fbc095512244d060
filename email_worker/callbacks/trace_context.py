"""The trace context a status callback carries (CONTRACT section 18): what the dispatcher asks
of tracing around one POST, and what it does when this process does not trace.

The outbox row keeps the ``traceparent`` of the message's span (written by the ledger with the
status). Around each POST the dispatcher opens a ``CallbackTracing.post`` block and sends the
``traceparent`` it yields: with tracing on (``email_worker.tracing``), a CLIENT span that is a
child of the message's span, so the gateway sees the same trace; with tracing off in this
process (``PassThrough``), the row's own ``traceparent``, unchanged, so the trace still reaches
the gateway when only ``run`` exports spans. A row without one gets no header.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import Protocol

TRACEPARENT_HEADER = "traceparent"


class CallbackCall(Protocol):
    """One POST inside its span."""

    @property
    def traceparent(self) -> str | None:
        """The ``traceparent`` header to send; None: send none."""
        ...

    def answered(self, status: int | None, outcome: str) -> None:
        """The gateway's HTTP status (None: no answer) and what the dispatcher made of it.
        Never raises."""
        ...


class CallbackTracing(Protocol):
    def post(
        self, traceparent: str | None, attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[CallbackCall]:
        """The block around one POST of a row whose message span is ``traceparent``.
        ``attributes`` hold ids and counts only, never an address or content."""
        ...


class _Forwarded:
    """A POST that carries the row's ``traceparent`` as it is."""

    def __init__(self, traceparent: str | None) -> None:
        self._traceparent = traceparent

    @property
    def traceparent(self) -> str | None:
        return self._traceparent

    def answered(self, status: int | None, outcome: str) -> None:
        return None


class PassThrough:
    """Tracing off in this process: no span; the row's ``traceparent`` is forwarded."""

    def post(
        self, traceparent: str | None, attributes: Mapping[str, str | int]
    ) -> AbstractContextManager[CallbackCall]:
        return nullcontext(_Forwarded(traceparent))
