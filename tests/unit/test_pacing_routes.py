"""Route names and ``DOMAIN_RATE_LIMITS``: the parser is fed from outside (an environment
variable), so it gets a table of good and bad values and a property test."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from email_worker.pacing.routes import (
    RouteLabels,
    is_domain,
    parse_domain_limits,
    route_of,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", {}),
        ("gmail.com=20", {"gmail.com": 20.0}),
        (
            "gmail.com=20,outlook.com=10,yahoo.com=5",
            {"gmail.com": 20, "outlook.com": 10, "yahoo.com": 5},
        ),
        (" Gmail.COM = 2.5 , , outlook.com=0.5 ", {"gmail.com": 2.5, "outlook.com": 0.5}),
        ("xn--bcher-kva.example=3", {"xn--bcher-kva.example": 3}),
        ("mail.example.org.=1", {"mail.example.org": 1}),
    ],
)
def test_domain_limits_parse(text: str, expected: dict[str, float]) -> None:
    assert parse_domain_limits(text) == expected


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("gmail.com", "is not domain=rate"),
        ("gmail.com=", "must be a number"),
        ("gmail.com=0", "must be a number"),
        ("gmail.com=-3", "must be a number"),
        ("gmail.com=nan", "must be a number"),
        ("gmail.com=inf", "must be a number"),
        ("gmail.com=fast", "must be a number"),
        ("localhost=5", "is not domain=rate"),
        ("bücher.de=5", "is not domain=rate"),
        ("-bad.example=5", "is not domain=rate"),
        ("a b.example=5", "is not domain=rate"),
        ("gmail.com=1,GMAIL.com=2", "given twice"),
    ],
)
def test_bad_domain_limits_are_refused_with_the_reason(text: str, names: str) -> None:
    with pytest.raises(ValueError, match=names):
        parse_domain_limits(text)


@given(st.text(max_size=300))
def test_the_parser_either_refuses_with_value_error_or_gives_positive_rates_of_domains(
    text: str,
) -> None:
    try:
        limits = parse_domain_limits(text)
    except ValueError:
        return
    assert all(is_domain(domain) and domain == domain.lower() for domain in limits)
    assert all(rate > 0 for rate in limits.values())


@given(
    st.dictionaries(
        st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,10}){1,3}", fullmatch=True),
        st.floats(min_value=0.01, max_value=1e6),
        max_size=8,
    )
)
def test_what_is_written_is_read_back(limits: dict[str, float]) -> None:
    text = ",".join(f"{domain}={rate!r}" for domain, rate in limits.items())
    assert parse_domain_limits(text) == limits


@pytest.mark.parametrize(
    ("failure_route", "domain", "route"),
    [
        ("relay", "gmail.com", "relay"),
        ("domain", "Gmail.com", "domain:gmail.com"),
        ("relay:ses", "gmail.com", "relay:ses"),
        ("domain:outlook.com", "gmail.com", "domain:outlook.com"),
        ("", "gmail.com", "relay"),
    ],
)
def test_the_route_of_a_throttling_answer(failure_route: str, domain: str, route: str) -> None:
    assert route_of(failure_route, domain) == route


def test_labels_are_bounded_beyond_the_configured_routes() -> None:
    labels = RouteLabels({"relay", "domain:gmail.com"}, limit=2)
    assert labels.label("domain:gmail.com") == "domain:gmail.com"
    assert labels.label("domain:a.example") == "domain:a.example"
    assert labels.label("domain:b.example") == "domain:b.example"
    assert labels.label("domain:c.example") == "domain:other"
    assert labels.label("domain:a.example") == "domain:a.example"  # keeps its own label
    assert labels.label("relay") == "relay"
