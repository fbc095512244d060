"""What exists beside what the worker wants, and declaring what is missing (CONTRACT section 2).

``survey`` reads the broker (``topology_probe``) and returns one ``Finding`` per exchange, queue
and binding: ``ok``, ``adopted`` (exists, differs), ``missing``, or ``unchecked`` (AMQP cannot
read bindings). ``apply`` declares the missing pieces and the bindings and changes nothing that
exists: a queue is never redeclared with other arguments (a gateway asserting its own
declaration would get a 406, and a NestJS gateway crashes on it). The warnings name retry
routes that can lose copies and dead-letter queues that can drop records.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from email_worker.broker.probe import (
    Channels,
    ExchangeFound,
    QueueFound,
    attempt,
    exchange_found,
    queue_found,
)
from email_worker.broker.topology import DEFAULT_EXCHANGE, QueueSpec, Topology, TopologyError

EXCHANGE_TYPE = "direct"
LOSSY_FAILED_ARGUMENTS = ("x-message-ttl", "x-expires", "x-max-length", "x-max-length-bytes")


class Status(StrEnum):
    OK = "ok"
    ADOPTED = "adopted"
    MISSING = "missing"
    CREATED = "created"
    UNCHECKED = "unchecked"


@dataclass(frozen=True)
class Finding:
    """One piece of the topology. ``wanted`` is the declaration the worker would make;
    ``found`` what the broker has (None when missing or unread)."""

    kind: str  # "exchange", "queue" or "binding"
    name: str
    status: Status
    wanted: Mapping[str, Any]
    found: Mapping[str, Any] | None = None
    differs: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    note: str = ""


def survey(channels: Channels, topology: Topology, *, learn_exchange: bool) -> list[Finding]:
    """Read everything the worker consumes from or publishes to. Declares nothing (queue
    probes cannot create; see ``topology_probe``), except that ``learn_exchange`` reads the
    exchange type with a declare that would create a vanished exchange."""
    exchange = exchange_found(channels, topology.exchange, EXCHANGE_TYPE, learn=learn_exchange)
    findings = [_exchange_finding(exchange)]
    for spec in topology.queues():
        found = queue_found(channels, spec.name)
        findings.append(queue_finding(spec, found, topology))
        findings += _binding_findings(spec, topology.exchange, exchange.exists and found.exists)
    return findings


def apply(channels: Channels, topology: Topology, findings: list[Finding]) -> list[Finding]:
    """Declare what ``findings`` marks missing, then every binding (idempotent). A queue some
    gateway created meanwhile is adopted. Raises ``TopologyError`` when the broker refuses."""
    done: list[Finding] = []
    specs = {spec.name: spec for spec in topology.queues()}
    for finding in findings:
        if finding.kind == "binding":
            done.append(_bind(channels, finding))
        elif finding.status != Status.MISSING:
            done.append(finding)
        elif finding.kind == "exchange":
            _declare_exchange(channels, finding.name)
            done.append(_replace(finding, Status.CREATED))
        else:
            done.append(_create_queue(channels, specs[finding.name], topology, finding))
    return done


def summary(finding: Finding) -> dict[str, Any]:
    """A finding as one compact JSON-ready object (for the start-up log line and --json)."""
    found = dict(finding.found) if finding.found is not None else None
    entry: dict[str, Any] = {"kind": finding.kind, "name": finding.name}
    entry |= {"status": str(finding.status), "wanted": dict(finding.wanted), "found": found}
    if finding.differs:
        entry["differs"] = list(finding.differs)
    if finding.warnings:
        entry["warnings"] = list(finding.warnings)
    if finding.note:
        entry["note"] = finding.note
    return entry


def queue_declaration(spec: QueueSpec) -> dict[str, Any]:
    return {
        "type": spec.queue_type,
        "durable": True,
        "auto_delete": False,
        "arguments": dict(spec.arguments),
    }


def _exchange_finding(found: ExchangeFound) -> Finding:
    wanted = {"type": EXCHANGE_TYPE, "durable": True}
    name = found.name
    if not found.exists:
        return Finding("exchange", name, Status.MISSING, wanted)
    if found.type is None and found.note:  # the broker refused our declaration: say why
        return Finding("exchange", name, Status.ADOPTED, wanted, {"type": None}, (found.note,))
    if found.type is None:
        note = "type not read: AMQP reads it only by declaring the exchange"
        return Finding("exchange", name, Status.OK, wanted, {"type": None}, note=note)
    if found.type != EXCHANGE_TYPE:
        differs = (f"type: found {found.type}, wanted {EXCHANGE_TYPE}",)
        return Finding("exchange", name, Status.ADOPTED, wanted, {"type": found.type}, differs)
    return Finding("exchange", name, Status.OK, wanted, {"type": found.type})


def queue_finding(spec: QueueSpec, found: QueueFound, topology: Topology) -> Finding:
    wanted = queue_declaration(spec)
    if not found.exists:
        return Finding("queue", spec.name, Status.MISSING, wanted)
    seen = {
        "type": found.queue_type if found.complete else None,
        "durable": found.durable,
        "auto_delete": found.auto_delete,
        "arguments": dict(found.arguments),
    }
    differs = differences(spec, found)
    status = Status.ADOPTED if differs else Status.OK
    warnings = _warnings(spec, found, topology)
    return Finding("queue", spec.name, status, wanted, seen, differs, warnings, found.note)


def differences(spec: QueueSpec, found: QueueFound) -> tuple[str, ...]:
    """What differs between the worker's declaration and the queue found, one phrase each."""
    out = []
    if not found.durable:
        out.append("durable: found false, wanted true")
    if found.auto_delete:
        out.append("auto_delete: found true, wanted false")
    if found.complete and found.queue_type != spec.queue_type:
        out.append(f"type: found {found.queue_type}, wanted {spec.queue_type}")
    names = set(found.arguments) | (set(spec.arguments) if found.complete else set())
    for name in sorted(names - {"x-queue-type"}):
        have, want = found.arguments.get(name), spec.arguments.get(name)
        if have != want or type(have) is not type(want):
            out.append(f"{name}: found {_show(have)}, wanted {_show(want)}")
    if not found.complete:
        out.append(f"not fully read ({found.note})")
    return tuple(out)


def _show(value: object) -> str:
    return "none" if value is None else repr(value)


def _warnings(spec: QueueSpec, found: QueueFound, topology: Topology) -> tuple[str, ...]:
    if spec.role == "failed":
        lossy = [name for name in LOSSY_FAILED_ARGUMENTS if name in found.arguments]
        if lossy:
            return (
                f"dead-letter queue {spec.name!r} has {', '.join(lossy)}: the broker may drop "
                "dead letters before an SRE sees them",
            )
        return ()
    if spec.role != "retry" or not found.complete:
        return ()
    args = found.arguments
    route = (args.get("x-dead-letter-exchange"), args.get("x-dead-letter-routing-key"))
    classic = found.queue_type == "classic" and topology.retry_queue_type == "quorum"
    if route == (DEFAULT_EXCHANGE, topology.email_queue) and not classic:
        return ()
    return (_retry_warning(spec.name, route, classic, topology.email_queue),)


def _retry_warning(name: str, route: tuple[object, object], classic: bool, target: str) -> str:
    exchange, key = route
    if exchange is None:
        problem = "has no dead-letter exchange: expired retry copies are DROPPED"
    elif exchange != DEFAULT_EXCHANGE or key != target:
        problem = (
            f"dead-letters through exchange {exchange!r} with routing key {key!r} (the old "
            f"way), not by name to {target!r}: a copy is dropped when that binding is missing"
        )
    else:
        problem = "is a classic queue"
    if classic:
        problem += "; as a classic queue it drops copies that expire while the broker restarts"
    return (
        f"retry queue {name!r} {problem}. The worker uses it as it is. To migrate: stop the "
        f"workers, wait until the queue is empty (its copies expire back), delete it "
        f"(rabbitmqctl delete_queue {name} --if-empty), then start a worker or run "
        "`email-worker topology apply` (see docs/deployment.md, 'Migrating retry queues')."
    )


def _binding_findings(spec: QueueSpec, exchange: str, both_exist: bool) -> list[Finding]:
    findings = []
    for key in spec.routing_keys:
        wanted = {"source": exchange, "destination": spec.name, "routing_key": key}
        name = f"{exchange} -> {spec.name} ({key})"
        if not both_exist:
            findings.append(Finding("binding", name, Status.MISSING, wanted))
        else:
            note = "AMQP cannot read bindings; `email-worker topology apply` declares it"
            findings.append(Finding("binding", name, Status.UNCHECKED, wanted, note=note))
    return findings


def _bind(channels: Channels, finding: Finding) -> Finding:
    wanted = finding.wanted
    refusal = attempt(
        channels,
        lambda ch: ch.queue_bind(
            wanted["destination"], wanted["source"], routing_key=wanted["routing_key"]
        ),
    )
    if refusal is not None:
        raise TopologyError(f"binding {finding.name}: {refusal.text}")
    return _replace(finding, Status.OK, note="declared (idempotent)")


def _declare_exchange(channels: Channels, name: str) -> None:
    refusal = attempt(channels, lambda ch: ch.exchange_declare(name, EXCHANGE_TYPE, durable=True))
    if refusal is not None:
        raise TopologyError(f"exchange {name!r}: {refusal.text}")


def _create_queue(
    channels: Channels, spec: QueueSpec, topology: Topology, finding: Finding
) -> Finding:
    arguments = dict(spec.arguments)
    refusal = attempt(
        channels, lambda ch: ch.queue_declare(spec.name, durable=True, arguments=arguments)
    )
    if refusal is None:
        return _replace(finding, Status.CREATED)
    if refusal.code == 406:  # created meanwhile by someone else (a gateway)? Then adopt it.
        found = queue_found(channels, spec.name)
        if found.exists:
            return queue_finding(spec, found, topology)
    raise TopologyError(f"queue {spec.name!r}: {refusal.text}")


def _replace(finding: Finding, status: Status, note: str = "") -> Finding:
    found = finding.wanted if status == Status.CREATED else finding.found
    return Finding(
        finding.kind,
        finding.name,
        status,
        finding.wanted,
        found,
        finding.differs,
        finding.warnings,
        note or finding.note,
    )
