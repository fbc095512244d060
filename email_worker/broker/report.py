"""How topology findings read: one line per piece for ``email-worker topology show``, one JSON
document for ``--json``, and the passive-mode error that lists every missing piece with the
exact declaration it needs (as ``rabbitmqadmin declare`` lines and as JSON).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence

from email_worker.broker.survey import Finding, Status, summary

PASSIVE_SETTING = "EMAIL_WORKER_PASSIVE_TOPOLOGY=true"
BINDINGS_NOTE = (
    "Bindings cannot be read over AMQP: the worker does not depend on them (retry and "
    "dead-letter copies travel by queue name through the default exchange); gateways that "
    "publish to the exchange do."
)


def mark(finding: Finding) -> str:
    """``ok``, ``adopted (differs: ...)``, ``missing``, ``created`` or ``unchecked (...)``."""
    if finding.status == Status.ADOPTED:
        return f"adopted (differs: {'; '.join(finding.differs)})"
    if finding.status == Status.UNCHECKED:
        return f"unchecked ({finding.note})"
    return str(finding.status)


def describe(finding: Finding) -> str:
    """The piece itself: kind, name, and for queues the type and arguments found (or wanted,
    when it is missing)."""
    if finding.kind != "queue":
        return f"{finding.kind} {finding.name}"
    shown = finding.found if finding.found is not None else finding.wanted
    kind = shown.get("type") or "type unknown"
    arguments = json.dumps(shown.get("arguments", {}), sort_keys=True)
    return f"queue {finding.name} ({kind}) {arguments}"


def lines(findings: Sequence[Finding]) -> list[str]:
    """One line per piece, then any warnings."""
    out = [f"{describe(f)}: {mark(f)}" for f in findings]
    out += [f"WARNING: {w}" for f in findings for w in f.warnings]
    return out


def document(findings: Sequence[Finding]) -> str:
    missing = any(f.status == Status.MISSING for f in findings)
    return json.dumps({"ok": not missing, "items": [summary(f) for f in findings]}, indent=2)


def rabbitmqadmin(finding: Finding) -> str:
    """The ``rabbitmqadmin declare`` command that creates ``finding`` as the worker wants it."""
    wanted = finding.wanted
    if finding.kind == "exchange":
        words = ["exchange", f"name={finding.name}", f"type={wanted['type']}", "durable=true"]
    elif finding.kind == "queue":
        arguments = json.dumps(wanted["arguments"], sort_keys=True)
        words = ["queue", f"name={finding.name}", "durable=true", f"arguments={arguments}"]
    else:
        words = [
            "binding",
            f"source={wanted['source']}",
            "destination_type=queue",
            f"destination={wanted['destination']}",
            f"routing_key={wanted['routing_key']}",
        ]
    return "rabbitmqadmin declare " + " ".join(shlex.quote(word) for word in words)


def missing_message(missing: Sequence[Finding]) -> str:
    """The one error of a passive start-up: every missing piece and how to declare it."""
    declarations = "\n".join(f"  {rabbitmqadmin(f)}" for f in missing)
    as_json = json.dumps([_declaration(f) for f in missing], sort_keys=True)
    names = ", ".join(f"{f.kind} {f.name!r}" for f in missing)
    return (
        f"passive topology check ({PASSIVE_SETTING}): {len(missing)} missing piece(s): {names}. "
        f"Declare them (management plugin's rabbitmqadmin):\n{declarations}\n"
        f"or as JSON: {as_json}\n"
        "or run `email-worker topology apply` once (it declares only what is missing). "
        + BINDINGS_NOTE
    )


def _declaration(finding: Finding) -> dict[str, object]:
    return {"kind": finding.kind, "name": finding.name, **finding.wanted}
