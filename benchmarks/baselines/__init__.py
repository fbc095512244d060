"""Baselines the worker is compared with: ``naive_celery`` is the common shape of a public
notification service's email task (one Celery task per email doing everything afresh)."""
