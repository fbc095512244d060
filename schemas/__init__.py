"""Wire contracts of the email worker: inbound messages, status callbacks, dead-letter headers.

Nothing in this package performs I/O. ``email_worker`` and ``templates_client`` import from here,
never the other way round.
"""
