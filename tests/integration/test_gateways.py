"""Issue 13's acceptance: the four gateway styles of ``tests/support/gateways.py`` against the
real worker on real RabbitMQ, Postgres, SMTP and HTTP, configured with exactly the settings
``docs/gateways.md`` gives (read from the page), in every start order: the gateway declares its
queue before or after ``email-worker run`` (or after ``email-worker topology apply``), with its
arguments or as a plain queue. Each run checks the whole trip: the email arrives once, the
gateway's own status endpoint understands ``delivered`` in its own field names, a 451 comes back
and is delivered once, an invalid message that carries an id gets a ``failed`` callback, and the
gateway never meets a 406.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.gateway_recipes import (
    NATURAL,
    cli,
    environment,
    recipe,
    serve_services,
    settings_from,
    start_worker,
)
from tests.support.gateways import GATEWAYS, Email, Gateway
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def make_gateway(stack: Stack, style: str, flavour: str) -> Gateway:
    names = stack.settings()
    gateway = GATEWAYS[style](
        stack.amqp_url, names.exchange, names.email_queue, with_arguments=flavour == "arguments"
    )
    gateway.serve_status(stack.http)
    return gateway


def emails(style: str) -> dict[str, Email]:
    def email(kind: str, **fields: Any) -> Email:
        run = uuid.uuid4().hex[:8]
        return Email(f"req-{kind}-{run}", f"ntf-{kind}-{run}", **fields)

    made = {
        "ok": email("ok", to_email=f"{style}-ok@example.com", awaits_reply=True),
        "flaky": email("flaky", to_email=f"{style}-flaky@example.com", priority=7),
        "invalid": email("invalid", to_email=f"{style}-invalid@example.com"),
    }
    if style == "spec_pika":  # the one style that sends user ids
        made["user"] = email("user", user_id=str(uuid.uuid4()))
    return made


def statuses(gateway: Gateway, email: Email) -> list[str]:
    return [s.status for s in gateway.understood(email.notification_id)]


def assert_the_whole_trip(stack: Stack, gateway: Gateway, sent: dict[str, Email]) -> None:
    good = [e for kind, e in sent.items() if kind != "invalid"]
    invalid = sent["invalid"]
    try:
        wait_for(lambda: all("delivered" in statuses(gateway, e) for e in good), 60, "delivered")
        wait_for(lambda: "failed" in statuses(gateway, invalid), 30, "the invalid one's failed")
    except AssertionError as exc:  # say what the endpoint got instead
        got = f"its endpoint got {gateway.bodies}, refused {gateway.refusals}"
        raise AssertionError(f"{exc}; {got}; SMTP got {len(stack.smtp.messages)}") from None
    wait_for(stack.idle, 20, "the queues to drain")
    assert gateway.refusals == [], "the gateway's endpoint refused callbacks"
    assert gateway.failures == [], "the gateway met a broker error"
    for address in [f"{gateway.style}-{k}@example.com" for k in ("ok", "flaky")] + [
        f"{gateway.style}-user@example.com"
    ] * ("user" in sent):
        (message,) = stack.emails_to(address)  # exactly once, the 451 included
        assert message.parsed()["Subject"] == "Welcome to Ada"
    assert stack.emails_to(invalid.to_email or "") == []
    for email in good:  # delivered last, and at most one pending per retry
        seen = statuses(gateway, email)
        assert seen[-1] == "delivered" and seen.count("delivered") >= 1, seen
        assert seen.count("pending") <= (1 if email is sent["flaky"] else 0), seen
    failed = gateway.understood(invalid.notification_id)[-1]
    assert failed.status == "failed" and (failed.error or "").startswith("invalid_message"), failed
    reasons = [r.headers.failure_reason for r in stack.dead_letters()]
    assert reasons == ["invalid_message"]
    flaky = sent["flaky"].request_id  # the 451 was met: one spent attempt, then the retry
    assert stack.query("SELECT attempts FROM email_requests WHERE request_id = %s", flaky) == [
        {"attempts": 2}
    ]


ORDERS = ["gateway_first", "worker_first"]
MATRIX = [
    pytest.param(style, flavour, order, id=f"{style}-{flavour}-{order}")
    for style in NATURAL
    for flavour in ("plain", "arguments")
    for order in ORDERS
] + [
    pytest.param(style, NATURAL[style], "apply_first", id=f"{style}-{NATURAL[style]}-apply_first")
    for style in NATURAL
]


@pytest.mark.parametrize(("style", "flavour", "order"), MATRIX)
def test_gateway_fits_in_every_start_order(
    bare_stack: Stack, style: str, flavour: str, order: str
) -> None:
    stack = bare_stack
    docs = recipe(style, flavour)
    env = environment(stack, docs)
    settings = settings_from(env)
    sent = emails(style)
    serve_services(
        stack.http,
        docs,
        {e.user_id: "spec_pika-user@example.com" for e in sent.values() if e.user_id},
    )
    stack.smtp.script(sent["flaky"].to_email or "", Behaviour(rcpt="451 4.3.0 try again later"))
    gateway = make_gateway(stack, style, flavour)

    if order == "apply_first":  # the deploy step, before the gateway starts
        applied = cli(env, "topology", "apply")
        assert applied.returncode == 0, applied.stderr
    if order == "worker_first":
        start_worker(stack, settings)
        assert gateway.declare(), gateway.failures
    else:
        assert gateway.declare(), gateway.failures
        start_worker(stack, settings)
    for kind, email in sent.items():
        published = gateway.publish(email, invalid=kind == "invalid")
        assert published, gateway.failures

    assert_the_whole_trip(stack, gateway, sent)
    assert gateway.declare(), gateway.failures  # a gateway restart asserts its queue again
