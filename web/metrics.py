"""``GET /metrics`` (Prometheus text) and ``GET /healthz``.

Counters come from the running hub (``hub.counters``, ``hub.link.counters``) and are
read at scrape time by a custom collector, so nothing is counted twice; gauges that
need the database (open sessions, devices online, outbox depth) are one query each.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hub.store.queries import gauges, ping
from web.stream import StreamSlots, stream_slots

bp = Blueprint("metrics", __name__)


class HubCollector:
    def __init__(self, state: Any, slots: StreamSlots):
        self.state = state
        self.slots = slots

    def collect(self) -> Any:
        hub = self.state.hub
        with self.state.sm() as session:
            stored = gauges(session)
        for name, help_text, key in (
            ("sessions_open", "Usage sessions open now", "sessions_open"),
            ("devices_online", "Devices whose last status is online", "devices_online"),
            ("devices", "Devices known to the hub", "devices"),
            ("outbox_depth", "Hub-to-device messages waiting for PUBACK", "outbox"),
            ("dead_letters_stored", "Dead letters in the database", "dead_letters"),
        ):
            yield GaugeMetricFamily(f"peershop_{name}", help_text, value=stored[key])
        if hub is None:
            return
        c = hub.counters
        for name, help_text, value in (
            ("events", "Events stored (new identities)", c.events),
            ("duplicates", "Events received again and dropped by identity", c.duplicates),
            ("messages", "MQTT messages stored", c.messages),
            ("batches", "Transactions committed by ingest", c.batches),
            ("dead_letters", "Messages dead-lettered since start", c.dead_letters),
            ("decisions", "Badge decisions answered since start", c.decisions),
            ("db_errors", "Database write failures retried", c.db_errors),
            ("internal_errors", "Rule or storage failures isolated", c.internal_errors),
            ("other_site", "Messages of other sites' devices, left to their hubs", c.other_site),
            (
                "reading_paused",
                "Times the hub stopped reading from the broker until ingest caught up",
                c.reading_paused,
            ),
        ):
            yield CounterMetricFamily(f"peershop_{name}", help_text, value=value)
        link = hub.link.counters
        yield CounterMetricFamily(
            "peershop_mqtt_received", "MQTT messages received", value=link.received
        )
        yield CounterMetricFamily(
            "peershop_mqtt_published", "MQTT messages published", value=link.published
        )
        yield CounterMetricFamily(
            "peershop_mqtt_reconnects", "MQTT connections made", value=link.connects
        )
        yield GaugeMetricFamily(
            "peershop_pending_peak",
            "Most received messages held for their commit at once (ingest.max_pending)",
            value=c.pending_peak,
        )
        yield GaugeMetricFamily(
            "peershop_db_commit_seconds",
            "Duration of the last ingest commit",
            value=c.last_commit_s,
        )
        for name, help_text, histogram in (
            (
                "peershop_decision_seconds",
                "A badge's arrival to its reply handed to the broker",
                c.decision_seconds,
            ),
            (
                "peershop_commit_duration_seconds",
                "Duration of each ingest commit",
                c.commit_seconds,
            ),
        ):
            yield HistogramMetricFamily(
                name, help_text, buckets=histogram.cumulative(), sum_value=histogram.sum
            )
        yield GaugeMetricFamily(
            "peershop_broker_connected",
            "1 while the hub is connected to the broker",
            value=1 if hub.link.is_connected else 0,
        )
        feed = self.state.feed
        if feed is not None:
            yield GaugeMetricFamily(
                "peershop_web_stream_clients",
                "Open server-sent event streams",
                value=feed.subscribers,
            )
        slots = self.slots
        yield CounterMetricFamily(
            "peershop_web_streams_refused",
            "Live pages refused a stream (http.streams all open, or their address's "
            "http.streams_per_client): they poll instead",
            value=slots.refused,
        )
        if slots.limit is not None:
            yield GaugeMetricFamily(
                "peershop_web_stream_slots",
                "Streams the web view serves at once (http.streams)",
                value=slots.limit,
            )


def _registry() -> CollectorRegistry:
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    registry = app.extensions.get("peershop_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(HubCollector(app.extensions["peershop"], stream_slots(app)))
        app.extensions["peershop_metrics"] = registry
    return registry


@bp.get("/metrics")
def metrics() -> Response:
    return Response(generate_latest(_registry()), content_type=CONTENT_TYPE_LATEST)


@bp.get("/healthz")
def healthz() -> Any:
    """200 when ingest, the database and the broker are healthy; 503 with the reason."""
    state = current_app.extensions["peershop"]
    try:
        with state.sm() as session:
            ping(session)
    except Exception as exc:
        return _health(False, f"database: {str(exc).splitlines()[0]}")
    if state.hub is None:
        return _health(True, "ok (database only: no hub in this process)")
    ok, reason = state.hub.health()
    return _health(ok, reason)


def _health(ok: bool, reason: str) -> Any:
    if ok:
        return jsonify({"status": "ok", "reason": reason})
    response = jsonify(
        {"status": "unhealthy", "reason": reason, "error": {"code": "unhealthy", "message": reason}}
    )
    response.status_code = 503
    return response
