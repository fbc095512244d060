"""DKIM signing (CONTRACT section 17): the signing key (``keys``), relaxed canonicalisation
(``canonical``) and the ``DKIM-Signature`` header (``signer``). The one home of the
``cryptography`` library for signing; the mailer receives ``DkimSigner.sign`` as a plain
function from ``email_worker.app``."""

from __future__ import annotations

from email_worker.dkim.keys import SigningKey, load_signing_key
from email_worker.dkim.signer import DkimSigner

__all__ = ["DkimSigner", "SigningKey", "load_signing_key"]
