"""The benchmark's workloads: the realistic one renders 20-60 KB of HTML through the worker's
own renderer, its faults hit 2% (451 once) and 1% (550) of recipients, and the builtin sink
answers RCPT exactly as the workload says; the report shows the realistic runs."""

from __future__ import annotations

from benchmarks import report
from benchmarks.scenario import ProcessFigures, RunResult
from benchmarks.smtp_sink import Sink
from benchmarks.workloads import DIGEST_TEMPLATE, SIMPLE, fault_of, realistic
from email_worker.render.renderer import TemplateRenderer
from templates_client.template import Template


def test_the_realistic_mail_is_20_to_60_kb_of_html_and_its_text_is_derived() -> None:
    workload = realistic(None)
    template = Template(
        "digest", None, DIGEST_TEMPLATE["subject"], DIGEST_TEMPLATE["html_body"], None, "3"
    )
    renderer = TemplateRenderer()
    sizes = []
    for number in range(40):
        variables = workload.message(f"r-{number}", number)["variables"]
        rendered = renderer.render(template, variables)
        sizes.append(len(rendered.html.encode()))
        assert rendered.text  # no text template: derived from the HTML
    assert min(sizes) >= 20_000 and max(sizes) <= 60_000, sizes


def test_faults_hit_two_and_one_percent_of_recipients() -> None:
    faults = [fault_of(n) for n in range(10_000)]
    assert faults.count("451") == 200 and faults.count("550") == 100
    assert realistic(None).failures(10_000) == 100 and SIMPLE.failures(10_000) == 0


def test_the_sink_refuses_as_the_workload_says_and_451_only_once() -> None:
    sink = Sink(faults=True)
    assert sink.rcpt_reply(b"RCPT TO:<user13@example.com>\r\n").startswith(b"550 5.1.1")
    assert sink.rcpt_reply(b"RCPT TO:<user7@example.com>\r\n").startswith(b"451 4.3.0")
    assert sink.rcpt_reply(b"RCPT TO:<user7@example.com>\r\n").startswith(b"250")
    assert sink.rcpt_reply(b"RCPT TO:<user8@example.com>\r\n").startswith(b"250")
    assert Sink().rcpt_reply(b"RCPT TO:<user13@example.com>\r\n").startswith(b"250")


def test_the_report_shows_realistic_runs_with_their_failures_and_cpu() -> None:
    run = RunResult("realistic, round 1 of 1", 2, 5_000, sent=4_950, workload="realistic")
    run.failed, run.emails_per_s = 50, 400.0
    run.processes = [ProcessFigures("run0", 5.0, 1), ProcessFigures("callbacks", 1.0, 1)]
    run.machine_cpu = {"PostgreSQL": 1.0, "RabbitMQ": 0.5}
    rep = report.Report(command="x", started="now", machine={}, realistic=[run])
    rep.realistic_notes = "DKIM RSA-2048 on"
    text = report.markdown(rep)
    assert "## Realistic workload" in text and "DKIM RSA-2048 on" in text
    assert "| 4,950 |" in text and "| 50 |" in text
    assert "### Where the cores go, realistic workload" in text
