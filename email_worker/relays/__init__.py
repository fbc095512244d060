"""Several relays behind the ``Mailer`` port, with duplicate-safe failover (CONTRACT section 16).

``urls`` parses ``RELAYS`` into ``RelaySpec`` values; ``breaker`` is each relay's own circuit
breaker; ``selection`` orders the relays for one message (priority, or weights shared among the
healthy ones); ``failover`` is the decision table (which failure may go to the next relay, what
it says about the relay's health); ``router`` is the ``Mailer`` that ties them together over
``RelayTransport``s (the SMTP adapter, later the HTTP providers); ``sandbox`` is the transport
of ``SANDBOX=true``, which sends nothing. Everything here is pure: transports are built from
specs in ``email_worker.app.relays``.
"""
