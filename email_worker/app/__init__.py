"""The composition root: ``build`` turns the one ``Settings`` into every adapter a command needs
(run, callbacks, beat, dlq, topology, demo); ``worker`` is ``email-worker run`` wired from them.
The only place that knows all the concrete classes."""

from __future__ import annotations

from email_worker.app.build import declare_topology, inline_notifier
from email_worker.app.worker import Worker

__all__ = ["Worker", "declare_topology", "inline_notifier"]
