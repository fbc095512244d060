"""``email-worker cancel [--unseen] REQUEST_ID...`` (CONTRACT section 14): cancel requests not
sent yet, one line per id on stdout.

A request that is scheduled, waiting for a retry, or (with ``--unseen``) not seen by the worker
yet becomes ``failed`` with reason ``cancelled`` and its gateway gets a ``failed`` callback
(handed to the ``callbacks`` workers; beat re-drives it if that hand-over is lost). One that
was sent, is being sent, may have been delivered, already failed, or is unknown is refused
with the reason. Exit 0 when every id is cancelled (or already was), 1 otherwise, also when
the database is unreachable. See docs/scheduling.md.
"""

from __future__ import annotations

import argparse
import sys

from email_worker.config import Settings
from email_worker.ledger.cancels import CancelResult, cancel_request
from email_worker.ledger.db import Database
from email_worker.ports import Notifier
from schemas.failures import DeferredFailure
from schemas.inbound import is_valid_id

EXIT_OK, EXIT_REFUSED = 0, 1
DETAIL = "by an operator (email-worker cancel)"


def cancel_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cancel = commands.add_parser(
        "cancel", help="cancel requests not sent yet (scheduled, waiting for a retry)"
    )
    cancel.add_argument("request_ids", nargs="+", metavar="REQUEST_ID")
    cancel.add_argument(
        "--unseen",
        action="store_true",
        help="also cancel an id the worker has not seen yet (its message may still be queued)",
    )


def cancel_command(args: argparse.Namespace, settings: Settings) -> int:
    db = Database(settings.database_url.get_secret_value(), pool_size=1)
    results: list[CancelResult] = []
    try:
        for request_id in args.request_ids:
            if not is_valid_id(request_id):
                print(f"{request_id!r}: not a request_id (1-128 printable characters)")
                continue
            result = cancel_request(
                db,
                request_id,
                detail=DETAIL,
                callback_url=settings.callback_url,
                unseen=args.unseen,
            )
            results.append(result)
            print(f"{request_id}: {result.explanation}")
    except DeferredFailure as failure:
        print(
            f"email-worker cancel: the database is unavailable ({failure.detail})", file=sys.stderr
        )
        return EXIT_REFUSED
    finally:
        db.close()
    _hand_over(settings, [r.outbox_id for r in results if r.outbox_id is not None])
    everything = len(results) == len(args.request_ids) and all(r.done for r in results)
    return EXIT_OK if everything else EXIT_REFUSED


def _hand_over(settings: Settings, outbox_ids: list[int]) -> None:
    """Ask the ``callbacks`` workers to deliver now; best effort (beat re-drives the rest)."""
    if not outbox_ids:
        return
    from email_worker.app.build import celery_notifier

    notifier: Notifier = celery_notifier(settings)
    for outbox_id in outbox_ids:
        notifier.hand_over(outbox_id)
    close = getattr(notifier, "close", None)
    if callable(close):
        close()
