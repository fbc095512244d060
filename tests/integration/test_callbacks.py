"""The callback outbox dispatcher against real Postgres and a real HTTP gateway, and its Celery
wiring against the real RabbitMQ."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from kombu import Queue
from prometheus_client import REGISTRY
from pydantic import SecretStr

from email_worker.app.build import callback_dispatcher
from email_worker.callbacks import tasks
from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.sender import CallbackHttp
from email_worker.callbacks.signing import verify
from email_worker.callbacks.tasks import CeleryNotifier, make_celery
from email_worker.config import Settings
from email_worker.ledger import pg_ledger as ledger
from email_worker.ledger.db import Database
from email_worker.ledger.pg_ledger import PgLedger
from email_worker.ports import Claim, LedgerStatus, Record
from schemas.callback import CallbackStatus
from schemas.failures import Reason
from schemas.request import EmailRequest
from tests.fakes import email_request
from tests.support.http import FakeHttpServer, KeepAliveGateway, Reply

pytestmark = pytest.mark.integration

PATH = "/api/v1/email/status/"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def client() -> Iterator[CallbackHttp]:
    http = CallbackHttp(2.0)
    yield http
    http.close()


def dispatcher(db: Database, http: CallbackHttp, secret: str | None = SECRET) -> CallbackDispatcher:
    return CallbackDispatcher(
        db, http, secret=secret, lease_seconds=30, max_age_hours=48, rng=random.Random(7)
    )


def record(url: str, status: LedgerStatus = LedgerStatus.SENT) -> Record:
    if status == LedgerStatus.SENT:
        return Record(
            status=status,
            callback=CallbackStatus.DELIVERED,
            recipient="ada@example.com",
            message_id="<m@example.com>",
            smtp_reply="250 ok",
            callback_url=url,
        )
    return Record(
        status=status,
        callback=CallbackStatus.PENDING,
        reason=Reason.SMTP_TRANSIENT,
        detail="421 busy",
        callback_url=url,
    )


def outbox_row(
    db: Database,
    url: str,
    request: EmailRequest | None = None,
    status: LedgerStatus = LedgerStatus.SENT,
) -> int:
    request = request or email_request()
    book = PgLedger(db, lease_seconds=30)
    claim = book.claim(request)
    assert isinstance(claim, Claim)
    outbox_id = book.finish(claim, request, record(url, status))
    assert outbox_id is not None
    return outbox_id


def row(db: Database, outbox_id: int) -> dict[str, Any]:
    with db.transaction() as cur:
        cur.execute(
            "SELECT *, next_attempt_at - now() AS wait FROM callback_outbox WHERE id = %s",
            (outbox_id,),
        )
        names = [c.name for c in cur.description or ()]
        found = cur.fetchone()
    assert found is not None
    return dict(zip(names, found, strict=True))


def make_due(db: Database, outbox_id: int) -> None:
    with db.transaction() as cur:
        cur.execute(
            "UPDATE callback_outbox SET next_attempt_at = now() WHERE id = %s", (outbox_id,)
        )


def header(seen_headers: dict[str, str], name: str) -> str | None:
    return {k.lower(): v for k, v in seen_headers.items()}.get(name)


def test_delivered_callback_is_signed_and_carries_no_content(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(200))
    outbox_id = outbox_row(db, http_server.url + PATH)
    assert dispatcher(db, client).deliver(outbox_id) == "delivered"

    [seen] = http_server.seen("POST", PATH)
    stored = row(db, outbox_id)
    assert header(seen.headers, "webhook-id") == stored["webhook_id"]
    assert header(seen.headers, "content-type") == "application/json"
    assert (header(seen.headers, "user-agent") or "").startswith("email-worker/")
    timestamp = header(seen.headers, "webhook-timestamp") or ""
    signature = header(seen.headers, "webhook-signature") or ""
    verify(SECRET, stored["webhook_id"], timestamp, seen.body, signature)
    body = seen.json()
    assert set(body) == {
        "notification_id",
        "status",
        "timestamp",
        "error",
        "request_id",
        "correlation_id",
    }
    assert body["status"] == "delivered" and body["error"] is None
    assert body["notification_id"] == "n-" + body["request_id"]
    assert body["timestamp"].endswith("Z") and len(body["timestamp"]) == 20
    assert b"ada@example.com" not in seen.body
    assert (stored["state"], stored["attempts"]) == ("delivered", 1)
    assert stored["delivered_at"] is not None and stored["in_flight_until"] is None
    assert dispatcher(db, client).deliver(outbox_id) == "skipped"  # a redelivered task
    assert len(http_server.seen("POST", PATH)) == 1


def test_no_signature_header_without_a_secret(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(204))
    outbox_id = outbox_row(db, http_server.url + PATH)
    assert dispatcher(db, client, secret=None).deliver(outbox_id) == "delivered"
    [seen] = http_server.seen("POST", PATH)
    assert header(seen.headers, "webhook-signature") is None
    assert header(seen.headers, "webhook-id") is not None


def test_server_error_is_retried_with_backoff_then_delivered(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(500), Reply(200))
    outbox_id = outbox_row(db, http_server.url + PATH)
    sender = dispatcher(db, client)
    assert sender.deliver(outbox_id) == "retry"
    first = row(db, outbox_id)
    assert (first["state"], first["attempts"], first["last_error"]) == ("pending", 1, "HTTP 500")
    assert timedelta(seconds=0) < first["wait"] <= timedelta(seconds=5)  # attempt 1: <= base
    assert sender.deliver(outbox_id) == "not_due"

    make_due(db, outbox_id)
    assert sender.deliver(outbox_id) == "delivered"
    assert row(db, outbox_id)["attempts"] == 2
    webhook_ids = {header(s.headers, "webhook-id") for s in http_server.seen("POST", PATH)}
    assert len(webhook_ids) == 1  # the same id on every attempt, so the gateway can dedupe


def test_too_many_requests_honours_retry_after(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(429, headers={"Retry-After": "120"}))
    outbox_id = outbox_row(db, http_server.url + PATH)
    assert dispatcher(db, client).deliver(outbox_id) == "retry"
    wait = row(db, outbox_id)["wait"]
    assert timedelta(seconds=115) < wait <= timedelta(seconds=120)


def rejected_total() -> float:
    value = REGISTRY.get_sample_value("email_worker_callbacks_total", {"result": "rejected"})
    return value or 0.0


@pytest.mark.parametrize("code", [400, 401, 404, 410, 422])
def test_a_final_4xx_is_rejected_after_exactly_one_post(
    db: Database,
    client: CallbackHttp,
    http_server: FakeHttpServer,
    caplog: pytest.LogCaptureFixture,
    code: int,
) -> None:
    http_server.route("POST", PATH, Reply(code))
    outbox_id = outbox_row(db, http_server.url + PATH)
    before = rejected_total()
    sender = dispatcher(db, client)
    with caplog.at_level(logging.INFO, logger="email_worker.callbacks.dispatcher"):
        assert sender.deliver(outbox_id) == "rejected"
    stored = row(db, outbox_id)
    assert (stored["state"], stored["last_error"], stored["attempts"]) == (
        "rejected",
        f"HTTP {code}",
        1,
    )
    assert rejected_total() == before + 1
    (logged,) = [r for r in caplog.records if r.getMessage() == "callback rejected"]
    assert logged.levelno == logging.WARNING and logged.__dict__["http_status"] == code
    assert "ada@example.com" not in str(logged.__dict__)
    make_due(db, outbox_id)  # never retried, not even when beat looks for due rows
    assert sender.due(10) == [] and sender.deliver(outbox_id) == "skipped"
    assert len(http_server.seen("POST", PATH)) == 1


@pytest.mark.parametrize("code", [408, 425, 429, 500, 502, 503])
def test_not_now_answers_are_retried(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer, code: int
) -> None:
    http_server.route("POST", PATH, Reply(code), Reply(200))
    outbox_id = outbox_row(db, http_server.url + PATH)
    sender = dispatcher(db, client)
    assert sender.deliver(outbox_id) == "retry"
    assert row(db, outbox_id)["state"] == "pending"
    make_due(db, outbox_id)
    assert sender.deliver(outbox_id) == "delivered"


def test_url_placeholders_are_filled_from_the_row_when_sent(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", "/status", Reply(200))
    request = email_request()
    template = http_server.url + "/status?notification_id={notification_id}&s={status}"
    outbox_id = outbox_row(db, template, request)
    assert row(db, outbox_id)["callback_url"] == template  # stored as configured
    assert dispatcher(db, client).deliver(outbox_id) == "delivered"
    [seen] = http_server.seen("POST")
    expected = quote(request.notification_id, safe="")
    assert seen.path == f"/status?notification_id={expected}&s=delivered"


def test_a_shape_change_reaches_the_backlog_with_the_same_webhook_id(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(500), Reply(200))
    outbox_id = outbox_row(db, http_server.url + PATH)
    assert dispatcher(db, client).deliver(outbox_id) == "retry"
    make_due(db, outbox_id)
    fitted = Settings(
        callback_secret=SecretStr(SECRET),
        callback_field_names="notification_id:notificationId,attempts:attempts",
        callback_extra_fields='{"channel": "email"}',
    )
    restarted = callback_dispatcher(fitted, db, client)  # as after a restart
    assert restarted.deliver(outbox_id) == "delivered"
    first, second = http_server.seen("POST", PATH)
    assert header(first.headers, "webhook-id") == header(second.headers, "webhook-id")
    assert "notification_id" in first.json() and "notificationId" not in first.json()
    body = second.json()
    assert body["channel"] == "email" and body["attempts"] == 1  # the ledger's count
    assert body["notificationId"].startswith("n-") and "notification_id" not in body
    verify(  # the signature covers the body as sent
        SECRET,
        header(second.headers, "webhook-id") or "",
        header(second.headers, "webhook-timestamp") or "",
        second.body,
        header(second.headers, "webhook-signature") or "",
    )


def test_failures_past_the_max_age_are_dead(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(503))
    outbox_id = outbox_row(db, http_server.url + PATH)
    with db.transaction() as cur:
        cur.execute("UPDATE callback_outbox SET created_at = now() - interval '49 hours'")
    assert dispatcher(db, client).deliver(outbox_id) == "dead"
    assert row(db, outbox_id)["last_error"] == "HTTP 503"


def test_slow_gateway_times_out_without_holding_a_transaction(
    db: Database, database_url: str, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(200, delay=1.5))
    outbox_id = outbox_row(db, http_server.url + PATH)
    idle_in_tx: list[int] = []

    def watch() -> None:  # while the POST hangs, no session of ours sits in a transaction
        assert wait_for(lambda: len(http_server.seen("POST", PATH)) == 1)
        with db.transaction() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND state LIKE 'idle in transaction%%' AND pid <> pg_backend_pid()"
            )
            found = cur.fetchone()
            idle_in_tx.append(found[0] if found else -1)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    assert dispatcher(db, CallbackHttp(timeout=0.5)).deliver(outbox_id) == "retry"
    watcher.join()
    assert time.monotonic() - started < 1.4
    assert idle_in_tx == [0]
    assert row(db, outbox_id)["last_error"] == "ReadTimeout"


def test_refused_connection_is_retried(db: Database, client: CallbackHttp) -> None:
    outbox_id = outbox_row(db, "http://127.0.0.1:1" + PATH)
    assert dispatcher(db, client).deliver(outbox_id) == "retry"
    assert row(db, outbox_id)["last_error"] == "ConnectError"


def test_superseded_row_is_never_sent(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(200))
    request = email_request()
    older = outbox_row(db, http_server.url + PATH, request, LedgerStatus.PENDING)
    newer = outbox_row(db, http_server.url + PATH, request, LedgerStatus.SENT)
    sender = dispatcher(db, client)
    assert sender.deliver(newer) == "delivered"
    assert sender.deliver(older) == "skipped"
    assert row(db, older)["state"] == "superseded"
    assert [s.json()["status"] for s in http_server.seen("POST", PATH)] == ["delivered"]


def test_newer_row_waits_for_an_older_one_on_the_wire(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(200, delay=0.6), Reply(200))
    request = email_request()
    older = outbox_row(db, http_server.url + PATH, request, LedgerStatus.PENDING)
    sender = dispatcher(db, client)
    results: list[str] = []
    in_flight = threading.Thread(target=lambda: results.append(sender.deliver(older)))
    in_flight.start()
    try:
        # The gateway has the older callback and answers in 0.6 s: it is on the wire now.
        assert wait_for(lambda: len(http_server.seen("POST", PATH)) == 1)
        newer = outbox_row(db, http_server.url + PATH, request, LedgerStatus.SENT)
        assert row(db, older)["state"] == "pending"  # in flight: not superseded under its feet
        assert sender.deliver(newer) == "blocked"
    finally:
        in_flight.join()
    assert results == ["delivered"]
    assert sender.deliver(newer) == "delivered"
    assert [s.json()["status"] for s in http_server.seen("POST", PATH)] == ["pending", "delivered"]


def test_an_obsolete_row_found_by_the_dispatcher_is_superseded(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    http_server.route("POST", PATH, Reply(500))
    request = email_request()
    older = outbox_row(db, http_server.url + PATH, request, LedgerStatus.PENDING)
    with db.transaction() as cur:  # as if a dispatcher held it when the newer row came
        cur.execute("UPDATE callback_outbox SET in_flight_until = now() + interval '1 minute'")
    outbox_row(db, http_server.url + PATH, request, LedgerStatus.SENT)
    with db.transaction() as cur:  # ... and then failed and let go of it
        cur.execute(
            "UPDATE callback_outbox SET in_flight_until = NULL, attempts = 1,"
            " next_attempt_at = now() WHERE id = %s",
            (older,),
        )
    assert dispatcher(db, client).deliver(older) == "superseded"
    assert http_server.seen("POST", PATH) == []


def test_due_returns_rows_after_the_handover_grace_once_per_lease(
    db: Database, client: CallbackHttp, http_server: FakeHttpServer
) -> None:
    fresh = outbox_row(db, http_server.url + PATH)
    waiting = outbox_row(db, http_server.url + PATH)
    make_due(db, waiting)
    sender = dispatcher(db, client)
    assert sender.due(10) == [waiting]  # fresh is still inside its hand-over grace
    assert sender.due(10) == []  # re-driven already: not enqueued again on the next tick
    assert fresh not in sender.due(10)


# --- Celery wiring against the real broker -------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
RUN = (
    "import sys; from email_worker.callbacks import tasks; "
    "from email_worker.config import Settings; "
    "from email_worker.app.build import callback_runtime; "
    "s = Settings(); tasks.configure(s, callback_runtime); sys.exit(tasks.start(sys.argv[1], s))"
)


@pytest.fixture
def celery_queue(amqp_url: str, unique_prefix: str) -> Iterator[str]:
    queue = f"{unique_prefix}.callbacks"
    yield queue
    app = make_celery(amqp_url, queue)
    with app.connection_for_write() as conn:
        Queue(queue, channel=conn.default_channel).delete()


@contextmanager
def celery_process(command: str, env: dict[str, str], workdir: Path) -> Iterator[None]:
    """``email-worker callbacks|beat`` as a real process (what the CLI runs), in ``workdir``."""
    log = (workdir / f"{command}.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", RUN, command],
        cwd=workdir,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_callbacks_worker_and_beat_deliver_handed_over_and_forgotten_rows(
    db: Database,
    database_url: str,
    amqp_url: str,
    celery_queue: str,
    http_server: FakeHttpServer,
    tmp_path: Path,
) -> None:
    http_server.route("POST", PATH, Reply(200))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EMAIL_WORKER_DATABASE_URL": database_url,
        "EMAIL_WORKER_CELERY_BROKER_URL": amqp_url,
        "EMAIL_WORKER_CALLBACK_QUEUE": celery_queue,
        "EMAIL_WORKER_CALLBACK_SECRET": SECRET,
        # The sender re-checks every row's URL where it connects: the operator's origin is
        # trusted, anything else must be on the allow-list (a loopback one never is).
        "EMAIL_WORKER_CALLBACK_URL": http_server.url + PATH,
        "EMAIL_WORKER_BEAT_INTERVAL_SECONDS": "1",
        "EMAIL_WORKER_DB_POOL_SIZE": "2",
        "EMAIL_WORKER_LOG_LEVEL": "WARNING",
    }
    app = make_celery(amqp_url, celery_queue)
    handed = outbox_row(db, http_server.url + PATH)
    forgotten = outbox_row(db, http_server.url + PATH)
    make_due(db, forgotten)  # never handed over and past its grace: beat's job
    with celery_process("callbacks", env, tmp_path):
        CeleryNotifier(app).hand_over(handed)
        assert wait_for(lambda: row(db, handed)["state"] == "delivered")
        assert row(db, forgotten)["state"] == "pending"
        with celery_process("beat", env, tmp_path):
            assert wait_for(lambda: row(db, forgotten)["state"] == "delivered")
    seen = http_server.seen("POST", PATH)
    assert len(seen) == 2
    for request in seen:
        verify(
            SECRET,
            header(request.headers, "webhook-id") or "",
            header(request.headers, "webhook-timestamp") or "",
            request.body,
            header(request.headers, "webhook-signature") or "",
        )
    # Beat kept its schedule in memory: nothing but our own logs in the working directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beat.log", "callbacks.log"]


def test_maintenance_tasks_run_on_the_callbacks_worker(
    db: Database, database_url: str, amqp_url: str, celery_queue: str, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EMAIL_WORKER_DATABASE_URL": database_url,
        "EMAIL_WORKER_CELERY_BROKER_URL": amqp_url,
        "EMAIL_WORKER_CALLBACK_QUEUE": celery_queue,
        "EMAIL_WORKER_DB_POOL_SIZE": "2",
        "EMAIL_WORKER_LOG_LEVEL": "WARNING",
    }
    request = email_request()
    claim = PgLedger(db, lease_seconds=0.1).claim(request)
    assert isinstance(claim, Claim)
    with db.transaction() as cur:  # a lease that went silent long ago
        cur.execute("UPDATE email_requests SET lease_expires_at = now() - interval '1 hour'")
    app = make_celery(amqp_url, celery_queue)
    with celery_process("callbacks", env, tmp_path):
        app.send_task(tasks.EXPIRE, queue=celery_queue)
        app.send_task(tasks.PRUNE, queue=celery_queue)
        assert wait_for(
            lambda: (ledger.get_request(db, request.request_id) or {}).get("status") == "unknown"
        )


def test_notifier_never_raises_when_the_broker_is_down(caplog: pytest.LogCaptureFixture) -> None:
    app = make_celery("amqp://guest:guest@127.0.0.1:1//", "nowhere.callbacks")
    started = time.monotonic()
    notifier = CeleryNotifier(app)
    notifier.hand_over(42)
    assert time.monotonic() - started < 1  # the hand-over itself never waits on the broker
    notifier.close()  # flushes the gathered batch: the publish fails, logged, not raised
    assert time.monotonic() - started < 10
    assert any("hand-over failed" in r.getMessage() for r in caplog.records)


def test_beat_schedule_is_in_memory_and_covers_maintenance() -> None:
    app = make_celery("memory://", "q", beat_interval=7)
    assert app.conf.beat_scheduler == "celery.beat:Scheduler"
    schedule = app.conf.beat_schedule
    assert schedule["redrive-callbacks"]["schedule"] == 7
    assert {entry["task"] for entry in schedule.values()} == {
        tasks.REDRIVE,
        tasks.REDRIVE_RETRIES,
        tasks.EXPIRE,
        tasks.PRUNE,
    }
    assert schedule["redrive-retries"]["schedule"] == 7
    assert {tasks.DELIVER_MANY, tasks.REDRIVE, tasks.EXPIRE, tasks.PRUNE} <= set(app.tasks)
    assert app.conf.task_default_queue == "q" and app.conf.task_acks_late is True


def test_a_batch_reuses_one_connection_and_settles_each_row(
    db: Database, client: CallbackHttp
) -> None:
    gateway = KeepAliveGateway()
    try:
        ok = [outbox_row(db, gateway.url("/ok")) for _ in range(5)]
        broken = outbox_row(db, gateway.url("/broken"))
        outcomes = dispatcher(db, client).deliver_many([*ok, broken, ok[0]])
        assert outcomes == {**dict.fromkeys(ok, "delivered"), broken: "retry"}
        assert gateway.connections == 1, "keep-alive: one connection for the whole batch"
        assert {row(db, i)["state"] for i in ok} == {"delivered"}
        assert (row(db, broken)["state"], row(db, broken)["last_error"]) == ("pending", "HTTP 500")
    finally:
        gateway.stop()


def test_a_huge_answer_is_not_read(db: Database, client: CallbackHttp) -> None:
    gateway = KeepAliveGateway()
    try:
        outbox_id = outbox_row(db, gateway.url("/huge"))
        started = time.monotonic()
        assert dispatcher(db, client).deliver(outbox_id) == "delivered"
        assert time.monotonic() - started < 2.0  # 64 KiB read at most, then the socket dropped
        follow_up = outbox_row(db, gateway.url("/ok"))
        assert dispatcher(db, client).deliver(follow_up) == "delivered"
        assert gateway.connections == 2, "the connection of an unread answer is not reused"
    finally:
        gateway.stop()
