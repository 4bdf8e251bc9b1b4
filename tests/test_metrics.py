"""
Tests for L{tcpmux.metrics}: the counters the core keeps, C{/metrics}
parsed as Prometheus would, C{/healthz} following a device that goes away
and comes back, the status page's JSON and its once-a-second history, and
C{--metrics} on the command line and under a real C{twistd}.
"""

import json
import sys

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody

from tcpmux.client.queue import RoundTripQueue
from tcpmux.errors import InvalidResponse, TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.metrics import MetricsUnavailable, checkAvailable, makeMetricsService
from tcpmux.metrics.counters import LATENCY_BOUNDS, RoundTripStats, quantile
from tcpmux.metrics.readings import MuxMetrics
from tcpmux.multiplexer import Multiplexer
from tcpmux.protocols.modbus import application as modbus
from tcpmux.service import CannotListen
from tcpmux.tap import Options, makeService
from tests.faults import FaultTarget, answer, answerFor, ask, connect, silent
from tests.memory import MemoryTarget, connectClient
from tests.modbus import readRequest, readResponse
from tests.support import freePort, runTwistd, startMultiplexer, until


# -- helpers


def serveMetrics(testCase, muxes, clock=None):
    """
    A started metrics service on an ephemeral port of 127.0.0.1 for
    C{muxes} (C{(name, multiplexer)} pairs), stopped when the test ends.

    @return: C{(service, base URL)}.
    """
    service = makeMetricsService("tcp:0:interface=127.0.0.1", muxes, clock=clock)
    service.startService()
    testCase.addCleanup(service.stopService)
    return service, f"http://127.0.0.1:{service.port.getHost().port}"


async def get(url):
    """
    GET C{url}: C{(status code, headers, body)}.
    """
    response = await Agent(reactor).request(b"GET", url.encode("ascii"))
    body = await readBody(response)
    return response.code, response.headers, body


async def scrape(url):
    """
    C{/metrics} parsed as Prometheus parses it: {(sample name, labels as a
    sorted tuple of pairs): value}, and the families by name.
    """
    code, headers, body = await get(url + "/metrics")
    assert code == 200, code
    assert headers.getRawHeaders(b"content-type")[0].startswith(b"text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    samples = {}
    for family in families.values():
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples, families


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


class FakeTarget:
    """
    An L{ITarget} whose round trips are answered by the test: each returns
    the next of C{results} (a L{Deferred}, or a value).
    """

    name = "fake:1"
    concurrency = 1
    ready = True

    def __init__(self):
        self.results = []

    def roundTrip(self, request, deadline=None, partReceived=None):
        result = self.results.pop(0)
        return result if isinstance(result, Deferred) else succeed(result)


def duplicate(connection, request):
    """
    Behaviour: answer every request twice, in one write.
    """
    response = answerFor("modbus", request)
    connection.transport.write(response + response)


# -- the counters


class QuantileTests(SynchronousTestCase):
    def test_nothing(self):
        self.assertIsNone(quantile(0.5, [0] * (len(LATENCY_BOUNDS) + 1)))

    def test_interpolated(self):
        """
        Within a bucket the quantile is interpolated linearly, as
        Prometheus's C{histogram_quantile} does.
        """
        counts = [0] * (len(LATENCY_BOUNDS) + 1)
        # 100 observations in (1 ms, 2 ms].
        counts[LATENCY_BOUNDS.index(0.002)] = 100
        self.assertAlmostEqual(quantile(0.5, counts), 0.0015)
        self.assertAlmostEqual(quantile(0.99, counts), 0.00199)

    def test_overTheLastBound(self):
        counts = [0] * (len(LATENCY_BOUNDS) + 1)
        counts[-1] = 3
        self.assertEqual(quantile(0.5, counts), LATENCY_BOUNDS[-1])


class QueueCounterTests(SynchronousTestCase):
    """
    The round-trip queue counts every round trip by outcome, and the
    latency of those answered.
    """

    def setUp(self):
        self.clock = Clock()
        self.target = FakeTarget()
        self.queue = RoundTripQueue(self.target, self.clock, timeout=5.0)
        self.queue.observe()

    def submit(self, result):
        self.target.results.append(result)
        trip = self.queue.dispatch(b"request", "client")
        trip.result.addErrback(lambda failure: None)
        return trip

    def test_outcomes(self):
        """
        An answer is C{ok}; L{TargetTimeout} C{timeout}; L{TargetUnavailable}
        C{unavailable}; any other error C{error}.
        """
        self.submit(b"answer")
        self.submit(fail(TargetTimeout("slow")))
        self.submit(fail(TargetUnavailable("down")))
        self.submit(fail(TargetUnavailable("down")))
        self.submit(fail(TargetLost("gone")))
        self.submit(fail(InvalidResponse("garbage")))
        self.submit(fail(ValueError("a bug")))
        self.flushLoggedErrors(ValueError)
        stats = self.queue.stats
        self.assertEqual(
            (stats.ok, stats.timeout, stats.unavailable, stats.error), (1, 1, 2, 3)
        )

    def test_deadline(self):
        """
        A round trip that is not answered in time is a C{timeout}.
        """
        self.submit(Deferred())
        self.clock.advance(5)
        self.assertEqual(self.queue.stats.timeout, 1)
        self.assertEqual(self.queue.stats.ok, 0)

    def test_latency(self):
        """
        The latency of an answered round trip, from when it was queued, is
        counted in its bucket, and its sum kept; the last good round trip's
        time too.
        """
        answer = Deferred()
        self.submit(answer)
        self.clock.advance(0.003)
        answer.callback(b"answer")
        stats = self.queue.stats
        expected = [0] * (len(LATENCY_BOUNDS) + 1)
        expected[LATENCY_BOUNDS.index(0.005)] = 1
        self.assertEqual(stats.latency, expected)
        self.assertAlmostEqual(stats.latencySum, 0.003)
        self.assertEqual(stats.lastOk, 0.003)

    def test_depth(self):
        """
        The queue's depth is the round trips waiting for their turn (not
        the one in flight).
        """
        first = Deferred()
        self.submit(first)
        self.submit(b"2")
        self.submit(b"3")
        self.assertEqual(self.queue.depth, 2)
        first.callback(b"1")
        self.assertEqual(self.queue.depth, 0)
        self.assertEqual(self.queue.stats.ok, 3)

    def test_withdrawn(self):
        """
        A round trip withdrawn before it was sent (its client left) never
        happened: it is not counted.
        """
        first = Deferred()
        self.submit(first)
        trip = self.submit(b"2")
        trip.withdraw()
        first.callback(b"1")
        stats = self.queue.stats
        self.assertEqual((stats.ok, stats.error, stats.timeout), (1, 0, 0))

    def test_fresh(self):
        stats = RoundTripStats()
        self.assertEqual((stats.ok, stats.latencySum, stats.lastOk), (0, 0.0, None))

    def test_unobserved(self):
        """
        A queue nobody observes keeps no statistics: answers and failures
        alike pass without being counted. Once observed, it counts from
        then on, in the one L{RoundTripStats} every observer is given.
        """
        queue = RoundTripQueue(self.target, self.clock, timeout=5.0)
        self.target.results.extend([b"answer", fail(TargetTimeout("slow"))])
        answered = queue.dispatch(b"request", "client")
        failed = queue.dispatch(b"request", "client")
        self.assertEqual(self.successResultOf(answered.result), b"answer")
        self.failureResultOf(failed.result, TargetTimeout)
        self.assertIsNone(queue.stats)
        stats = queue.observe()
        self.assertIs(queue.observe(), stats)
        self.assertEqual((stats.ok, stats.timeout, sum(stats.latency)), (0, 0, 0))
        self.target.results.append(b"answer")
        queue.dispatch(b"request", "client")
        self.assertEqual((stats.ok, sum(stats.latency)), (1, 1))


class DeadlineTimerTests(SynchronousTestCase):
    """
    The round-trip queue times every round trip with one timer, which a
    queue that falls idle leaves to lapse rather than cancel.
    """

    def setUp(self):
        self.clock = Clock()
        self.target = FakeTarget()
        self.queue = RoundTripQueue(self.target, self.clock, timeout=5.0)
        self.queue.observe()
        self.failures = []

    def submit(self, result):
        self.target.results.append(result)
        trip = self.queue.dispatch(b"request", "client")
        trip.result.addErrback(self.failures.append)
        return trip

    def timers(self):
        """
        The queue's deadline timers pending on the clock.
        """
        return [
            call
            for call in self.clock.getDelayedCalls()
            if call.func == self.queue._deadlinePassed
        ]

    def test_oneTimerForRoundTripsOneAtATime(self):
        """
        Round trips answered one after another, each the only one in the
        queue, share one timer: none is cancelled and set again per round
        trip (the reactor would keep every cancelled one in its heap).
        """
        self.submit(b"first")
        [timer] = self.clock.getDelayedCalls()
        for n in range(10):
            self.clock.advance(0.1)
            self.submit(b"answer")
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.assertFalse(timer.cancelled)
        self.assertEqual(self.queue.stats.ok, 11)

    def test_idleTimerLapses(self):
        """
        With nothing unanswered when it fires, the timer sets no other.
        """
        self.submit(b"answer")
        self.clock.advance(5.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(self.failures, [])

    def test_laterDeadlineKept(self):
        """
        A round trip submitted after the timer was set for an earlier,
        answered one times out at its own deadline, not the earlier one.
        """
        self.submit(b"answer")
        self.clock.advance(4.0)
        self.submit(Deferred())
        self.clock.advance(1.0)
        self.assertEqual(self.failures, [])
        self.clock.advance(3.9)
        self.assertEqual(self.failures, [])
        self.clock.advance(0.1)
        [failure] = self.failures
        failure.trap(TargetTimeout)
        self.assertEqual(self.queue.stats.timeout, 1)
        self.assertEqual(self.timers(), [])

    def test_stopCancelsTimer(self):
        """
        Once the queue is stopped, no timer outlives its work.
        """
        self.submit(b"answer")
        stopped = self.queue.stop(1.0)
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stopCancelsTimerOnceAnswered(self):
        """
        A round trip still in flight when the queue is stopped keeps its
        timer until it is answered; then the timer goes too.
        """
        answer = Deferred()
        self.submit(answer)
        stopped = self.queue.stop(10.0)
        self.assertNoResult(stopped)
        self.assertEqual(len(self.clock.getDelayedCalls()), 2)
        answer.callback(b"answer")
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class TargetCounterTests(SynchronousTestCase):
    """
    The target connection counts reconnects and dropped answers.
    """

    def test_reconnectsAndDropped(self):
        target = MemoryTarget(modbus, retryDelay=0.1)
        factory = target.factory
        factory.start()
        transport, session = target.accept()
        self.assertEqual(factory.reconnects, 0)
        # An answer nobody asked for (id 7 was never given out): dropped,
        # and the connection renewed.
        session.framer.dataReceived(readResponse(7, 1))
        self.assertEqual(factory.droppedResponses, 1)
        target.accept()
        self.assertEqual(factory.reconnects, 1)

    def test_surplus(self):
        """
        A late or repeated answer, recognised by its id, is dropped.
        """
        target = MemoryTarget(modbus)
        factory = target.factory
        factory.start()
        transport, session = target.accept()
        result = factory.roundTrip(readRequest(5, 1))
        wire = transport.value()
        response = readResponse(int.from_bytes(wire[:2], "big"), 1)
        session.framer.dataReceived(response)
        self.assertEqual(self.successResultOf(result), readResponse(5, 1))
        session.framer.dataReceived(response)
        self.assertEqual(factory.droppedResponses, 1)
        self.assertEqual(factory.reconnects, 0)


# -- /metrics, /healthz, /status.json over HTTP


class MetricsEndpointTests(TestCase):
    timeout = 60

    async def test_countersExact(self):
        """
        After a known number of requests through three multiplexers (one
        device answering, one silent, one refusing connections), every
        counter in C{/metrics} is exact, labelled by C{mux} (and C{target}
        for a target's own numbers).
        """
        device = FaultTarget("modbus", answer)
        silentDevice = FaultTarget("modbus", silent)
        port, inverter = await startMultiplexer(self, "modbus", device.listen(self))
        meterPort, meter = await startMultiplexer(
            self, "modbus", silentDevice.listen(self), "--timeout", "1s"
        )
        deadTarget = freePort()
        wallboxPort, wallbox = await startMultiplexer(
            self, "modbus", deadTarget, "--retry-delay", "30s"
        )
        service, url = serveMetrics(
            self, [("inverter", inverter), ("meter", meter), ("wallbox", wallbox)]
        )

        clients = [await connect(self, port) for _ in range(3)]
        for index, client in enumerate(clients):
            for n in range(4):
                tid = index * 10 + n
                self.assertEqual(
                    await ask(client, readRequest(tid, n)), readResponse(tid, n)
                )
        meterClient = await connect(self, meterPort)
        for tid in (1, 2):
            await ask(meterClient, readRequest(tid, 0))
        # Each timeout renewed the connection: wait for the new ones.
        await until(lambda: silentDevice.accepted == 3 and meter.target.ready)
        wallboxClient = await connect(self, wallboxPort)
        for tid in (1, 2, 3):
            await ask(wallboxClient, readRequest(tid, 0))

        samples, families = await scrape(url)
        trips = "tcpmux_round_trips_total"
        for mux, expected in (
            ("inverter", dict(ok=12, timeout=0, unavailable=0, error=0)),
            ("meter", dict(ok=0, timeout=2, unavailable=0, error=0)),
            ("wallbox", dict(ok=0, timeout=0, unavailable=3, error=0)),
        ):
            seen = {o: value(samples, trips, mux=mux, outcome=o) for o in expected}
            self.assertEqual(seen, expected, mux)
        self.assertEqual(families["tcpmux_round_trips"].type, "counter")
        self.assertEqual(value(samples, "tcpmux_clients", mux="inverter"), 3)
        self.assertEqual(value(samples, "tcpmux_clients", mux="meter"), 1)
        self.assertEqual(value(samples, "tcpmux_queue_depth", mux="inverter"), 0)
        connected = "tcpmux_target_connected"
        reconnects = "tcpmux_target_reconnects_total"
        self.assertEqual(
            value(samples, connected, mux="inverter", target=f"127.0.0.1:{device.port.getHost().port}"),
            1,
        )
        self.assertEqual(
            value(samples, connected, mux="wallbox", target=f"127.0.0.1:{deadTarget}"), 0
        )
        meterTarget = meter.target.name
        self.assertEqual(value(samples, reconnects, mux="meter", target=meterTarget), 2)
        self.assertEqual(
            value(samples, reconnects, mux="inverter", target=inverter.target.name), 0
        )
        self.assertEqual(
            value(samples, "tcpmux_dropped_responses_total", mux="meter", target=meterTarget),
            0,
        )
        self.assertEqual(
            value(samples, "tcpmux_clients_refused_total", mux="inverter", reason="max_clients"),
            0,
        )

        # The histogram: answered round trips only, cumulative buckets.
        histogram = families["tcpmux_round_trip_seconds"]
        self.assertEqual(histogram.type, "histogram")
        self.assertEqual(value(samples, "tcpmux_round_trip_seconds_count", mux="inverter"), 12)
        self.assertEqual(value(samples, "tcpmux_round_trip_seconds_count", mux="meter"), 0)
        buckets = [
            (float(s.labels["le"]), s.value)
            for s in histogram.samples
            if s.name.endswith("_bucket") and s.labels["mux"] == "inverter"
        ]
        self.assertEqual(len(buckets), len(LATENCY_BOUNDS) + 1)
        self.assertEqual(buckets[-1], (float("inf"), 12))
        self.assertEqual([c for _, c in buckets], sorted(c for _, c in buckets))
        total = value(samples, "tcpmux_round_trip_seconds_sum", mux="inverter")
        self.assertTrue(0 < total < 12 * 5, total)

        # tcpmux's own registry, not prometheus_client's global one.
        self.assertNotIn("tcpmux_clients", REGISTRY._names_to_collectors)

        # More requests: the counters follow.
        for tid in range(5):
            await ask(clients[0], readRequest(100 + tid, 1))
        samples, _ = await scrape(url)
        self.assertEqual(value(samples, trips, mux="inverter", outcome="ok"), 17)

    async def test_droppedAndRefused(self):
        """
        A device that answers every request twice: each duplicate is a
        dropped response and costs a reconnect. A client over
        C{--max-clients} is counted as refused.
        """
        device = FaultTarget("modbus", duplicate)
        port, mux = await startMultiplexer(
            self, "modbus", device.listen(self), "--max-clients", "1"
        )
        service, url = serveMetrics(self, [("twice", mux)])
        client = await connect(self, port)
        for tid in range(3):
            self.assertEqual(await ask(client, readRequest(tid, 4)), readResponse(tid, 4))
            await until(lambda: mux.target.ready)
        refused = await connect(self, port)
        await refused.closed
        samples, _ = await scrape(url)
        target = mux.target.name
        self.assertEqual(
            value(samples, "tcpmux_dropped_responses_total", mux="twice", target=target), 3
        )
        self.assertEqual(
            value(samples, "tcpmux_target_reconnects_total", mux="twice", target=target), 3
        )
        self.assertEqual(
            value(samples, "tcpmux_clients_refused_total", mux="twice", reason="max_clients"),
            1,
        )
        self.assertEqual(value(samples, "tcpmux_round_trips_total", mux="twice", outcome="ok"), 3)

    async def test_notAllowed(self):
        """
        With C{--allow}, clients refused for their address are counted too.
        """
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(
            self, "modbus", device.listen(self), "--allow", "192.0.2.0/24"
        )
        service, url = serveMetrics(self, [("walled", mux)])
        client = await connect(self, port)
        await client.closed
        samples, _ = await scrape(url)
        self.assertEqual(
            value(samples, "tcpmux_clients_refused_total", mux="walled", reason="not_allowed"),
            1,
        )
        self.assertEqual(
            value(samples, "tcpmux_clients_refused_total", mux="walled", reason="max_clients"),
            0,
        )

    async def test_cache(self):
        """
        With C{--cache-ttl}, the cache's counters are there too.
        """
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(
            self, "modbus", device.listen(self), "--cache-ttl", "60s"
        )
        service, url = serveMetrics(self, [("cached", mux)])
        client = await connect(self, port)
        for tid in (1, 2, 3):
            self.assertEqual(await ask(client, readRequest(tid, 9)), readResponse(tid, 9))
        samples, _ = await scrape(url)
        self.assertEqual(value(samples, "tcpmux_cache_hits_total", mux="cached"), 2)
        self.assertEqual(value(samples, "tcpmux_cache_misses_total", mux="cached"), 1)
        self.assertEqual(value(samples, "tcpmux_cache_coalesced_total", mux="cached"), 0)
        self.assertEqual(value(samples, "tcpmux_cache_stale_total", mux="cached"), 0)
        self.assertEqual(value(samples, "tcpmux_round_trips_total", mux="cached", outcome="ok"), 1)

    async def test_noCacheNoCacheCounters(self):
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(self, "modbus", device.listen(self))
        service, url = serveMetrics(self, [("plain", mux)])
        samples, families = await scrape(url)
        self.assertNotIn("tcpmux_cache_hits", families)

    async def test_healthz(self):
        """
        C{/healthz} is 200 while the device is reachable, 503 once it goes
        away, and 200 again when it comes back; it says which target is
        down and how long ago its last good round trip was.
        """
        device = FaultTarget("modbus", answer)
        devicePort = device.listen(self)
        port, mux = await startMultiplexer(
            self, "modbus", devicePort, "--retry-delay", "100ms", "--max-retry-delay", "200ms"
        )
        service, url = serveMetrics(self, [("inverter", mux)])
        await until(lambda: mux.target.ready)

        code, headers, body = await get(url + "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"content-type"), [b"application/json"])
        health = json.loads(body)
        self.assertEqual(health["healthy"], True)
        [inverter] = health["muxes"]
        self.assertEqual(inverter["mux"], "inverter")
        self.assertIsNone(inverter["seconds_since_last_ok"])
        self.assertEqual(
            inverter["targets"],
            [{"target": f"127.0.0.1:{devicePort}", "connected": True,
              "state": "connected", "seconds_since_last_ok": None}],
        )

        client = await connect(self, port)
        await ask(client, readRequest(1, 1))
        code, _, body = await get(url + "/healthz")
        since = json.loads(body)["muxes"][0]["seconds_since_last_ok"]
        self.assertTrue(0 <= since < 5, since)

        await device.kill()
        await until(lambda: not mux.target.ready)
        code, _, body = await get(url + "/healthz")
        self.assertEqual(code, 503)
        health = json.loads(body)
        self.assertEqual(health["healthy"], False)
        target = health["muxes"][0]["targets"][0]
        self.assertEqual(target["connected"], False)
        self.assertIn(target["state"], ("down", "connecting"))

        device.listen(self, devicePort)
        await until(lambda: mux.target.ready)
        code, _, body = await get(url + "/healthz")
        self.assertEqual(code, 200)
        self.assertEqual(json.loads(body)["healthy"], True)

    async def test_routedTargets(self):
        """
        Every target of a multiplexer counts for its health, the routed ones
        too (C{--route}), and each has its own C{target_connected}.
        """
        device = FaultTarget("modbus", answer)
        devicePort = device.listen(self)
        dead = freePort()
        port, mux = await startMultiplexer(
            self, "modbus", devicePort, "--route", f"2=127.0.0.1:{dead}"
        )
        service, url = serveMetrics(self, [("two", mux)])
        await until(lambda: mux.target.ready)
        code, _, body = await get(url + "/healthz")
        self.assertEqual(code, 503)
        targets = json.loads(body)["muxes"][0]["targets"]
        self.assertEqual(
            [(t["target"], t["connected"]) for t in targets],
            [(f"127.0.0.1:{devicePort}", True), (f"127.0.0.1:{dead}", False)],
        )
        samples, _ = await scrape(url)
        connected = "tcpmux_target_connected"
        self.assertEqual(value(samples, connected, mux="two", target=f"127.0.0.1:{devicePort}"), 1)
        self.assertEqual(value(samples, connected, mux="two", target=f"127.0.0.1:{dead}"), 0)

    async def test_statusJSON(self):
        """
        C{/status.json}, what the status page reads: the same numbers as
        C{/metrics}, with the rate and latency of the last seconds.
        """
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(self, "modbus", device.listen(self))
        service, url = serveMetrics(self, [("inverter", mux)])
        client = await connect(self, port)
        for tid in range(6):
            await ask(client, readRequest(tid, 1))
        service.sample()
        code, headers, body = await get(url + "/status.json")
        self.assertEqual(code, 200)
        self.assertEqual(headers.getRawHeaders(b"cache-control"), [b"no-store"])
        status = json.loads(body)
        [card] = status["muxes"]
        self.assertEqual(card["mux"], "inverter")
        self.assertEqual(card["clients"], 1)
        self.assertEqual(card["queue"], 0)
        self.assertEqual(card["total"], 6)
        self.assertEqual(
            card["round_trips"], {"ok": 6, "timeout": 0, "unavailable": 0, "error": 0}
        )
        self.assertGreater(card["rate"], 0)
        self.assertGreater(card["p99_ms"], 0)
        self.assertLessEqual(card["p50_ms"], card["p99_ms"])
        self.assertEqual(card["targets"][0]["state"], "connected")
        self.assertEqual(len(card["history"]["rate"]), 1)

    async def test_statusPageServed(self):
        """
        C{/} is the status page: HTML with its script inline, nothing from
        elsewhere.
        """
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(self, "modbus", device.listen(self))
        service, url = serveMetrics(self, [("inverter", mux)])
        code, headers, body = await get(url + "/")
        self.assertEqual(code, 200)
        self.assertEqual(
            headers.getRawHeaders(b"content-type"), [b"text/html; charset=utf-8"]
        )
        self.assertIn(b"status.json", body)
        self.assertNotIn(b"http://", body.replace(b"http://www.w3.org/2000/svg", b""))
        self.assertNotIn(b"https://", body)
        code, _, _ = await get(url + "/nothing-here")
        self.assertEqual(code, 404)


class HistoryTests(TestCase):
    """
    The status page's history: one sample a second, the last 300, taken by
    a timer that stops with the service.
    """

    async def test_ring(self):
        clock = Clock()
        target = MemoryTarget(modbus)
        mux = Multiplexer(modbus, target.factory, clock=target.reactor)
        service, url = serveMetrics(self, [("memory", mux)], clock=clock)
        stats = mux.queue.stats
        for second in range(305):
            stats.ok += 10
            stats.latency[LATENCY_BOUNDS.index(0.002)] += 10
            clock.advance(1)
        metrics = service.muxes[0]
        self.assertEqual(len(metrics.history), 300)
        when, rate, p50, p99, failed = metrics.history[-1]
        self.assertEqual((when, rate, failed), (305, 10.0, 0.0))
        self.assertAlmostEqual(p50, 0.0015)
        status = service.status()["muxes"][0]
        self.assertEqual(status["rate"], 10.0)
        self.assertEqual(len(status["history"]["time"]), 300)
        self.assertEqual(status["history"]["time"][0], 6)
        # A second with no round trip: no latency.
        clock.advance(1)
        self.assertEqual(metrics.history[-1][1:4], (0.0, None, None))

        await service.stopService()
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_released(self):
        """
        A target connection released by C{--idle-close} (nobody connected)
        is healthy: it is opened again for the next client.
        """
        target = MemoryTarget(modbus)
        mux = Multiplexer(modbus, target.factory, clock=target.reactor, idleClose=5)
        metrics = MuxMetrics("idle", mux)
        mux.start()
        target.accept()
        self.assertEqual(metrics.health(0)["targets"][0]["state"], "connected")
        target.reactor.advance(5)
        health = metrics.health(0)
        self.assertEqual(health["targets"][0]["state"], "released")
        self.assertTrue(health["healthy"])
        connectClient(mux)
        self.assertEqual(metrics.health(0)["targets"][0]["state"], "connecting")
        self.assertFalse(metrics.health(0)["healthy"])

    def test_observesEveryQueue(self):
        """
        Metrics for a multiplexer observe its every queue, routed ones
        too, from the start: the round trips before the first scrape count.
        """
        target = MemoryTarget(modbus)
        routed = MemoryTarget(modbus)
        mux = Multiplexer(
            modbus, target.factory, clock=target.reactor, routes={2: routed.factory}
        )
        self.assertEqual([queue.stats for queue in mux.queues], [None, None])
        MuxMetrics("routed", mux)
        self.assertEqual(
            [type(queue.stats) for queue in mux.queues], [RoundTripStats] * 2
        )



# -- the command line


class OptionTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["-p", "modbus", "-t", "192.0.2.10:502", *args])
        return options

    def test_service(self):
        """
        C{--metrics} adds the metrics service to tcpmux's, labelling the
        multiplexer by its listen address.
        """
        service = makeService(self.parse("-l", "5020", "--metrics", "tcp:9102:interface=127.0.0.1"))
        [metrics] = [s for s in service if s is not service.listener]
        self.assertEqual(metrics.description, "tcp:9102:interface=127.0.0.1")
        self.assertEqual([m.name for m in metrics.muxes], ["tcp:5020"])
        self.assertIs(metrics.muxes[0].multiplexer, service.multiplexer)

    def test_none(self):
        service = makeService(self.parse())
        self.assertEqual(list(service), [service.listener])

    def test_badEndpoint(self):
        error = self.assertRaises(usage.UsageError, self.parse, "--metrics", "tcp:99999")
        self.assertTrue(str(error).startswith("--metrics: "), str(error))
        self.assertIn("99999", str(error))

    def test_withoutPrometheusClient(self):
        """
        Without C{prometheus_client}, C{--metrics} is a one-line usage error
        naming the extra to install.
        """
        saved = sys.modules.get("prometheus_client")
        sys.modules["prometheus_client"] = None  # import fails
        self.addCleanup(sys.modules.__setitem__, "prometheus_client", saved)
        self.assertRaises(MetricsUnavailable, checkAvailable)
        error = self.assertRaises(usage.UsageError, self.parse, "--metrics", "9102")
        self.assertEqual(
            str(error),
            "--metrics: metrics need the prometheus_client package: "
            "pip install 'tcpmux[metrics]'",
        )
        self.assertRaises(MetricsUnavailable, makeMetricsService, "9102", [])


class ListenTests(TestCase):
    async def test_portInUse(self):
        """
        A metrics endpoint that cannot be listened on is one line naming it;
        under C{twistd -n}, it ends the process.
        """
        device = FaultTarget("modbus", answer)
        port, mux = await startMultiplexer(self, "modbus", device.listen(self))
        taken = f"tcp:{port}:interface=127.0.0.1"
        service = makeMetricsService(taken, [("inverter", mux)])
        error = self.assertRaises(CannotListen, service.privilegedStartService)
        self.assertEqual(
            str(error), f"cannot listen on {taken} for metrics: address already in use"
        )
        service.exitOnListenFailure = True
        error = self.assertRaises(SystemExit, service.privilegedStartService)
        self.assertEqual(
            str(error), f"cannot listen on {taken} for metrics: address already in use"
        )


class TwistdTests(TestCase):
    timeout = 60

    async def test_twistd(self):
        """
        A real C{twistd tcpmux --metrics}: the metrics answer, and SIGTERM
        stops it all, exiting with status 0.
        """
        device = FaultTarget("modbus", answer)
        devicePort = device.listen(self)
        port, metricsPort = freePort(), freePort()
        child = runTwistd(
            self, "-n", "--pidfile=", "tcpmux", "--protocol", "modbus",
            "--target", f"127.0.0.1:{devicePort}",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
            "--metrics", f"tcp:{metricsPort}:interface=127.0.0.1",
        )
        await child.waitFor("Serving metrics on", timeout=30)
        await until(lambda: device.accepted == 1, timeout=30)
        client = await connect(self, port)
        self.assertEqual(await ask(client, readRequest(3, 3)), readResponse(3, 3))
        url = f"http://127.0.0.1:{metricsPort}"
        samples, _ = await scrape(url)
        self.assertEqual(
            value(samples, "tcpmux_round_trips_total", mux=f"tcp:{port}:interface=127.0.0.1",
                  outcome="ok"),
            1,
        )
        code, _, _ = await get(url + "/healthz")
        self.assertEqual(code, 200)
        child.signal("TERM")
        self.assertEqual(await child.ended, 0)
