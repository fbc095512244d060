"""Reading service answers (CONTRACT sections 5 and 6): dotted field paths, the envelope, the
template and user-record parsers, and properties over arbitrary answers: whatever the template
or user service answers, the clients return a template / recipient or raise one of our
classified failures, never an internal error (issue 15, "unclassified service answers")."""

from __future__ import annotations

import hashlib
import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from email_worker.recipients import (
    DEFAULT_PATHS,
    USER_FIELD_NAMES,
    RecipientDirectory,
    UserServiceClient,
    auth_headers,
)
from email_worker.render.renderer import TemplateRenderer
from schemas.failures import PermanentFailure, Reason, WorkerFailure
from schemas.request import EmailRequest
from templates_client.client import TemplateClient
from templates_client.fields import (
    FieldReader,
    parse_field_paths,
    resolve,
    unwrap_envelope,
)
from templates_client.template import (
    TEMPLATE_FIELD_NAMES,
    Template,
    template_from_answer,
    template_reader,
)

CONTRACT_FIELDS = "subject=data.name,html=data.content,text=data.plain,version=data.version"


def test_parse_field_paths_reads_the_contract_example() -> None:
    assert parse_field_paths(CONTRACT_FIELDS, TEMPLATE_FIELD_NAMES) == {
        "subject": ("data", "name"),
        "html": ("data", "content"),
        "text": ("data", "plain"),
        "version": ("data", "version"),
    }
    assert parse_field_paths(" email = data.contact.email , ", USER_FIELD_NAMES) == {
        "email": ("data", "contact", "email")
    }
    assert parse_field_paths("", USER_FIELD_NAMES) == {}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("subjet=data.name", "unknown field 'subjet'; known fields: subject, html"),
        ("subject", "is not name=path"),
        ("=data.name", "is not name=path"),
        ("subject=", "dot-separated keys"),
        ("subject=data..name", "dot-separated keys"),
        ("subject=data. name", "dot-separated keys"),
        ("subject=a,subject=b", "given twice"),
    ],
)
def test_parse_field_paths_refuses_typos(text: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_field_paths(text, TEMPLATE_FIELD_NAMES)
    assert complaint in str(caught.value)


def test_resolve_walks_objects_and_list_indexes() -> None:
    answer = {"data": {"items": [{"name": "first"}, {"name": "second"}], "0": "key"}}
    assert resolve(answer, ("data", "items", "1", "name")) == "second"
    assert resolve(answer, ("data", "0")) == "key"
    assert resolve(answer, ("data", "items", "7", "name")) is None
    assert resolve(answer, ("data", "items", "x")) is None
    assert resolve("text", ("data",)) is None


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        ({"success": True, "data": {"subject": "Hi"}}, {"subject": "Hi"}),
        ({"success": True, "data": {"x": 1}, "message": "ok", "meta": {}}, {"x": 1}),
        ({"data": {"x": 1}}, {"x": 1}),
        ({"subject": "Hi", "html": "<p>x</p>"}, {"subject": "Hi", "html": "<p>x</p>"}),
        # A bare object that happens to have a "data" field stays whole.
        ({"subject": "Hi", "data": {"x": 1}}, {"subject": "Hi", "data": {"x": 1}}),
    ],
)
def test_unwrap_envelope(obj: object, expected: dict[str, object]) -> None:
    assert unwrap_envelope(obj) == expected


@pytest.mark.parametrize(
    "obj", [[1, 2], "text", None, 3, {"success": False, "data": {"x": 1}}, {"success": False}]
)
def test_unwrap_envelope_refuses(obj: object) -> None:
    with pytest.raises(ValueError):
        unwrap_envelope(obj)


def _template(answer: object, fields: str = "") -> Template:
    reader = template_reader(parse_field_paths(fields, TEMPLATE_FIELD_NAMES))
    return template_from_answer("welcome", None, answer, reader)


def test_the_contract_shape_with_template_fields() -> None:
    answer = {"data": {"name": "Welcome to {{name}}", "content": "<h1>Hi</h1>", "version": 1}}
    template = _template(answer, CONTRACT_FIELDS)
    assert (template.subject, template.html, template.text) == (
        "Welcome to {{name}}",
        "<h1>Hi</h1>",
        None,
    )
    assert template.version == "1"


def test_without_template_fields_that_shape_is_invalid_and_says_where_it_looked() -> None:
    answer = {"data": {"name": "Welcome", "content": "<h1>Hi</h1>", "version": 1}}
    with pytest.raises(PermanentFailure) as caught:
        _template(answer)
    assert caught.value.reason is Reason.TEMPLATE_INVALID
    assert caught.value.detail == "answer has no subject (subject or title)"


def test_a_given_path_replaces_the_defaults_of_that_field_only() -> None:
    answer = {"subject": "default", "title": "t", "html": "<p>x</p>", "meta": {"s": "mapped"}}
    template = _template(answer, "subject=meta.s")
    assert (template.subject, template.html) == ("mapped", "<p>x</p>")
    with pytest.raises(PermanentFailure) as caught:
        _template({"subject": "default", "html": "<p>x</p>"}, "subject=meta.s")
    assert caught.value.detail == "answer has no subject (meta.s)"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ({"title": "T", "content": "<p>c</p>", "text_content": "c"}, ("T", "<p>c</p>", "c")),
        ({"subject": "S", "body": "<p>b</p>"}, ("S", "<p>b</p>", None)),
        ({"subject": "S", "html": "  ", "html_body": "<p>h</p>"}, ("S", "<p>h</p>", None)),
        ({"success": True, "data": {"subject": "S", "html": "<i>"}}, ("S", "<i>", None)),
    ],
)
def test_default_places(answer: object, expected: tuple[str, str, str | None]) -> None:
    template = _template(answer)
    assert (template.subject, template.html, template.text) == expected
    assert template.version.startswith("sha256:")


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ({"html": "<p>x</p>"}, "answer has no subject (subject or title)"),
        (
            {"subject": "S"},
            "answer has no body (html_body or html or body or content; "
            "text_body or text or text_content)",
        ),
        ({"subject": 7, "html": ["x"]}, "answer has no subject (subject or title), no body ("),
        ([{"subject": "S"}], "answer is no template: expected a JSON object, got an array"),
        (
            {"success": False, "data": {"subject": "S"}},
            "answer is no template: envelope reports success=false",
        ),
    ],
)
def test_answers_that_are_no_template(answer: object, detail: str) -> None:
    with pytest.raises(PermanentFailure) as caught:
        _template(answer)
    assert caught.value.reason is Reason.TEMPLATE_INVALID
    assert caught.value.detail.startswith(detail)


def test_a_text_only_template_gets_an_html_body_showing_the_text_escaped_once() -> None:
    template = _template({"subject": "S", "text": "Hi {{ name }} & <friends>\nbye"})
    email = TemplateRenderer().render(template, {"name": "<b>Ada</b>"})
    assert email.text == "Hi <b>Ada</b> & <friends>\nbye"
    assert email.html == (
        '<div style="white-space: pre-wrap">'
        "Hi &lt;b&gt;Ada&lt;/b&gt; &amp; &lt;friends&gt;\nbye</div>"
    )


def test_a_text_only_template_reports_errors_at_the_text_line() -> None:
    template = _template({"subject": "S", "text": "line one\n{{ missing }}"})
    with pytest.raises(PermanentFailure) as caught:
        TemplateRenderer().render(template, {})
    assert caught.value.detail == "missing variable 'missing' (html line 2)"


@pytest.mark.parametrize(
    ("header", "token", "expected"),
    [
        ("Authorization", "t0k", {"Authorization": "Bearer t0k"}),
        ("authorization", "t0k", {"authorization": "Bearer t0k"}),
        ("X-Api-Key", "t0k", {"X-Api-Key": "t0k"}),
        ("X-Api-Key", None, {}),
    ],
)
def test_auth_headers(header: str, token: str | None, expected: dict[str, str]) -> None:
    assert auth_headers(header, token) == expected


def test_user_reader_knows_the_contract_names() -> None:
    assert set(DEFAULT_PATHS) == {"email", "name", "email_enabled"}
    with pytest.raises(ValueError):
        FieldReader(DEFAULT_PATHS, {"mail": ("data", "mail")})


# Properties: arbitrary answers, whole clients (status, bytes, decoding, fields, validation). ---

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)  # includes lone surrogates, NUL, controls
    | st.sampled_from(["ada@example.com", "", "  ", "<p>{{ name }}</p>", "{{ 7 *", "false"])
)
KNOWN_KEYS = "data success subject title html html_body body content text version email name"
KEYS = st.sampled_from([*KNOWN_KEYS.split(), "preferences", "contact", "settings", "0"]) | st.text(
    max_size=5
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


def _nested(depth: int, key: str) -> bytes:
    return (f'{{"{key}":' * depth + '"x"' + "}" * depth).encode()


ANSWER_BYTES = (
    JSON_VALUES.map(lambda value: json.dumps(value).encode())  # lone surrogates as \ud800
    | st.builds(
        _nested, st.integers(1, 5000), KEYS.filter(lambda k: '"' not in k and "\\" not in k)
    )
    | st.binary(max_size=200)
    | st.sampled_from([b"[" * 50_000, b'{"subject": "\\udfff", "html": "x"}', b"\xed\xa0\x80"])
)
STATUSES = st.sampled_from([200, 200, 200, 201, 204, 301, 400, 401, 403, 404, 410, 429, 500])
FIELD_SETTINGS = st.sampled_from(["", CONTRACT_FIELDS, "subject=data.0.title,html=x.y.z"])
USER_SETTINGS = st.sampled_from(
    ["", "email=data.contact.email,name=data.full_name,email_enabled=data.settings.email"]
)


def _mock(status: int, body: bytes) -> httpx.Client:
    return httpx.Client(
        transport=httpx.MockTransport(lambda _: httpx.Response(status, content=body))
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=STATUSES, body=ANSWER_BYTES, fields=FIELD_SETTINGS)
def test_the_template_client_returns_a_template_or_a_classified_failure(
    status: int, body: bytes, fields: str
) -> None:
    paths = parse_field_paths(fields, TEMPLATE_FIELD_NAMES)
    with _mock(status, body) as http:
        client = TemplateClient("http://svc.test", http, fields=paths, fail_max=1000)
        try:
            template = client.get("welcome", "en")
        except WorkerFailure as failure:
            assert failure.reason in Reason.__members__.values()
            return
    assert 200 <= status < 300
    for part in (template.subject, template.html, template.text or "", template.version):
        part.encode("utf-8")  # storable and sendable: no lone surrogate slipped through
    assert template.subject.strip() and template.html.strip()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(status=STATUSES, body=ANSWER_BYTES, fields=USER_SETTINGS)
def test_the_user_client_returns_a_recipient_or_a_classified_failure(
    status: int, body: bytes, fields: str
) -> None:
    paths = parse_field_paths(fields, USER_FIELD_NAMES)
    request = EmailRequest(
        request_id="r",
        notification_id="r",
        correlation_id="r",
        template_code="welcome",
        user_id="u-1",
        payload_hash=hashlib.sha256(b"r").hexdigest(),
    )
    with _mock(status, body) as http:
        users = UserServiceClient("http://svc.test", http, "t", fields=paths, fail_max=1000)
        try:
            recipient = RecipientDirectory(users).resolve(request)
        except WorkerFailure as failure:
            assert failure.reason in Reason.__members__.values()
            return
    assert 200 <= status < 300
    recipient.address.encode("utf-8")
    if recipient.name is not None:
        recipient.name.encode("utf-8")
