"""Bounce and complaint reports, normalised (pure: no adapter library). ``model`` is the
vocabulary (hard_bounce, soft_bounce, complaint, unsubscribe); one module per provider parses
its documented format (``ses``, ``sendgrid``, ``mailgun``, ``postmark``, ``dsn`` for raw RFC 3464
and RFC 5965 reports); ``intake`` applies them through ports (suppression list, ledger)."""
