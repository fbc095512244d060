"""The HTTP API providers as relays (CONTRACT section 16): Amazon SES v2, Twilio SendGrid v3,
Mailgun and Postmark, each a ``RelayTransport`` (``email_worker.relays.router``) built from the
provider's published API documentation (cited at the top of each module and in
``docs/providers/``).

    credentials  which settings each provider needs, its default API base URL, the checks of an
                 overriding URL (pure: the settings use it)
    answers      what an answer means here: the classification table shared by the four (pure)
    exchange     one POST over the hardened ``httpx`` client: strict timeouts, no redirects, no
                 environment proxies, TLS verified, capped answers; what a failed connection
                 means (before the request left: fail over; after: ambiguous)
    ses          SES v2 ``SendEmail`` with ``Content.Raw``, signed with botocore's SigV4 signer
    sendgrid     SendGrid v3 ``/v3/mail/send`` (JSON: the same subject, parts and headers)
    mailgun      Mailgun ``/v3/{domain}/messages.mime`` (multipart: the raw MIME file)
    postmark     Postmark ``/email`` (JSON: the same subject, parts and headers)

The raw-MIME providers send the bytes the SMTP adapter would send (``render.mime``, DKIM-signed
when a signer is configured); the JSON providers send the same subject, bodies and headers,
always with our ``Message-ID``. httpx and botocore are imported here only (and httpx in
``templates_client``); this ``__init__`` imports nothing, so the settings may read
``credentials`` without loading either.
"""
