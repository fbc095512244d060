"""The micro-benchmarks (``benchmarks/micro``) run once each with tiny sizes, so they cannot rot:
each finds our part's output and its library's equivalent (the checks fail when they are not),
and the runner writes a report with a verdict per part. No speed is asserted here."""

from __future__ import annotations

import itertools
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.micro import (
    content_path,
    content_steps,
    dkim_sign,
    html_text,
    http_post,
    log_line,
    mime_build,
    pacing,
    report,
    runner,
    samples,
    spans,
)
from benchmarks.micro.timing import Comparison, Measure, Side, measure_pair
from email_worker.render.mime import build_message
from email_worker.render.textify import html_to_text
from tests.support.services import skip_or_fail


def _measured(comparisons: list[Comparison]) -> None:
    for c in comparisons:
        assert c.ours.cpu_us > 0 and c.library.cpu_us > 0, c
        assert c.ours.wall_us > 0 and c.library.wall_us > 0, c


def test_measure_pair_times_every_call_of_both_sides_in_alternating_slices() -> None:
    calls: list[str] = []
    ours = Side("ours", lambda: calls.append("o"), per_call=4)
    theirs = Side("theirs", lambda: calls.append("t"))

    mine, library = measure_pair(ours, theirs, calls=3, rounds=2)

    assert calls.count("o") == calls.count("t") == 1 + 3 * 2  # a warm-up, then 3 per round
    assert "".join(calls[2:8]) == "ottoot"  # slices alternate which side goes first
    assert len(mine.rounds_cpu_us) == len(library.rounds_cpu_us) == 2
    assert mine.other_cpu_us is None
    with pytest.raises(ValueError):
        measure_pair(ours, theirs, calls=0, rounds=1)


def test_measure_pair_adds_the_other_process_cpu_per_operation() -> None:
    clock = itertools.count(step=2)  # each reading: 2 s more of another process's CPU
    side = Side("db", lambda: None, per_call=2, other_cpu=lambda: float(next(clock)))

    measured, _ = measure_pair(side, Side("x", lambda: None), calls=1, rounds=1)

    assert measured.other_cpu_us == pytest.approx(2 / 2 * 1e6)  # 2 s over 2 operations
    assert measured.cpu_us >= 1e6


def _comparison(part: str, case: str, ours: float, library: float) -> Comparison:
    def measure(label: str, cpu: float) -> Measure:
        return Measure(label, cpu, cpu, None, (cpu,))

    return Comparison(part, case, measure("ours", ours), measure("lib", library), "same")


@pytest.mark.parametrize(
    ("figures", "expected"),
    [
        ([(10.0, 100.0), (50.0, 100.0)], "**keep**"),
        ([(90.0, 100.0), (110.0, 100.0)], "**replace by the library**"),
        ([(10.0, 100.0), (95.0, 100.0)], "**mixed**"),
    ],
)
def test_verdict_keeps_a_part_only_when_it_saves_a_fifth_in_every_case(
    figures: list[tuple[float, float]], expected: str
) -> None:
    found = [_comparison("mime", f"case {n}", *pair) for n, pair in enumerate(figures)]

    assert report.verdict("mime", found).startswith(expected)


def test_verdict_judges_each_case_against_its_cheapest_library() -> None:
    found = [
        _comparison("textify", "2 KB", 50.0, 500.0),
        _comparison("textify", "2 KB", 50.0, 55.0),
    ]

    assert report.verdict("textify", found).startswith("**replace by the library**")


def test_the_log_line_verdict_states_the_cost_of_scrubbing() -> None:
    assert "no measurable cost" in report.verdict("logs", [_comparison("logs", "x", 26, 25)])
    assert "+10.0 µs per line (+40%)" in report.verdict("logs", [_comparison("logs", "x", 35, 25)])


def test_textify_and_both_libraries_give_the_same_text() -> None:
    for html in html_text.cases(items=2).values():
        html_text.check(html)

    _measured(html_text.run(rounds=1, scale=0.001, items=2))


def test_the_text_check_fails_when_the_words_differ() -> None:
    html = samples.welcome_html()

    assert html_text.words(html_text.html2text_text(html)) == html_text.words(html_to_text(html))
    assert html_text.words(html_to_text(samples.welcome_html("Grace"))) != html_text.words(
        html_to_text(html)
    )


def test_mime_builder_and_email_message_parse_to_the_same_email() -> None:
    for outgoing in mime_build.cases(items=2).values():
        assert mime_build.check(outgoing).startswith("parsed back")

    _measured(mime_build.run(rounds=1, scale=0.001, items=2))


def test_the_mime_check_sees_a_different_header_or_body() -> None:
    outgoing = next(iter(mime_build.cases(items=1).values()))
    other_subject = replace(outgoing, content=replace(outgoing.content, subject="Other"))
    other_text = replace(outgoing, content=replace(outgoing.content, text="other text"))
    parsed = mime_build._parsed(build_message(outgoing))

    assert mime_build._parsed(build_message(other_subject))[0] != parsed[0]
    assert mime_build._parsed(mime_build.library_message(other_text))[1] != parsed[1]


def test_callback_client_and_httpx_post_the_same_callbacks() -> None:
    found = http_post.run(rounds=1, scale=0.003)

    assert len(found) == 1 and "parsed all" in found[0].equivalent
    _measured(found)


def test_log_line_now_and_before_write_the_same_fields() -> None:
    if log_line.load_version(log_line.BEFORE_REF) is None:
        skip_or_fail(f"git or commit {log_line.BEFORE_REF} is not available")

    found = log_line.run(rounds=1, scale=0.001)

    assert len(found) == 1
    _measured(found)


def test_tracing_off_on_and_before_the_hooks_deliver_the_same_email() -> None:
    if spans.load_before() is None:
        skip_or_fail(f"git or commit {spans.BEFORE_REF} is not available")

    found = spans.run(rounds=1, scale=0.002)

    assert [c.case for c in found] == [
        "one delivered message, tracing off",
        "one delivered message, tracing on",
    ]
    assert all("same Message-ID" in c.equivalent for c in found)
    assert "spans exported by the tracing-on side" in found[1].notes[0]
    _measured(found)


def test_the_tracing_verdict_states_the_cost_when_off_and_on() -> None:
    found = [_comparison("tracing", "off", 100, 98), _comparison("tracing", "on", 300, 100)]

    text = report.verdict("tracing", found)

    assert "no measurable cost" in text and "+200 µs of CPU per message" in text
    slower = [_comparison("tracing", "off", 130, 100), found[1]]
    assert "+30.0 µs per message (+30%)" in report.verdict("tracing", slower)


def test_dkim_signer_and_both_dkimpy_ways_give_signatures_that_verify() -> None:
    found = dkim_sign.run(rounds=1, scale=0.02, sizes={"4 KB": 4000})

    assert {c.library.label for c in found} == {
        "dkimpy (dkim.sign)",
        "dkimpy canonicalisation + cryptography",
    }
    assert {c.case.split(",")[0] for c in found} == {"rsa-sha256", "ed25519-sha256"}
    assert all("verifies with dkimpy" in c.equivalent for c in found)
    _measured(found)


def test_the_dkim_check_sees_a_signature_that_does_not_verify() -> None:
    key = dkim_sign.new_key("ed25519")
    message = build_message(dkim_sign.digest_email(2000))
    names = [b"from", b"to", b"subject"]
    signed = dkim_sign.dkimpy_canonical(message, key, names)

    assert "verifies" in dkim_sign.check({"ok": signed}, key)
    with pytest.raises(AssertionError, match="tampered"):
        dkim_sign.check({"tampered": signed.replace(b"Subject: ", b"Subject: Re: ")}, key)


def test_runner_writes_the_report_and_json(tmp_path: Path) -> None:
    results, figures = tmp_path / "RESULTS.md", tmp_path / "results.json"
    argv = ["mime", "--rounds", "1", "--scale", "0.001"]
    argv += ["--write-results", str(results), "--json", str(figures)]

    assert runner.main(argv) == 0

    text = results.read_text()
    assert "## `mime.py`" in text and "Verdict: **" in text and "cores (nproc)" in text
    rows = json.loads(figures.read_text())["comparisons"]
    assert [row["part"] for row in rows] == ["mime", "mime"]


def test_the_content_path_now_and_before_give_the_same_outputs_at_every_step() -> None:
    with tempfile.TemporaryDirectory() as folder:
        if content_path.checkout(content_path.BEFORE_REF, Path(folder)) is None:
            skip_or_fail(f"git or commit {content_path.BEFORE_REF} is not available")

    found = content_path.run(rounds=1, scale=0.01, messages=2)

    assert [c.case for c in found] == [
        f"{workload}: {step}"
        for workload, steps in content_path.WORKLOADS.items()
        for step in steps
    ]
    assert all(c.equivalent.startswith("the same outputs") for c in found)
    assert "CPU per email, before → now: realistic: render" in report.verdict("content", found)
    _measured(found)


def test_the_content_summary_tells_different_outputs_apart() -> None:
    bench = content_steps.make_bench("simple", 2, None)
    content_steps.prepare(bench)
    summaries = {step: content_steps.summary(bench, step) for step in ("render", "build")}
    bench.variables[1]["name"] = "Somebody else"

    content_steps.prepare(bench)

    assert all(content_steps.summary(bench, s) != summaries[s] for s in summaries)


def test_runner_refuses_an_unknown_part() -> None:
    assert runner.main(["nonsense"]) == 2


def test_pacing_measures_the_limiter_against_no_pacer() -> None:
    found = pacing.run(1, 0.05)  # the Postgres case only when Postgres answers (long enough to
    # measure some CPU on each side even on a loaded machine)
    _measured(found)
    cases = [c.case for c in found]
    assert cases[:2] == ["no limit set", "RATE_LIMIT far above the rate"]
    assert "per send" in report.verdict("pacing", found)
