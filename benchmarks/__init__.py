"""The throughput benchmark (issue 4): the real ``email-worker`` processes against real RabbitMQ
and Postgres, a fast SMTP sink, a local template service and a callback receiver, side by side
with the raw capacity of the sink and the broker and with a naive Celery baseline. Run it with
``python -m benchmarks`` (``make bench``); ``benchmarks/README.md`` explains every figure.
"""
