"""``email-worker demo``: the whole pipeline on the local RabbitMQ and Postgres with an embedded
SMTP sink and template service. Needs the ``demo`` extra (aiosmtpd), never a runtime dependency."""
