"""The SSRF policy for URLs that arrive inside messages (RELIABILITY rule 15): the allow-list,
internal addresses in every encoding, one URL parser, and the addresses checked at connect time
(the sender side, with real listeners: tests/integration/test_callback_ssrf.py)."""

from __future__ import annotations

import ipaddress

import pytest

from email_worker.callbacks.url_policy import (
    IPAddress,
    Refused,
    UrlPolicy,
    host_allowed,
    is_internal_ip,
    parse_url,
    unwrap_ip,
)

ALLOWED = ["hooks.example.com", "*.example.org", "127.0.0.1", "[2001:db8::5]", "Gateway.Local"]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://hooks.example.com/api/v1/email/status/", True),
        ("http://hooks.example.com:8443/x", True),  # non-default ports are fine
        ("https://HOOKS.EXAMPLE.COM/x", True),  # case-insensitive
        ("https://hooks.example.com./x", True),  # trailing dot is the same host
        ("https://gateway.local/x", True),  # entries are case-insensitive too
        ("https://a.example.org/x", True),  # wildcard: subdomain
        ("https://a.b.example.org/x", True),  # wildcard: deeper subdomain
        ("https://example.org/x", False),  # wildcard: not the apex
        ("https://evilexample.org/x", False),  # suffix without a dot boundary
        ("https://example.org.evil.com/x", False),
        ("https://other.example.com/x", False),  # exact entries do not admit subdomains
        ("https://hooks.example.com.evil.com/x", False),
        ("ftp://hooks.example.com/x", False),
        ("file:///etc/passwd", False),
        ("javascript:alert(1)", False),
        ("//hooks.example.com/x", False),  # no scheme
        ("http://a@hooks.example.com/", False),  # userinfo
        ("http://user:pw@hooks.example.com/", False),
        ("http://@hooks.example.com/", False),
        ("http://evil.com\\@hooks.example.com/", False),  # parser differential
        ("http://hooks.example.com\r\nX: y/", False),
        ("http://hooks.example.com /", False),
        ("http://hooks.example.com#@evil.com/", True),  # the fragment is not the authority
        ("http://[::1/", False),  # malformed: refused, never raises
        ("http://[zz]/", False),
        ("not a url", False),
        ("", False),
        # IP literals: only when that exact address is listed.
        ("http://127.0.0.1:8080/cb", True),
        ("http://[2001:db8::5]/cb", True),
        ("http://[2001:db8:0:0:0:0:0:5]/cb", True),  # same address, other spelling
        ("http://127.0.0.2/", False),
        ("http://localhost/", False),
        ("http://10.0.0.1/", False),
        ("http://172.16.0.1/", False),
        ("http://192.168.1.1/", False),
        ("http://169.254.169.254/latest/meta-data/", False),
        ("http://[::1]/", False),
        ("http://[::ffff:127.0.0.1]/", False),  # listing 127.0.0.1 does not admit its v6 form
        ("http://[64:ff9b::7f00:1]/", False),
        ("http://[2002:7f00:1::]/", False),
        ("http://8.8.8.8/", False),  # public, but not listed
        # Legacy numeric hosts a resolver reads as 127.0.0.1.
        ("http://2130706433/", False),
        ("http://0177.0.0.1/", False),
        ("http://0x7f.0.0.1/", False),
        ("http://0x7f000001/", False),
        ("http://127.1/", False),
        ("http://%31%32%37.0.0.1/", False),
        ("http://[fe80::1%25eth0]/", False),
    ],
)
def test_host_allowed(url: str, expected: bool) -> None:
    assert host_allowed(url, ALLOWED) is expected


def test_legacy_numeric_forms_are_refused_even_when_listed_verbatim() -> None:
    assert host_allowed("http://2130706433/", ["2130706433"]) is False
    assert host_allowed("http://127.1/", ["127.1"]) is False


def test_empty_allow_list_allows_nothing() -> None:
    assert host_allowed("https://hooks.example.com/", []) is False
    assert host_allowed("https://hooks.example.com/", ["*", "*.", ""]) is False


def test_idn_hosts_match_their_entries() -> None:
    assert host_allowed("https://BÜCHER.example/x", ["bücher.example"]) is True
    assert host_allowed("https://xn--bcher-kva.example/x", ["bücher.example"]) is True
    assert host_allowed("https://a.bücher.example/x", ["*.BÜCHER.example"]) is True


@pytest.mark.parametrize(
    ("address", "internal"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("172.31.255.255", True),
        ("192.168.0.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),  # shared address space (carrier-grade NAT)
        ("0.0.0.0", True),
        ("224.0.0.1", True),  # multicast
        ("240.0.0.1", True),  # reserved
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fc00::1", True),
        ("ff02::1", True),
        ("::ffff:127.0.0.1", True),  # IPv4-mapped
        ("::ffff:10.0.0.1", True),
        ("64:ff9b::7f00:1", True),  # NAT64 of 127.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 of 169.254.169.254
        ("64:ff9b:1::1", True),  # local-use NAT64
        ("2002:7f00:1::", True),  # 6to4 of 127.0.0.1
        ("2002:a00:1::", True),  # 6to4 of 10.0.0.1
        ("::7f00:1", True),  # IPv4-compatible 127.0.0.1
        ("8.8.8.8", False),
        ("172.32.0.1", False),
        ("2606:4700:4700::1111", False),
        ("::ffff:8.8.8.8", False),
        ("64:ff9b::808:808", False),  # NAT64 of 8.8.8.8
        ("2002:808:808::", False),  # 6to4 of 8.8.8.8
    ],
)
def test_is_internal_ip(address: str, internal: bool) -> None:
    assert is_internal_ip(ipaddress.ip_address(address)) is internal


def test_unwrap_ip_extracts_the_ipv4_inside() -> None:
    loopback = ipaddress.IPv4Address("127.0.0.1")
    for form in ("::ffff:127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "::127.0.0.1"):
        assert unwrap_ip(ipaddress.ip_address(form)) == loopback
    assert unwrap_ip(ipaddress.ip_address("::1")) == ipaddress.ip_address("::1")


@pytest.mark.parametrize(
    ("url", "host", "port", "target"),
    [
        ("http://straße.de/x?y=1", "xn--strae-oqa.de", 80, "/x?y=1"),  # IDNA 2008, not "strasse"
        ("https://BÜCHER.example./ü?q=ä", "xn--bcher-kva.example", 443, "/%C3%BC?q=%C3%A4"),
        ("http://[::1]:8080/cb", "::1", 8080, "/cb"),
        ("https://hooks.example.com", "hooks.example.com", 443, "/"),
    ],
)
def test_one_parser_gives_the_host_that_is_checked_resolved_and_connected_to(
    url: str, host: str, port: int, target: str
) -> None:
    parsed = parse_url(url)

    assert parsed is not None
    assert (parsed.host, parsed.port, parsed.target) == (host, port, target)


def test_a_non_ascii_name_is_checked_as_the_name_that_is_resolved() -> None:
    asked: list[str] = []

    def resolver(name: str, port: int) -> list[IPAddress]:
        asked.append(name)
        return [ipaddress.ip_address("93.184.216.34")]

    policy = UrlPolicy(["straße.de"], resolver=resolver)
    parsed = parse_url("https://straße.de/hook")
    assert parsed is not None and host_allowed("https://straße.de/hook", ["straße.de"])

    assert policy.addresses(parsed.origin) == [ipaddress.ip_address("93.184.216.34")]
    assert asked == ["xn--strae-oqa.de"]  # the socket module's IDNA 2003 would ask "strasse.de"
    assert not host_allowed("https://strasse.de/hook", ["straße.de"])


def _resolving_to(*addresses: str) -> UrlPolicy:
    found = [ipaddress.ip_address(a) for a in addresses]
    return UrlPolicy(
        ["hooks.example.com", "10.0.0.7"],
        trusted_urls=["https://gateway.internal/api/v1/email/status/{request_id}"],
        resolver=lambda name, port: found,
    )


@pytest.mark.parametrize(
    ("addresses", "refusal"),
    [
        (["93.184.216.34"], None),
        (["93.184.216.34", "2606:4700::1111"], None),
        (["127.0.0.1"], "AddressNotAllowed"),  # an allow-listed name resolving inside
        (["93.184.216.34", "10.0.0.1"], "AddressNotAllowed"),  # one bad address is enough
        (["::ffff:127.0.0.1"], "AddressNotAllowed"),
        (["64:ff9b::a9fe:a9fe"], "AddressNotAllowed"),  # NAT64 of the metadata service
        (["2002:a00:1::"], "AddressNotAllowed"),  # 6to4 of 10.0.0.1
        (["169.254.169.254"], "AddressNotAllowed"),
        (["10.0.0.7"], None),  # that exact address is listed by the operator
        ([], "NameNotResolved"),
    ],
)
def test_every_resolved_address_is_checked(addresses: list[str], refusal: str | None) -> None:
    origin = ("https", "hooks.example.com", 443)
    policy = _resolving_to(*addresses)

    if refusal is None:
        assert [str(a) for a in policy.addresses(origin)] == addresses
    else:
        with pytest.raises(Refused, match=refusal):
            policy.addresses(origin)


def test_the_operators_callback_origin_is_trusted_and_nothing_else() -> None:
    policy = _resolving_to("10.1.2.3")

    assert [str(a) for a in policy.addresses(("https", "gateway.internal", 443))] == ["10.1.2.3"]
    with pytest.raises(Refused, match="HostNotAllowed"):
        policy.addresses(("http", "gateway.internal", 443))  # another scheme: another origin
    with pytest.raises(Refused, match="HostNotAllowed"):
        policy.addresses(("https", "gateway.internal", 8443))
    with pytest.raises(Refused, match="HostNotAllowed"):
        policy.addresses(("https", "evil.example.com", 443))
