"""The one ``Settings`` (the only reader of the environment, prefix ``EMAIL_WORKER_``) and how
its values are read (``sources``)."""

from __future__ import annotations

from email_worker.config.settings import Settings
from email_worker.config.sources import PREFIX, SECRET_FIELDS, SmtpSecurity, check_queue_arguments

__all__ = ["PREFIX", "SECRET_FIELDS", "Settings", "SmtpSecurity", "check_queue_arguments"]
