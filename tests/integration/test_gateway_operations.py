"""What an operator sees when a gateway and the worker do not fit, as docs/gateways.md tells it:
``email-worker topology show|apply`` around a queue a gateway declared, the exit code and the
message of a passive start-up with pieces missing, a gateway crashed by a 406 when the worker
created the queue with its defaults, ``/readyz`` when a retry queue vanished or a service
refuses the worker's token, and a callback the gateway refuses for good.
"""

from __future__ import annotations

import json
import logging
import socket
import urllib.error
import urllib.request
import uuid
from typing import Any

import pika
import pytest

from email_worker.config import PREFIX
from tests.support.gateway_recipes import (
    cli,
    documented,
    environment,
    recipe,
    serve_services,
    serve_templates,
    settings_from,
    start_worker,
)
from tests.support.gateways import AioPika, Email, NestRmq, SpecPika
from tests.support.smtp import Behaviour
from tests.support.stack import Stack, wait_for

pytestmark = pytest.mark.integration


def queue_line(output: str, name: str) -> str:
    """The line of ``topology show`` about queue ``name``."""
    (line,) = [x for x in output.splitlines() if x.startswith(f"queue {name} ")]
    return line


def ready(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def wait_for_pause(port: int) -> dict[str, Any]:
    """The first ``/readyz`` body that says 503 (consumption paused), within 20 s."""
    seen: list[dict[str, Any]] = []

    def paused() -> bool:
        code, body = ready(port)
        seen.append(body)
        return code == 503

    wait_for(paused, 20, "/readyz to report the pause")
    return seen[-1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def email(kind: str, address: str) -> Email:
    run = uuid.uuid4().hex[:8]
    return Email(f"req-{kind}-{run}", f"ntf-{kind}-{run}", to_email=address)


def test_topology_show_and_apply_around_the_queue_a_gateway_declared(bare_stack: Stack) -> None:
    stack, env = bare_stack, environment(bare_stack, recipe("aio_pika", "arguments"))
    names = stack.settings()
    gateway = AioPika(stack.amqp_url, names.exchange, names.email_queue, with_arguments=True)
    assert gateway.declare(), gateway.failures

    before = cli(env, "topology", "show")
    assert before.returncode == 1, before.stderr
    assert queue_line(before.stdout, names.email_queue).endswith(": ok")  # QUEUE_ARGUMENTS fit
    for queue in (names.failed_queue, *(names.retry_queue_name(d) for d in names.retry_delays)):
        assert queue_line(before.stdout, queue).endswith(": missing")
    defaults = environment(stack, documented("services"))  # no recipe: quorum, our arguments
    differs = queue_line(cli(defaults, "topology", "show").stdout, names.email_queue)
    assert "adopted (differs: type: found classic, wanted quorum" in differs
    assert "x-max-priority: found 10, wanted none" in differs

    applied = cli(env, "topology", "apply")
    assert applied.returncode == 0, applied.stderr
    after = cli(env, "topology", "show", "--json")
    assert after.returncode == 0, after.stdout
    report = json.loads(after.stdout)
    assert report["ok"] is True
    assert {i["status"] for i in report["items"]} <= {"ok", "unchecked"}
    assert gateway.declare(), gateway.failures  # apply changed nothing the gateway asserts


def test_passive_start_up_lists_every_missing_piece_and_exits_3(bare_stack: Stack) -> None:
    stack = bare_stack
    env = environment(stack, recipe("spec_pika", "plain")) | {f"{PREFIX}PASSIVE_TOPOLOGY": "true"}
    names = stack.settings()
    assert SpecPika(
        stack.amqp_url, names.exchange, names.email_queue, with_arguments=False
    ).declare()

    refused = cli(env, "run", timeout=90)
    assert refused.returncode == 3, refused.stderr
    message = refused.stderr
    retry_queues = [names.retry_queue_name(d) for d in names.retry_delays]
    for piece in (names.failed_queue, *retry_queues, names.lane_queue):
        assert f"queue '{piece}'" in message
        assert f"rabbitmqadmin declare queue name={piece} durable=true" in message
    assert f"binding '{names.exchange} -> {names.failed_queue} (failed)'" in message
    assert f"{len(retry_queues) + 3} missing piece(s)" in message
    assert "email-worker topology apply" in message
    assert cli(env, "topology", "apply").returncode == 0
    assert cli(env, "topology", "show").returncode == 0


def test_worker_defaults_make_a_nestjs_gateway_that_starts_second_crash(bare_stack: Stack) -> None:
    stack = bare_stack
    defaults = environment(stack, documented("services"))
    start_worker(stack, settings_from(defaults))  # QUEUE_TYPE quorum, the worker's arguments
    names = stack.settings()
    gateway = NestRmq(stack.amqp_url, names.exchange, names.email_queue, with_arguments=False)

    assert not gateway.declare()
    assert "PRECONDITION_FAILED" in gateway.failures[0]
    recipe_env = environment(stack, recipe("nestjs", "plain"))
    shown = queue_line(cli(recipe_env, "topology", "show").stdout, names.email_queue)
    assert "adopted (differs: type: found quorum, wanted classic" in shown


def test_a_vanished_retry_queue_pauses_and_keeps_the_message(bare_stack: Stack) -> None:
    stack, port = bare_stack, free_port()
    docs = recipe("spec_pika", "plain")
    env = environment(stack, docs) | {
        f"{PREFIX}HTTP_PORT": str(port),
        f"{PREFIX}PAUSE_SECONDS": "2",
    }
    serve_services(stack.http, docs, {})
    names = stack.settings()
    gateway = SpecPika(stack.amqp_url, names.exchange, names.email_queue, with_arguments=False)
    gateway.serve_status(stack.http)
    start_worker(stack, settings_from(env))
    connection = pika.BlockingConnection(pika.URLParameters(stack.amqp_url))
    connection.channel().queue_delete(names.retry_queue_name(names.retry_delays[0]))
    connection.close()
    flaky = email("flaky", "vanished@example.com")
    stack.smtp.script("vanished@example.com", Behaviour(rcpt="451 4.3.0 try again later"))

    assert gateway.publish(flaky)
    seen = wait_for_pause(port)
    assert seen["paused"]["cause"] == "unroutable" and seen["checks"]["consumption"] is False
    assert stack.dead_letters() == [] and stack.emails_to("vanished@example.com") == []
    # The original went back to the queue: after the pause it is tried again (the relay takes
    # it this time) and delivered once; `topology apply` puts the retry queue back.
    wait_for(lambda: "delivered" in [s.status for s in gateway.understood(flaky.notification_id)])
    assert len(stack.emails_to("vanished@example.com")) == 1
    wait_for(lambda: ready(port)[0] == 200, 20, "/readyz to recover")
    assert cli(env, "topology", "show").returncode == 1  # the retry queue is still missing
    assert cli(env, "topology", "apply").returncode == 0
    assert cli(env, "topology", "show").returncode == 0


def test_a_refused_token_pauses_and_readyz_names_the_service(bare_stack: Stack) -> None:
    stack, port = bare_stack, free_port()
    docs = recipe("spec_pika", "plain")
    env = environment(stack, docs) | {
        f"{PREFIX}HTTP_PORT": str(port),
        f"{PREFIX}PAUSE_SECONDS": "2",
    }
    path = docs[f"{PREFIX}TEMPLATE_PATH"]
    serve_templates(stack.http, path, "rotated-token", ["welcome"])  # not the worker's
    names = stack.settings()
    gateway = SpecPika(stack.amqp_url, names.exchange, names.email_queue, with_arguments=False)
    gateway.serve_status(stack.http)
    start_worker(stack, settings_from(env))
    sent = email("token", "token@example.com")

    assert gateway.publish(sent)
    assert wait_for_pause(port)["paused"]["cause"] == "template_service_unauthorized"
    assert stack.dead_letters() == [] and gateway.understood(sent.notification_id) == []
    serve_templates(stack.http, path, docs[f"{PREFIX}TEMPLATE_SERVICE_TOKEN"], ["welcome"])
    wait_for(lambda: len(stack.emails_to("token@example.com")) == 1, 30, "delivery on resume")
    wait_for(lambda: ready(port)[0] == 200, 20, "/readyz to recover")


def test_a_callback_the_gateway_refuses_is_rejected_once_and_logged(
    bare_stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    stack = bare_stack
    docs = recipe("aio_pika", "arguments")
    del docs[f"{PREFIX}CALLBACK_FIELD_NAMES"]  # the mistake: its endpoint answers 400
    serve_services(stack.http, docs, {})
    names = stack.settings()
    gateway = AioPika(stack.amqp_url, names.exchange, names.email_queue, with_arguments=True)
    gateway.serve_status(stack.http)
    assert gateway.declare()
    caplog.set_level(logging.WARNING, logger="email_worker.callbacks.dispatcher")
    start_worker(stack, settings_from(environment(stack, docs)))
    sent = email("refused", "refused@example.com")

    assert gateway.publish(sent)
    wait_for(lambda: len(gateway.refusals) == 1, 30, "the gateway's 400")
    wait_for(lambda: any(r.getMessage() == "callback rejected" for r in caplog.records), 10)
    (record,) = [r for r in caplog.records if r.getMessage() == "callback rejected"]
    assert getattr(record, "http_status", None) == 400
    rows = stack.query("SELECT state FROM callback_outbox WHERE request_id = %s", sent.request_id)
    assert [r["state"] for r in rows] == ["rejected"]
    assert len(gateway.refusals) == 1  # one try, no retries for hours


def test_dlq_show_finds_an_invalid_message_by_the_gateways_own_id(bare_stack: Stack) -> None:
    stack = bare_stack
    docs = recipe("aio_pika", "arguments")
    env = environment(stack, docs)
    names = stack.settings()
    gateway = AioPika(stack.amqp_url, names.exchange, names.email_queue, with_arguments=True)
    gateway.serve_status(stack.http)
    assert gateway.declare()
    start_worker(stack, settings_from(env))
    invalid = email("invalid", "invalid@example.com")

    assert gateway.publish(invalid, invalid=True)  # no request_id: its id is the AMQP message_id
    wait_for(lambda: "failed" in [s.status for s in gateway.understood(invalid.notification_id)])
    for how in ([invalid.notification_id], ["--position", "1"]):
        shown = cli(env, "dlq", "show", *how)
        assert shown.returncode == 0, shown.stderr
        assert "invalid_message" in shown.stdout and invalid.notification_id in shown.stdout
