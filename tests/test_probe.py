"""
C{tcpmux-probe} against Modbus TCP devices the tests control: small Twisted
servers answering function 3, each with one of the quirks the probe
measures, each recording every request it receives.
"""

import io
import json
import os
import struct
import sys

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.trial.unittest import TestCase

from tcpmux import probe
from tests.modbus import exceptionResponse, readResponse, splitModbus
from tests.support import freePort, spawnChild

PROBE = os.path.join(os.path.dirname(sys.executable), "tcpmux-probe")

# Quick probe settings: short read timeouts and few reads.
QUICK = ["--timeout", "200ms", "--samples", "20", "--gap-reads", "4"]


class DeviceConnection(Protocol):
    def connectionMade(self):
        device = self.factory
        self.connectedAt = reactor.seconds()
        self.buffer = b""
        self.answersWritten = 0
        if device.maxConnections is not None and len(device.open) >= device.maxConnections:
            device.turnedAway += 1
            self.transport.loseConnection()
            self.silent = True
            return
        # A connection beyond silentBeyond is kept open but never answered.
        self.silent = (
            device.silentBeyond is not None and len(device.open) >= device.silentBeyond
        )
        device.open.append(self)
        device.peak = max(device.peak, len(device.open))

    def dataReceived(self, data):
        device = self.factory
        messages, self.buffer = splitModbus(self.buffer + data)
        for index, message in enumerate(messages):
            tid, _, _, unit, function = struct.unpack(">HHHBB", message[:8])
            now = reactor.seconds()
            device.requests.append((function, unit, tid, now))
            if self.silent:
                continue
            # pymodbus's server answers the first request of a batch only.
            if index and not device.pipelines:
                continue
            if now - self.connectedAt < device.quietAfterConnect:
                continue
            if device.lastAnswer is not None and now - device.lastAnswer < device.minGap:
                continue
            if function != 3:
                answer = exceptionResponse(tid, 1, function, unit)
            else:
                address = struct.unpack(">H", message[8:10])[0]
                if address in device.registers:
                    answer = readResponse(tid, device.registers[address], unit)
                else:
                    answer = exceptionResponse(tid, 2, function, unit)
            self.transport.write(answer)
            device.lastAnswer = reactor.seconds()

    def connectionLost(self, reason):
        device = self.factory
        if self in device.open:
            device.open.remove(self)
        device.closed.append(self)
        for d in list(device.watchers):
            if not device.open:
                device.watchers.remove(d)
                d.callback(None)


class Device(Factory):
    """
    A Modbus TCP device answering reads of holding registers.

    @ivar maxConnections: connections served at once; one more is closed
        as soon as it is accepted (L{None}: no limit).
    @ivar silentBeyond: connections answered at once; more are accepted and
        kept open, but never answered.
    @ivar pipelines: whether it answers every request of a batch received
        together, or only the first (as pymodbus's server does).
    @ivar minGap: a request received sooner than this after the previous
        answer (on any connection) is dropped.
    @ivar quietAfterConnect: requests received this soon after their
        connection was accepted are dropped.
    @ivar requests: C{(function, unit, tid, time)} of every request received.
    """

    protocol = DeviceConnection

    def __init__(
        self,
        maxConnections=None,
        silentBeyond=None,
        pipelines=True,
        minGap=0.0,
        quietAfterConnect=0.0,
    ):
        self.maxConnections = maxConnections
        self.silentBeyond = silentBeyond
        self.pipelines = pipelines
        self.minGap = minGap
        self.quietAfterConnect = quietAfterConnect
        self.registers = {0: 42, 100: 7}
        self.requests = []
        self.open = []
        self.closed = []
        self.watchers = []
        self.lastAnswer = None
        self.turnedAway = 0
        self.peak = 0

    def allClosed(self):
        d = Deferred()
        if not self.open:
            d.callback(None)
        else:
            self.watchers.append(d)
        return d


class ProbeTests(TestCase):
    timeout = 60

    async def startDevice(self, **kwargs):
        device = Device(**kwargs)
        port = reactor.listenTCP(0, device, interface="127.0.0.1")

        async def stop():
            await port.stopListening()
            for connection in list(device.open):
                connection.transport.abortConnection()
            await device.allClosed()

        self.addCleanup(lambda: Deferred.fromCoroutine(stop()))
        return device, f"127.0.0.1:{port.getHost().port}"

    async def runProbe(self, *args):
        """
        C{tcpmux-probe} in-process: exit status, output and error output.
        """
        out, err = io.StringIO(), io.StringIO()
        status = await probe.run(reactor, list(args), out, err)
        return status, out.getvalue(), err.getvalue()

    async def probeJSON(self, target, *args):
        status, out, err = await self.runProbe("--target", target, "--json", *QUICK, *args)
        self.assertEqual((status, err), (0, ""), out)
        result = json.loads(out)
        self.assertEqual(sorted(result), sorted(probe.JSON_KEYS))
        return result

    def assertOnlyReads(self, device):
        self.assertTrue(device.requests)
        self.assertEqual({function for function, *_ in device.requests}, {3})

    async def test_twoConnectionsPipelining(self):
        """
        A device that serves 2 connections at once and answers pipelined
        requests: 2 connections, pipelining, no gap, no delay; every
        connection the probe opened is closed when it returns.
        """
        device, target = await self.startDevice(maxConnections=2)
        result = await self.probeJSON(target)
        self.assertEqual(result["max_connections"], 2)
        self.assertIs(result["pipelining"], True)
        self.assertEqual(result["min_gap_ms"], 0)
        self.assertEqual(result["needs_connect_delay_ms"], 0)
        self.assertLessEqual(result["p50_ms"], result["p99_ms"])
        self.assertLess(result["p99_ms"], 200)
        self.assertIn("--connections 2", result["suggested_flags"])
        self.assertIn("--pipeline 4", result["suggested_flags"])
        self.assertIn("--timeout 1s", result["suggested_flags"])
        self.assertFalse(any(f.startswith(("--request-gap", "--delay"))
                             for f in result["suggested_flags"]))
        self.assertGreater(device.turnedAway, 0)
        self.assertOnlyReads(device)
        await device.allClosed()

    async def test_oneConnectionNoPipelining(self):
        """
        A device that closes every connection beyond the first and answers
        only the first request of a batch (as pymodbus's server does): one
        connection, no pipelining, and neither flag suggested.
        """
        device, target = await self.startDevice(maxConnections=1, pipelines=False)
        result = await self.probeJSON(target)
        self.assertEqual(result["max_connections"], 1)
        self.assertIs(result["pipelining"], False)
        self.assertEqual(result["min_gap_ms"], 0)
        self.assertEqual(result["suggested_flags"], ["--timeout 1s"])
        self.assertGreater(device.turnedAway, 0)
        self.assertOnlyReads(device)

    async def test_extraConnectionNeverAnswered(self):
        """
        A connection the device accepts but never answers does not count.
        """
        device, target = await self.startDevice(silentBeyond=3)
        result = await self.probeJSON(target)
        self.assertEqual(result["max_connections"], 3)
        self.assertIn("--connections 3", result["suggested_flags"])
        self.assertOnlyReads(device)

    async def test_connectionsCapped(self):
        """
        The count stops at --max-connections.
        """
        device, target = await self.startDevice()
        result = await self.probeJSON(target, "--max-connections", "3")
        self.assertEqual(result["max_connections"], 3)
        self.assertEqual(device.peak, 3)

    async def test_requestGap(self):
        """
        A device that drops requests received sooner than 40 ms after its
        previous answer: the probe finds 50 ms, and keeps that gap for
        everything after (no read is unanswered once it is known).
        """
        device, target = await self.startDevice(minGap=0.040, maxConnections=2)
        result = await self.probeJSON(target)
        self.assertEqual(result["min_gap_ms"], 50)
        self.assertIn("--request-gap 50ms", result["suggested_flags"])
        self.assertEqual(result["max_connections"], 2)
        # Pipelined requests leave back to back: the device drops them.
        self.assertIs(result["pipelining"], False)
        self.assertNotIn("--pipeline 4", result["suggested_flags"])
        self.assertOnlyReads(device)

        status, out, err = await self.runProbe("--target", target, *QUICK)
        self.assertEqual(status, 0, err)
        self.assertIn("  request gap          50 ms (errors at 0 ms, 10 ms, 20 ms)", out)
        self.assertIn("--request-gap 50ms", out)

    async def test_connectDelay(self):
        """
        A device that ignores requests for (about) 1 s after each connect:
        the probe reports a 1 s connect delay, waits it on every later
        connection, and suggests --delay 1s.
        """
        # 0.98 s: a request sent 1 s after the probe's connect must not
        # land in the device's quiet time by the width of a reactor turn.
        device, target = await self.startDevice(
            quietAfterConnect=0.98, maxConnections=2
        )
        start = reactor.seconds()
        result = await self.probeJSON(target, "--samples", "5", "--gap-reads", "2")
        self.assertEqual(result["needs_connect_delay_ms"], 1000)
        self.assertIn("--delay 1s", result["suggested_flags"])
        self.assertIn("--timeout 2s", result["suggested_flags"])
        self.assertEqual(result["max_connections"], 2)
        self.assertEqual(result["min_gap_ms"], 0)
        self.assertIs(result["pipelining"], True)
        self.assertOnlyReads(device)
        self.assertLess(reactor.seconds() - start, 10)

    async def test_unreachable(self):
        """
        Nothing listening: one line, exit status 1.
        """
        target = f"127.0.0.1:{freePort()}"
        status, out, err = await self.runProbe("--target", target)
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertEqual(
            err,
            f"tcpmux-probe: cannot connect to {target}: connection refused "
            "(is it a Modbus TCP device, on this port?)\n",
        )

    async def test_exceptionAnswer(self):
        """
        A register the device does not have: the exception, by name, and
        what to change.
        """
        device, target = await self.startDevice()
        status, out, err = await self.runProbe(
            "--target", target, "--register", "7", "--unit", "3", *QUICK
        )
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            "tcpmux-probe: the device answered the read of holding register 7 "
            "(function 3) from unit 3 with exception 0x02 (illegal data "
            "address): name a register it has with --register\n",
        )
        self.assertEqual(len(device.requests), 1)
        self.assertEqual(device.requests[0][:2], (3, 3))

    async def test_noAnswer(self):
        """
        A device that never answers: one line saying so, after trying each
        connect delay.
        """
        device, target = await self.startDevice(silentBeyond=0)
        status, out, err = await self.runProbe(
            "--target", target, "--timeout", "100ms", "--connect-delays", "50ms,100ms"
        )
        self.assertEqual(status, 1)
        self.assertEqual(
            err,
            f"tcpmux-probe: no answer from {target} to a read of holding "
            "register 0 (function 3) from unit 1 (waiting 0ms, 50ms, 100ms "
            "after connecting; no answer within 100ms): check --unit and "
            "--target, or try a longer --timeout\n",
        )
        self.assertEqual(len(device.requests), 3)

    async def test_report(self):
        """
        Without --json: the human report and the suggested command.
        """
        device, target = await self.startDevice(maxConnections=2)
        status, out, err = await self.runProbe("--target", target, *QUICK)
        self.assertEqual((status, err), (0, ""))
        lines = out.splitlines()
        self.assertEqual(
            lines[0],
            f"tcpmux-probe: {target}, read of holding register 0 (function 3) from unit 1",
        )
        self.assertIn("  connections at once  2", lines)
        self.assertIn("  pipelining           yes (4 reads in one write)", lines)
        self.assertIn("  request gap          none needed", lines)
        self.assertIn("  connect delay        none needed", lines)
        self.assertEqual(
            lines[-1],
            f"  twistd tcpmux --protocol modbus --target {target} "
            "--connections 2 --pipeline 4 --timeout 1s",
        )

    async def test_usageErrors(self):
        """
        Mistakes on the command line: a line saying what, exit status 2.
        """
        for args, message in [
            ([], "--target HOST:PORT is required"),
            (["--target", "h:502", "--unit", "256"], "--unit must be 0..255, not 256"),
            (["--target", "h:502", "--register", "x"], "--register must be a number, not 'x'"),
            (["--target", "h:502", "--timeout", "0"], "--timeout must be more than 0"),
            (["--target", "h:502", "--gaps", "0,fast"], "'fast' is not a duration"),
            (["--target", "h:502", "--gaps", ""], "--gaps needs at least one duration"),
        ]:
            status, out, err = await self.runProbe(*args)
            self.assertEqual(status, 2, args)
            self.assertIn(message, err)
        status, out, err = await self.runProbe("--target", "nohost")
        self.assertEqual(status, 1)
        self.assertIn("bad target 'nohost'", err)

    async def test_consoleScript(self):
        """
        The installed C{tcpmux-probe} prints one JSON object with exactly
        the documented keys and exits 0.
        """
        device, target = await self.startDevice(maxConnections=1)
        child = spawnChild(self, PROBE, "--target", target, "--json", *QUICK)
        status = await child.ended
        self.assertEqual(status, 0, child.lines)
        self.assertEqual(len(child.lines), 1, child.lines)
        result = json.loads(child.lines[0])
        self.assertEqual(list(result), list(probe.JSON_KEYS))
        self.assertEqual(result["max_connections"], 1)
        self.assertIsInstance(result["pipelining"], bool)
        self.assertIsInstance(result["suggested_flags"], list)
        self.assertOnlyReads(device)


class HelperTests(TestCase):
    def test_formatDuration(self):
        self.assertEqual(
            [probe.formatDuration(ms) for ms in (0, 50, 500, 1000, 1500, 2000)],
            ["0ms", "50ms", "500ms", "1s", "1500ms", "2s"],
        )

    def test_percentile(self):
        values = list(range(1, 101))
        self.assertEqual(probe.percentile(values, 50), 50)
        self.assertEqual(probe.percentile(values, 99), 99)
        self.assertEqual(probe.percentile([5], 99), 5)

    def test_suggestedTimeout(self):
        result = probe.Result()
        result.p99, result.connectDelay = 2.0, 0
        self.assertEqual(probe.suggestedTimeout(result), 1000)
        result.p99, result.connectDelay = 250.0, 1000
        self.assertEqual(probe.suggestedTimeout(result), 4000)

    def test_reportErrorsEverywhere(self):
        """
        A device with errors at every gap, unanswered reads and as many
        connections as were tried: the report says so, and no --pipeline
        is suggested (its requests would leave back to back).
        """
        settings = probe.Settings("192.0.2.10:502", maxConnections=8)
        result = probe.Result()
        result.maxConnections, result.pipelining = 8, True
        result.p50, result.p99, result.samples, result.unanswered = 1.5, 250.0, 45, 5
        result.failedGaps = [0, 10, 20, 50, 100, 200]
        result.connectDelay = 500
        lines = probe.report(result, settings)
        self.assertEqual(lines[1:6], [
            "  connections at once  8 (the most tried)",
            "  pipelining           yes (4 reads in one write)",
            "  round trip           p50 1.5 ms, p99 250.0 ms (45 reads, 5 unanswered)",
            "  request gap          errors at every gap tried (up to 200 ms)",
            "  connect delay        500 ms (requests sooner after a connect go unanswered)",
        ])
        self.assertEqual(result.asDict(settings), {
            "max_connections": 8,
            "pipelining": True,
            "p50_ms": 1.5,
            "p99_ms": 250.0,
            "min_gap_ms": None,
            "needs_connect_delay_ms": 500,
            "suggested_flags": [
                "--connections 8", "--delay 500ms", "--timeout 3s"
            ],
        })
