"""Deployment files, checked with the real tools where this machine has them (check-jsonschema's
vendored compose-spec and GitHub workflow schemas, ``kubectl kustomize``, ``promtool``) and by
structural assertions tied to the code (setting names, metric names, defaults). A missing tool
skips its test on a laptop and fails it under ``CI=true``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from email_worker.config import SECRET_FIELDS, Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE = ROOT / "docker-compose.yml"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
KNOWN_METRICS = {
    "email_worker_messages_consumed_total",
    "email_worker_outcomes_total",
    "email_worker_send_duration_seconds",
    "email_worker_end_to_end_seconds",
    "email_worker_breaker_state",
    "email_worker_callbacks_total",
    "email_worker_callbacks_pending",
    "email_worker_in_flight_messages",
    "email_worker_smtp_connections",
    "email_worker_smtp_sends_waiting",
    "email_worker_consumer_paused",
    "email_worker_queue_messages",
    "email_worker_queue_consumers",
    "email_worker_retries_redriven_total",
    "email_worker_sends_total",
    "email_worker_throttled_total",
    "email_worker_route_rate",
    "email_worker_rate_limited_seconds_total",
    "email_worker_lane_moves_total",
    "email_worker_backlog_messages",
}
SETTINGS = set(Settings.model_fields)


def tool(name: str, *, installed_by_ci: bool = True) -> str:
    """The path of a command-line tool (the virtualenv's first), else skip or, in CI, fail when
    CI installs it (``.ci/run`` and the dev extras install promtool and check-jsonschema;
    kubectl comes with some machine images only, so its test runs "when kubectl is present")."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed"
        if installed_by_ci and os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return found


def run(*argv: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def setting_of(variable: str) -> str:
    """``EMAIL_WORKER_SMTP_PASSWORD_FILE`` -> ``smtp_password``; asserts it names a setting.
    The standard ``OTEL_*`` variables keep their own names (email_worker/config/otel.py)."""
    if variable.startswith("OTEL_") and variable.lower() in SETTINGS:
        return variable.lower()
    assert variable.startswith("EMAIL_WORKER_"), variable
    name = variable.removeprefix("EMAIL_WORKER_").lower()
    name = name.removesuffix("_file") if name not in SETTINGS else name
    assert name in SETTINGS, f"{variable} names no setting in email_worker/config/settings.py"
    return name


def metric_names(expr: str) -> set[str]:
    names = set(re.findall(r"\bemail_worker_[a-z_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in names}


# --- Dockerfile ---------------------------------------------------------------------------


def test_dockerfile_is_slim_non_root_exec_form_and_secret_free() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in lines
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    assert lines.count('ENTRYPOINT ["email-worker"]') == 1  # exec form: no shell eats SIGTERM
    assert lines[-1] == 'CMD ["run"]'
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    assert not re.search(r"(PASSWORD|SECRET|TOKEN)\s*=", text, re.IGNORECASE)
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.MULTILINE):
        assert (ROOT / source).exists() or source == "README.md", source
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "tests", ".env"} <= set(ignored)


# --- docker compose -----------------------------------------------------------------------


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def test_compose_file_is_valid_against_the_compose_spec() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))


def test_compose_services_are_healthchecked_ordered_and_pinned() -> None:
    services = compose()["services"]
    assert set(services) >= {"rabbitmq", "postgres", "mailpit", "templates", "migrate"}
    commands = {name: spec.get("command") for name, spec in services.items()}
    assert commands["worker"] == ["run"]
    assert commands["callbacks"] == ["callbacks"]
    assert commands["beat"] == ["beat"]
    assert commands["migrate"] == ["migrate"]
    for name, spec in services.items():
        image = spec["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: unpinned {image}"
        if name == "migrate":
            assert spec["restart"] == "no"
        else:
            assert spec["healthcheck"]["test"][0] == "CMD", f"{name} has no health check"
        for needed, condition in spec.get("depends_on", {}).items():
            expected = (
                "service_completed_successfully" if needed == "migrate" else "service_healthy"
            )
            assert condition == {"condition": expected}, f"{name} -> {needed}"
    for name in ("worker", "callbacks", "beat"):
        assert services[name]["depends_on"]["migrate"]["condition"].endswith("successfully")
    assert services["rabbitmq"]["image"].startswith("rabbitmq:3.13-management")
    assert services["postgres"]["image"] == "postgres:15"
    assert services["mailpit"]["image"].startswith("axllent/mailpit:")


def test_compose_environment_names_real_settings_and_files() -> None:
    document = compose()
    worker = document["services"]["worker"]
    environment = worker["environment"]
    for variable in environment:
        setting_of(variable)
    assert environment["EMAIL_WORKER_SMTP_HOST"] == "mailpit"
    assert environment["EMAIL_WORKER_TEMPLATE_SERVICE_URL"] == "http://templates:8081"
    for secret in document["secrets"].values():
        assert (ROOT / secret["file"]).is_file()
    # The template stand-in answers what the worker's template client expects.
    templates = DEPLOY / "compose" / "templates" / "api" / "v1" / "templates"
    codes = sorted(path.name for path in templates.iterdir())
    assert "welcome" in codes
    for path in templates.iterdir():
        body = json.loads(path.read_text(encoding="utf-8"))
        template = body.get("data", body)
        assert template["subject"] and (template.get("html_body") or template.get("html"))


# --- Kubernetes ---------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    rendered = run(tool("kubectl", installed_by_ci=False), "kustomize", str(directory))
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in docs if doc["kind"] == kind}


def test_kustomize_base_renders_the_whole_deployment() -> None:
    docs = kustomize(DEPLOY / "k8s" / "base")
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Service", "ScaledObject", "TriggerAuthentication"]
    expected += ["Deployment"] * 3 + ["PodDisruptionBudget"] * 2 + ["Job"] * 2
    assert kinds == sorted(expected)
    jobs = by_kind(docs, "Job")
    commands = {
        name: job["spec"]["template"]["spec"]["containers"][0]["args"] for name, job in jobs.items()
    }
    # Both one-shot steps run before a rollout: the schema, and the queues the gateways assert.
    assert commands == {
        "email-worker-migrate": ["migrate"],
        "email-worker-topology": ["topology", "apply"],
    }
    deployments = by_kind(docs, "Deployment")
    assert set(deployments) == {"email-worker-run", "email-worker-callbacks", "email-worker-beat"}
    beat = deployments["email-worker-beat"]["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}
    assert "replicas" not in deployments["email-worker-run"]["spec"]  # KEDA owns the count


def test_run_pods_probe_health_and_outlive_the_worst_case_send() -> None:
    run_spec = by_kind(kustomize(DEPLOY / "k8s" / "base"), "Deployment")["email-worker-run"]
    pod = run_spec["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["run"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    fields = Settings.model_fields
    worst_case = float(fields["drain_seconds"].default) + float(fields["smtp_timeout"].default)
    assert pod["terminationGracePeriodSeconds"] > worst_case
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_every_variable_and_secret_file_is_wired() -> None:
    docs = kustomize(DEPLOY / "k8s" / "overlays" / "example")
    (config,) = by_kind(docs, "ConfigMap").values()
    for variable in config["data"]:
        setting_of(variable)
    secret = by_kind(docs, "Secret")["email-worker-secrets"]
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in ("Deployment", "Job")]
    assert len(pods) == 5
    for pod in pods:
        (container,) = pod["containers"]
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "secrets")
        volume = next(v for v in pod["volumes"] if v["name"] == "secrets")
        assert volume["secret"]["secretName"] == "email-worker-secrets"
        for env in container["env"]:
            assert setting_of(env["name"]) in Settings.model_fields
            assert env["value"].startswith(mount["mountPath"] + "/")
            key = env["value"].rsplit("/", 1)[1]
            assert key in secret["data"], f"{env['name']} reads {key}, absent from the Secret"
        assert container["image"] == "ghcr.io/example/email-worker:0.1.0"
    assert {doc["metadata"].get("namespace") for doc in docs} == {"notifications"}


def test_keda_scales_run_on_the_email_queue_and_pdbs_match() -> None:
    docs = kustomize(DEPLOY / "k8s" / "overlays" / "example")
    scaled = by_kind(docs, "ScaledObject")["email-worker-run"]["spec"]
    assert scaled["scaleTargetRef"]["name"] == "email-worker-run"
    assert scaled["minReplicaCount"] >= 1 and scaled["maxReplicaCount"] == 10
    email_queue = Settings.model_fields["email_queue"].default
    assert {trigger["type"] for trigger in scaled["triggers"]} == {"rabbitmq"}
    queues = [trigger["metadata"]["queueName"] for trigger in scaled["triggers"]]
    assert queues == [email_queue, f"{email_queue}.bulk"]  # and the priority lane
    for trigger in scaled["triggers"]:
        assert trigger["metadata"]["mode"] == "QueueLength"
        auth = by_kind(docs, "TriggerAuthentication")[trigger["authenticationRef"]["name"]]
        (ref,) = auth["spec"]["secretTargetRef"]
        assert (ref["name"], ref["key"]) == ("email-worker-secrets", "amqp-url")
    deployments = by_kind(docs, "Deployment")
    for name, pdb in by_kind(docs, "PodDisruptionBudget").items():
        labels = deployments[name]["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert "email-worker-beat" not in by_kind(docs, "PodDisruptionBudget")


# --- Prometheus and Grafana ---------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    promtool = tool("promtool")
    assert "SUCCESS" in run(promtool, "check", "rules", "alerts.yml", cwd=DEPLOY / "prometheus")
    run(promtool, "test", "rules", "alerts.test.yml", cwd=DEPLOY / "prometheus")


def test_alerts_use_known_metrics_and_have_runbook_sections() -> None:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text(encoding="utf-8"))
    alerts = [rule for group in rules["groups"] for rule in group["rules"]]
    names = {alert["alert"] for alert in alerts}
    assert {
        "EmailWorkerDeadLetterQueueGrowing",
        "EmailWorkerBreakerOpen",
        "EmailWorkerBacklog",
        "EmailWorkerNoConsumers",
        "EmailWorkerErrorRatioHigh",
    } <= names
    headings = re.findall(r"^## (\w+)", (ROOT / "docs" / "alerts.md").read_text(), re.MULTILINE)
    for alert in alerts:
        used = metric_names(alert["expr"])
        assert used and used <= KNOWN_METRICS, alert["alert"]
        assert alert["labels"]["severity"] in ("warning", "critical")
        assert alert["annotations"]["runbook"] == f"docs/alerts.md#{alert['alert'].lower()}"
        assert alert["alert"] in headings


def test_grafana_dashboard_queries_known_metrics() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "email-worker.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "email-worker"
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used: set[str] = set()
    for expr in exprs:
        names = metric_names(expr)
        assert names and names <= KNOWN_METRICS, expr
        used |= names
    assert used == KNOWN_METRICS  # every metric is on the dashboard
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


# --- GitHub Actions -----------------------------------------------------------------------


def test_workflow_is_valid_and_runs_every_stage_on_real_services() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW))
    jobs = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))["jobs"]
    assert set(jobs) == {"lint", "types", "unit", "integration", "lowest"}
    steps = {
        name: " ".join(step.get("run", "") for step in job["steps"]) for name, job in jobs.items()
    }
    assert "make lint" in steps["lint"] and "python -m schemas --check" in steps["lint"]
    assert "make typecheck" in steps["types"]
    assert "pytest -q tests/unit" in steps["unit"]
    assert "pytest -q -m integration" in steps["integration"]
    assert "make lowest" in steps["lowest"]  # floors: unit tests and the demo (scripts/lowest.sh)
    services = jobs["integration"]["services"]
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13"
    assert services["postgres"]["image"] == "postgres:15"
    assert jobs["integration"]["env"]["AMQP_URL"].startswith("amqp://")


def test_operator_guide_documents_every_setting() -> None:
    guide = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    rows = dict(
        re.findall(r"^\| `((?:EMAIL_WORKER|OTEL)_[A-Z_]+)` \| ([^|]+) \|", guide, re.MULTILINE)
    )
    assert {setting_of(variable) for variable in rows} == SETTINGS
    for name in SECRET_FIELDS:
        assert "*secret*" in guide.split(f"`EMAIL_WORKER_{name.upper()}`", 1)[1].split("\n", 1)[0]
    for name in ("drain_seconds", "smtp_timeout", "prefetch", "concurrency"):
        default = Settings.model_fields[name].default
        assert rows[f"EMAIL_WORKER_{name.upper()}"].strip() == f"`{default:g}`"


def test_every_sub_package_and_the_migrations_ship_in_the_wheel() -> None:
    """The packages list in pyproject.toml is explicit: a sub-package left out of it (or the
    migrations' package data) would be missing from the image, not from a checkout."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for top in ("email_worker", "schemas", "templates_client")
        for init in (ROOT / top).rglob("__init__.py")
    }
    assert found <= set(tool["packages"])
    assert tool["package-data"]["email_worker.ledger"] == ["sql/*.sql"]
    assert list((ROOT / "email_worker" / "ledger" / "sql").glob("*.sql"))
