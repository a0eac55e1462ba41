#!/usr/bin/env python3
"""Generate the Grafana dashboards in deploy/grafana/dashboards/ (dashboards as code).

    .venv/bin/python tools/dashboards.py           # write the JSON files
    .venv/bin/python tools/dashboards.py --check   # exit 1 when a file differs from what this generates

The JSON files are committed (Grafana's file provisioning loads them, see
deploy/grafana/provisioning/dashboards/skolsynk.yaml). Edit this file, not the JSON: a dashboard
changed in the UI cannot be saved (allowUiUpdates: false). Every metric a panel uses is described in
docs/metrics.md; tests/unit/test_metrics_documented.py checks that each one exists.

Every dashboard has a ``datasource`` variable (default: the provisioned Prometheus, uid ``prometheus``),
so the same files work against another Prometheus in Kubernetes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "deploy" / "grafana" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
#: Work queues, as in the alert rules: not DLQs, retry steps, vendor feeds or the generic sync-request queue.
WORK_QUEUES = r'queue!~".*\\.dlq|.*\\.retry\\.[0-9]+|.*\\.vendor-feed\\..*|.*\\.connectors\\.sync-requests"'

Panel = dict[str, Any]


class Layout:
    """Places panels left to right on a 24-column grid, wrapping to the next row."""

    def __init__(self) -> None:
        self.x = 0
        self.y = 0
        self.row_height = 0
        self.next_id = 1

    def place(self, panel: Panel, width: int, height: int) -> Panel:
        if self.x + width > 24:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel["gridPos"] = {"x": self.x, "y": self.y, "w": width, "h": height}
        panel["id"] = self.next_id
        self.next_id += 1
        self.x += width
        self.row_height = max(self.row_height, height)
        return panel

    def row(self, title: str) -> Panel:
        if self.x:
            self.x, self.y, self.row_height = 0, self.y + self.row_height, 0
        panel = {"type": "row", "title": title, "collapsed": False, "panels": []}
        placed = self.place(panel, 24, 1)
        self.x, self.y, self.row_height = 0, self.y + 1, 0
        return placed


def targets(*queries: tuple[str, str]) -> list[dict[str, Any]]:
    return [
        {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": chr(ord("A") + n), "range": True}
        for n, (expr, legend) in enumerate(queries)
    ]


def timeseries(
    title: str, *queries: tuple[str, str], unit: str = "short", description: str = "", stack: bool = False
) -> Panel:
    return {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": targets(*queries),
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {"drawStyle": "line", "fillOpacity": 10, "stacking": {"mode": "normal" if stack else "none"}},
            },
            "overrides": [],
        },
        "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["lastNotNull", "max"]}},
    }


def stat(title: str, expr: str, *, unit: str = "short", description: str = "", red_above: float | None = None) -> Panel:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if red_above is not None:
        steps.append({"color": "red", "value": red_above})
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [{"datasource": DS, "expr": expr, "refId": "A", "instant": True}],
        "fieldConfig": {
            "defaults": {"unit": unit, "thresholds": {"mode": "absolute", "steps": steps}},
            "overrides": [],
        },
        "options": {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background", "graphMode": "none"},
    }


def table(title: str, expr: str, *, description: str = "", unit: str = "short") -> Panel:
    return {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "targets": [{"datasource": DS, "expr": expr, "refId": "A", "instant": True, "format": "table"}],
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "transformations": [{"id": "organize", "options": {"excludeByName": {"Time": True}}}],
    }


def variable(name: str, query: str, *, label: str, include_all: bool = True) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,
        "includeAll": include_all,
        "multi": include_all,
        "allValue": ".*",
        "current": {"selected": True, "text": "All", "value": "$__all"} if include_all else {},
        "sort": 1,
    }


def dashboard(uid: str, title: str, description: str, panels: list[Panel], variables: list[dict[str, Any]]) -> Any:
    datasource = {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
        "current": {"selected": True, "text": "Prometheus", "value": "prometheus"},
    }
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["skolsynk"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [datasource, *variables]},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["skolsynk"], "asDropdown": True, "title": "skolsynk", "includeVars": False}
        ],
        "panels": panels,
    }


# ---------------------------------------------------------------------------
# The dashboards
# ---------------------------------------------------------------------------


def overview() -> Any:
    lay = Layout()
    svc = 'service=~"$service"'
    panels = [
        lay.row("Services"),
        lay.place(stat("Targets down", 'count(up{job="skolsynk"} == 0) or vector(0)', red_above=1), 4, 4),
        lay.place(stat("Not ready", "count(skolsynk_ready == 0) or vector(0)", red_above=1), 4, 4),
        lay.place(
            stat(
                "Work queues without consumers",
                f"count(rabbitmq_queue_consumers{{{WORK_QUEUES}}} == 0) or vector(0)",
                red_above=1,
            ),
            4,
            4,
        ),
        lay.place(
            stat("Dead letters", 'sum(rabbitmq_queue_messages{queue=~".+\\\\.dlq"}) or vector(0)', red_above=1), 4, 4
        ),
        lay.place(
            stat("Holds pending", "sum(max by (tenant, vendor) (skolsynk_holds_pending)) or vector(0)", red_above=1),
            4,
            4,
        ),
        lay.place(
            stat(
                "Deletions overdue",
                "sum(max by (tenant, vendor) (skolsynk_gdpr_deletions_overdue)) or vector(0)",
                red_above=1,
            ),
            4,
            4,
        ),
        lay.place(table("Targets", f'up{{job="skolsynk", {svc}}}', description="1: scraped; 0: down."), 12, 8),
        lay.place(
            timeseries(
                "Memory (RSS) per instance",
                (f'process_resident_memory_bytes{{job="skolsynk", {svc}}}', "{{instance}}"),
                unit="bytes",
            ),
            12,
            8,
        ),
        lay.row("Messages (RED)"),
        lay.place(
            timeseries(
                "Handled per second by queue and outcome",
                (
                    f"sum by (queue, outcome) (rate(skolsynk_messages_consumed_total{{{svc}}}[$__rate_interval]))",
                    "{{queue}} {{outcome}}",
                ),
                unit="ops",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Failures per second (retry, dead letter)",
                (
                    "sum by (queue, outcome) (rate(skolsynk_messages_consumed_total"
                    f'{{{svc}, outcome=~"retry|dead_letter"}}[$__rate_interval]))',
                    "{{queue}} {{outcome}}",
                ),
                unit="ops",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Handler duration p95",
                (
                    "histogram_quantile(0.95, sum by (queue, le) "
                    f"(rate(skolsynk_message_processing_seconds_bucket{{{svc}}}[$__rate_interval])))",
                    "{{queue}}",
                ),
                unit="s",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Message age when handled p95 (lag)",
                (
                    "histogram_quantile(0.95, sum by (queue, le) "
                    f"(rate(skolsynk_message_age_seconds_bucket{{{svc}}}[$__rate_interval])))",
                    "{{queue}}",
                ),
                unit="s",
                description="From production to the start of handling, retries included.",
            ),
            12,
            8,
        ),
        lay.row("RabbitMQ"),
        lay.place(
            timeseries(
                "Ready messages per work queue",
                (f"sum by (queue) (rabbitmq_queue_messages_ready{{{WORK_QUEUES}}})", "{{queue}}"),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Consumers per work queue", (f"sum by (queue) (rabbitmq_queue_consumers{{{WORK_QUEUES}}})", "{{queue}}")
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Dead-letter queues", ('sum by (queue) (rabbitmq_queue_messages{queue=~".+\\\\.dlq"})', "{{queue}}")
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Unacknowledged messages",
                (f"sum by (queue) (rabbitmq_queue_messages_unacked{{{WORK_QUEUES}}})", "{{queue}}"),
            ),
            12,
            8,
        ),
        lay.row("Publishing and the outbox"),
        lay.place(
            timeseries(
                "Publishes per second by exchange and outcome",
                (
                    f"sum by (exchange, outcome) (rate(skolsynk_messages_published_total{{{svc}}}[$__rate_interval]))",
                    "{{exchange}} {{outcome}}",
                ),
                unit="ops",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Publish confirm p95",
                (
                    "histogram_quantile(0.95, sum by (exchange, le) "
                    f"(rate(skolsynk_publish_confirm_seconds_bucket{{{svc}}}[$__rate_interval])))",
                    "{{exchange}}",
                ),
                unit="s",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Outbox",
                ("max(skolsynk_outbox_pending)", "pending"),
                (f"sum(rate(skolsynk_outbox_relayed_total{{{svc}}}[$__rate_interval]))", "relayed/s"),
                (f"sum(increase(skolsynk_broker_reconnects_total{{{svc}}}[$__rate_interval]))", "reconnects"),
            ),
            8,
            8,
        ),
        lay.row("HTTP APIs (RED)"),
        lay.place(
            timeseries(
                "Requests per second by route and status",
                (
                    f"sum by (service, route, status_class) (rate(skolsynk_http_requests_total{{{svc}}}"
                    "[$__rate_interval]))",
                    "{{service}} {{route}} {{status_class}}",
                ),
                unit="reqps",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "5xx ratio",
                (
                    f'sum by (service) (rate(skolsynk_http_requests_total{{{svc}, status_class="5xx"}}'
                    "[$__rate_interval]))"
                    f" / sum by (service) (rate(skolsynk_http_requests_total{{{svc}}}[$__rate_interval]))",
                    "{{service}}",
                ),
                unit="percentunit",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Duration p95 by route",
                (
                    "histogram_quantile(0.95, sum by (service, route, le) "
                    f"(rate(skolsynk_http_request_seconds_bucket{{{svc}}}[$__rate_interval])))",
                    "{{service}} {{route}}",
                ),
                unit="s",
            ),
            8,
            8,
        ),
        lay.row("Store (MongoDB)"),
        lay.place(
            timeseries(
                "Store round trips per second by service",
                (
                    f"sum by (service) (rate(skolsynk_store_commands_total{{{svc}}}[$__rate_interval]))",
                    "{{service}}",
                ),
                unit="ops",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Store command time p99 by collection",
                (
                    "histogram_quantile(0.99, sum by (collection, le) "
                    f"(rate(skolsynk_store_command_seconds_bucket{{{svc}}}[$__rate_interval])))",
                    "{{collection}}",
                ),
                unit="s",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Seconds waiting on the store per second, by service",
                (
                    f"sum by (service) (rate(skolsynk_store_command_seconds_sum{{{svc}}}[$__rate_interval]))",
                    "{{service}}",
                ),
            ),
            8,
            8,
        ),
    ]
    return dashboard(
        "skolsynk-overview",
        "skolsynk / Overview",
        "Is everything running and moving: services, message handling, queues, the outbox, the HTTP APIs.",
        panels,
        [variable("service", 'label_values(up{job="skolsynk"}, service)', label="Service")],
    )


def vendors() -> Any:
    lay = Layout()
    sel = 'vendor=~"$vendor", tenant=~"$tenant"'
    vendor = 'vendor=~"$vendor"'
    panels = [
        lay.row("Deliveries"),
        lay.place(
            timeseries(
                "Deliveries per second by status",
                (
                    f"sum by (vendor, status) (rate(skolsynk_deliveries_total{{{sel}}}[$__rate_interval]))",
                    "{{vendor}} {{status}}",
                ),
                unit="ops",
                stack=True,
            ),
            12,
            8,
        ),
        lay.place(
            table(
                "Deliveries in the range by tenant, vendor and status",
                f"sum by (tenant, vendor, status) (increase(skolsynk_deliveries_total{{{sel}}}[$__range])) > 0",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Rejected and retried",
                (
                    f'sum by (vendor, status) (increase(skolsynk_deliveries_total{{{sel}, status=~"rejected|retry"}}'
                    "[$__rate_interval]))",
                    "{{vendor}} {{status}}",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Change events emitted by the normaliser",
                (
                    f"sum by (vendor, operation) (rate(skolsynk_vendor_changes_emitted_total{{{sel}}}"
                    "[$__rate_interval]))",
                    "{{vendor}} {{operation}}",
                ),
                unit="ops",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Pending changes by tenant and vendor",
                (f"max by (tenant, vendor) (skolsynk_delivery_pending_changes{{{sel}}})", "{{tenant}} {{vendor}}"),
                description="Changes queued for the vendor and not yet done with (docs/dispatcher.md, What waits).",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Oldest pending change's age",
                (
                    f"max by (tenant, vendor) (skolsynk_delivery_oldest_pending_seconds{{{sel}}})",
                    "{{tenant}} {{vendor}}",
                ),
                unit="s",
                description="How long the oldest change pending for the vendor has waited (alert: "
                "SkolsynkDeliveryBacklogOld past two hours while the vendor answers).",
            ),
            12,
            8,
        ),
        lay.row("The vendor's server (EGIL SCIM)"),
        lay.place(
            timeseries(
                "Requests per second by status class",
                (
                    f"sum by (vendor, status_class) (rate(skolsynk_vendor_requests_total{{{vendor}}}"
                    "[$__rate_interval]))",
                    "{{vendor}} {{status_class}}",
                ),
                unit="reqps",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Error ratio (5xx and timeouts)",
                (
                    f'sum by (vendor) (rate(skolsynk_vendor_requests_total{{{vendor}, status_class=~"5xx|error"}}'
                    f"[$__rate_interval])) / sum by (vendor) (rate(skolsynk_vendor_requests_total{{{vendor}}}"
                    "[$__rate_interval]))",
                    "{{vendor}}",
                ),
                unit="percentunit",
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Request duration p50 / p95",
                (
                    "histogram_quantile(0.5, sum by (vendor, le) "
                    f"(rate(skolsynk_vendor_request_seconds_bucket{{{vendor}}}[$__rate_interval])))",
                    "{{vendor}} p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (vendor, le) "
                    f"(rate(skolsynk_vendor_request_seconds_bucket{{{vendor}}}[$__rate_interval])))",
                    "{{vendor}} p95",
                ),
                unit="s",
            ),
            8,
            8,
        ),
        lay.row("Queues and holds"),
        lay.place(
            timeseries(
                "Dispatcher queue: ready and dead letters",
                (
                    'sum by (queue) (rabbitmq_queue_messages_ready{queue=~".*\\\\.dispatcher\\\\.($vendor)"})',
                    "{{queue}}",
                ),
                (
                    'sum by (queue) (rabbitmq_queue_messages{queue=~".*\\\\.dispatcher\\\\.($vendor)\\\\.dlq"})',
                    "{{queue}}",
                ),
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Vendor feed queues (queue-mode vendors)",
                (
                    'sum by (queue) (rabbitmq_queue_messages_ready{queue=~".*\\\\.vendor-feed\\\\.($vendor)"})',
                    "{{queue}} ready",
                ),
                (
                    'sum by (queue) (rabbitmq_queue_consumers{queue=~".*\\\\.vendor-feed\\\\.($vendor)"})',
                    "{{queue}} consumers",
                ),
            ),
            8,
            8,
        ),
        lay.place(
            table(
                "Holds pending (removals held)",
                f"max by (tenant, vendor) (skolsynk_holds_pending_removals{{{sel}}})",
                description="Approve or discard in the admin UI; `skolsynk holds TENANT` lists them.",
            ),
            8,
            8,
        ),
    ]
    return dashboard(
        "skolsynk-vendors",
        "skolsynk / Vendor delivery",
        "Per vendor: what the dispatchers delivered, the vendor's answers, queues and holds.",
        panels,
        [
            variable("vendor", "label_values(skolsynk_deliveries_total, vendor)", label="Vendor"),
            variable("tenant", 'label_values(skolsynk_deliveries_total{vendor=~"$vendor"}, tenant)', label="Tenant"),
        ],
    )


def sources() -> Any:
    lay = Layout()
    tenant = 'tenant=~"$tenant"'
    panels = [
        lay.row("Runs"),
        lay.place(
            table(
                "Latest run complete (1) or not (0), per source",
                f"max by (tenant, source, source_kind) (skolsynk_source_last_run_complete{{{tenant}}})",
            ),
            12,
            8,
        ),
        lay.place(
            table(
                "Since the last complete run",
                f"time() - max by (tenant, source, source_kind) "
                f"(skolsynk_source_last_complete_run_timestamp_seconds{{{tenant}}})",
                unit="s",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Runs finalised by completeness",
                (
                    f"sum by (source_kind, mode, complete) (increase(skolsynk_source_runs_finalised_total{{{tenant}}}"
                    "[$__rate_interval]))",
                    "{{source_kind}} {{mode}} complete={{complete}}",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Run duration p95 (start to finalised)",
                (
                    "histogram_quantile(0.95, sum by (source_kind, mode, le) "
                    "(rate(skolsynk_source_run_duration_seconds_bucket[$__rate_interval])))",
                    "{{source_kind}} {{mode}}",
                ),
                unit="s",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Records applied and removed",
                (
                    f"sum by (tenant, source) (increase(skolsynk_source_records_applied_total{{{tenant}}}"
                    "[$__rate_interval]))",
                    "{{tenant}}/{{source}} applied",
                ),
                (
                    f"sum by (tenant, source) (increase(skolsynk_source_records_removed_total{{{tenant}}}"
                    "[$__rate_interval]))",
                    "{{tenant}}/{{source}} removed",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Open runs",
                (f"max by (tenant, source) (skolsynk_source_runs_open{{{tenant}}})", "{{tenant}}/{{source}}"),
                description="Started and not yet finalised; a run open for hours fires SkolsynkSourceRunStalled.",
            ),
            12,
            8,
        ),
        lay.row("Data quality"),
        lay.place(
            table(
                "Findings by tenant, code and severity",
                f"max by (tenant, code, severity) (skolsynk_dq_findings{{{tenant}}})",
                description="docs/data-quality.md explains each code.",
            ),
            12,
            10,
        ),
        lay.place(
            timeseries(
                "Findings by code",
                (f"sum by (code) (max by (tenant, code) (skolsynk_dq_findings{{{tenant}}}))", "{{code}}"),
                stack=True,
            ),
            12,
            10,
        ),
        lay.place(
            timeseries(
                "Projection duration p95",
                (
                    "histogram_quantile(0.95, sum by (reason, le) "
                    "(rate(skolsynk_projection_seconds_bucket[$__rate_interval])))",
                    "{{reason}}",
                ),
                unit="s",
            ),
            12,
            8,
        ),
        lay.row("Connectors"),
        lay.place(
            timeseries(
                "Microsoft 365 runs by outcome",
                (
                    "sum by (mode, outcome) (increase(skolsynk_graph_runs_total[$__rate_interval]))",
                    "{{mode}} {{outcome}}",
                ),
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Microsoft 365 throttling and failures",
                (
                    "sum by (status) (increase(skolsynk_graph_throttled_requests_total[$__rate_interval]))",
                    "throttled {{status}}",
                ),
                ("sum by (code) (increase(skolsynk_graph_failed_runs_total[$__rate_interval]))", "failed {{code}}"),
            ),
            8,
            8,
        ),
        lay.place(
            timeseries(
                "Source API requests (EGIL receiver, SS 12000 webhook)",
                (
                    'sum by (service, route, status_class) (rate(skolsynk_http_requests_total{server=~"scim|webhook"}'
                    "[$__rate_interval]))",
                    "{{service}} {{route}} {{status_class}}",
                ),
                unit="reqps",
            ),
            8,
            8,
        ),
    ]
    return dashboard(
        "skolsynk-sources",
        "skolsynk / Sources and data quality",
        "Source runs (complete or not, how long ago, how long), records applied and removed, data-quality findings.",
        panels,
        [variable("tenant", "label_values(skolsynk_source_last_run_complete, tenant)", label="Tenant")],
    )


def gdpr() -> Any:
    lay = Layout()
    sel = 'tenant=~"$tenant", vendor=~"$vendor"'
    vendor = 'vendor=~"$vendor"'
    panels = [
        lay.row("Deletions"),
        lay.place(
            stat(
                "Overdue",
                f"sum(max by (tenant, vendor) (skolsynk_gdpr_deletions_overdue{{{sel}}})) or vector(0)",
                red_above=1,
                description="Past SKOLSYNK_GDPR_DELETION_DEADLINE_HOURS without a receipt.",
            ),
            6,
            4,
        ),
        lay.place(
            stat("Pending", f"sum(max by (tenant, vendor) (skolsynk_gdpr_deletions_pending{{{sel}}})) or vector(0)"),
            6,
            4,
        ),
        lay.place(
            stat("Persons purged (range)", "sum(increase(skolsynk_gdpr_persons_purged_total[$__range])) or vector(0)"),
            6,
            4,
        ),
        lay.place(
            stat(
                "Erasure requests (range)",
                "sum(increase(skolsynk_gdpr_erasure_requests_total[$__range])) or vector(0)",
            ),
            6,
            4,
        ),
        lay.place(
            timeseries(
                "Pending and overdue by vendor",
                (
                    f"sum by (vendor) (max by (tenant, vendor) (skolsynk_gdpr_deletions_pending{{{sel}}}))",
                    "{{vendor}} pending",
                ),
                (
                    f"sum by (vendor) (max by (tenant, vendor) (skolsynk_gdpr_deletions_overdue{{{sel}}}))",
                    "{{vendor}} overdue",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            table(
                "Overdue by tenant and vendor",
                f"max by (tenant, vendor) (skolsynk_gdpr_deletions_overdue{{{sel}}}) > 0",
                description="`skolsynk overdue TENANT` lists them.",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Requested and completed per hour",
                (
                    f"sum by (vendor, reason) (increase(skolsynk_gdpr_deletions_requested_total{{{vendor}}}[1h]))",
                    "{{vendor}} requested ({{reason}})",
                ),
                (
                    f"sum by (vendor, outcome) (increase(skolsynk_gdpr_deletions_completed_total{{{vendor}}}[1h]))",
                    "{{vendor}} {{outcome}}",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Removal to receipt p50 / p95",
                (
                    "histogram_quantile(0.5, sum by (vendor, le) "
                    f"(rate(skolsynk_gdpr_removal_to_receipt_seconds_bucket{{{vendor}}}[$__rate_interval])))",
                    "{{vendor}} p50",
                ),
                (
                    "histogram_quantile(0.95, sum by (vendor, le) "
                    f"(rate(skolsynk_gdpr_removal_to_receipt_seconds_bucket{{{vendor}}}[$__rate_interval])))",
                    "{{vendor}} p95",
                ),
                unit="s",
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Retries of overdue deletions",
                (
                    f"sum by (vendor, outcome) (increase(skolsynk_gdpr_deletion_retries_total{{{vendor}}}[1h]))",
                    "{{vendor}} {{outcome}}",
                ),
            ),
            12,
            8,
        ),
        lay.place(
            timeseries(
                "Erasure and objection requests",
                ("sum by (kind) (increase(skolsynk_gdpr_erasure_requests_total[1h]))", "{{kind}}"),
            ),
            12,
            8,
        ),
    ]
    return dashboard(
        "skolsynk-gdpr",
        "skolsynk / GDPR",
        "The erasure ledger: deletions pending and overdue per vendor, receipts, retries, purges, erasure requests.",
        panels,
        [
            variable("tenant", "label_values(skolsynk_gdpr_deletions_pending, tenant)", label="Tenant"),
            variable("vendor", "label_values(skolsynk_gdpr_deletions_pending, vendor)", label="Vendor"),
        ],
    )


DASHBOARDS = {
    "skolsynk-overview.json": overview,
    "skolsynk-vendors.json": vendors,
    "skolsynk-sources.json": sources,
    "skolsynk-gdpr.json": gdpr,
}


def render(build: Any) -> str:
    return json.dumps(build(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--check", action="store_true", help="fail when a committed dashboard is not current")
    args = parser.parse_args(argv)
    stale = []
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.write_text(text, encoding="utf-8")
    if stale:
        print("stale dashboards (run: .venv/bin/python tools/dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    print(f"{len(DASHBOARDS)} dashboards {'current' if args.check else 'written'} in {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
