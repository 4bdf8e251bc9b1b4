# -*- test-case-name: tests.test_metrics -*-
"""
C{/metrics}: the readings in Prometheus's text format, through
C{prometheus_client} with a registry of tcpmux's own (never the global
one) and one collector that reads the counters when scraped.
"""

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.utils import floatToGoString

from tcpmux.metrics.counters import LATENCY_BOUNDS
from tcpmux.metrics.readings import CACHE_COUNTERS, OUTCOMES

__all__ = ["CONTENT_TYPE_LATEST", "TcpmuxCollector", "registryFor", "exposition"]

_BUCKETS = [floatToGoString(bound) for bound in LATENCY_BOUNDS] + ["+Inf"]


class TcpmuxCollector:
    """
    Every multiplexer's numbers, read at scrape time.

    @param muxes: the L{tcpmux.metrics.readings.MuxMetrics} to read.
    @param clock: where the time comes from (C{seconds()}).
    """

    def __init__(self, muxes, clock):
        self.muxes = muxes
        self.clock = clock

    def collect(self):
        now = self.clock.seconds()
        readings = [mux.read(now) for mux in self.muxes]
        mux = ["mux"]
        target = ["mux", "target"]

        clients = GaugeMetricFamily(
            "tcpmux_clients", "Clients connected.", labels=mux
        )
        depth = GaugeMetricFamily(
            "tcpmux_queue_depth",
            "Round trips waiting for their turn to the target.",
            labels=mux,
        )
        trips = CounterMetricFamily(
            "tcpmux_round_trips",
            "Round trips to the target, by outcome: ok, timeout (no answer "
            "in time), unavailable (no connection), error (connection lost, "
            "invalid response).",
            labels=["mux", "outcome"],
        )
        seconds = HistogramMetricFamily(
            "tcpmux_round_trip_seconds",
            "Latency of answered round trips, from when the request is queued "
            "to its answer.",
            labels=mux,
        )
        connected = GaugeMetricFamily(
            "tcpmux_target_connected",
            "Whether a connection to the target is ready (1) or not (0).",
            labels=target,
        )
        reconnects = CounterMetricFamily(
            "tcpmux_target_reconnects",
            "Connections made to the target after the first.",
            labels=target,
        )
        dropped = CounterMetricFamily(
            "tcpmux_dropped_responses",
            "Late or surplus answers from the target, dropped.",
            labels=target,
        )
        refused = CounterMetricFamily(
            "tcpmux_clients_refused",
            "Clients closed at once: max_clients (--max-clients reached), "
            "not_allowed (not in --allow).",
            labels=["mux", "reason"],
        )
        cache = {
            name: CounterMetricFamily(
                f"tcpmux_cache_{name}",
                f"Cache {name} (--cache).",
                labels=mux,
            )
            for name in CACHE_COUNTERS
        }
        anyCache = False

        for reading in readings:
            name = reading.name
            clients.add_metric([name], reading.clients)
            depth.add_metric([name], reading.depth)
            for outcome in OUTCOMES:
                trips.add_metric([name, outcome], reading.outcomes[outcome])
            cumulative = 0
            buckets = []
            for bound, count in zip(_BUCKETS, reading.latency):
                cumulative += count
                buckets.append((bound, cumulative))
            seconds.add_metric([name], buckets, reading.latencySum)
            for each in reading.targets:
                labels = [name, each.name]
                connected.add_metric(labels, 1 if each.connected else 0)
                reconnects.add_metric(labels, each.reconnects)
                dropped.add_metric(labels, each.dropped)
            for reason, count in reading.refused.items():
                refused.add_metric([name, reason], count)
            if reading.cache is not None:
                anyCache = True
                for counter, family in cache.items():
                    family.add_metric([name], reading.cache[counter])

        yield from (clients, depth, trips, seconds, connected, reconnects, dropped, refused)
        if anyCache:
            yield from cache.values()


def registryFor(muxes, clock):
    """
    A L{CollectorRegistry} of its own, with one L{TcpmuxCollector}.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TcpmuxCollector(muxes, clock))
    return registry


def exposition(registry):
    """
    The text format of what C{registry} collects now.
    """
    return generate_latest(registry)
