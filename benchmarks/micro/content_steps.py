"""The worker's content path on the throughput benchmark's workloads, one step at a time, with
the worker's own objects: what ``benchmarks.micro.content_path`` times and counts.

A ``Bench`` holds one workload's messages (``benchmarks.workloads``: 40 by default, the same
ones every run) and the objects the worker builds at start-up: a ``TemplateRenderer``, the
template as the template service answers it (``template_from_answer``), and for the realistic
workload a ``DkimSigner`` with an RSA-2048 key. Each step does its work for every message once:

- ``render``: ``TemplateRenderer.render`` (sandbox, budget, size cap, header checks and, as
  neither template ships a text body, the text derived from the HTML);
- ``textify``: ``html_to_text`` of the rendered HTML alone (a part of ``render``);
- ``build``: ``build_message`` and ``serialize``, what ``SmtpMailer.send`` writes;
- ``dkim``: ``DkimSigner.sign`` of those bytes;
- ``stuff``: ``smtp.wire.dot_stuffed``, the DATA payload;
- ``email``: all of it, message by message, as one email goes through ``run``.

``summary`` condenses a step's outputs so two versions of the worker can be compared: the
rendered parts; the built message parsed back (headers, parts, decoded bodies; the date and
the boundary differ by design); whether every signature verifies with ``dkimpy``; the payload
unstuffed. This module imports only names every version of the content path has had since
issue 14, so it can drive an older checkout (``content_path`` loads one from git).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from benchmarks.http_services import TEMPLATE, TEMPLATE_CODE
from benchmarks.workloads import DIGEST_CODE, DIGEST_TEMPLATE, SIMPLE, realistic

STEPS = ("render", "textify", "build", "dkim", "stuff", "email")
SENDER = "notifications@example.com"
DKIM_DOMAIN, DKIM_SELECTOR = "example.com", "bench"


@dataclass
class Bench:
    """One workload's messages and the worker's objects, with each step's last outputs."""

    workload: str
    variables: list[dict[str, Any]]
    recipients: list[str]
    renderer: Any
    template: Any
    sign: Callable[[bytes], bytes] | None
    outputs: dict[str, list[Any]] = field(default_factory=dict)


def make_bench(
    workload: str, messages: int, key_pem: bytes | None, render_seconds: float = 0.5
) -> Bench:
    """The ``simple`` or ``realistic`` workload's first ``messages`` messages, decoded from JSON
    as the worker gets them. ``key_pem`` (RSA PEM) signs the realistic workload;
    ``render_seconds`` is the renderer's time budget (``MAX_RENDER_SECONDS``'s default)."""
    from email_worker.render.renderer import TemplateRenderer
    from templates_client.template import template_from_answer, template_reader

    realistic_one = workload == "realistic"
    shape = realistic(None) if realistic_one else SIMPLE
    answer = DIGEST_TEMPLATE if realistic_one else TEMPLATE
    code = DIGEST_CODE if realistic_one else TEMPLATE_CODE
    decoded = [json.loads(json.dumps(shape.message(f"req-{n}", n))) for n in range(messages)]
    sign = None
    if realistic_one and key_pem is not None:
        from email_worker.dkim import DkimSigner
        from email_worker.dkim.keys import parse_signing_key

        sign = DkimSigner(DKIM_DOMAIN, DKIM_SELECTOR, parse_signing_key(key_pem)).sign
    return Bench(
        workload,
        [message["variables"] for message in decoded],
        [message["to_email"] for message in decoded],
        TemplateRenderer(max_render_seconds=render_seconds),
        template_from_answer(code, None, answer, template_reader()),
        sign,
    )


def _outgoing(bench: Bench, number: int, content: Any) -> Any:
    from email_worker.ports import OutgoingEmail

    message_id = f"<{hashlib.sha256(str(number).encode()).hexdigest()[:32]}@example.com>"
    return OutgoingEmail(SENDER, bench.recipients[number], message_id, content)


def step(bench: Bench, name: str) -> Callable[[], None]:
    """The step ``name`` over every message; it needs the steps before it to have run once
    (``prepare``)."""
    from email_worker.render.mime import build_message, serialize
    from email_worker.render.textify import html_to_text
    from email_worker.smtp.wire import dot_stuffed

    out = bench.outputs
    sign = bench.sign or (lambda message: message)
    count = range(len(bench.variables))

    def render() -> None:
        out["render"] = [bench.renderer.render(bench.template, v) for v in bench.variables]

    def textify() -> None:
        out["textify"] = [html_to_text(content.html) for content in out["render"]]

    def build() -> None:
        emails = [_outgoing(bench, n, c) for n, c in enumerate(out["render"])]
        out["build"] = [serialize(build_message(e), utf8=False) for e in emails]

    def dkim() -> None:
        out["dkim"] = [sign(message) for message in out["build"]]

    def stuff() -> None:
        out["stuff"] = [dot_stuffed(message) for message in out["dkim"]]

    def email() -> None:
        sent = []
        for n in count:
            content = bench.renderer.render(bench.template, bench.variables[n])
            built = serialize(build_message(_outgoing(bench, n, content)), utf8=False)
            sent.append(dot_stuffed(sign(built)))
        out["email"] = sent

    steps = {f.__name__: f for f in (render, textify, build, dkim, stuff, email)}
    return steps[name]


def prepare(bench: Bench) -> None:
    """Every step once, in order: outputs for the next, compiled templates cached."""
    for name in STEPS:
        step(bench, name)()


def summary(bench: Bench, name: str, public_key_record: str | None = None) -> str:
    """A digest of step ``name``'s outputs that two equivalent versions share."""
    outputs = bench.outputs[name]
    if name == "render":
        rows: list[Any] = [
            [c.subject, c.html, c.text, c.list_unsubscribe, c.template_code, c.template_version]
            for c in outputs
        ]
    elif name == "textify":
        rows = list(outputs)
    elif name in ("build", "stuff", "email"):
        rows = [_parsed(_unstuffed(wire) if name != "build" else wire) for wire in outputs]
    else:
        rows = [_verified(signed, public_key_record) for signed in outputs]
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


def _unstuffed(payload: bytes) -> bytes:
    assert payload.endswith(b"\r\n.\r\n"), "no final dot"
    lines = payload[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def _parsed(wire: bytes) -> list[Any]:
    """Headers (the date, the boundary and the signature aside), parts and decoded bodies."""
    message = message_from_bytes(wire, policy=policy.default)
    skipped = {"date", "content-type", "dkim-signature"}
    headers = [(k, str(v)) for k, v in message.items() if k.lower() not in skipped]
    parts = [(p.get_content_type(), p.get_content()) for p in message.iter_parts()]
    return [message.get_content_type(), headers, parts, "dkim-signature" in message]


def _verified(signed: bytes, record: str | None) -> bool:
    import dkim

    def txt(name: bytes, timeout: float = 5) -> bytes:
        assert name == f"{DKIM_SELECTOR}._domainkey.{DKIM_DOMAIN}.".encode(), name
        return (record or "").encode()

    return bool(dkim.verify(signed, dnsfunc=txt))


def serve(argv: Sequence[str]) -> None:
    """A child process's loop (``content_path`` starts it): ``WORKLOAD MESSAGES KEY_FILE MODE``.

    ``serve``: one JSON request per line on stdin, one answer per line on stdout:
    ``{"run": STEP, "calls": N}`` runs the step N times and answers the process's CPU seconds
    so far; ``{"summary": STEP, "record": TXT}`` answers ``summary``. ``count:STEPS:N``: for
    callgrind, each step N times between two ``os.getppid()`` calls (the markers its
    ``--dump-before=getppid`` cuts the profile at), then exit.
    """
    workload, messages, key_file, mode = argv
    key = Path(key_file).read_bytes() if key_file != "-" else None
    counting = mode.startswith("count:")
    # Under callgrind everything runs about 50 times slower: the time budget would end a
    # render (how long it may take changes nothing of what it executes).
    bench = make_bench(workload, int(messages), key, 600.0 if counting else 0.5)
    prepare(bench)
    if counting:
        _, names, repeat = mode.split(":")
        for name in names.split(","):
            run = step(bench, name)
            os.getppid()
            for _ in range(int(repeat)):
                run()
        os.getppid()
        return
    import email_worker

    _answer({"ready": email_worker.__file__})
    for line in sys.stdin:
        request = json.loads(line)
        if "run" in request:
            run = step(bench, request["run"])
            for _ in range(request["calls"]):
                run()
            _answer({"cpu": time.process_time()})
        else:
            _answer({"summary": summary(bench, request["summary"], request.get("record"))})


def _answer(answer: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(answer) + "\n")
    sys.stdout.flush()
