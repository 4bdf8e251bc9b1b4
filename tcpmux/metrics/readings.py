# -*- test-case-name: tests.test_metrics -*-
"""
Reading one multiplexer's numbers: what C{/metrics}, C{/healthz} and the
status page show, all from the same readings.
"""

from collections import deque

from tcpmux.metrics.counters import LATENCY_BOUNDS, quantile

OUTCOMES = ("ok", "timeout", "unavailable", "error")

# The cache gateway's counters (tcpmux.gateway.cache), when it is there.
CACHE_COUNTERS = ("hits", "misses", "coalesced", "stale")


def connectionsOf(target):
    """
    The single connections (L{tcpmux.target.factory.TargetClientFactory}s)
    behind C{target}: through wrappers (C{.target}) and pools
    (C{.factories}).
    """
    while True:
        factories = getattr(target, "factories", None)
        if factories is not None:
            return [each for factory in factories for each in connectionsOf(factory)]
        inner = getattr(target, "target", None)
        if inner is None:
            return [target]
        target = inner


class TargetReading:
    """
    One target of a multiplexer (the default one, or a routed one), now.

    @ivar state: C{"connected"}; C{"connecting"}; C{"down"}; or
        C{"released"}, closed on purpose by C{--idle-close} while no client
        is connected (it counts as healthy: it is opened again for the next
        client).
    """

    def __init__(self, name, queue, now):
        target = queue.target
        self.name = name
        connections = connectionsOf(target)
        self.connected = any(getattr(c, "ready", False) for c in connections)
        if self.connected:
            self.state = "connected"
        elif connections and all(getattr(c, "_released", False) for c in connections):
            self.state = "released"
        elif any(getattr(c, "_connecting", False) or getattr(c, "session", None)
                 for c in connections):
            self.state = "connecting"
        else:
            self.state = "down"
        self.healthy = self.state in ("connected", "released")
        self.reconnects = sum(getattr(c, "reconnects", 0) for c in connections)
        self.dropped = sum(getattr(c, "droppedResponses", 0) for c in connections)
        lastOk = queue.observe().lastOk
        self.sinceOk = None if lastOk is None else max(0.0, now - lastOk)

    def asJSON(self):
        return {
            "target": self.name,
            "connected": self.connected,
            "state": self.state,
            "seconds_since_last_ok": _rounded(self.sinceOk),
            "reconnects": self.reconnects,
            "dropped_responses": self.dropped,
        }


class MuxReading:
    """
    The numbers of one multiplexer, read at once.

    @ivar outcomes: outcome name (L{OUTCOMES}) -> round trips.
    @ivar latency: answered round trips per latency bucket (not
        cumulative), as L{tcpmux.metrics.counters.RoundTripStats.latency}.
    @ivar refused: reason (C{"max_clients"}, C{"not_allowed"}) -> clients
        refused.
    @ivar cache: the cache's counters (L{CACHE_COUNTERS}), or L{None}.
    """

    def __init__(self, name, multiplexer, now):
        self.name = name
        self.time = now
        queues = list(multiplexer.queues)
        self.clients = len(multiplexer.clients)
        self.depth = sum(queue.depth for queue in queues)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latencySum = 0.0
        for queue in queues:
            stats = queue.observe()
            for outcome in OUTCOMES:
                self.outcomes[outcome] += getattr(stats, outcome)
            for index, count in enumerate(stats.latency):
                self.latency[index] += count
            self.latencySum += stats.latencySum
        self.total = sum(self.outcomes.values())
        self.targets = []
        seen = {}
        for queue in queues:
            name = queue.target.name
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                # Two routes to one address: each its own series.
                name = f"{name} ({seen[name]})"
            self.targets.append(TargetReading(name, queue, now))
        registry = multiplexer.clients
        self.refused = {"max_clients": getattr(registry, "refused", 0)}
        notAllowed = getattr(registry, "refusedNotAllowed", None)
        if notAllowed is not None:
            self.refused["not_allowed"] = notAllowed
        self.cache = cacheCounters(multiplexer)

    @property
    def healthy(self):
        return all(target.healthy for target in self.targets)

    @property
    def sinceOk(self):
        times = [t.sinceOk for t in self.targets if t.sinceOk is not None]
        return min(times) if times else None


def cacheCounters(multiplexer):
    """
    The counters of C{multiplexer}'s cache (C{--cache-ttl}: the
    L{tcpmux.gateway.cache.ModbusCache} it keeps as C{cache}), or L{None}
    if it has none.
    """
    cache = getattr(multiplexer, "cache", None)
    if cache is None:
        return None
    return {name: getattr(cache, name, 0) for name in CACHE_COUNTERS}


def _rounded(seconds):
    return None if seconds is None else round(seconds, 3)


def _ms(seconds):
    return None if seconds is None else round(1000 * seconds, 3)


class MuxMetrics:
    """
    One multiplexer as the metrics service sees it: its name (the C{mux}
    label), and a history of one sample a second for the status page.

    @ivar history: the last C{size} samples, oldest first: (clock time,
        round trips per second, p50 and p99 latency in seconds or L{None},
        failed round trips per second).
    """

    # p50/p99 on the status page's cards: over this many samples.
    window = 10

    def __init__(self, name, multiplexer, size=300):
        self.name = name
        self.multiplexer = multiplexer
        self.history = deque(maxlen=size)
        self._recent = deque(maxlen=self.window + 1)
        # Its queues count their round trips from now on (unobserved, they
        # do not).
        for queue in multiplexer.queues:
            queue.observe()

    def read(self, now):
        return MuxReading(self.name, self.multiplexer, now)

    def sample(self, now):
        """
        Take one sample: what happened since the previous one.
        """
        reading = self.read(now)
        if self._recent:
            previous = self._recent[-1]
            elapsed = max(reading.time - previous.time, 1e-9)
            done = reading.total - previous.total
            failed = done - (reading.outcomes["ok"] - previous.outcomes["ok"])
            counts = _delta(reading.latency, previous.latency)
            self.history.append(
                (
                    reading.time,
                    done / elapsed,
                    quantile(0.50, counts),
                    quantile(0.99, counts),
                    failed / elapsed,
                )
            )
        self._recent.append(reading)

    def status(self, now):
        """
        The status page's JSON for this multiplexer.
        """
        reading = self.read(now)
        rate = p50 = p99 = None
        if self.history:
            rate = self.history[-1][1]
        if self._recent:
            counts = _delta(reading.latency, self._recent[0].latency)
            p50, p99 = quantile(0.50, counts), quantile(0.99, counts)
        return {
            "mux": self.name,
            "clients": reading.clients,
            "queue": reading.depth,
            "round_trips": reading.outcomes,
            "total": reading.total,
            "rate": None if rate is None else round(rate, 2),
            "p50_ms": _ms(p50),
            "p99_ms": _ms(p99),
            "healthy": reading.healthy,
            "targets": [target.asJSON() for target in reading.targets],
            "dropped_responses": sum(t.dropped for t in reading.targets),
            "refused": reading.refused,
            "cache": reading.cache,
            "history": {
                "time": [round(t, 3) for t, *_ in self.history],
                "rate": [round(r, 2) for _, r, *_ in self.history],
                "p50_ms": [_ms(p) for _, _, p, *_ in self.history],
                "p99_ms": [_ms(p) for *_, p, _ in self.history],
                "failed": [round(f, 2) for *_, f in self.history],
            },
        }

    def health(self, now):
        """
        C{/healthz}'s JSON for this multiplexer.
        """
        reading = self.read(now)
        return {
            "mux": self.name,
            "healthy": reading.healthy,
            "seconds_since_last_ok": _rounded(reading.sinceOk),
            "targets": [
                {
                    "target": target.name,
                    "connected": target.connected,
                    "state": target.state,
                    "seconds_since_last_ok": _rounded(target.sinceOk),
                }
                for target in reading.targets
            ],
        }


def _delta(now, before):
    return [a - b for a, b in zip(now, before)]
