"""Celery wiring for ``email-worker callbacks`` and ``email-worker beat``, and the ``Notifier``
the email consumer uses to hand a fresh outbox row over.

Tasks run on their own queue (``callback_queue``) so a slow or dead gateway never touches email
sending. They hold no state in the broker beyond an outbox id: the row in Postgres is the truth,
retries are rescheduled in the row, and beat re-drives whatever is due. The database and HTTP
client are built lazily, once per process, from the ``Settings`` given to ``configure``.
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import worker_ready, worker_shutdown

from email_worker.broker.publisher import Publisher
from email_worker.callbacks.dispatcher import CallbackDispatcher
from email_worker.callbacks.sender import CallbackHttp
from email_worker.config import Settings
from email_worker.ledger import maintenance
from email_worker.ledger.db import Database
from schemas.failures import DeferredFailure

log = logging.getLogger(__name__)

DELIVER_MANY = "email_worker.deliver_callbacks"
REDRIVE = "email_worker.redrive_callbacks"
EXPIRE = "email_worker.expire_leases"
PRUNE = "email_worker.prune"
REDRIVE_RETRIES = "email_worker.redrive_retries"
REDRIVE_BATCH = 500
HANDOVER_BATCH = 100
# Hand-over publishes fail fast when the broker is down: beat re-drives the row later.
HANDOVER_RETRY = {"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2}


@dataclass
class Runtime:
    """What the tasks of one process use, built by ``email_worker.app.build.callback_runtime``."""

    settings: Settings
    db: Database
    http: CallbackHttp
    dispatcher: CallbackDispatcher
    publisher: Publisher  # re-drives overdue retries to the email queue (connects on first use)
    shutdown: Callable[[], None] = lambda: None  # flushes the callback spans (tracing on)

    def close(self) -> None:
        try:
            self.shutdown()  # the spans of the last POSTs leave before the process does
        finally:
            self.publisher.close()
            self.http.close()
            self.db.close()


class _State:
    """The process's configuration and lazily built runtime (one per process: built after a
    fork, never shared across one)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.settings: Settings | None = None
        self.build: Callable[[Settings], Runtime] | None = None
        self.runtime: Runtime | None = None


_state = _State()


def configure(settings: Settings, build: Callable[[Settings], Runtime]) -> None:
    """Set the settings the tasks of this process use and how their runtime is built (once,
    on first use); drops any runtime built before."""
    with _state.lock:
        old, _state.runtime, _state.settings = _state.runtime, None, settings
        _state.build = build
    if old is not None:
        old.close()


def close_runtime(**_: object) -> None:
    """Close the runtime this process built, if any, flushing its spans (at worker shutdown)."""
    with _state.lock:
        old, _state.runtime = _state.runtime, None
    if old is not None:
        old.close()


# Only a Celery worker sends it (``email-worker callbacks``); elsewhere this never runs.
worker_shutdown.connect(close_runtime, weak=False)


def freeze_start_up(**_: object) -> None:
    """What the worker built at start-up lives as long as it: out of the collector's sight
    (as ``run`` does), so full collections do not walk it again and again."""
    gc.collect()
    gc.freeze()


worker_ready.connect(freeze_start_up, weak=False)


def runtime() -> Runtime:
    """The process's database, HTTP client and dispatcher, built on first use.
    Raises ``RuntimeError`` when ``configure`` was never called."""
    with _state.lock:
        if _state.runtime is None:
            if _state.settings is None or _state.build is None:
                raise RuntimeError(
                    "email_worker.callbacks.tasks.configure(settings, build) was not called"
                )
            _state.runtime = _state.build(_state.settings)
        return _state.runtime


def make_celery(broker_url: str, callback_queue: str, *, beat_interval: float = 10.0) -> Celery:
    """A Celery app whose tasks deliver callbacks and run maintenance on ``callback_queue``."""
    app = Celery("email_worker", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=callback_queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        # In-memory schedule: beat never writes a schedule file into the working directory.
        beat_scheduler="celery.beat:Scheduler",
        beat_schedule=_schedule(beat_interval),
    )
    _register(app, callback_queue)
    return app


def _schedule(beat_interval: float) -> dict[str, dict[str, object]]:
    # ``expires``: a maintenance run that waited longer than its period is stale; dropping it
    # keeps the queue from filling while the callback workers are down.
    return {
        "redrive-callbacks": {
            "task": REDRIVE,
            "schedule": beat_interval,
            "options": {"expires": beat_interval},
        },
        # A cheap read of a small partial index: which scheduled retries are overdue.
        "redrive-retries": {
            "task": REDRIVE_RETRIES,
            "schedule": beat_interval,
            "options": {"expires": beat_interval},
        },
        "expire-leases": {"task": EXPIRE, "schedule": 60.0, "options": {"expires": 60.0}},
        "prune": {"task": PRUNE, "schedule": 3600.0, "options": {"expires": 3600.0}},
    }


# Not "shared": a shared task is added to every Celery app created later in the process, so
# a second app (tests, or the notifier's app in the consumer) would collide on the names.
# The stubs omit the ``shared`` argument, hence the untyped mapping.
_LOCAL: dict[str, Any] = {"shared": False}


def _register(app: Celery, queue: str) -> None:
    @app.task(name=DELIVER_MANY, **_LOCAL)
    def deliver_callbacks(outbox_ids: list[int]) -> int:
        try:
            outcomes = runtime().dispatcher.deliver_many(outbox_ids)
        except DeferredFailure as failure:  # the rows stay pending; beat re-drives them
            extra = {"rows": len(outbox_ids), "reason": failure.reason.value}
            log.warning("callbacks deferred", extra=extra)
            return 0
        return sum(outcome == "delivered" for outcome in outcomes.values())

    @app.task(name=REDRIVE, **_LOCAL)
    def redrive_callbacks() -> int:
        ids = runtime().dispatcher.due(REDRIVE_BATCH)
        for start in range(0, len(ids), HANDOVER_BATCH):
            app.send_task(DELIVER_MANY, args=[ids[start : start + HANDOVER_BATCH]], queue=queue)
        return len(ids)

    @app.task(name=REDRIVE_RETRIES, **_LOCAL)
    def redrive_retries() -> int:
        rt = runtime()
        settings = rt.settings
        return maintenance.redrive_retries(
            rt.db, rt.publisher, settings.email_queue, settings.retry_overdue_seconds
        )

    @app.task(name=EXPIRE, **_LOCAL)
    def expire_leases() -> int:
        return maintenance.expire_leases(runtime().db)

    @app.task(name=PRUNE, **_LOCAL)
    def prune() -> int:
        rt = runtime()
        pruned = maintenance.prune(rt.db, rt.settings.retention_days)
        return pruned + maintenance.prune_suppressions(rt.db)


class CeleryNotifier:
    """The ``Notifier`` port over Celery. Hand-overs are gathered for up to ``linger`` seconds
    (or ``HANDOVER_BATCH`` rows) and published as one ``deliver_callbacks`` task: one publish
    per message cost the consumer a fifth of its CPU. Losing a batch loses nothing, beat
    re-drives every row that is still pending.

    0.2 s rather than 0.05 s: a batch four times as large cut the ``callbacks`` process's CPU
    per email by about 30% (a task's claim, its ``delivered`` update and Celery's own receive
    and ack are per batch), for a callback at most 0.15 s later (benchmarks/README.md)."""

    def __init__(self, app: Celery, queue: str | None = None, *, linger: float = 0.2) -> None:
        self._app = app
        self._queue = queue or str(app.conf.task_default_queue)
        self._linger = linger
        self._pending: list[int] = []
        self._lock = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._flusher, name="handover", daemon=True)
        self._thread.start()

    def hand_over(self, outbox_id: int) -> None:
        """Best effort, never raises: a row not handed over is re-driven by beat."""
        with self._lock:
            self._pending.append(outbox_id)
            if len(self._pending) in (1, HANDOVER_BATCH):
                self._lock.notify()

    def close(self) -> None:
        """Publish what is gathered, then stop the flusher."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(5)

    def _flusher(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closed:
                    self._lock.wait()
                if len(self._pending) < HANDOVER_BATCH and not self._closed:
                    self._lock.wait(self._linger)
                batch, self._pending = self._pending, []
                closed = self._closed
            if batch:
                self._publish(batch)
            if closed:
                return

    def _publish(self, batch: list[int]) -> None:
        try:
            self._app.send_task(
                DELIVER_MANY, args=[batch], queue=self._queue, retry_policy=HANDOVER_RETRY
            )
        except Exception as exc:  # any publish failure is recoverable through beat
            log.warning(
                "callback hand-over failed; beat will re-drive it",
                extra={"rows": len(batch), "error": type(exc).__name__},
            )


NODE_PREFIX = "callbacks-"


def node_name() -> str:
    """``callbacks-<pid>@<host>``: unique per process; the health check pings the nodes of its
    own host (``deploy/docker/healthcheck.py``)."""
    return f"{NODE_PREFIX}{os.getpid()}@{socket.gethostname()}"


def start(command: str, settings: Settings) -> int:
    """Run ``callbacks`` (a Celery worker on the callback queue) or ``beat`` until stopped."""
    app = make_celery(
        settings.broker_for_celery,
        settings.callback_queue,
        beat_interval=settings.beat_interval_seconds,
    )
    if command == "beat":
        app.Beat(loglevel=settings.log_level).run()
        return 0
    if settings.http_port:  # /health, /readyz and the callback counters of this process
        from email_worker.ops.health import HealthServer, Readiness

        HealthServer(
            settings.http_host,
            settings.http_port,
            lambda: Readiness({"database": runtime().db.ping()}),
        ).start()
    # Threads: delivery is I/O bound; keep one database connection per thread available.
    concurrency = max(1, min(settings.concurrency, settings.db_pool_size))
    app.worker_main(
        [
            "worker",
            "--pool=threads",
            f"--concurrency={concurrency}",
            f"--queues={settings.callback_queue}",
            f"--loglevel={settings.log_level}",
            "--without-gossip",
            "--without-mingle",
            # A node name of its own per process: the remote-control mailbox (which answers the
            # health check's ping) is an exclusive queue named after the node, so a second
            # `callbacks` process under the default "celery@<host>" died at start-up with
            # 405 RESOURCE_LOCKED (two processes on one host, or containers sharing a name).
            f"--hostname={node_name()}",
        ]
    )
    return 0  # pragma: no cover - worker_main exits the process
