"""The relays of ``run``, built from ``Settings``: one transport per ``RELAYS`` URL (or the one
relay of the ``SMTP_*`` settings, or the sandbox), the ``RelayRouter`` over them, and what
readiness and the metrics read of them (reachability, breakers, SMTP pools).

Relay kinds are pluggable: ``KINDS`` maps each kind to how its transport and its readiness
probe are built. The SMTP kinds are here; an HTTP provider (``ses``, ``sendgrid``,
``mailgun``, ``postmark``) adds one entry, and its kind to ``relays.urls.IMPLEMENTED`` (the
settings refuse a kind this build cannot send through, naming ``RELAYS``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from email_worker.app.provider_relays import HTTP_KINDS, http_probe, http_transport
from email_worker.config import Settings, SmtpSecurity
from email_worker.ops.health import TcpProbe
from email_worker.ports import RelayPacer
from email_worker.relays.router import Relay, RelayRouter, RelayTransport, SendObserver
from email_worker.relays.sandbox import ComplaintSink, SandboxRelay
from email_worker.relays.urls import RelayKind, RelaySpec
from email_worker.reports.intake import ReportIntake
from email_worker.reports.model import Kind, Report
from email_worker.smtp.mailer import SmtpMailer
from email_worker.smtp.pool import PoolCounts

log = logging.getLogger(__name__)

Probe = Callable[[], bool]
Signer = Callable[[bytes], bytes]  # DKIM: the built message in, the message to send out


@dataclass(frozen=True)
class RelayContext:
    """What every relay's transport is built with: the settings, how many relays there are
    (a connection refused is retried in place only when no other relay can take the message)
    and the DKIM signer, when one is configured."""

    settings: Settings
    count: int
    sign: Signer | None = None


@dataclass(frozen=True)
class KindSupport:
    transport: Callable[[RelaySpec, RelayContext], RelayTransport]
    probe: Callable[[RelaySpec, Settings], Probe]


_SECURITY = {
    RelayKind.SMTP: SmtpSecurity.NONE,
    RelayKind.SMTP_STARTTLS: SmtpSecurity.STARTTLS,
    RelayKind.SMTPS: SmtpSecurity.TLS,
}


def smtp_transport(spec: RelaySpec, context: RelayContext) -> RelayTransport:
    """An ``SmtpMailer`` with ``SMTP_CONNECTIONS`` connections of its own."""
    assert spec.port is not None  # the parser gives every SMTP relay a port
    settings = context.settings
    return SmtpMailer(
        spec.host,
        spec.port,
        security=_SECURITY[spec.kind],
        username=spec.username,
        password=spec.password,
        timeout=settings.smtp_timeout,
        ca_file=settings.smtp_ca_file,
        max_connections=settings.smtp_connections,
        connect_attempts=1 if context.count > 1 else None,
        sign=context.sign,
    )


def tcp_probe(spec: RelaySpec, settings: Settings) -> Probe:
    """Whether the relay's port accepts a TCP connection, at most once per
    ``SMTP_PROBE_INTERVAL_SECONDS``."""
    assert spec.port is not None
    probe = TcpProbe(
        spec.host,
        spec.port,
        interval=settings.smtp_probe_interval_seconds,
        timeout=min(2.0, settings.smtp_timeout),
    )
    return probe.reachable


_SMTP = KindSupport(smtp_transport, tcp_probe)
KINDS: dict[RelayKind, KindSupport] = {
    RelayKind.SMTP: _SMTP,
    RelayKind.SMTP_STARTTLS: _SMTP,
    RelayKind.SMTPS: _SMTP,
    # The HTTP API providers (email_worker/app/provider_relays.py, docs/providers/).
    **dict.fromkeys(HTTP_KINDS, KindSupport(http_transport, http_probe)),
}


class RelaySet:
    """The router, each relay's probe (by name), and the SMTP pools for the gauges."""

    def __init__(self, router: RelayRouter, probes: Mapping[str, Probe]) -> None:
        self.router = router
        self._probes = dict(probes)

    @property
    def names(self) -> list[str]:
        return [relay.name for relay in self.router.relays]

    def reachable(self) -> dict[str, bool]:
        """Each relay's probe (cached by the probe itself), by name."""
        return {name: probe() for name, probe in self._probes.items()}

    def breaker_states(self) -> dict[str, str]:
        return self.router.breaker_states()

    def pool_counts(self) -> PoolCounts:
        """The connections of every SMTP relay together (the SMTP gauges' values)."""
        busy = idle = waiting = 0
        for relay in self.router.relays:
            if isinstance(relay.transport, SmtpMailer):
                counts = relay.transport.pool_counts()
                busy, idle = busy + counts.busy, idle + counts.idle
                waiting += counts.waiting
        return PoolCounts(busy=busy, idle=idle, waiting=waiting)

    def close(self) -> None:
        self.router.close()


def sandbox_complaints(intake: ReportIntake) -> ComplaintSink:
    """The sandbox's complaint reports, into the same intake as the providers' webhooks
    (source ``sandbox``): the address is suppressed (``complaint``) and the request turns
    ``complained`` with its ``failed`` callback, as a real complaint would make them."""

    def report(message_id: str, recipient: str) -> None:
        complaint = Report(
            Kind.COMPLAINT, recipient, detail="sandbox complaint", message_ids=(message_id,)
        )
        intake.take("sandbox", [complaint], vouched=True)

    return report


def relay_set(
    settings: Settings,
    observe: SendObserver,
    *,
    sign: Signer | None = None,
    complaints: ComplaintSink | None = None,
    pacer: RelayPacer | None = None,
) -> RelaySet:
    """The relays ``settings`` configure. ``SANDBOX=true``: the sandbox alone, and no
    connection to any configured relay, not even a readiness probe. ``pacer``: each relay's
    own route (``relay:<name>``), asked by the router before each send."""
    fail_max, reset = settings.breaker_fail_max, settings.breaker_reset_seconds
    if settings.sandbox:
        log.warning("SANDBOX=true: nothing is sent; outcomes are simulated (docs/relays.md)")
        sandbox = SandboxRelay(complaints=complaints)
        only = [Relay(sandbox.name, sandbox)]
        router = RelayRouter(
            only, fail_max=fail_max, reset_seconds=reset, observe=observe, pacer=pacer
        )
        return RelaySet(router, {sandbox.name: lambda: True})
    specs = settings.relay_specs()
    context = RelayContext(settings, len(specs), sign)
    relays: list[Relay] = []
    probes: dict[str, Probe] = {}
    for spec in specs:
        support = KINDS[spec.kind]  # the settings refused the kinds missing here
        relays.append(Relay(spec.name, support.transport(spec, context), spec.weight))
        probes[spec.name] = support.probe(spec, settings)
    router = RelayRouter(
        relays, fail_max=fail_max, reset_seconds=reset, observe=observe, pacer=pacer
    )
    return RelaySet(router, probes)
