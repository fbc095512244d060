"""What the benchmark sends: the spec-sized ``simple`` workload (a three-line template, ~2 KB
emails, every send accepted) and the ``realistic`` one of issue 20: 20-60 KB of HTML from a
template with a loop over a list variable and conditionals, no text body (the worker derives
it), DKIM-signed when a key is given, and a sink that answers 2% of recipients with 451 once
and 1% with 550 at RCPT.

A workload gives the messages, the template the HTTP services serve for it, the worker settings
it needs and how many requests end ``failed`` by design (the 550s), so a run knows when it is
done. The faults are chosen by recipient number (``user<N>@example.com``), the same rule the
sink applies (``benchmarks.smtp_sink --faults``)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

from benchmarks.broker import spec_message

DIGEST_CODE = "digest"

# A weekly order digest: a loop over the items, conditionals per item and per customer.
DIGEST_TEMPLATE: dict[str, Any] = {
    "subject": "Your weekly digest, {{ name }}: {{ items | length }} updates",
    "html_body": (
        "<html><head><style>td{padding:4px 8px;font-family:Arial,sans-serif}"
        ".sale{color:#b00}.muted{color:#777}</style></head><body>"
        "<h1>Hello {{ name }}</h1>"
        "{% if premium %}<p>As a premium member you get free shipping on everything below."
        "</p>{% else %}<p>Upgrade to premium for free shipping: "
        '<a href="{{ link }}/premium">see the plans</a>.</p>{% endif %}'
        "<table>{% for item in items %}<tr>"
        '<td><a href="{{ link }}/items/{{ item.sku }}">{{ item.title }}</a>'
        '<div class="muted">{{ item.summary }}</div></td>'
        "<td>{% if item.discount %}"
        '<span class="sale">{{ "%.2f" | format(item.price * (100 - item.discount) / 100) }}'
        '</span> <s>{{ "%.2f" | format(item.price) }}</s> (-{{ item.discount }}%)'
        '{% else %}{{ "%.2f" | format(item.price) }}{% endif %}</td>'
        "<td>{% if item.stock > 10 %}in stock{% elif item.stock > 0 %}only {{ item.stock }} "
        "left{% else %}back soon{% endif %}</td></tr>{% endfor %}</table>"
        "{% if items | selectattr('discount') | list %}<p>Discounts end on Sunday.</p>"
        '{% endif %}<p class="muted">You receive this digest because you follow these '
        'products. <a href="{{ link }}/settings">Change what you follow</a>.</p>'
        "</body></html>"
    ),
    "version": "3",
}

_WORDS = [
    "ceramic",
    "walnut",
    "linen",
    "travel",
    "compact",
    "wireless",
    "classic",
    "premium",
    "organic",
    "steel",
    "handmade",
    "everyday",
    "outdoor",
    "kitchen",
    "studio",
    "vintage",
    "modern",
    "lightweight",
    "waterproof",
    "limited",
]


def _items(rng: random.Random, count: int) -> list[dict[str, Any]]:
    items = []
    for n in range(count):
        words = rng.choices(_WORDS, k=14)
        items.append(
            {
                "sku": f"SKU-{rng.randrange(10**8):08d}",
                "title": " ".join(words[:4]).title(),
                "summary": " ".join(words[4:]) + f". Reviewed by {rng.randrange(5, 900)} buyers.",
                "price": round(rng.uniform(3, 400), 2),
                "discount": rng.choice((0, 0, 0, 10, 15, 25)),
                "stock": rng.choice((0, 3, 8, 40, 120)),
                "position": n,
            }
        )
    return items


def fault_of(number: int) -> str | None:
    """The sink's answer for recipient ``number`` in the realistic workload: ``451`` once for
    2% of recipients, ``550`` at RCPT for 1%, None (accepted) for the rest."""
    if number % 50 == 7:
        return "451"
    if number % 100 == 13:
        return "550"
    return None


@dataclass(frozen=True)
class Workload:
    name: str
    template_code: str
    settings: dict[str, object] = field(default_factory=dict)

    def message(self, request_id: str, number: int) -> dict[str, Any]:
        message = spec_message(request_id, number)
        if self.name == "realistic":
            rng = random.Random(number)  # the same mail for the same number, run after run
            message["template_code"] = self.template_code
            variables = message["variables"]
            variables["premium"] = number % 3 == 0
            variables["items"] = _items(rng, rng.randrange(70, 185))  # ~20-60 KB of HTML
        return message

    def failures(self, messages: int) -> int:
        """Requests of a run of ``messages`` that end ``failed`` by design (550 at RCPT)."""
        if self.name != "realistic":
            return 0
        return sum(1 for n in range(messages) if fault_of(n) == "550")


SIMPLE = Workload("simple", "welcome")


def realistic(dkim_key_file: str | None) -> Workload:
    """The realistic workload; DKIM-signed with ``dkim_key_file`` (RSA-2048 PEM) when given.
    Retries come back after 1 s (the 451s), so a run ends soon after its last send."""
    settings: dict[str, object] = {"retry_delays": "1,2,5", "max_attempts": 5}
    if dkim_key_file:
        settings |= {
            "dkim_domain": "example.com",
            "dkim_selector": f"bench{uuid.uuid4().hex[:6]}",
            "dkim_private_key_file": dkim_key_file,
        }
    return Workload("realistic", DIGEST_CODE, settings)
