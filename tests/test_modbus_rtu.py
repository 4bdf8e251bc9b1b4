"""
Tests for L{tcpmux.protocols.modbus_rtu}: MBAP framing whose length also
covers a trailing CRC-16, checked; transaction id matching; gateway
exception responses in the same format.
"""

import socket
import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.modbus_rtu import (
    ModbusRTUOverTCPReceiver,
    application,
    exceptionFrame,
)
from tests.framers import bytewise, chunked, feed
from tests.modbus import referenceCRC, splitModbus
from tests.support import freePort, receiveExactly, startMultiplexer


def crc(data):
    return referenceCRC(data).to_bytes(2, "little")


def frame(tid, unit, pdu, protocol=0):
    """
    An MBAP + PDU + CRC frame, its CRC by the bitwise reference.
    """
    body = bytes((unit,)) + pdu
    return struct.pack(">HHH", tid, protocol, len(body) + 2) + body + crc(body)


READ = frame(1, 1, b"\x03\x00\x00\x00\x02")
READ_ANSWER = frame(1, 1, b"\x03\x04\x00\x01\x00\x02")
WRITE = frame(2, 7, b"\x10\x00\x10\x00\x01\x02\x12\x34")
WRITE_ANSWER = frame(2, 7, b"\x10\x00\x10\x00\x01")


class FramingTests(SynchronousTestCase):
    def test_byteAtATime(self):
        _, recorder = feed(ModbusRTUOverTCPReceiver, *bytewise(READ + WRITE))
        self.assertEqual(recorder.messages, [READ, WRITE])

    def test_merged(self):
        framer, recorder = feed(ModbusRTUOverTCPReceiver, READ + WRITE + READ[:7])
        self.assertEqual(recorder.messages, [READ, WRITE])
        framer.dataReceived(READ[7:])
        self.assertEqual(recorder.messages, [READ, WRITE, READ])

    def test_largestAndSmallest(self):
        """
        A 262-byte frame (length 256) and a 10-byte one (length 4, a bare
        function code) are valid.
        """
        big = frame(9, 1, b"\x10" + b"\x00" * 252)
        small = frame(10, 1, b"\x07")
        self.assertEqual(len(big), ModbusRTUOverTCPReceiver.maxMessageSize)
        self.assertEqual(len(small), 10)
        framer, recorder = feed(ModbusRTUOverTCPReceiver, big + small)
        self.assertEqual(recorder.messages, [big, small])
        self.assertFalse(framer.transport.disconnecting)

    def assertRefused(self, data, reason):
        framer, recorder = feed(ModbusRTUOverTCPReceiver, data)
        self.assertEqual(recorder.errors, [reason])
        self.assertEqual(recorder.messages, [])
        self.assertTrue(framer.transport.disconnecting)

    def test_wrongProtocolId(self):
        self.assertRefused(b"\x00\x01\x00\x01", "Modbus RTU-over-TCP protocol id is 1, not 0")

    def test_lengthOutOfRange(self):
        """
        A length under 4 or over 256 is refused without waiting for a body.
        """
        reason = "Modbus RTU-over-TCP length field is {}, not 4..256"
        self.assertRefused(b"\x00\x01\x00\x00\x01\x01", reason.format(257))
        self.assertRefused(b"\x00\x01\x00\x00\x00\x03", reason.format(3))

    def test_badCRC(self):
        """
        A frame whose CRC does not match is refused, and nothing after it
        is delivered.
        """
        bad = READ[:-2] + b"\x00\x00"
        framer, recorder = feed(ModbusRTUOverTCPReceiver, WRITE + bad + READ)
        framer.dataReceived(READ)
        self.assertEqual(recorder.messages, [WRITE])
        self.assertEqual(
            recorder.errors, [f"bad CRC: got 0000, computed {READ[-2:].hex()}"]
        )
        self.assertTrue(framer.transport.disconnecting)

    def test_crcCoversUnitId(self):
        """
        The CRC is over unit id and PDU: a frame whose CRC covers the PDU
        alone is refused.
        """
        pdu = b"\x03\x00\x00\x00\x02"
        wrong = struct.pack(">HHHB", 1, 0, 8, 1) + pdu + crc(pdu)
        _, recorder = feed(ModbusRTUOverTCPReceiver, wrong)
        self.assertEqual(len(recorder.errors), 1)

    def test_idsRewrittenOnTheTargetConnection(self):
        """
        Transaction ids are rewritten as for Modbus TCP: the CRC covers the
        unit id and the PDU, so a request with another id is still valid.
        """
        ids = application.pipelining
        rewritten = ids.requestWithId(WRITE, 0x1234)
        self.assertEqual(rewritten[:2], b"\x12\x34")
        _, recorder = feed(ModbusRTUOverTCPReceiver, rewritten)
        self.assertEqual(recorder.messages, [rewritten])
        self.assertEqual(ids.responseFor(WRITE_ANSWER, WRITE), WRITE_ANSWER)

    def test_badResponseCRC(self):
        framer, recorder = feed(ModbusRTUOverTCPReceiver)
        framer.expectResponseTo(READ)
        framer.dataReceived(READ_ANSWER[:-1] + b"\x00")
        self.assertEqual(recorder.messages, [])
        self.assertEqual(len(recorder.errors), 1)


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("modbus-rtu"), application)
        self.assertIs(application.requestFramer, ModbusRTUOverTCPReceiver)
        self.assertIs(application.responseFramer, ModbusRTUOverTCPReceiver)

    def test_unavailable(self):
        """
        No target connection: exception 0x0A with the request's transaction
        id, unit id and function code, a length of 5 and a correct CRC.
        """
        answer = application.errorResponse(WRITE, TargetUnavailable("refused"))
        self.assertEqual(answer, b"\x00\x02\x00\x00\x00\x05\x07\x90\x0a" + crc(b"\x07\x90\x0a"))
        self.assertEqual(answer, frame(2, 7, b"\x90\x0a"))

    def test_timeout(self):
        expected = frame(1, 1, b"\x83\x0b")
        self.assertEqual(application.errorResponse(READ, TargetTimeout("t")), expected)
        self.assertEqual(application.errorResponse(READ, TargetLost("l")), expected)
        self.assertEqual(exceptionFrame(READ, 0x0B), expected)

    def test_exceptionFrameIsFramed(self):
        """
        The gateway's answer is itself a valid frame for a client.
        """
        answer = exceptionFrame(WRITE, 0x0A)
        framer, recorder = feed(ModbusRTUOverTCPReceiver)
        framer.expectResponseTo(WRITE)
        framer.dataReceived(answer)
        self.assertEqual(recorder.messages, [answer])

    def test_describe(self):
        self.assertEqual(application.describe(WRITE), "tid=0002 unit=7 fc=16")


def frames():
    return st.tuples(
        st.integers(0, 0xFFFF), st.integers(0, 255), st.binary(min_size=1, max_size=253)
    ).map(lambda t: frame(*t))


cuts = st.lists(st.integers(min_value=0), max_size=20)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(frames(), max_size=6), cuts)
    def test_anyChunking(self, sent, cuts):
        framer, recorder = feed(ModbusRTUOverTCPReceiver)
        for chunk in chunked(b"".join(sent), cuts):
            framer.dataReceived(chunk)
            self.assertLess(framer.buffered(), framer.maxMessageSize)
        self.assertEqual(recorder.messages, sent)
        self.assertFalse(framer.transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=600),
            st.lists(st.one_of(frames(), st.binary(max_size=8))).map(b"".join),
        ),
        cuts,
    )
    def test_arbitraryBytes(self, data, cuts):
        """
        Whatever the bytes: nothing raised, less than 262 bytes buffered,
        only whole frames with a good CRC delivered, exactly the start of
        the stream, and nothing after a framing error.
        """
        framer, recorder = feed(ModbusRTUOverTCPReceiver)
        for chunk in chunked(data, cuts):
            if framer.transport.disconnecting:
                break
            framer.dataReceived(chunk)
            self.assertLess(framer.buffered(), framer.maxMessageSize)
        delivered = b"".join(recorder.messages)
        self.assertEqual(data[: len(delivered)], delivered)
        for message in recorder.messages:
            self.assertEqual(crc(message[6:-2]), message[-2:])
        self.assertLessEqual(len(recorder.errors), 1)
        self.assertEqual(framer.transport.disconnecting, bool(recorder.errors))


# -- end to end, over real TCP


class RTUOverTCPDevice(Protocol):
    """
    A Modbus device speaking MBAP + PDU + CRC, written from the wire format:
    it checks each request's header and CRC (a bad one closes the
    connection) and answers function codes 3 and 16 on 100 shared holding
    registers, with the request's transaction id and unit id.
    """

    _buffer = b""

    def connectionMade(self):
        self.factory.connections += 1

    def dataReceived(self, data):
        messages, self._buffer = splitModbus(self._buffer + data)
        for message in messages:
            tid, protocol = struct.unpack(">HH", message[:4])
            body = message[6:]
            if protocol != 0 or body[-2:] != crc(body[:-2]):
                self.factory.errors.append(body)
                self.transport.loseConnection()
                return
            unit, pdu = body[0], body[1:-2]
            self.transport.write(frame(tid, unit, self.answer(pdu)))

    def answer(self, pdu):
        registers = self.factory.registers
        code = pdu[0]
        if code == 3:
            start, count = struct.unpack(">HH", pdu[1:5])
            values = registers[start : start + count]
            return struct.pack(f">BB{count}H", 3, 2 * count, *values)
        if code == 16:
            start, count = struct.unpack(">HH", pdu[1:5])
            registers[start : start + count] = struct.unpack(f">{count}H", pdu[6:])
            return pdu[:5]
        return bytes((code | 0x80, 0x01))


class Devices(Factory):
    protocol = RTUOverTCPDevice

    def __init__(self):
        self.connections = 0
        self.errors = []
        self.registers = [0] * 100


def receiveFrame(sock):
    """
    Receive one MBAP-headed frame, header included.
    """
    header = receiveExactly(sock, 6)
    (length,) = struct.unpack(">H", header[4:])
    return header + receiveExactly(sock, length)


def rawClientSession(port, index, rounds=5):
    """
    One client built from raw bytes: each round, pipeline a write of its
    own three registers and a read of them, then check both answers
    (transaction id, unit id, CRC) and return what it read.
    """
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        for round_ in range(rounds):
            values = (index * 100 + round_, round_, index)
            tid = index * 1000 + round_ * 2
            base = index * 10
            write = frame(tid, index, struct.pack(">BHHB3H", 16, base, 3, 6, *values))
            read = frame(tid + 1, index, struct.pack(">BHH", 3, base, 3))
            sock.sendall(write + read)
            written, answer = receiveFrame(sock), receiveFrame(sock)
            assert written == frame(tid, index, struct.pack(">BHH", 16, base, 3)), written
            assert answer[:7] == struct.pack(">HHHB", tid + 1, 0, 11, index), answer
            assert answer[-2:] == crc(answer[6:-2]), answer
            seen.append(list(struct.unpack(">3H", answer[9:15])))
    return seen


def oneRequest(port, request):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        try:
            return receiveFrame(sock)
        except ConnectionError:
            return b""


class Silent(Protocol):
    pass


class EndToEndTests(TestCase):
    timeout = 60

    async def listen(self, factory):
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            factory
        )
        self.addCleanup(listening.stopListening)
        return listening.getHost().port

    async def test_manyClientsOneConnection(self):
        """
        Six clients at once, each pipelining writes and reads of its own
        registers, get their own answers over one device connection; the
        device never saw a bad CRC.
        """
        devices = Devices()
        port, _ = await startMultiplexer(self, "modbus-rtu", await self.listen(devices))
        results = await gatherResults(
            [deferToThread(rawClientSession, port, index) for index in range(1, 7)]
        )
        for index, seen in zip(range(1, 7), results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(5)])
        self.assertEqual(devices.connections, 1)
        self.assertEqual(devices.errors, [])

    async def test_badCRCClosesOnlyThatClient(self):
        devices = Devices()
        port, _ = await startMultiplexer(self, "modbus-rtu", await self.listen(devices))
        self.assertEqual(await deferToThread(oneRequest, port, READ[:-1] + b"\x00"), b"")
        self.assertEqual(await deferToThread(rawClientSession, port, 3, 1), [[300, 0, 3]])
        self.assertEqual(devices.connections, 1)
        self.assertEqual(devices.errors, [])

    async def test_targetUnavailable(self):
        port, _ = await startMultiplexer(self, "modbus-rtu", freePort())
        self.assertEqual(
            await deferToThread(oneRequest, port, WRITE), frame(2, 7, b"\x90\x0a")
        )

    async def test_timeout(self):
        port, _ = await startMultiplexer(
            self, "modbus-rtu", await self.listen(Factory.forProtocol(Silent)),
            "--timeout", "0.3",
        )
        self.assertEqual(
            await deferToThread(oneRequest, port, READ), frame(1, 1, b"\x83\x0b")
        )
