"""email-worker: consume ``email.queue``, send over SMTP, dead-letter what cannot be delivered,
record everything in Postgres and report status to the gateway."""

__version__ = "0.1.0"
