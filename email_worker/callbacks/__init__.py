"""Status callbacks (CONTRACT section 7): the outbox SQL, the dispatcher that leases and delivers
rows, the HTTP sender with its SSRF and URL policy, signing, backoff and the body's shape, the
Celery tasks and the inline notifier. The only package that imports Celery and ``http.client``."""
