# -*- test-case-name: tests.test_probe -*-
"""
C{tcpmux-probe}: measure a Modbus TCP device before putting tcpmux in front
of it, and suggest the tcpmux flags that fit it.

Every request the probe sends is a read of one register (function 3, or 4
with C{--input}) at the address and unit the user names: it never writes to
the device. It measures, in this order:

 1. whether the device swallows requests sent right after a connect (the
    C{--delay} need): a read at once, then after 0.5 s, 1 s and 2 s on fresh
    connections; this read also proves the device answers at all;
 2. the shortest gap between an answer and the next request that gives no
    error (0, 10, 20, 50, 100 and 200 ms; C{--request-gap});
 3. the round-trip time, p50 and p99, over sequential reads (C{--timeout});
 4. how many connections it serves at once (C{--connections}): connections
    are opened one more at a time, and one counts when a read on it and on
    every other open one is answered while all stay open;
 5. whether it answers several requests sent in one write, each with its own
    transaction id (C{--pipeline}).

After the connect delay is known, every new connection waits it before its
first request; after the gap is known, every request waits it after the
device's last answer.
"""

import json
import math
import struct
import sys

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.error import (
    ConnectError,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError as ConnectTimeoutError,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater, react
from twisted.python import usage

from tcpmux import versions
from tcpmux.config import parseCount, parseDuration, targetEndpoint
from tcpmux.protocols.modbus import ModbusTCPReceiver

PROGRAM = "tcpmux-probe"

# Exit statuses.
OK, PROBE_FAILED, USAGE = 0, 1, 2

EXCEPTIONS = {
    0x01: "illegal function",
    0x02: "illegal data address",
    0x03: "illegal data value",
    0x04: "server device failure",
    0x05: "acknowledge",
    0x06: "server device busy",
    0x08: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}

JSON_KEYS = (
    "max_connections",
    "pipelining",
    "p50_ms",
    "p99_ms",
    "min_gap_ms",
    "needs_connect_delay_ms",
    "suggested_flags",
)


# -- errors


class ProbeError(Exception):
    """
    The probe cannot go on; its message is the one line the user sees.
    """


class ReadFailed(Exception):
    """
    One read got no usable answer.
    """


class NoAnswer(ReadFailed):
    """
    No answer within the read timeout.
    """


class ConnectionClosed(ReadFailed):
    """
    The connection closed before the answer came.
    """


class BadAnswer(ReadFailed):
    """
    The bytes that came back are not an answer to the read.
    """


class ExceptionAnswer(ReadFailed):
    """
    The device answered the read with a Modbus exception.
    """

    def __init__(self, code):
        self.code = code
        super().__init__(describeException(code))


def describeException(code):
    """
    C{"0x02 (illegal data address)"}.
    """
    name = EXCEPTIONS.get(code)
    return f"0x{code:02X} ({name})" if name else f"0x{code:02X}"


# -- the wire


class ModbusReader(Protocol):
    """
    One client connection that sends reads of one register and matches
    answers to them by transaction id. An answer with an id nobody waits for
    (a late answer to a read that timed out) is counted and dropped.

    @ivar lost: fires (with L{None}) when the connection is gone.
    """

    def __init__(self, reactor, unit, function, register, firstTid=1):
        self.reactor = reactor
        self.unit = unit
        self.function = function
        self.register = register
        self.connected = False
        self.connectedAt = None
        self.lost = Deferred()
        self.strays = 0
        self._pending = {}
        self._tid = firstTid - 1

    def connectionMade(self):
        self.connected = True
        self.connectedAt = self.reactor.seconds()
        # tcpmux's own Modbus TCP framer cuts the answers; this reader is
        # its receiver.
        self._framer = ModbusTCPReceiver(self)
        self._framer.makeConnection(self.transport)

    def nextTid(self):
        self._tid = self._tid % 0xFFFF + 1
        return self._tid

    def request(self, tid):
        return struct.pack(
            ">HHHBBHH", tid, 0, 6, self.unit, self.function, self.register, 1
        )

    def send(self, count=1):
        """
        Write C{count} reads with distinct transaction ids in one write.

        @return: one Deferred per read, each firing with the register value
            or failing with a L{ReadFailed}.
        """
        waits = []
        data = b""
        for _ in range(count):
            tid = self.nextTid()
            d = Deferred(lambda d, tid=tid: self._pending.pop(tid, None))
            if not self.connected:
                d.errback(ConnectionClosed("the connection is closed"))
            else:
                self._pending[tid] = d
                data += self.request(tid)
            waits.append(d)
        if data:
            self.transport.write(data)
        return waits

    def dataReceived(self, data):
        self._framer.dataReceived(data)

    # The framer's receiver.

    def startReceiving(self, framer):
        pass

    def messageReceived(self, frame):
        d = self._pending.pop(frame[0] << 8 | frame[1], None)
        if d is None:
            self.strays += 1
            return
        outcome = self._answer(frame)
        if isinstance(outcome, Exception):
            d.errback(outcome)
        else:
            d.callback(outcome)

    def framingError(self, reason, reply):
        self._garbage(f"not Modbus TCP ({reason})")

    def inputEnded(self):
        pass

    def stopReceiving(self, reason):
        pass

    def _answer(self, frame):
        function = frame[7]
        if function == self.function | 0x80 and len(frame) >= 9:
            return ExceptionAnswer(frame[8])
        if function != self.function or len(frame) < 11 or frame[8] != 2:
            return BadAnswer(f"unexpected answer {frame.hex(' ')}")
        return struct.unpack(">H", frame[9:11])[0]

    def _garbage(self, reason):
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(BadAnswer(reason))
        self.transport.abortConnection()

    def connectionLost(self, reason):
        self.connected = False
        pending, self._pending = self._pending, {}
        for d in pending.values():
            d.errback(ConnectionClosed("the device closed the connection"))
        self.lost.callback(None)


# -- measuring


class Settings:
    """
    What to probe and how hard; the defaults are the command line's.
    """

    def __init__(
        self,
        target,
        unit=1,
        register=0,
        function=3,
        timeout=1.0,
        connectTimeout=None,
        maxConnections=8,
        pipeline=4,
        samples=50,
        gapReads=10,
        gaps=(0.0, 0.010, 0.020, 0.050, 0.100, 0.200),
        connectDelays=(0.5, 1.0, 2.0),
    ):
        self.target = target
        self.unit = unit
        self.register = register
        self.function = function
        self.timeout = timeout
        self.connectTimeout = (
            max(3.0, timeout) if connectTimeout is None else connectTimeout
        )
        self.maxConnections = maxConnections
        self.pipeline = pipeline
        self.samples = samples
        self.gapReads = gapReads
        self.gaps = tuple(sorted(gaps))
        self.connectDelays = tuple(sorted(connectDelays))

    def readName(self):
        kind = "holding" if self.function == 3 else "input"
        return (
            f"read of {kind} register {self.register} "
            f"(function {self.function}) from unit {self.unit}"
        )


class Result:
    """
    What the probe measured. Durations in milliseconds.
    """

    def __init__(self):
        self.maxConnections = None
        self.pipelining = None
        self.p50 = None
        self.p99 = None
        self.samples = 0
        self.unanswered = 0
        self.minGap = None
        self.failedGaps = []
        self.connectDelay = 0

    def suggestedFlags(self, settings):
        flags = []
        if self.maxConnections and self.maxConnections > 1:
            flags.append(f"--connections {self.maxConnections}")
        # Pipelined requests leave back to back: no use to a device that
        # needs a gap between them.
        if self.pipelining and self.minGap == 0:
            flags.append(f"--pipeline {settings.pipeline}")
        if self.minGap:
            flags.append(f"--request-gap {formatDuration(self.minGap)}")
        if self.connectDelay:
            flags.append(f"--delay {formatDuration(self.connectDelay)}")
        if self.p99 is not None:
            flags.append(f"--timeout {formatDuration(suggestedTimeout(self))}")
        return flags

    def asDict(self, settings):
        def ms(value):
            return None if value is None else round(value, 2)

        return {
            "max_connections": self.maxConnections,
            "pipelining": bool(self.pipelining),
            "p50_ms": ms(self.p50),
            "p99_ms": ms(self.p99),
            "min_gap_ms": self.minGap,
            "needs_connect_delay_ms": self.connectDelay,
            "suggested_flags": self.suggestedFlags(settings),
        }


def suggestedTimeout(result):
    """
    Ten times the p99 round trip, at least a second, plus the connect delay
    (tcpmux's --timeout also covers waiting for a connection), rounded up to
    whole seconds; in milliseconds.
    """
    seconds = max(1.0, 10 * result.p99 / 1000) + result.connectDelay / 1000
    return 1000 * math.ceil(round(seconds, 3))


def formatDuration(ms):
    """
    C{50} -> C{"50ms"}, C{1000} -> C{"1s"}, C{1500} -> C{"1500ms"}.
    """
    ms = int(round(ms))
    if ms and ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def humanDuration(ms):
    """
    C{50} -> C{"50 ms"}, C{1000} -> C{"1 s"}: for the report.
    """
    text = formatDuration(ms)
    return text[:-2] + " ms" if text.endswith("ms") else text[:-1] + " s"


def percentile(values, p):
    """
    The nearest-rank C{p}th percentile of C{values}.
    """
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


class Prober:
    """
    One probe run: the connections it opened and the pace it keeps.
    """

    def __init__(self, reactor, settings, endpoint):
        self.reactor = reactor
        self.settings = settings
        self.endpoint = endpoint
        self.result = Result()
        self.open = []
        # Before a request, wait this long after the device's last answer.
        self.pace = 0.0
        self.lastAnswer = None
        self.nextTid = 1

    # connections

    async def connect(self, delay=None):
        """
        A new connection that has waited the connect delay (C{delay}, or the
        one measured), or L{None} if it closed meanwhile.

        @raise ProbeError: if the device cannot be reached.
        """
        s = self.settings
        firstTid = self.nextTid
        # Transaction ids differ across connections, for readable captures.
        self.nextTid = self.nextTid % 64000 + 1000
        factory = Factory.forProtocol(
            lambda: ModbusReader(self.reactor, s.unit, s.function, s.register, firstTid)
        )
        try:
            protocol = await self.endpoint.connect(factory)
        except Exception as e:
            raise ProbeError(f"cannot connect to {s.target}: {connectProblem(e, s)}")
        self.open.append(protocol)
        protocol.lost.addCallback(lambda _: self._forget(protocol))
        if delay is None:
            delay = self.result.connectDelay / 1000
        if delay:
            # Wait the delay, or until the device closes the connection.
            waits = [self.sleep(delay), _observe(protocol.lost)]
            await defer.DeferredList(waits, fireOnOneCallback=True, consumeErrors=True)
            for d in waits:
                d.cancel()
        return protocol if protocol.connected else None

    def _forget(self, protocol):
        if protocol in self.open:
            self.open.remove(protocol)

    async def close(self, protocol):
        if protocol.connected:
            protocol.transport.loseConnection()
            await _observe(protocol.lost)

    async def closeAll(self):
        for protocol in list(self.open):
            await self.close(protocol)

    # reads

    def sleep(self, seconds):
        return deferLater(self.reactor, seconds, lambda: None)

    async def keepPace(self, pace=None):
        pace = self.pace if pace is None else pace
        if pace and self.lastAnswer is not None:
            wait = self.lastAnswer + pace - self.reactor.seconds()
            if wait > 0:
                await self.sleep(wait)

    async def read(self, protocol, pace=None):
        """
        One paced read on C{protocol}: its round trip in seconds.

        @raise ReadFailed: with why it got no answer.
        """
        await self.keepPace(pace)
        start = self.reactor.seconds()
        (d,) = protocol.send()
        await self._answered(d)
        return self.reactor.seconds() - start

    async def _answered(self, d):
        d.addTimeout(self.settings.timeout, self.reactor)
        try:
            await d
        except defer.TimeoutError:
            raise NoAnswer(f"no answer within {formatDuration(self.settings.timeout * 1000)}")
        except ExceptionAnswer:
            self.lastAnswer = self.reactor.seconds()
            raise
        self.lastAnswer = self.reactor.seconds()

    # the phases

    async def run(self):
        try:
            await self.measureConnectDelay()
            main = await self.mainConnection(None)
            main = await self.measureGap(main)
            main = await self.measureRoundTrip(main)
            main = await self.measureConnections(main)
            await self.measurePipelining(main)
        finally:
            await self.closeAll()
        return self.result

    async def measureConnectDelay(self):
        """
        A read at once after connecting; if unanswered, the same after each
        connect delay in turn, on a fresh connection each.
        """
        s = self.settings
        problems = []
        for delay in (0.0,) + s.connectDelays:
            protocol = await self.connect(delay)
            try:
                if protocol is None:
                    problems.append(ConnectionClosed("the device closed the connection"))
                    continue
                await self.read(protocol)
            except ExceptionAnswer as e:
                raise ProbeError(exceptionProblem(e, s))
            except ReadFailed as e:
                problems.append(e)
            else:
                self.result.connectDelay = int(round(delay * 1000))
                return
            finally:
                if protocol is not None:
                    await self.close(protocol)
        raise ProbeError(noAnswerProblem(problems, s))

    async def mainConnection(self, protocol):
        """
        C{protocol} if still open, else a new connection.
        """
        if protocol is not None and protocol.connected:
            return protocol
        protocol = await self.connect()
        if protocol is None:
            raise ProbeError(
                f"{self.settings.target} closed a new connection before any request"
            )
        return protocol

    async def measureGap(self, main):
        """
        The smallest gap in C{settings.gaps} with which C{gapReads} reads
        spaced by it are all answered.
        """
        s = self.settings
        for gap in s.gaps:
            main = await self.mainConnection(main)
            try:
                for _ in range(s.gapReads):
                    await self.read(main, pace=gap)
            except ReadFailed:
                self.result.failedGaps.append(int(round(gap * 1000)))
                continue
            self.result.minGap = int(round(gap * 1000))
            self.pace = gap
            return main
        # Errors at every gap: keep the largest for what follows.
        self.pace = s.gaps[-1] if s.gaps else 0.0
        return main

    async def measureRoundTrip(self, main):
        s = self.settings
        times = []
        for _ in range(s.samples):
            main = await self.mainConnection(main)
            try:
                times.append(await self.read(main))
            except ExceptionAnswer as e:
                raise ProbeError(exceptionProblem(e, s))
            except ReadFailed:
                self.result.unanswered += 1
        if not times:
            raise ProbeError(
                f"no answer to any of {s.samples} sequential reads from {s.target}: "
                f"try a longer --timeout"
            )
        self.result.samples = len(times)
        self.result.p50 = 1000 * percentile(times, 50)
        self.result.p99 = 1000 * percentile(times, 99)
        return main

    async def measureConnections(self, main):
        """
        Open one more connection at a time, up to C{maxConnections}; the
        count is the most with which a read on each was answered while all
        stayed open.
        """
        s = self.settings
        connections = [main]
        self.result.maxConnections = 1
        try:
            while len(connections) < s.maxConnections:
                try:
                    new = await self.connect()
                except ProbeError:
                    break
                if new is None:
                    break
                connections.append(new)
                try:
                    for protocol in [new] + connections[:-1]:
                        if not all(c.connected for c in connections):
                            raise ConnectionClosed("a connection closed")
                        await self.read(protocol)
                except ReadFailed:
                    break
                if not all(c.connected for c in connections):
                    break
                self.result.maxConnections = len(connections)
        finally:
            for protocol in connections[1:]:
                await self.close(protocol)
        return main

    async def measurePipelining(self, main):
        """
        C{pipeline} reads with distinct transaction ids in one write: all
        answered (each matched by its id) means the device pipelines.
        """
        s = self.settings
        main = await self.mainConnection(main)
        await self.keepPace()
        waits = main.send(s.pipeline)
        results = await defer.DeferredList(
            [Deferred.fromCoroutine(self._answered(d)) for d in waits],
            consumeErrors=True,
        )
        self.result.pipelining = all(ok for ok, _ in results)
        await self.close(main)


def _observe(d):
    """
    A Deferred that fires with C{d}'s result, leaving C{d} untouched.
    """
    observer = Deferred()

    def fire(result):
        observer.callback(result)
        return result

    d.addBoth(fire)
    return observer


# -- what the user reads


def connectProblem(error, settings):
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (is it a Modbus TCP device, on this port?)"
    if isinstance(error, ConnectTimeoutError):
        return f"no answer within {formatDuration(settings.connectTimeout * 1000)}"
    if isinstance(error, DNSLookupError):
        return "host name not found"
    if isinstance(error, ConnectError) and error.osError:
        return str(error.osError)
    return str(error) or error.__class__.__name__


def exceptionProblem(error, settings):
    advice = {
        0x01: "the device does not serve this function: try --input (function 4)",
        0x02: "name a register it has with --register",
        0x03: "name a register it has with --register",
        0x0A: "the gateway knows no such unit: check --unit",
        0x0B: "the gateway got no answer from that unit: check --unit",
    }.get(error.code, "try another --register or --unit")
    return (
        f"the device answered the {settings.readName()} with exception "
        f"{describeException(error.code)}: {advice}"
    )


def noAnswerProblem(problems, settings):
    tried = ", ".join(
        formatDuration(delay * 1000) for delay in (0.0,) + settings.connectDelays
    )
    reasons = sorted({str(p) for p in problems})
    return (
        f"no answer from {settings.target} to a {settings.readName()} "
        f"(waiting {tried} after connecting; {'; '.join(reasons)}): "
        "check --unit and --target, or try a longer --timeout"
    )


def report(result, settings):
    """
    The human report, lines without their ending.
    """
    r = result
    gap = (
        "none needed"
        if r.minGap == 0
        else humanDuration(r.minGap)
        if r.minGap is not None
        else f"errors at every gap tried (up to {humanDuration(settings.gaps[-1] * 1000)})"
    )
    if r.failedGaps and r.minGap:
        gap += " (errors at " + ", ".join(humanDuration(g) for g in r.failedGaps) + ")"
    delay = (
        f"{humanDuration(r.connectDelay)} (requests sooner after a connect go unanswered)"
        if r.connectDelay
        else "none needed"
    )
    trip = f"p50 {r.p50:.1f} ms, p99 {r.p99:.1f} ms ({r.samples} reads"
    trip += f", {r.unanswered} unanswered)" if r.unanswered else ")"
    capped = " (the most tried)" if r.maxConnections >= settings.maxConnections else ""
    flags = " ".join(r.suggestedFlags(settings))
    return [
        f"{PROGRAM}: {settings.target}, {settings.readName()}",
        f"  connections at once  {r.maxConnections}{capped}",
        "  pipelining           "
        + ("yes" if r.pipelining else "no")
        + f" ({settings.pipeline} reads in one write)",
        f"  round trip           {trip}",
        f"  request gap          {gap}",
        f"  connect delay        {delay}",
        "",
        "suggested:",
        f"  twistd tcpmux --protocol modbus --target {settings.target} {flags}".rstrip(),
    ]


# -- the command line


def _durations(text):
    return tuple(parseDuration(part) for part in text.split(",") if part.strip())


class Options(usage.Options):
    synopsis = f"Usage: {PROGRAM} --target HOST:PORT [--unit N] [--register ADDR] [--json]"
    longdesc = (
        "Measure a Modbus TCP device with reads of one register (it never "
        "writes): connections it accepts at once, whether it answers "
        "pipelined requests, its round-trip time, the shortest gap between "
        "requests it takes without errors and whether it needs a delay after "
        "a connect; then suggest tcpmux flags. Durations are seconds, or a "
        "number with ms or s."
    )
    optFlags = [
        ["json", None, "Print one JSON object instead of the report."],
        ["input", None, "Read an input register (function 4) instead of a "
         "holding register (function 3)."],
    ]
    optParameters = [
        ["target", "t", None, "Required. The device: host:port, [v6addr]:port or "
         "a Twisted client endpoint string."],
        ["unit", "u", "1", "Unit id to read from (0..255)."],
        ["register", "r", "0", "Register address to read (0..65535)."],
        ["timeout", None, "1s", "How long each read waits for its answer."],
        ["max-connections", None, "8", "Most connections to try at once."],
        ["pipeline", None, "4", "Reads sent in one write to test pipelining."],
        ["samples", None, "50", "Sequential reads timed for the round trip."],
        ["gap-reads", None, "10", "Reads tried at each request gap."],
        ["gaps", None, "0,10ms,20ms,50ms,100ms,200ms",
         "Request gaps to try, smallest first."],
        ["connect-delays", None, "500ms,1s,2s",
         "Delays after a connect to try when a read sent at once goes unanswered."],
    ]

    def opt_version(self):
        """
        Print tcpmux's version (and Twisted's) and exit.
        """
        print(versions())
        sys.exit(0)

    def postOptions(self):
        if not self["target"]:
            raise usage.UsageError("--target HOST:PORT is required")
        try:
            self["unit"] = _inRange(self["unit"], "--unit", 0, 255)
            self["register"] = _inRange(self["register"], "--register", 0, 65535)
            self["timeout"] = parseDuration(self["timeout"])
            if self["timeout"] <= 0:
                raise ValueError("--timeout must be more than 0")
            for name in ("max-connections", "pipeline", "samples", "gap-reads"):
                self[name] = parseCount(self[name])
            self["gaps"] = _durations(self["gaps"])
            if not self["gaps"]:
                raise ValueError("--gaps needs at least one duration")
            self["connect-delays"] = _durations(self["connect-delays"])
        except ValueError as e:
            raise usage.UsageError(str(e))

    def settings(self):
        return Settings(
            self["target"],
            unit=self["unit"],
            register=self["register"],
            function=4 if self["input"] else 3,
            timeout=self["timeout"],
            maxConnections=self["max-connections"],
            pipeline=self["pipeline"],
            samples=self["samples"],
            gapReads=self["gap-reads"],
            gaps=self["gaps"],
            connectDelays=self["connect-delays"],
        )


def _inRange(text, name, low, high):
    try:
        value = int(str(text), 0)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {text!r}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} must be {low}..{high}, not {value}")
    return value


async def probe(reactor, settings):
    """
    Probe the device C{settings} names.

    @return: a L{Result}.
    @raise ProbeError: when the device cannot be probed.
    """
    try:
        endpoint = targetEndpoint(reactor, settings.target, settings.connectTimeout)
    except ValueError as e:
        raise ProbeError(str(e))
    return await Prober(reactor, settings, endpoint).run()


async def run(reactor, argv, out=None, err=None):
    """
    Run C{tcpmux-probe} with the arguments C{argv}; the exit status.
    """
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    options = Options()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        err.write(f"{PROGRAM}: {e}\n{PROGRAM}: try --help\n")
        return USAGE
    settings = options.settings()
    try:
        result = await probe(reactor, settings)
    except ProbeError as e:
        err.write(f"{PROGRAM}: {e}\n")
        return PROBE_FAILED
    if options["json"]:
        out.write(json.dumps(result.asDict(settings)) + "\n")
    else:
        out.write("\n".join(report(result, settings)) + "\n")
    return OK


def main(argv=None):
    """
    The console script.
    """
    argv = sys.argv[1:] if argv is None else argv

    async def _main(reactor):
        status = await run(reactor, argv)
        if status:
            raise SystemExit(status)

    react(lambda reactor: defer.ensureDeferred(_main(reactor)))
