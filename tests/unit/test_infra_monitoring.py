"""The monitoring templates in ``infra/monitoring``: valid ARM templates, a workbook template in step
with ``workbook.json``, the issue's alert thresholds, and queries that only name the metrics, span
names and attributes the code emits (``ingestion.telemetry.names``, ``ingestion.workflow``).

The last group checks the table mapping the queries rely on against the installed Azure Monitor
exporter: our activity spans become ``InProc`` dependencies, the run's root span a request, metric
points ``customMetrics`` rows named after the instrument, attributes custom dimensions.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from azure.monitor.opentelemetry.exporter.export.metrics._exporter import (
    APPLICATION_INSIGHTS_METRIC_TEMPORALITIES,
    _convert_point_to_envelope,
)
from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from ingestion.model import JobStatus
from ingestion.telemetry import Telemetry, names
from ingestion.telemetry.runs import RunIdGenerator
from ingestion.workflow import RECORD_OUTCOME, STAGE_ACTIVITIES

MONITORING = Path(__file__).resolve().parents[2] / "infra" / "monitoring"
TEMPLATES = ("workbook.template.json", "alerts.template.json")

METRIC_NAMES = {metric.name for metric in names.METRICS}
SPAN_NAMES = {*STAGE_ACTIVITIES, RECORD_OUTCOME} | {
    value for key, value in vars(names).items() if key.startswith("SPAN_") and isinstance(value, str)
}
_NOT_ATTRIBUTES = ("SERVICE_NAME", "LOGGER")
ATTRIBUTES = {
    value
    for key, value in vars(names).items()
    if key.isupper() and isinstance(value, str) and not key.startswith("SPAN_") and key not in _NOT_ATTRIBUTES
}
# Values an ``outcome`` or ``status`` dimension takes: a job's status, and how a stage or run ended.
DIMENSION_VALUES = {status.value for status in JobStatus} | {"ok", "transient", "permanent", "superseded", "crashed"}

_TABLE = re.compile(r"\b(customMetrics|dependencies|requests)\b")
_NAME_IS = re.compile(r"\bname\s*(?:==|!=|=~)\s*\"([^\"]*)\"")
_NAME_IN = re.compile(r"\bname\s+!?in\s*\(([^)]*)\)")
_DIMENSION = re.compile(r"customDimensions(?:\.(\w+)|\[\s*\"([^\"]+)\"\s*\])")
_VALUE_IS = re.compile(r"\b(?:outcome|status)\)?\s*(?:==|!=)\s*\"([^\"]*)\"")
_VALUE_IN = re.compile(r"\b(?:outcome|status)\)?\s+!?in\s*\(([^)]*)\)")
_ROLE = re.compile(r"\bcloud_RoleName\s*==\s*\"([^\"]*)\"")
_QUOTED = re.compile(r"\"([^\"]*)\"")


def _load(name: str) -> Any:
    return json.loads((MONITORING / name).read_text(encoding="utf-8"))


def _build() -> ModuleType:
    spec = importlib.util.spec_from_file_location("monitoring_build", MONITORING / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def workbook_queries() -> dict[str, str]:
    """Every query item of the workbook, by item name."""
    return {item["name"]: item["content"]["query"] for item in _load("workbook.json")["items"] if item["type"] == 3}


def alert_queries() -> dict[str, str]:
    """The alert rules' query bodies (template variables named ``*Query``)."""
    variables = _load("alerts.template.json")["variables"]
    return {key: value for key, value in variables.items() if key.endswith("Query")}


def all_queries() -> Iterator[tuple[str, str]]:
    yield from workbook_queries().items()
    yield from alert_queries().items()


def _compared(query: str, equal: re.Pattern[str], among: re.Pattern[str]) -> list[str]:
    """The literals ``query`` compares a field with, by ``==``/``!=`` (``equal``) or ``in`` (``among``)."""
    return equal.findall(query) + [value for group in among.findall(query) for value in _QUOTED.findall(group)]


def problems(query: str) -> list[str]:
    """What in ``query`` names something the code does not emit."""
    tables = set(_TABLE.findall(query))
    if not tables:
        return ["no table (customMetrics, dependencies or requests)"]
    if "customMetrics" in tables and len(tables) > 1:
        return [f"mixes metrics and spans: {sorted(tables)}"]  # a name could then be either
    kind, known = ("metric", METRIC_NAMES) if "customMetrics" in tables else ("span", SPAN_NAMES)
    compared = _compared(query, _NAME_IS, _NAME_IN)
    found = [] if compared else ["filters on no name"]
    found += [f"unknown {kind} {name!r}" for name in compared if name not in known]
    keys = [dotted or bracketed for dotted, bracketed in _DIMENSION.findall(query)]
    found += [f"unknown attribute {key!r}" for key in keys if key not in ATTRIBUTES]
    values = _compared(query, _VALUE_IS, _VALUE_IN)
    found += [f"unknown outcome or status {value!r}" for value in values if value not in DIMENSION_VALUES]
    roles = _ROLE.findall(query)
    found += [f"role {role!r} is not {names.SERVICE_NAME!r}" for role in roles if role != names.SERVICE_NAME]
    if kind == "span" and not roles:
        found.append("spans not filtered to the app's role (the Functions host logs rows with the same names)")
    return found


# ------------------------------------------------------------------ templates


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_is_an_arm_deployment_template(name: str) -> None:
    """Each template has the ARM schema, a content version, parameters and resources."""
    template = _load(name)
    assert template["$schema"].startswith("https://schema.management.azure.com/schemas/")
    assert template["$schema"].endswith("/deploymentTemplate.json#")
    assert re.fullmatch(r"\d+\.\d+\.\d+\.\d+", template["contentVersion"])
    assert "appInsightsId" in template["parameters"]
    assert "location" in template["parameters"]
    assert template["resources"]


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_expressions_name_declared_parameters_and_variables(name: str) -> None:
    """Every ``parameters('x')`` and ``variables('x')`` a template uses is declared in it."""
    template = _load(name)
    text = json.dumps(template)
    assert set(re.findall(r"parameters\('(\w+)'\)", text)) <= set(template["parameters"])
    assert set(re.findall(r"variables\('(\w+)'\)", text)) <= set(template.get("variables", {}))


def test_workbook_is_a_notebook_with_a_time_range() -> None:
    """workbook.json is a Notebook/1.0 workbook whose queries all follow its time-range parameter."""
    workbook = _load("workbook.json")
    assert workbook["version"] == "Notebook/1.0"
    parameters = [p for item in workbook["items"] if item["type"] == 9 for p in item["content"]["parameters"]]
    time_ranges = [p["name"] for p in parameters if p["type"] == 4]
    assert time_ranges == ["TimeRange"]
    queries = [item["content"] for item in workbook["items"] if item["type"] == 3]
    assert len(queries) >= 10
    assert {query["timeContextFromParameter"] for query in queries} == {"TimeRange"}
    assert {query["resourceType"] for query in queries} == {"microsoft.insights/components"}
    assert len({item["name"] for item in workbook["items"]}) == len(workbook["items"])


def test_workbook_template_is_generated_from_workbook_json() -> None:
    """workbook.template.json is what build.py writes from workbook.json (run it after editing)."""
    build = _build()
    assert (MONITORING / "workbook.template.json").read_text(encoding="utf-8") == build.render()
    assert build.main(["--check"]) == 0


def test_workbook_template_carries_the_workbook_as_a_string() -> None:
    """The template deploys a shared workbook on the component, its content the workbook JSON."""
    template = _load("workbook.template.json")
    (resource,) = template["resources"]
    assert resource["type"] == "Microsoft.Insights/workbooks"
    assert resource["kind"] == "shared"
    assert "appInsightsId" in resource["properties"]["sourceId"]
    embedded = template["variables"]["workbook"]
    assert not embedded.startswith("[")  # ARM would evaluate it as an expression
    assert json.loads(embedded) == _load("workbook.json")
    assert "variables('workbook')" in resource["properties"]["serializedData"]


def test_build_check_notices_a_stale_template(tmp_path: Path) -> None:
    """build.py renders a changed workbook differently, so a forgotten rebuild fails the test above."""
    build = _build()
    workbook = _load("workbook.json")
    workbook["items"][0]["content"]["json"] += " (edited)"
    edited = tmp_path / "workbook.json"
    edited.write_text(json.dumps(workbook), encoding="utf-8")
    assert build.render(edited) != build.render()


# ------------------------------------------------------------------ alerts


def _rules() -> dict[str, dict[str, Any]]:
    template = _load("alerts.template.json")
    return {re.sub(r".*'\{0\}-([\w-]+)'.*", r"\1", rule["name"]): rule for rule in template["resources"]}


def test_alerts_default_to_the_issues_thresholds() -> None:
    """Success rate below 99.9 % over 1 hour, checked every 15 minutes; backlog older than 1800 s."""
    parameters = _load("alerts.template.json")["parameters"]
    assert parameters["successRatePercent"]["defaultValue"] == "99.9"
    assert parameters["successRateWindow"]["defaultValue"] == "PT1H"
    assert parameters["backlogAgeSeconds"]["defaultValue"] == 1800
    assert parameters["minFinishedDocuments"]["defaultValue"] >= 1
    assert parameters["actionGroupId"]["defaultValue"] == ""
    rules = _rules()
    assert set(rules) == {"success-rate", "needs-review", "backlog-age"}
    success = rules["success-rate"]["properties"]
    assert success["windowSize"] == "[parameters('successRateWindow')]"
    assert success["evaluationFrequency"] == "PT15M"
    condition = success["criteria"]["allOf"][0]["query"]
    assert "parameters('successRatePercent')" in condition
    assert "parameters('minFinishedDocuments')" in condition
    assert "parameters('backlogAgeSeconds')" in rules["backlog-age"]["properties"]["criteria"]["allOf"][0]["query"]


def test_alert_rules_fire_on_any_row_of_their_query() -> None:
    """Each rule is a log alert on the component, fires on any row of its query, and says what to do."""
    queries = alert_queries()
    for key, rule in _rules().items():
        properties = rule["properties"]
        assert rule["type"] == "Microsoft.Insights/scheduledQueryRules", key
        assert properties["scopes"] == ["[parameters('appInsightsId')]"], key
        assert properties["severity"] in range(5), key
        (condition,) = properties["criteria"]["allOf"]
        fires = (condition["timeAggregation"], condition["operator"], condition["threshold"])
        assert fires == ("Count", "GreaterThan", 0), key
        assert [name for name in queries if f"variables('{name}')" in condition["query"]], key
        assert "ingestion stats" in properties["description"], key
        assert properties["actions"]["actionGroups"] == "[variables('actionGroups')]", key


def test_alert_queries_compare_to_their_thresholds() -> None:
    """The threshold variables the rules prepend (``let threshold``, ``let minimum``) are used."""
    queries = alert_queries()
    assert "success_rate_pct < threshold" in queries["successRateQuery"]
    assert "finished >= minimum" in queries["successRateQuery"]
    assert "> threshold" in queries["backlogAgeQuery"]
    assert '"needs_review"' in queries["needsReviewQuery"]


# ------------------------------------------------------------------ names in queries


@pytest.mark.parametrize(("name", "query"), list(all_queries()), ids=[name for name, _ in all_queries()])
def test_query_names_only_what_the_code_emits(name: str, query: str) -> None:
    """Metric, span and attribute names and outcome values in every query are the ones the code emits."""
    assert problems(query) == []


# Not on the dashboard: cost and sizing figures, and the stage duration, whose percentiles come from
# the activity spans (histograms reach customMetrics without their buckets).
UNCHARTED = {names.EMBEDDING_TOKENS, names.EMBEDDING_REQUESTS, names.INDEX_BATCH, names.STAGE_DURATION}


def test_every_health_metric_has_a_panel_or_an_alert() -> None:
    """Every metric but the uncharted ones appears in a workbook or alert query."""
    used = {name for _, query in all_queries() for name in _QUOTED.findall(query)}
    assert METRIC_NAMES - used - {metric.name for metric in UNCHARTED} == set()


@pytest.mark.parametrize(
    ("query", "complaint"),
    [
        ('customMetrics | where name == "ingestion.documents.finshed"', "unknown metric 'ingestion.documents.finshed'"),
        ('customMetrics | where name in ("ingestion.jobs", "ingestion.job")', "unknown metric 'ingestion.job'"),
        (
            'dependencies | where cloud_RoleName == "ingestion" and name == "fetch_blobs"',
            "unknown span 'fetch_blobs'",
        ),
        (
            'customMetrics | where name == "ingestion.jobs" | extend s = tostring(customDimensions.state)',
            "unknown attribute 'state'",
        ),
        (
            'customMetrics | where name == "ingestion.jobs" | where tostring(customDimensions.status) == "review"',
            "unknown outcome or status 'review'",
        ),
        ('requests | where name == "ingest_document"', "spans not filtered to the app's role"),
        ("customMetrics | summarize sum(valueSum)", "filters on no name"),
    ],
)
def test_the_name_check_catches_mistakes(query: str, complaint: str) -> None:
    """A misspelt metric, span, attribute or status, or a span query without the role filter, is reported."""
    assert any(found.startswith(complaint) for found in problems(query)), problems(query)


# ------------------------------------------------------------------ the exporter's table mapping


Recorded = tuple[InMemorySpanExporter, InMemoryMetricReader, Telemetry]


@pytest.fixture
def recorded() -> Recorded:
    """Telemetry over SDK providers with in-memory exporters, metrics read with the exporter's temporalities."""
    spans = InMemorySpanExporter()
    resource = Resource.create({"service.name": names.SERVICE_NAME})
    tracer_provider = TracerProvider(resource=resource, id_generator=RunIdGenerator())
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader(preferred_temporality=dict(APPLICATION_INSIGHTS_METRIC_TEMPORALITIES))
    return spans, reader, Telemetry(tracer_provider, MeterProvider(metric_readers=[reader], resource=resource))


def test_activity_spans_become_inproc_dependencies(recorded: Recorded) -> None:
    """An activity span becomes an InProc dependency named after it, attributes as dimensions, role ingestion."""
    spans, _, telemetry = recorded
    with telemetry.activity(STAGE_ACTIVITIES[0], "doc-1", "etag-1", "instance-1"):
        pass
    (span,) = spans.get_finished_spans()
    envelope = _convert_span_to_envelope(span)
    data = envelope.data.base_data
    assert envelope.name == "Microsoft.ApplicationInsights.RemoteDependency"
    assert (data.type, data.name) == ("InProc", STAGE_ACTIVITIES[0])
    assert data.properties[names.STAGE] == STAGE_ACTIVITIES[0]
    assert data.properties[names.DOC_ID] == "doc-1"
    assert data.properties[names.OUTCOME] == "ok"
    assert envelope.tags["ai.cloud.role"] == names.SERVICE_NAME


def test_the_runs_root_span_becomes_a_request(recorded: Recorded) -> None:
    """The ``ingest_document`` span (CONSUMER) reaches ``requests``, its outcome a custom dimension."""
    spans, _, telemetry = recorded
    started = datetime.now(UTC) - timedelta(minutes=3)
    attributes = {names.OUTCOME: "needs_review", names.REASON: "encrypted", names.DOC_ID: "doc-1"}
    telemetry.run_span(names.SPAN_ORCHESTRATION, "instance-1", started, attributes, root=True)
    (span,) = spans.get_finished_spans()
    envelope = _convert_span_to_envelope(span)
    data = envelope.data.base_data
    assert envelope.name == "Microsoft.ApplicationInsights.Request"
    assert data.name == names.SPAN_ORCHESTRATION
    assert data.properties[names.OUTCOME] == "needs_review"
    assert data.success is False


def test_metric_points_become_custom_metrics_named_after_the_instrument(recorded: Recorded) -> None:
    """A counter point is a customMetrics row named after the instrument; a histogram's has sum, count, min, max."""
    _, reader, telemetry = recorded
    telemetry.finished.add(1, {names.OUTCOME: "indexed", names.REASON: "none"})
    telemetry.finished.add(1, {names.OUTCOME: "indexed", names.REASON: "none"})
    telemetry.stage_duration.record(0.5, {names.STAGE: "fetch_blob", names.OUTCOME: "ok"})
    telemetry.stage_duration.record(1.5, {names.STAGE: "fetch_blob", names.OUTCOME: "ok"})
    points = {
        metric.name: metric.data.data_points[0]
        for resource in reader.get_metrics_data().resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
    }
    counter = _convert_point_to_envelope(points[names.DOCUMENTS_FINISHED.name], names.DOCUMENTS_FINISHED.name)
    (count,) = counter.data.base_data.metrics
    assert (count.name, count.value) == (names.DOCUMENTS_FINISHED.name, 2)
    assert counter.data.base_data.properties == {names.OUTCOME: "indexed", names.REASON: "none"}
    histogram = _convert_point_to_envelope(points[names.STAGE_DURATION.name], names.STAGE_DURATION.name)
    (summary,) = histogram.data.base_data.metrics
    assert (summary.value, summary.count, summary.min, summary.max) == (2.0, 2, 0.5, 1.5)


def test_counters_are_exported_as_deltas() -> None:
    """Counters and histograms go out as deltas, so ``sum(valueSum)`` over a window counts what happened in it."""
    by_name = {kind.__name__: value for kind, value in APPLICATION_INSIGHTS_METRIC_TEMPORALITIES.items()}
    assert by_name["Counter"] is AggregationTemporality.DELTA
    assert by_name["ObservableCounter"] is AggregationTemporality.DELTA
    assert by_name["Histogram"] is AggregationTemporality.DELTA
