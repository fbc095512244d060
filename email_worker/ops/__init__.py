"""What operators see of a running worker: the health server (``/health``, ``/readyz``,
``/metrics``), the Prometheus metrics and the status API."""
