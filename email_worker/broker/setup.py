"""The topology steps: ``email-worker run``'s start-up and ``email-worker topology show|apply``.

At start-up: survey the broker, then either declare what is missing (the default) or, in
passive mode, raise one ``TopologyError`` that lists every missing piece with its declaration.
Either way one JSON log line says what was found and what differs, and each retry route that
can lose copies (an old retry queue dead-lettering through the exchange) gets a WARNING that
says how to migrate. ``show`` reads and changes nothing; ``apply`` declares what is missing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pika.adapters.blocking_connection import BlockingConnection

from email_worker.broker.probe import Channels
from email_worker.broker.report import document, lines, missing_message
from email_worker.broker.survey import Finding, Status, apply, summary, survey
from email_worker.broker.topology import Topology, TopologyError

log = logging.getLogger(__name__)


def start_up(
    connect: Callable[[], BlockingConnection], topology: Topology, *, passive: bool
) -> list[Finding]:
    """Raises ``TopologyError`` for what the worker cannot live with: in passive mode any
    missing piece (all of them in one message); otherwise a declaration the broker refused.
    An existing queue never fails start-up, whatever its type and arguments."""
    channels = Channels(connect)
    try:
        # Reading the exchange type declares it if it vanished: only when declaring anyway.
        findings = survey(channels, topology, learn_exchange=not passive)
        missing = [f for f in findings if f.status == Status.MISSING]
        if passive and missing:
            raise TopologyError(missing_message(missing))
        if not passive:
            findings = apply(channels, topology, findings)
    finally:
        channels.close()
    log.info("topology", extra={"passive": passive, "topology": [summary(f) for f in findings]})
    for finding in findings:
        for warning in finding.warnings:
            log.warning(warning, extra={"queue": finding.name})
    return findings


def command(
    connect: Callable[[], BlockingConnection], topology: Topology, *, apply_: bool, as_json: bool
) -> tuple[str, int]:
    """``topology show`` (exit 0 when nothing is missing, else 1) or ``topology apply`` (exit
    0): the text to print (one line per piece, or one JSON document) and the exit code.
    Raises ``TopologyError`` when the broker refuses a declaration, and pika/OS errors when it
    cannot be reached."""
    channels = Channels(connect)
    try:
        findings = survey(channels, topology, learn_exchange=apply_)
        if apply_:
            findings = apply(channels, topology, findings)
    finally:
        channels.close()
    text = document(findings) if as_json else "\n".join(lines(findings))
    return text, 0 if apply_ or all(f.status != Status.MISSING for f in findings) else 1
