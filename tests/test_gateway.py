"""
Tests for the Modbus gateway (L{tcpmux.gateway.modbus}: C{--unit-map},
C{--read-only}, C{--retries}), C{--route} and C{--request-gap}
(L{tcpmux.target.wrapper.SpacedTarget}).

End to end, real pymodbus clients talk through tcpmux to a device written
here that records every request it receives (unit id, function code, PDU,
when); unit tests drive the wrappers with L{Clock} and a scripted target.
"""

import socket
import struct
import time
from collections import namedtuple

from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.client.dispatch import Answered
from tcpmux.errors import (
    InvalidResponse,
    TargetLost,
    TargetTimeout,
    TargetUnavailable,
)
from tcpmux.gateway import modbus as gateway
from tcpmux.gateway.modbus import ReadOnly, RetriedReads, UnitMap
from tcpmux.gateway.options import parseReadOnly, parseRetries, parseRoute, parseUnitMap
from tcpmux.interfaces import IDispatcher, ITarget
from tcpmux.tap import Options
from tcpmux.target.wrapper import SpacedTarget
from tests.modbus import adu, referenceCRC, splitModbus
from tests.support import buildMultiplexer, freePort, receiveExactly, startMultiplexer, until

ILLEGAL_FUNCTION = 0x01
DEVICE_BUSY = 0x06
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B

MODBUS = protocols.get("modbus")
MODBUS_RTU = protocols.get("modbus-rtu")
MODBUS_SERIAL = protocols.get("modbus-serial")


# -- messages, built by hand


def withReferenceCRC(body):
    return body + struct.pack("<H", referenceCRC(body))


def rtuOverTCP(tid, unit, pdu):
    """
    A C{modbus-rtu} frame: MBAP header whose length covers the CRC.
    """
    body = bytes((unit,)) + pdu
    return struct.pack(">HHH", tid, 0, len(body) + 2) + withReferenceCRC(body)


def serial(unit, pdu):
    return withReferenceCRC(bytes((unit,)) + pdu)


def readPDU(address, count=1, function=3):
    return struct.pack(">BHH", function, address, count)


# -- a device that records every request


Received = namedtuple("Received", "at unit function pdu connection")


def registersFor(address, count):
    """
    What the device holds: each register's address is its value.
    """
    return [(address + i) & 0xFFFF for i in range(count)]


def answerPDU(pdu):
    """
    What a well-behaved device answers to C{pdu}.
    """
    function = pdu[0]
    if function in (1, 2):
        address, count = struct.unpack(">HH", pdu[1:5])
        size = (count + 7) // 8
        return bytes((function, size)) + bytes(size)
    if function in (3, 4):
        address, count = struct.unpack(">HH", pdu[1:5])
        values = registersFor(address, count)
        return struct.pack(f">BB{count}H", function, 2 * count, *values)
    if function in (5, 6, 22):
        return pdu
    if function in (15, 16):
        return pdu[:5]
    if function == 23:
        address, count = struct.unpack(">HH", pdu[1:5])
        values = registersFor(address, count)
        return struct.pack(f">BB{count}H", function, 2 * count, *values)
    if function == 0x41:
        # A vendor's code: this device echoes it.
        return pdu
    return bytes((function | 0x80, ILLEGAL_FUNCTION))


class DeviceProtocol(Protocol):
    def connectionMade(self):
        self.buffer = b""
        self.number = self.factory.accepted
        self.factory.accepted += 1
        self.factory.connections.append(self)

    def connectionLost(self, reason):
        self.factory.connections.remove(self)

    def dataReceived(self, data):
        self.buffer += data
        if self.factory.kind == "serial":
            # Requests of function codes 1-6 only: 8 bytes each.
            while len(self.buffer) >= 8:
                frame, self.buffer = self.buffer[:8], self.buffer[8:]
                assert referenceCRC(frame[:-2]) == struct.unpack("<H", frame[-2:])[0]
                self.factory.received(self, frame, frame[0], frame[1:-2])
            return
        messages, self.buffer = splitModbus(self.buffer)
        for message in messages:
            self.factory.received(self, message, message[6], message[7:])


class RecordingDevice(ServerFactory):
    """
    A Modbus TCP device (C{kind="serial"}: raw RTU frames) on 127.0.0.1
    that records every request it receives.

    @param delay: seconds it takes to answer.
    @param behaviour: C{behaviour(device, received)} returns what to do
        with a request: C{"answer"}, C{"ignore"} or C{"busy"} (answer
        exception 0x06). By default, answer.
    @ivar requests: a L{Received} for each request, in order.
    """

    protocol = DeviceProtocol
    noisy = False

    def __init__(self, kind="tcp", delay=0.0, behaviour=None):
        self.kind = kind
        self.delay = delay
        self.behaviour = behaviour or (lambda device, received: "answer")
        self.requests = []
        self.connections = []
        self.accepted = 0
        self._calls = []

    def listen(self, testCase):
        port = reactor.listenTCP(0, self, interface="127.0.0.1")

        def stop():
            for call in self._calls:
                if call.active():
                    call.cancel()
            for connection in list(self.connections):
                connection.transport.abortConnection()
            return port.stopListening()

        testCase.addCleanup(stop)
        return port.getHost().port

    def received(self, connection, message, unit, pdu):
        received = Received(time.monotonic(), unit, pdu[0], pdu, connection.number)
        self.requests.append(received)
        what = self.behaviour(self, received)
        if what == "ignore":
            return
        if what == "busy":
            answer = bytes((pdu[0] | 0x80, DEVICE_BUSY))
        else:
            answer = answerPDU(pdu)
        if self.kind == "serial":
            frame = serial(unit, answer)
        else:
            frame = adu(struct.unpack(">H", message[:2])[0], unit, answer)
        if self.delay:
            self._calls.append(
                reactor.callLater(self.delay, connection.transport.write, frame)
            )
        else:
            connection.transport.write(frame)

    def seen(self):
        """
        C{(unit, function code)} of each request received.
        """
        return [(r.unit, r.function) for r in self.requests]


def ignoreFirstAttemptOfReads(device, received):
    """
    Every other read (the 1st, 3rd, ...) is ignored: each read is answered
    only when sent a second time.
    """
    if received.function in gateway.READS:
        reads = sum(r.function in gateway.READS for r in device.requests)
        return "ignore" if reads % 2 else "answer"
    return "answer"


def ignoreWrites(device, received):
    return "ignore" if received.function in gateway.WRITES else "answer"


# -- pymodbus clients, each in a thread


def pymodbus(port, call, framer=FramerType.SOCKET):
    """
    Connect a pymodbus client to tcpmux, C{call(client)}, close it: the
    result, or C{("exception", code)}.
    """
    client = ModbusTcpClient(
        "127.0.0.1", port=port, framer=framer, timeout=10, retries=0
    )
    assert client.connect(), "cannot connect to tcpmux"
    try:
        response = call(client)
    finally:
        client.close()
    if response.isError():
        return ("exception", response.exception_code)
    return response


def readRegister(port, address, unit=1, framer=FramerType.SOCKET):
    """
    One read of one holding register: C{("value", v)} or
    C{("exception", code)}.
    """
    result = pymodbus(
        port,
        lambda c: c.read_holding_registers(address, count=1, device_id=unit),
        framer,
    )
    if isinstance(result, tuple):
        return result
    return ("value", result.registers[0])


def timedReads(port, addresses, unit=1):
    """
    One client reads each of C{addresses} in turn; return the values and
    the seconds it took.
    """
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
    assert client.connect(), "cannot connect to tcpmux"
    started = time.monotonic()
    values = []
    try:
        for address in addresses:
            response = client.read_holding_registers(address, count=1, device_id=unit)
            assert not response.isError(), response
            values.append(response.registers[0])
    finally:
        client.close()
    return values, time.monotonic() - started


def rawRoundTrip(port, message, size):
    """
    Send C{message} over a plain socket; return the first C{size} bytes
    answered.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(message)
        return receiveExactly(sock, size)


# -- a scripted target for unit tests


class ScriptedTarget:
    """
    An L{ITarget} whose round trips the test answers: each request is
    recorded with a L{Deferred} that, like a target session's, fails with
    L{TargetTimeout} when cancelled.
    """

    name = "scripted"
    concurrency = 1
    ready = True

    def __init__(self):
        self.calls = []
        self.cancelled = 0

    def roundTrip(self, request, deadline=None, partReceived=None):
        def cancel(d):
            self.cancelled += 1
            d.errback(Failure(TargetTimeout("no response from the target")))

        d = Deferred(canceller=cancel)
        self.calls.append((request, deadline, d))
        return d

    @property
    def requests(self):
        return [request for request, _, _ in self.calls]

    def pending(self):
        return self.calls[-1][2]

    def start(self):
        pass

    def release(self):
        pass

    def stop(self):
        return succeed(None)


class RecordingDispatcher:
    def __init__(self):
        self.requests = []

    def dispatch(self, request, client, partReceived=None):
        self.requests.append(request)
        return Answered(succeed(b"from the device"))


def result(d):
    """
    What C{d} fired with (a L{Failure}, trapped), or L{None} if it has not.
    """
    box = []
    d.addBoth(box.append)
    return box[0] if box else None


# -- unit tests


class ParsingTests(SynchronousTestCase):
    def test_unitMap(self):
        self.assertEqual(parseUnitMap("1=0"), {1: 0})
        self.assertEqual(parseUnitMap(" 1 = 0 , 2=255"), {1: 0, 2: 255})
        for bad in ("1", "1=", "=0", "1=256", "a=1", "1=0,1=2", "-1=0"):
            self.assertRaises(ValueError, parseUnitMap, bad)

    def test_route(self):
        self.assertEqual(parseRoute("2=10.0.0.7:502"), (2, "10.0.0.7:502"))
        self.assertEqual(
            parseRoute("3=tcp:host=h:port=502"), (3, "tcp:host=h:port=502")
        )
        for bad in ("2", "2=", "x=h:1", "300=h:1"):
            self.assertRaises(ValueError, parseRoute, bad)

    def test_readOnly(self):
        self.assertEqual(parseReadOnly("off"), ("off", None))
        self.assertEqual(parseReadOnly("DENY"), ("deny", None))
        self.assertEqual(parseReadOnly("ignore"), ("ignore", None))
        self.assertEqual(parseReadOnly("deny:1,2"), ("deny", frozenset({1, 2})))
        for bad in ("on", "true", "deny:", "deny:x", "off:1"):
            self.assertRaises(ValueError, parseReadOnly, bad)

    def test_retries(self):
        self.assertEqual(parseRetries("0"), 0)
        self.assertEqual(parseRetries(3), 3)
        for bad in ("-1", "x", "1.5"):
            self.assertRaises(ValueError, parseRetries, bad)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["-t", "127.0.0.1:502", *args])
        return options

    def usageError(self, *args):
        return str(self.assertRaises(usage.UsageError, self.parse, *args))

    def test_defaults(self):
        options = self.parse("-p", "modbus")
        self.assertEqual(options["unit-map"], {})
        self.assertEqual(options["route"], {})
        self.assertEqual(options["read-only"], ("off", None))
        self.assertEqual(options["retries"], 0)
        self.assertEqual(options["attempt-timeout"], 60.0)
        self.assertEqual(options["request-gap"], 0.0)

    def test_converted(self):
        options = self.parse(
            "-p", "modbus-rtu", "--unit-map", "1=0,2=3", "--route", "2=127.0.0.1:503",
            "--route", "4=tcp:host=127.0.0.1:port=504", "--read-only", "ignore:1",
            "--retries", "2", "--attempt-timeout", "500ms", "--timeout", "5s",
            "--request-gap", "50ms",
        )
        self.assertEqual(options["unit-map"], {1: 0, 2: 3})
        self.assertEqual(
            options["route"], {2: "127.0.0.1:503", 4: "tcp:host=127.0.0.1:port=504"}
        )
        self.assertEqual(options["read-only"], ("ignore", frozenset({1})))
        self.assertEqual(options["retries"], 2)
        self.assertEqual(options["attempt-timeout"], 0.5)
        self.assertEqual(options["request-gap"], 0.05)

    def test_modbusOnly(self):
        """
        The Modbus options with another protocol are usage errors naming
        the option; the request gap is for every protocol.
        """
        for args in (
            ("--unit-map", "1=0"),
            ("--route", "2=127.0.0.1:503"),
            ("--read-only", "deny"),
            ("--retries", "1"),
        ):
            message = self.usageError("-p", "echo", *args)
            self.assertIn(args[0], message)
            self.assertIn("Modbus", message)
        self.parse("-p", "echo", "--read-only", "off", "--request-gap", "1s")

    def test_badValues(self):
        self.assertIn("--unit-map", self.usageError("-p", "modbus", "--unit-map", "1:0"))
        self.assertIn("--route", self.usageError("-p", "modbus", "--route", "2"))
        self.assertIn(
            "no port", self.usageError("-p", "modbus", "--route", "2=nowhere")
        )
        self.assertIn(
            "twice",
            self.usageError(
                "-p", "modbus", "--route", "2=127.0.0.1:1", "--route", "2=127.0.0.1:2"
            ),
        )
        self.assertIn("--read-only", self.usageError("-p", "modbus", "--read-only", "yes"))
        self.assertIn("--retries", self.usageError("-p", "modbus", "--retries", "-1"))
        self.assertIn(
            "--request-gap", self.usageError("-p", "modbus", "--request-gap", "soon")
        )
        self.assertIn(
            "--attempt-timeout",
            self.usageError("-p", "modbus", "--retries", "1", "--attempt-timeout", "0"),
        )
        self.assertIn(
            "--retries", self.usageError("-p", "modbus", "--attempt-timeout", "1s")
        )
        self.assertIn(
            "longer than --timeout",
            self.usageError(
                "-p", "modbus", "--retries", "1", "--attempt-timeout", "10s",
                "--timeout", "5s",
            ),
        )

    def test_serialBroadcast(self):
        """
        With modbus-serial, unit 0 is the broadcast address: no device
        answers it, so neither side of a unit map nor a route may name it.
        """
        for args in (("--unit-map", "1=0"), ("--unit-map", "0=1"), ("--route", "0=127.0.0.1:1")):
            self.assertIn("broadcast", self.usageError("-p", "modbus-serial", *args))
        self.parse("-p", "modbus", "--unit-map", "1=0")

    def test_targetsBuilt(self):
        """
        Without gateway options the target is the connection itself; with
        them, each target (routed ones too) is wrapped: unit map, then
        retries, then the gap, then the connection(s).
        """
        plain = buildMultiplexer("-p", "modbus", "-t", "127.0.0.1:502")
        self.assertEqual(type(plain.target).__name__, "TargetClientFactory")
        self.assertIs(plain.dispatcher, plain.queue)

        multiplexer = buildMultiplexer(
            "-p", "modbus", "-t", "127.0.0.1:502", "--route", "2=127.0.0.1:503",
            "--unit-map", "1=0", "--retries", "1", "--request-gap", "10ms",
            "--connections", "2", "--read-only", "deny",
        )
        for target, name in (
            (multiplexer.target, "127.0.0.1:502"),
            (multiplexer.routes[2], "127.0.0.1:503"),
        ):
            self.assertIsInstance(target, UnitMap)
            self.assertIsInstance(target.target, RetriedReads)
            self.assertIsInstance(target.target.target, SpacedTarget)
            pool = target.target.target.target
            self.assertEqual(len(pool.factories), 2)
            self.assertEqual(target.name, name)
        self.assertIsInstance(multiplexer.dispatcher, ReadOnly)
        self.assertIs(multiplexer.dispatcher.dispatcher, multiplexer.queues)


class FramesTests(SynchronousTestCase):
    """
    The gateway's Modbus helpers in each framing.
    """

    def test_exceptionAnswer(self):
        self.assertEqual(
            gateway.exceptionAnswer(MODBUS.frames, adu(7, 1, readPDU(0)), 1),
            adu(7, 1, b"\x83\x01"),
        )
        self.assertEqual(
            gateway.exceptionAnswer(MODBUS_RTU.frames, rtuOverTCP(7, 1, readPDU(0)), 1),
            rtuOverTCP(7, 1, b"\x83\x01"),
        )
        self.assertEqual(
            gateway.exceptionAnswer(MODBUS_SERIAL.frames, serial(9, readPDU(0)), 1),
            serial(9, b"\x83\x01"),
        )

    def test_exceptionCode(self):
        frames = MODBUS.frames
        self.assertEqual(gateway.exceptionCode(frames, adu(1, 1, b"\x83\x06")), 6)
        self.assertIsNone(gateway.exceptionCode(frames, adu(1, 1, b"\x03\x02\x00\x01")))


class UnitMapTests(SynchronousTestCase):
    def test_mapped(self):
        """
        A mapped unit goes to the device as its device unit, and the answer
        comes back as the client's; the transaction id is kept.
        """
        for frames, build in (
            (MODBUS.frames, lambda tid, unit, pdu: adu(tid, unit, pdu)),
            (MODBUS_RTU.frames, rtuOverTCP),
            (MODBUS_SERIAL.frames, lambda tid, unit, pdu: serial(unit, pdu)),
        ):
            inner = ScriptedTarget()
            target = UnitMap(inner, frames, {1: 0, 2: 9})
            d = target.roundTrip(build(5, 1, readPDU(3)), 12.0)
            self.assertEqual(inner.requests, [build(5, 0, readPDU(3))])
            self.assertEqual(inner.calls[0][1], 12.0)
            inner.pending().callback(build(5, 0, b"\x03\x02\x00\x03"))
            self.assertEqual(result(d), build(5, 1, b"\x03\x02\x00\x03"))

    def test_unmapped(self):
        """
        A unit not in the map passes unchanged, both ways.
        """
        inner = ScriptedTarget()
        target = UnitMap(inner, MODBUS.frames, {1: 0})
        d = target.roundTrip(adu(5, 3, readPDU(3)))
        self.assertEqual(inner.requests, [adu(5, 3, readPDU(3))])
        inner.pending().callback(adu(5, 3, b"\x83\x02"))
        self.assertEqual(result(d), adu(5, 3, b"\x83\x02"))

    def test_failurePassesThrough(self):
        inner = ScriptedTarget()
        d = UnitMap(inner, MODBUS.frames, {1: 0}).roundTrip(adu(5, 1, readPDU(3)))
        inner.pending().errback(TargetLost("gone"))
        self.assertTrue(result(d).check(TargetLost))

    def test_isATarget(self):
        from zope.interface.verify import verifyObject

        self.assertTrue(verifyObject(ITarget, UnitMap(ScriptedTarget(), MODBUS.frames, {})))


class ReadOnlyTests(SynchronousTestCase):
    def dispatch(self, frames, mode, request, units=None):
        inner = RecordingDispatcher()
        readOnly = ReadOnly(inner, frames, mode, units)
        trip = readOnly.dispatch(request, "client")
        return inner.requests, result(trip.result)

    def test_denyEveryWrite(self):
        for function in (5, 6, 15, 16, 21, 22, 23):
            pdu = bytes((function,)) + b"\x00\x01\x00\x02\x04\x00\x00\x00\x00"
            sent, answer = self.dispatch(MODBUS.frames, "deny", adu(4, 1, pdu))
            self.assertEqual(sent, [])
            self.assertEqual(answer, adu(4, 1, bytes((function | 0x80, 1))))

    def test_ignore(self):
        """
        5 and 6 are answered with their own PDU, 15 and 16 with their start
        address and quantity; 21, 22 and 23 are denied.
        """
        single = b"\x06\x00\x10\x12\x34"
        multiple = b"\x10\x00\x10\x00\x02\x04\x00\x01\x00\x02"
        coils = b"\x0f\x00\x20\x00\x0a\x02\xff\x03"
        for request, answer in (
            (single, single),
            (b"\x05\x00\x01\xff\x00", b"\x05\x00\x01\xff\x00"),
            (multiple, multiple[:5]),
            (coils, coils[:5]),
            (b"\x16\x00\x01\xff\x00\x00\x10", b"\x96\x01"),
            (b"\x17\x00\x01\x00\x01\x00\x02\x00\x01\x02\x00\x07", b"\x97\x01"),
        ):
            sent, got = self.dispatch(MODBUS.frames, "ignore", adu(9, 3, request))
            self.assertEqual(sent, [])
            self.assertEqual(got, adu(9, 3, answer))

    def test_readsAndVendorCodesGoThrough(self):
        for pdu in (readPDU(0), readPDU(0, function=1), b"\x41\x01\x02", b"\x2b\x0e\x01\x00"):
            sent, got = self.dispatch(MODBUS.frames, "deny", adu(1, 1, pdu))
            self.assertEqual(sent, [adu(1, 1, pdu)])
            self.assertEqual(got, b"from the device")

    def test_otherFramings(self):
        """
        Answers are in the request's framing, CRC included.
        """
        single = b"\x06\x00\x10\x12\x34"
        sent, got = self.dispatch(MODBUS_RTU.frames, "ignore", rtuOverTCP(2, 1, single))
        self.assertEqual((sent, got), ([], rtuOverTCP(2, 1, single)))
        sent, got = self.dispatch(MODBUS_SERIAL.frames, "deny", serial(7, single))
        self.assertEqual((sent, got), ([], serial(7, b"\x86\x01")))

    def test_someUnitsOnly(self):
        write = b"\x06\x00\x10\x12\x34"
        sent, got = self.dispatch(
            MODBUS.frames, "deny", adu(1, 2, write), units=frozenset({2, 3})
        )
        self.assertEqual((sent, got), ([], adu(1, 2, b"\x86\x01")))
        sent, got = self.dispatch(
            MODBUS.frames, "deny", adu(1, 1, write), units=frozenset({2, 3})
        )
        self.assertEqual((sent, got), ([adu(1, 1, write)], b"from the device"))

    def test_isADispatcher(self):
        from zope.interface.verify import verifyObject

        readOnly = ReadOnly(RecordingDispatcher(), MODBUS.frames, "deny")
        self.assertTrue(verifyObject(IDispatcher, readOnly))


class RetriedReadsTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.inner = ScriptedTarget()

    def timers(self):
        """
        The attempt timers running (not the log's own).
        """
        return [
            call for call in self.clock.getDelayedCalls()
            if getattr(call.func, "__name__", None) == "_expire"
        ]

    def retried(self, retries=2, attemptTimeout=1.0):
        return RetriedReads(self.inner, MODBUS.frames, retries, attemptTimeout, self.clock)

    def test_attemptTimeout(self):
        """
        An attempt with no answer within the attempt timeout is cancelled
        (which renews the connection) and the read sent again; the second
        attempt's answer is the client's.
        """
        read = adu(1, 1, readPDU(3))
        d = self.retried().roundTrip(read, deadline=10.0)
        self.clock.advance(0.999)
        self.assertEqual(len(self.inner.calls), 1)
        self.clock.advance(0.001)
        self.assertEqual(self.inner.cancelled, 1)
        self.assertEqual(self.inner.requests, [read, read])
        self.assertEqual(self.inner.calls[1][1], 10.0)
        self.inner.pending().callback(adu(1, 1, b"\x03\x02\x00\x03"))
        self.assertEqual(result(d), adu(1, 1, b"\x03\x02\x00\x03"))
        self.assertEqual(self.timers(), [])

    def test_upToRetries(self):
        """
        At most 1 + retries attempts; the last one's failure is the
        client's.
        """
        d = self.retried(retries=2).roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.inner.calls), 3)
        self.assertTrue(result(d).check(TargetTimeout))
        self.assertEqual(self.timers(), [])

    def test_deadline(self):
        """
        No attempt timer runs past the deadline (the queue ends that
        attempt), and no attempt starts after it.
        """
        d = self.retried(retries=5, attemptTimeout=1.0).roundTrip(
            adu(1, 1, readPDU(3)), deadline=2.5
        )
        self.clock.advance(1.0)
        self.clock.advance(1.0)
        self.assertEqual(len(self.inner.calls), 3)
        # 2.0 + 1.0 is past the deadline: the third attempt has no timer.
        self.assertEqual(self.timers(), [])
        self.clock.advance(0.5)
        self.inner.pending().errback(TargetLost("closed"))
        self.assertEqual(len(self.inner.calls), 3)
        self.assertTrue(result(d).check(TargetLost))

    def test_retriedFailures(self):
        """
        A lost connection, an unframeable answer and exception 0x06 are
        retried at once; the answer after them is the client's.
        """
        read = adu(1, 1, readPDU(3))
        d = self.retried(retries=3).roundTrip(read, deadline=10.0)
        self.inner.pending().errback(TargetLost("the connection to the target closed"))
        self.inner.pending().errback(InvalidResponse("unframeable response: bad CRC"))
        self.inner.pending().callback(adu(1, 1, b"\x83\x06"))
        self.assertEqual(len(self.inner.calls), 4)
        self.inner.pending().callback(adu(1, 1, b"\x03\x02\x00\x03"))
        self.assertEqual(result(d), adu(1, 1, b"\x03\x02\x00\x03"))

    def test_lastBusyAnswerGiven(self):
        d = self.retried(retries=1).roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        self.inner.pending().callback(adu(1, 1, b"\x83\x06"))
        self.inner.pending().callback(adu(1, 1, b"\x83\x06"))
        self.assertEqual(result(d), adu(1, 1, b"\x83\x06"))

    def test_notRetried(self):
        """
        Other exception responses, and a refused connection (not after an
        attempt timeout), are the client's at once.
        """
        d = self.retried().roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        self.inner.pending().callback(adu(1, 1, b"\x83\x02"))
        self.assertEqual(result(d), adu(1, 1, b"\x83\x02"))
        d = self.retried().roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        self.inner.pending().errback(TargetUnavailable("cannot connect"))
        self.assertTrue(result(d).check(TargetUnavailable))
        self.assertEqual(len(self.inner.calls), 2)

    def test_writesAndVendorCodesOnce(self):
        """
        Writes, vendor codes and every non-read go through once, with no
        attempt timer.
        """
        for pdu in (b"\x06\x00\x01\x00\x02", b"\x10\x00\x01\x00\x01\x02\x00\x05", b"\x41\x01", b"\x17" + bytes(10)):
            self.inner.calls = []
            d = self.retried().roundTrip(adu(1, 1, pdu), deadline=10.0)
            self.assertEqual(self.timers(), [])
            self.inner.pending().errback(TargetLost("closed"))
            self.assertEqual(len(self.inner.calls), 1)
            self.assertTrue(result(d).check(TargetLost))

    def test_cancelled(self):
        """
        Cancelled by the queue (the deadline), the attempt in flight is
        cancelled and its failure is the outcome; nothing more is sent.
        """
        d = self.retried().roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        d.cancel()
        self.assertEqual(self.inner.cancelled, 1)
        self.assertTrue(result(d).check(TargetTimeout))
        self.assertEqual(len(self.inner.calls), 1)
        self.assertEqual(self.timers(), [])

    def test_otherFramings(self):
        """
        In C{modbus-rtu} and C{modbus-serial} framing too, busy is retried.
        """
        for frames, read, busy, answer in (
            (MODBUS_RTU.frames, rtuOverTCP(1, 1, readPDU(0)), rtuOverTCP(1, 1, b"\x83\x06"),
             rtuOverTCP(1, 1, b"\x03\x02\x00\x00")),
            (MODBUS_SERIAL.frames, serial(1, readPDU(0)), serial(1, b"\x83\x06"),
             serial(1, b"\x03\x02\x00\x00")),
        ):
            inner = ScriptedTarget()
            d = RetriedReads(inner, frames, 1, None, self.clock).roundTrip(read)
            inner.pending().callback(busy)
            inner.pending().callback(answer)
            self.assertEqual(result(d), answer)

    def test_noRetries(self):
        d = self.retried(retries=0).roundTrip(adu(1, 1, readPDU(3)), deadline=10.0)
        self.assertEqual(self.timers(), [])
        self.inner.pending().errback(TargetLost("closed"))
        self.assertTrue(result(d).check(TargetLost))


class SpacedTargetTests(SynchronousTestCase):
    def test_gapAfterEachAnswer(self):
        clock = Clock()
        inner = ScriptedTarget()
        spaced = SpacedTarget(inner, 0.05, clock)
        first = spaced.roundTrip(b"1")
        self.assertEqual(inner.requests, [b"1"])
        clock.advance(1.0)
        inner.pending().callback(b"a")
        self.assertEqual(result(first), b"a")
        second = spaced.roundTrip(b"2")
        clock.advance(0.049)
        self.assertEqual(inner.requests, [b"1"])
        clock.advance(0.002)
        self.assertEqual(inner.requests, [b"1", b"2"])
        inner.pending().errback(TargetLost("closed"))
        self.assertTrue(result(second).check(TargetLost))
        # A failure counts as the end of an answer too.
        spaced.roundTrip(b"3")
        self.assertEqual(len(inner.calls), 2)

    def test_cancelledDuringGap(self):
        """
        Given up while waiting for its gap, a request is never sent, and
        fails as ITarget says: L{TargetTimeout}.
        """
        clock = Clock()
        inner = ScriptedTarget()
        spaced = SpacedTarget(inner, 1.0, clock)
        spaced.roundTrip(b"1")
        inner.pending().callback(b"a")
        waiting = spaced.roundTrip(b"2")
        waiting.cancel()
        self.assertTrue(result(waiting).check(TargetTimeout))
        clock.advance(2.0)
        self.assertEqual(inner.requests, [b"1"])
        self.assertEqual(clock.getDelayedCalls(), [])

    def test_cancelledInFlight(self):
        clock = Clock()
        inner = ScriptedTarget()
        spaced = SpacedTarget(inner, 1.0, clock)
        spaced.roundTrip(b"1")
        inner.pending().callback(b"a")
        second = spaced.roundTrip(b"2")
        clock.advance(1.0)
        second.cancel()
        self.assertEqual(inner.cancelled, 1)
        self.assertTrue(result(second).check(TargetTimeout))


# -- end to end, real pymodbus clients


class UnitMapEndToEndTests(TestCase):
    timeout = 15

    async def test_huaweiUnitMap(self):
        """
        C{--unit-map 1=0}: the device sees unit 0, the client unit 1, both in
        pymodbus's view and byte for byte; another unit passes unchanged.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(self, "modbus", device.listen(self), "--unit-map", "1=0")
        self.assertEqual(await deferToThread(readRegister, port, 7, 1), ("value", 7))
        written = await deferToThread(
            pymodbus, port, lambda c: c.write_register(3, 99, device_id=1)
        )
        self.assertEqual((written.address, written.registers), (3, [99]))
        self.assertEqual(await deferToThread(readRegister, port, 8, 5), ("value", 8))
        answer = await deferToThread(
            rawRoundTrip, port, adu(0x1234, 1, readPDU(9)), 11
        )
        self.assertEqual(answer, adu(0x1234, 1, b"\x03\x02\x00\x09"))
        self.assertEqual(device.seen(), [(0, 3), (0, 6), (5, 3), (0, 3)])

    async def test_serialUnitMap(self):
        """
        C{modbus-serial}: pymodbus RTU clients of unit 1 reach the device's
        address 2.
        """
        device = RecordingDevice(kind="serial")
        port, _ = await startMultiplexer(
            self, "modbus-serial", device.listen(self), "--unit-map", "1=2"
        )
        self.assertEqual(
            await deferToThread(readRegister, port, 4, 1, FramerType.RTU), ("value", 4)
        )
        self.assertEqual(device.seen(), [(2, 3)])


class RouteEndToEndTests(TestCase):
    timeout = 20

    async def test_slowDeviceHoldsUpNoOther(self):
        """
        Unit 2 is routed to a device that takes 2 s to answer; while a
        request for it is in flight, unit 1's client reads 5 times at its
        own device's pace. With C{--unit-map 2=7}, routing still uses the
        client's unit 2; the slow device sees 7.
        """
        fast = RecordingDevice()
        slow = RecordingDevice(delay=2.0)
        port, multiplexer = await startMultiplexer(
            self, "modbus", fast.listen(self),
            "--route", f"2=127.0.0.1:{slow.listen(self)}", "--unit-map", "2=7",
        )
        slowRead = deferToThread(readRegister, port, 42, 2)
        await until(lambda: slow.requests)
        values, took = await deferToThread(timedReads, port, range(5), 1)
        self.assertEqual(values, list(range(5)))
        self.assertLess(took, 1.0)
        self.assertFalse(slowRead.called)
        self.assertEqual(await slowRead, ("value", 42))
        self.assertEqual(fast.seen(), [(1, 3)] * 5)
        self.assertEqual(slow.seen(), [(7, 3)])

    async def test_deadRoute(self):
        """
        A route to a device that refuses: its unit gets 0x0A at once; the
        default target's units are served.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--route", f"3=127.0.0.1:{freePort()}",
            "--retry-delay", "5s",
        )
        started = time.monotonic()
        self.assertEqual(
            await deferToThread(readRegister, port, 1, 3),
            ("exception", GATEWAY_PATH_UNAVAILABLE),
        )
        self.assertLess(time.monotonic() - started, 2.0)
        self.assertEqual(await deferToThread(readRegister, port, 1, 1), ("value", 1))
        self.assertEqual(device.seen(), [(1, 3)])

    async def test_connectionsPerTarget(self):
        """
        C{--connections 2} opens two connections to each target.
        """
        one, two = RecordingDevice(), RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus", one.listen(self), "--route", f"2=127.0.0.1:{two.listen(self)}",
            "--connections", "2",
        )
        await until(lambda: one.accepted == 2 and two.accepted == 2)
        reads = [deferToThread(readRegister, port, i, 1 + i % 2) for i in range(6)]
        self.assertEqual(
            await gatherResults(reads), [("value", i) for i in range(6)]
        )
        self.assertEqual(sorted(one.seen()), [(1, 3)] * 3)
        self.assertEqual(sorted(two.seen()), [(2, 3)] * 3)


def pymodbusWrites(port, unit=1):
    """
    Every public write pymodbus makes, in turn: what each returned.
    """
    calls = [
        lambda c: c.write_coil(1, True, device_id=unit),
        lambda c: c.write_register(2, 0x1234, device_id=unit),
        lambda c: c.write_coils(3, [True, False, True], device_id=unit),
        lambda c: c.write_registers(4, [5, 6], device_id=unit),
        lambda c: c.mask_write_register(address=5, and_mask=0xF0F0, or_mask=1, device_id=unit),
        lambda c: c.readwrite_registers(
            read_address=1, read_count=2, write_address=6, values=[7], device_id=unit
        ),
    ]
    return [pymodbus(port, call) for call in calls]


class ReadOnlyEndToEndTests(TestCase):
    timeout = 15

    async def test_deny(self):
        """
        Every write is answered 0x01 and none reaches the device; reads do.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(self, "modbus", device.listen(self), "--read-only", "deny")
        results = await deferToThread(pymodbusWrites, port)
        self.assertEqual(results, [("exception", ILLEGAL_FUNCTION)] * 6)
        self.assertEqual(device.requests, [])
        self.assertEqual(await deferToThread(readRegister, port, 5), ("value", 5))
        self.assertEqual(device.seen(), [(1, 3)])

    async def test_ignore(self):
        """
        5, 6, 15 and 16 get the answer the device would have given, 22 and
        23 exception 0x01; the device saw nothing.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--read-only", "ignore"
        )
        coil, register, coils, registers, mask, readWrite = await deferToThread(
            pymodbusWrites, port
        )
        self.assertEqual((coil.address, coil.bits[0]), (1, True))
        self.assertEqual((register.address, register.registers), (2, [0x1234]))
        self.assertEqual((coils.address, coils.count), (3, 3))
        self.assertEqual((registers.address, registers.count), (4, 2))
        self.assertEqual(mask, ("exception", ILLEGAL_FUNCTION))
        self.assertEqual(readWrite, ("exception", ILLEGAL_FUNCTION))
        self.assertEqual(device.requests, [])

    async def test_someUnits(self):
        """
        C{--read-only deny:2}: unit 2's writes are denied, unit 1's reach
        the device.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--read-only", "deny:2"
        )
        write = lambda unit: lambda c: c.write_register(2, 9, device_id=unit)
        self.assertEqual(
            await deferToThread(pymodbus, port, write(2)), ("exception", ILLEGAL_FUNCTION)
        )
        written = await deferToThread(pymodbus, port, write(1))
        self.assertEqual(written.registers, [9])
        self.assertEqual(device.seen(), [(1, 6)])

    async def test_rtuOverTCP(self):
        """
        C{modbus-rtu}: the denial is an MBAP + CRC frame with the request's
        id, unit and function code.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus-rtu", device.listen(self), "--read-only", "deny"
        )
        answer = await deferToThread(
            rawRoundTrip, port, rtuOverTCP(0x0102, 4, b"\x06\x00\x01\x00\x02"), 11
        )
        self.assertEqual(answer, rtuOverTCP(0x0102, 4, b"\x86\x01"))
        self.assertEqual(device.requests, [])

    async def test_vendorCodeForwarded(self):
        """
        A vendor's function code (0x41) is forwarded untouched through
        read-only and retries, and sent once even when it goes unanswered.
        """
        device = RecordingDevice(
            behaviour=lambda device, received: "ignore" if received.pdu[1:2] == b"\x00" else "answer"
        )
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--read-only", "deny", "--retries", "2",
            "--attempt-timeout", "200ms", "--timeout", "1s",
        )
        vendor = b"\x41\x01\x02\x03"
        answer = await deferToThread(rawRoundTrip, port, adu(9, 1, vendor), 11)
        self.assertEqual(answer, adu(9, 1, vendor))
        answer = await deferToThread(rawRoundTrip, port, adu(10, 1, b"\x41\x00"), 9)
        self.assertEqual(answer, adu(10, 1, bytes((0xC1, GATEWAY_TARGET_FAILED))))
        self.assertEqual([r.pdu for r in device.requests], [vendor, b"\x41\x00"])


class RequestGapEndToEndTests(TestCase):
    timeout = 15

    async def test_gapBetweenRequests(self):
        """
        C{--request-gap 50ms}: three clients read at once, and the device
        receives each request at least 50 ms after the one before.
        """
        device = RecordingDevice()
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--request-gap", "50ms"
        )
        results = await gatherResults(
            [deferToThread(timedReads, port, range(4), 1) for _ in range(3)]
        )
        self.assertEqual([values for values, _ in results], [list(range(4))] * 3)
        times = [r.at for r in device.requests]
        self.assertEqual(len(times), 12)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        self.assertGreaterEqual(min(gaps), 0.049)
        self.assertLess(times[-1] - times[0], 11 * 0.05 + 1.0)


class RetriesEndToEndTests(TestCase):
    timeout = 20

    async def test_readsRetried(self):
        """
        C{--retries 2}: a device that ignores the first attempt of each
        read; every read succeeds, each sent twice.
        """
        device = RecordingDevice(behaviour=ignoreFirstAttemptOfReads)
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--retries", "2",
            "--attempt-timeout", "300ms", "--timeout", "5s",
        )
        values, took = await deferToThread(timedReads, port, [10, 11, 12])
        self.assertEqual(values, [10, 11, 12])
        self.assertEqual(device.seen(), [(1, 3)] * 6)
        # Each retry went over a new connection: the abandoned attempt's
        # late answer could reach no one.
        self.assertEqual(
            [r.connection for r in device.requests], [0, 1, 1, 2, 2, 3]
        )

    async def test_retriesExhausted(self):
        """
        A device that never answers reads: three attempts, then 0x0B.
        """
        device = RecordingDevice(behaviour=lambda device, received: "ignore")
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--retries", "2",
            "--attempt-timeout", "300ms", "--timeout", "5s",
        )
        started = time.monotonic()
        self.assertEqual(
            await deferToThread(readRegister, port, 1),
            ("exception", GATEWAY_TARGET_FAILED),
        )
        self.assertLess(time.monotonic() - started, 3.0)
        self.assertEqual(device.seen(), [(1, 3)] * 3)

    async def test_busyRetried(self):
        """
        Exception 0x06 (device busy) is retried; the client gets the value.
        """
        device = RecordingDevice(
            behaviour=lambda device, received: "busy" if len(device.requests) == 1 else "answer"
        )
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--retries", "1"
        )
        self.assertEqual(await deferToThread(readRegister, port, 6), ("value", 6))
        self.assertEqual(device.seen(), [(1, 3)] * 2)

    async def test_writesNotRetried(self):
        """
        A write the device ignores is sent once and answered 0x0B at
        --timeout; the next read works.
        """
        device = RecordingDevice(behaviour=ignoreWrites)
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--retries", "2",
            "--attempt-timeout", "300ms", "--timeout", "1500ms",
        )
        started = time.monotonic()
        self.assertEqual(
            await deferToThread(pymodbus, port, lambda c: c.write_register(1, 2, device_id=1)),
            ("exception", GATEWAY_TARGET_FAILED),
        )
        self.assertGreaterEqual(time.monotonic() - started, 1.4)
        self.assertEqual(await deferToThread(readRegister, port, 3), ("value", 3))
        self.assertEqual(device.seen(), [(1, 6), (1, 3)])

    async def test_withUnitMapAndGap(self):
        """
        Retries go to the device's unit and wait their gap.
        """
        device = RecordingDevice(behaviour=ignoreFirstAttemptOfReads)
        port, _ = await startMultiplexer(
            self, "modbus", device.listen(self), "--retries", "1", "--unit-map", "1=0",
            "--attempt-timeout", "300ms", "--request-gap", "100ms", "--timeout", "5s",
        )
        self.assertEqual(await deferToThread(readRegister, port, 5, 1), ("value", 5))
        self.assertEqual(device.seen(), [(0, 3)] * 2)
        first, second = device.requests
        self.assertGreaterEqual(second.at - first.at, 0.3 + 0.1)
