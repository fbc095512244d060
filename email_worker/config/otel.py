"""The standard OpenTelemetry variables the worker reads itself (CONTRACT section 18).

They keep their standard names, without the ``EMAIL_WORKER_`` prefix, so one ``OTEL_*`` block
configures every service of a deployment alike. ``Settings`` reads the ones the worker decides
with: whether tracing is on (an endpoint is set and ``OTEL_SDK_DISABLED`` is not ``true``), where
spans go, the protocol (only OTLP over HTTP/protobuf is shipped, so another one stops start-up
instead of exporting nowhere) and the service name. The rest of the standard variables
(``OTEL_EXPORTER_OTLP_HEADERS``, ``..._TIMEOUT``, ``..._COMPRESSION``, ``..._CERTIFICATE``,
``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``, ``OTEL_RESOURCE_ATTRIBUTES``) are the SDK's own contract
and are read by the SDK where it always reads them: a second parser here would only drift from
it, and the exporter's headers often hold a vendor's API key the worker has no use for.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import AliasChoices

SERVICE_NAME = "email-worker"  # OTEL_SERVICE_NAME's default (CONTRACT section 18)
PROTOCOL = "http/protobuf"  # the one OTLP protocol the worker ships an exporter for
TRACES_PATH = "v1/traces"  # appended to OTEL_EXPORTER_OTLP_ENDPOINT, as the spec says


def standard(name: str) -> AliasChoices:
    """A field read from the standard variable ``name`` (no prefix); ``Settings(field=...)``
    still works by the field's own name."""
    return AliasChoices(name, name.lower())


def unset_when_empty(value: object) -> object:
    """The specification reads an empty value as unset."""
    return None if isinstance(value, str) and not value.strip() else value


def check_endpoint(value: str | None) -> str | None:
    """An ``http://`` or ``https://`` URL with a host, or ``ValueError``."""
    if value is None:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL, e.g. http://otel-collector:4318")
    return value.strip()


def check_protocol(value: str | None) -> str | None:
    """``http/protobuf`` (or unset), or ``ValueError`` naming what is supported."""
    if value is None or value.strip() == PROTOCOL:
        return None if value is None else PROTOCOL
    raise ValueError(f"the worker exports OTLP over {PROTOCOL} only (port 4318, not gRPC's 4317)")


def traces_url(base: str | None, traces: str | None) -> str | None:
    """Where spans are POSTed: ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` as it is, else
    ``OTEL_EXPORTER_OTLP_ENDPOINT`` with ``v1/traces`` appended to its path; None when neither
    is set (tracing off)."""
    if traces:
        return traces
    if base:
        return f"{base.rstrip('/')}/{TRACES_PATH}"
    return None
