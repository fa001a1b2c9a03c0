"""GET /metrics: what a process is doing, in the Prometheus text format
(docs/operations.md lists every metric and what to alert on).

The hot paths (ticks, inputs, snapshots, bytes) keep plain counters on the objects
that own them (zones/stats.py, server/ws/stats.py, the cache, the relay, the
consumers); this collector reads them when Prometheus scrapes, so serving a
thousand players pays for no metric object. Only HTTP requests, a few a second,
go through prometheus-client's own counter and histogram.

A process without an HTTP port (`outpost zone`, `outpost provisioner`) serves
/metrics (and /healthz) on METRICS_PORT.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from functools import partial

import trio
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.utils import wrap_app
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector
from quart import Quart, Response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from bus.consumer import ConsumerWorker
from bus.events import CombatKilled, UserRegistered
from bus.relay import OutboxRelay
from persistence.cache import Cache
from server.http.errors import framework_error_response, json_response
from server.ws.stats import WireStats
from zones.world import World

HTTP_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """One process's metrics: its registry and what the collector reads."""

    def __init__(self, *, role: str, world: World, cache: Cache, relay: OutboxRelay) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.wire = WireStats()
        # The provisioner's: provisioning (user.registered) and kills (combat.killed).
        self.consumers: list[ConsumerWorker[UserRegistered] | ConsumerWorker[CombatKilled]] = []
        self.http_requests = Counter(
            "outpost_http_requests", "HTTP requests answered, by route and status.",
            ["route", "status"], registry=self.registry)
        self.http_seconds = Histogram(
            "outpost_http_request_seconds", "Time to answer an HTTP request, by route.",
            ["route"], buckets=HTTP_BUCKETS_S, registry=self.registry)
        ProcessCollector(registry=self.registry)  # CPU, memory, open descriptors
        self.registry.register(_Collector(self, role, world, cache, relay))

    def exposition(self) -> Response:
        return Response(generate_latest(self.registry), 200,
                        {"Content-Type": CONTENT_TYPE_LATEST})


class _Collector(Collector):
    def __init__(self, metrics: Metrics, role: str, world: World, cache: Cache,
                 relay: OutboxRelay) -> None:
        self._metrics = metrics
        self._role = role
        self._world = world
        self._cache = cache
        self._relay = relay

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                  | HistogramMetricFamily | InfoMetricFamily]:
        yield InfoMetricFamily("outpost_process", "What this process runs.",
                               value={"role": self._role})
        yield from self._zones()
        yield from self._wire()
        cache = self._cache
        requests = CounterMetricFamily(
            "outpost_cache_requests", "Character-list reads of the cache, by result (error: "
            "Redis failed or was slow, and the read went to Postgres).", labels=["result"])
        for result, count in (("hit", cache.hits), ("miss", cache.misses),
                              ("error", cache.errors)):
            requests.add_metric([result], count)
        yield requests
        yield from self._outbox()
        yield from self._consumers()

    def _zones(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily
                                 | HistogramMetricFamily]:
        ticks = HistogramMetricFamily("outpost_zone_tick_seconds", "Time a zone's tick took "
                                      "(simulation, interest, fan-out).", labels=["zone"])
        skipped = CounterMetricFamily("outpost_zone_ticks_skipped", "Ticks a zone skipped "
                                      "because it fell behind.", labels=["zone"])
        players = GaugeMetricFamily("outpost_zone_players", "Players in a zone.",
                                    labels=["zone"])
        inputs = CounterMetricFamily("outpost_zone_inputs", "Inputs a zone handed its game, "
                                     "or dropped (too many queued, or not in the zone).",
                                     labels=["zone", "result"])
        faults = CounterMetricFamily("outpost_zone_rules_faults", "Ticks whose game raised (a "
                                     "bug of the game's; logged with its traceback): the zone "
                                     "went on.", labels=["zone"])
        batches = CounterMetricFamily("outpost_zone_move_batches_dropped", "Ticks whose "
                                      "player.moved batch was dropped (NATS behind).",
                                      labels=["zone"])
        stops = CounterMetricFamily("outpost_zone_stops", "Times a zone running in this "
                                    "process stopped unasked: its lease taken by another "
                                    "(lease_lost), or not renewed in time (not_renewed: "
                                    "NATS unreachable, or the process overloaded).",
                                    labels=["zone", "reason"])
        for (zone_id, reason), times in sorted(self._world.zone_stops.items()):
            stops.add_metric([zone_id, reason], times)
        refused = CounterMetricFamily(
            "outpost_peer_messages_refused", "Messages from other processes (joins, replies, "
            "inputs, feeds, news, directory entries) this process refused: malformed, or of a "
            "kind or version it does not understand.", labels=["message", "reason"])
        for (message, reason), times in sorted(self._world.refusals.counts.items()):
            refused.add_metric([message, reason], times)
        yield refused
        facts = self._world.facts
        yield GaugeMetricFamily("outpost_facts_pending", "Facts of this process's zones (a "
                                "kill: combat.killed) not yet acknowledged by JetStream: what "
                                "a crash of the process would lose.", value=facts.pending)
        yield CounterMetricFamily("outpost_facts_published", "Facts JetStream acknowledged.",
                                  value=facts.published)
        yield CounterMetricFamily("outpost_facts_dropped", "Facts dropped unpublished: more "
                                  "than 100,000 waited for JetStream.", value=facts.dropped)
        for zone_id, actor in sorted(self._world.zones.items()):
            counts = actor.counts
            ticks.add_metric([zone_id], counts.ticks.cumulative(), counts.ticks.total_s)
            skipped.add_metric([zone_id], counts.skipped_ticks)
            players.add_metric([zone_id], actor.player_count)
            inputs.add_metric([zone_id, "applied"], actor.inputs_applied)
            inputs.add_metric([zone_id, "dropped"], counts.inputs_dropped)
            batches.add_metric([zone_id], counts.move_batches_dropped)
            faults.add_metric([zone_id], counts.rules_faults)
        yield from (ticks, skipped, players, inputs, batches, faults, stops)

    def _wire(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        wire = self._metrics.wire
        snapshots = CounterMetricFamily(
            "outpost_zone_snapshots", "Snapshots this process's world sessions were sent, or "
            "skipped (a newer one came before a slow reader took it), by zone.",
            labels=["zone", "result"])
        for zone_id, (sent, skipped) in sorted(wire.snapshots.items()):
            snapshots.add_metric([zone_id, "sent"], sent)
            snapshots.add_metric([zone_id, "skipped"], skipped)
        yield snapshots
        yield GaugeMetricFamily("outpost_ws_sessions", "Open world WebSocket sessions.",
                                value=wire.sessions)
        closes = CounterMetricFamily(
            "outpost_ws_closes", "World sessions closed, by the close code the server sent "
            "(1006: dropped or broken, no close frame).", labels=["code"])
        for code, count in sorted(wire.closes.items()):
            closes.add_metric([str(code)], count)
        yield closes
        yield CounterMetricFamily("outpost_ws_bytes_sent", "Bytes written to world sockets.",
                                  value=wire.bytes_sent)
        yield CounterMetricFamily("outpost_ws_faults", "World sessions closed with 1011, and "
                                  "connections to the API port ended, by a fault of the "
                                  "server's own (each logged with its traceback).",
                                  value=wire.faults)
        refused = CounterMetricFamily(
            "outpost_connections_refused", "Connections and world upgrades refused by a cap "
            "(429): connections_per_address, sockets_per_user.", labels=["cap"])
        for cap, count in sorted(wire.refused.items()):
            refused.add_metric([cap], count)
        yield refused
        yield CounterMetricFamily("outpost_proxy_headers_refused", "Connections from a "
                                  "TRUSTED_PROXIES peer closed for want of a valid PROXY "
                                  "protocol header (each logged).", value=wire.proxy_refused)

    def _outbox(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        relay = self._relay
        yield GaugeMetricFamily("outpost_outbox_pending", "Events committed and not yet on "
                                "JetStream, as this process's relay last saw.",
                                value=relay.pending)
        yield GaugeMetricFamily("outpost_outbox_oldest_seconds", "Age of the oldest event "
                                "waiting in the outbox.", value=relay.oldest_s)
        yield CounterMetricFamily("outpost_outbox_relayed", "Events this process relayed.",
                                  value=relay.relayed)

    def _consumers(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        pending = GaugeMetricFamily("outpost_consumer_pending", "Messages a consumer has "
                                    "not settled (not delivered, or not acknowledged).",
                                    labels=["consumer"])
        redelivered = CounterMetricFamily("outpost_consumer_redelivered", "Deliveries that "
                                          "were not a message's first.", labels=["consumer"])
        dead = CounterMetricFamily("outpost_consumer_dead_letters", "Messages terminated: "
                                   "malformed, or out of deliveries.", labels=["consumer"])
        for worker in self._metrics.consumers:
            name = [worker.spec.durable]
            pending.add_metric(name, worker.pending)
            redelivered.add_metric(name, worker.redelivered)
            dead.add_metric(name, worker.dead_letters)
        yield from (pending, redelivered, dead)


def metrics_app(metrics: Metrics) -> Quart:
    """What a process without the API serves on METRICS_PORT."""
    app = QuartTrio("outpost-metrics")

    @app.get("/metrics")
    async def exposition() -> Response:
        return metrics.exposition()

    @app.get("/healthz")
    async def healthz() -> Response:
        return json_response({"status": "ok"})

    @app.errorhandler(HTTPException)
    async def framework_error(exc: HTTPException) -> Response:
        return framework_error_response(exc)  # JSON, as the API answers (not Quart's HTML)

    return app


async def serve_metrics(metrics: Metrics, listener: socket.socket, *, shutdown: trio.Event,
                        task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `metrics_app` on `listener` (server/listening.py) until `shutdown`; report its
    /metrics URL once serving."""
    config = Config()
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # through our handlers only
    config.graceful_timeout = 1.0
    app = wrap_app(metrics_app(metrics), config.wsgi_max_body_size, None)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(partial(
            worker_serve, app, config, sockets=Sockets([], [listener], []),
            shutdown_trigger=shutdown.wait))
        task_status.started(binds[0] + "/metrics")
