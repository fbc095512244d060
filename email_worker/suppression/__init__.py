"""The suppression list's pure side (CONTRACT section 15): what an entry is and how an address
is normalised and masked (``entries``), which entries stop which messages and the one-click
unsubscribe headers of bulk mail (``policy``), the opaque unsubscribe tokens (``tokens``) and
the ``POST /unsubscribe/{token}`` endpoint (``endpoint``). The Postgres store is
``email_worker.ledger.suppressions``.

This ``__init__`` imports nothing: the pipeline imports ``policy`` alone, and ``tokens`` (which
needs ``cryptography``) is only loaded where tokens are minted or read.
"""
