"""Bounce and complaint webhooks on the HTTP port (CONTRACT section 15): each provider's
authentication (``signatures`` with ``cryptography``, ``shared_secrets``), its endpoint
(``endpoints``), the route that dispatches to them (``dispatch``) and their wiring (``setup``).
The parsing is pure and lives in ``email_worker.reports``."""
