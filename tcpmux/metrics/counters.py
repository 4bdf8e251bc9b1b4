# -*- test-case-name: tests.test_metrics -*-
"""
The counters the core keeps for C{--metrics}: plain integers and a
fixed-bucket histogram, updated on the hot path by the round-trip queue
(L{tcpmux.client.queue.RoundTripQueue}), and only read, at scrape time, by
L{tcpmux.metrics.readings}.

Nothing here imports C{prometheus_client}. A queue keeps its counters only
once something reads them (L{tcpmux.client.queue.RoundTripQueue.observe}:
the metrics service, from its start): a few integer additions, a clock
reading and one bisect per round trip, which a run without C{--metrics}
does not pay.
"""

from tcpmux.errors import TargetTimeout, TargetUnavailable

# Upper bounds, in seconds, of the round-trip latency histogram's buckets
# (the last bucket, over the last bound, is +Inf): 100 us to a minute, in
# 1-2-5 steps.
LATENCY_BOUNDS = (
    0.0001, 0.0002, 0.0005,
    0.001, 0.002, 0.005,
    0.01, 0.02, 0.05,
    0.1, 0.2, 0.5,
    1.0, 2.0, 5.0,
    10.0, 20.0, 60.0,
)


class RoundTripStats:
    """
    What became of the round trips of one queue.

    @ivar ok: answered round trips.
    @ivar timeout: round trips that failed with L{tcpmux.errors.TargetTimeout}.
    @ivar unavailable: ... with L{tcpmux.errors.TargetUnavailable}.
    @ivar error: ... with any other error (the connection lost, an invalid
        response).
    @ivar latency: answered round trips by latency (from when the request
        was queued to its answer), counted per bucket of L{LATENCY_BOUNDS}
        (index C{bisect_left(LATENCY_BOUNDS, seconds)}: Prometheus's C{le}),
        not cumulative; the last is over the last bound.
    @ivar latencySum: the sum of those latencies, in seconds.
    @ivar lastOk: the clock time of the last answered round trip, or
        L{None}.
    """

    __slots__ = ("ok", "timeout", "unavailable", "error", "latency", "latencySum", "lastOk")

    def __init__(self):
        self.ok = self.timeout = self.unavailable = self.error = 0
        self.latency = [0] * (len(LATENCY_BOUNDS) + 1)
        self.latencySum = 0.0
        self.lastOk = None

    def failed(self, error):
        """
        Count a round trip that failed with C{error}.
        """
        if isinstance(error, TargetTimeout):
            self.timeout += 1
        elif isinstance(error, TargetUnavailable):
            self.unavailable += 1
        else:
            self.error += 1


def quantile(q, counts, bounds=LATENCY_BOUNDS):
    """
    Estimate the C{q} quantile (0..1) of the observations counted in
    C{counts} (per bucket, not cumulative, as L{RoundTripStats.latency}),
    interpolating linearly within the bucket it falls in, as Prometheus's
    C{histogram_quantile} does.

    @return: seconds, or L{None} if nothing was observed.
    """
    total = sum(counts)
    if not total:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(bounds):
                # Over the last bound: all that is known is "more than it".
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            upper = bounds[index]
            return lower + (upper - lower) * max(0.0, rank - seen) / count
        seen += count
    return bounds[-1]
