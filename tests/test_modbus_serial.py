"""
Tests for L{tcpmux.protocols.modbus_serial} and L{tcpmux.protocols.crc}:
raw RTU frames over TCP, framed by function code and direction, checked
against frames pymodbus builds, and pymodbus RTU clients sharing one
pymodbus RTU server connection through tcpmux.
"""

import asyncio
import socket
import threading

from hypothesis import given, settings
from hypothesis import strategies as st
from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from pymodbus.pdu.device import ModbusDeviceIdentification
from pymodbus.framer.rtu import FramerRTU
from pymodbus.pdu import bit_message as bit
from pymodbus.pdu import file_message as file
from pymodbus.pdu import mei_message as mei
from pymodbus.pdu import other_message as other
from pymodbus.pdu import register_message as reg
from pymodbus.pdu.exceptionresponse import ExceptionResponse
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.crc import checkCRC, crc16, crcBytes, withCRC
from tcpmux.protocols.modbus_serial import (
    RESPONSE_SIZES,
    RTUReceiver,
    RTURequestReceiver,
    RTUResponseReceiver,
    application,
    exceptionFrame,
)
from tests.framers import Recording, bytewise, chunked, feed, feedLikeAReactor
from tests.modbus import referenceCRC
from tests.support import freePort, startMultiplexer


def rtu(pdu, address=1):
    """
    The RTU frame pymodbus would send for C{pdu}, its CRC by pymodbus.
    """
    body = bytes((address, pdu.function_code)) + pdu.encode()
    return body + FramerRTU.compute_CRC(body).to_bytes(2, "big")


IDENTITY = {0: b"tcpmux", 1: b"RTU-1", 2: b"1.0", 0x80: b"x" * 40}

# (request, response) for every supported function code, built by pymodbus.
# (Each PDU is encoded once: pymodbus's device identification response
# counts its objects again each time it is encoded.)
EXCHANGES = [
    (bit.ReadCoilsRequest(address=1, count=19), bit.ReadCoilsResponse(bits=[True] * 19)),
    (
        bit.ReadDiscreteInputsRequest(address=2, count=3),
        bit.ReadDiscreteInputsResponse(bits=[False, True, True]),
    ),
    (
        reg.ReadHoldingRegistersRequest(address=3, count=4),
        reg.ReadHoldingRegistersResponse(registers=[1, 2, 3, 4]),
    ),
    (
        reg.ReadInputRegistersRequest(address=4, count=1),
        reg.ReadInputRegistersResponse(registers=[0xBEEF]),
    ),
    (
        bit.WriteSingleCoilRequest(address=5, bits=[True]),
        bit.WriteSingleCoilResponse(address=5, bits=[True]),
    ),
    (
        reg.WriteSingleRegisterRequest(address=6, registers=[7]),
        reg.WriteSingleRegisterResponse(address=6, registers=[7]),
    ),
    (other.ReadExceptionStatusRequest(), other.ReadExceptionStatusResponse(status=0x55)),
    (other.GetCommEventCounterRequest(), other.GetCommEventCounterResponse(count=9)),
    (
        other.GetCommEventLogRequest(),
        other.GetCommEventLogResponse(event_count=2, events=[1, 2, 3]),
    ),
    (
        bit.WriteMultipleCoilsRequest(address=15, bits=[True, False] * 9),
        bit.WriteMultipleCoilsResponse(address=15, count=18),
    ),
    (
        reg.WriteMultipleRegistersRequest(address=16, registers=list(range(10))),
        reg.WriteMultipleRegistersResponse(address=16, count=10),
    ),
    (other.ReportDeviceIdRequest(), other.ReportDeviceIdResponse(identifier=b"tcpmux RTU")),
    (
        file.ReadFileRecordRequest(records=[file.FileRecord(1, 2, record_length=2)] * 2),
        file.ReadFileRecordResponse(
            records=[file.FileRecord(record_data=b"\x00\x01\x00\x02")] * 2
        ),
    ),
    (
        file.WriteFileRecordRequest(records=[file.FileRecord(1, 2, b"\x00\x01\x00\x02")]),
        file.WriteFileRecordResponse(records=[file.FileRecord(1, 2, b"\x00\x01\x00\x02")]),
    ),
    (
        reg.MaskWriteRegisterRequest(address=22, and_mask=0xF0F0, or_mask=0x0101),
        reg.MaskWriteRegisterResponse(address=22, and_mask=0xF0F0, or_mask=0x0101),
    ),
    (
        reg.ReadWriteMultipleRegistersRequest(
            read_address=1, read_count=3, write_address=5, write_registers=[9, 8, 7, 6]
        ),
        reg.ReadWriteMultipleRegistersResponse(registers=[1, 2, 3]),
    ),
    (file.ReadFifoQueueRequest(address=24), file.ReadFifoQueueResponse(values=[5, 6, 7])),
    (
        mei.ReadDeviceInformationRequest(read_code=3, object_id=0),
        mei.ReadDeviceInformationResponse(read_code=3, information=IDENTITY),
    ),
]
EXCHANGES = [(rtu(request), rtu(response)) for request, response in EXCHANGES]

READ = rtu(reg.ReadHoldingRegistersRequest(address=0, count=2), address=17)
READ_ANSWER = rtu(reg.ReadHoldingRegistersResponse(registers=[1, 2]), address=17)
WRITE = rtu(reg.WriteMultipleRegistersRequest(address=8, registers=[1, 2, 3]), address=17)
WRITE_ANSWER = rtu(reg.WriteMultipleRegistersResponse(address=8, count=3), address=17)


class ResponseFrames(RTUReceiver):
    """
    The response framing alone, without the check against a request.
    """

    sizes = RESPONSE_SIZES


class CRCTests(SynchronousTestCase):
    def test_checkValue(self):
        """
        The catalogued check value of CRC-16/MODBUS.
        """
        self.assertEqual(crc16(b"123456789"), 0x4B37)
        self.assertEqual(crcBytes(b"123456789"), b"\x37\x4b")

    @given(st.binary(max_size=300))
    def test_matchesReferenceAndPymodbus(self, data):
        self.assertEqual(crc16(data), referenceCRC(data))
        self.assertEqual(crcBytes(data), FramerRTU.compute_CRC(data).to_bytes(2, "big"))
        self.assertTrue(checkCRC(withCRC(data)))

    def test_checkCRC(self):
        self.assertTrue(checkCRC(READ))
        self.assertFalse(checkCRC(READ[:-1] + bytes([READ[-1] ^ 1])))
        self.assertFalse(checkCRC(b"\x01"))


class FramingTests(SynchronousTestCase):
    def test_everyRequest(self):
        """
        Every supported request, as pymodbus encodes it, is delivered whole,
        whether it arrives a byte at a time or all together.
        """
        frames = [request for request, _ in EXCHANGES]
        stream = b"".join(frames)
        framer, recorder = feed(RTURequestReceiver, *bytewise(stream))
        self.assertEqual(recorder.messages, frames)
        framer, recorder = feed(RTURequestReceiver, stream)
        self.assertEqual(recorder.messages, frames)
        self.assertFalse(framer.transport.disconnecting)

    def test_everyResponse(self):
        """
        Every supported response, as pymodbus encodes it, is delivered as
        the answer to its request, a byte at a time or in one read.
        """
        for request, response in EXCHANGES:
            for chunks in [response], bytewise(response):
                framer, recorder = feed(RTUResponseReceiver)
                framer.expectResponseTo(request)
                for chunk in chunks:
                    framer.dataReceived(chunk)
                self.assertEqual(recorder.messages, [response], request)
                self.assertFalse(framer.transport.disconnecting)

    def test_exceptionResponses(self):
        """
        An exception response (function code | 0x80) is 5 bytes and answers
        the request with that function code.
        """
        for request, _ in EXCHANGES:
            error = rtu(ExceptionResponse(request[1], 0x02))
            self.assertEqual(len(error), 5)
            framer, recorder = feed(RTUResponseReceiver)
            framer.expectResponseTo(request)
            framer.dataReceived(error + request)
            self.assertEqual(recorder.messages, [error])

    def test_largestFrames(self):
        """
        A 256-byte frame is delivered; a byte count that makes a longer one
        is refused as soon as it arrives.
        """
        big = withCRC(b"\x01\x10\x00\x00\x00\x7b\xf7" + b"\x00" * 247)
        self.assertEqual(len(big), RTURequestReceiver.maxMessageSize)
        _, recorder = feed(RTURequestReceiver, big)
        self.assertEqual(recorder.messages, [big])
        framer, recorder = feed(RTURequestReceiver, b"\x01\x10\x00\x00\x00\x7c\xf8")
        self.assertEqual(
            recorder.errors, ["function code 16 frame of 257 bytes is longer than 256"]
        )
        self.assertTrue(framer.transport.disconnecting)
        _, recorder = feed(ResponseFrames, b"\x01\x18\x00\xfb")
        self.assertEqual(len(recorder.errors), 1)

    def test_deviceIdObjectsTooLong(self):
        """
        A device identification response whose objects add up to more than
        256 bytes is refused without waiting for them all.
        """
        head = b"\x01\x2b\x0e\x01\x01\x00\x00\x03"
        framer, recorder = feed(
            ResponseFrames, head + b"\x00\xf0" + b"v" * 240 + b"\x01\x05"
        )
        self.assertEqual(len(recorder.errors), 1)
        self.assertTrue(framer.transport.disconnecting)

    def test_badCRC(self):
        """
        A frame with a bad CRC closes the connection; nothing after it is
        delivered, in the same read or later.
        """
        bad = READ[:-1] + bytes([READ[-1] ^ 0xFF])
        framer, recorder = feed(RTURequestReceiver, READ + bad + WRITE)
        framer.dataReceived(WRITE)
        self.assertEqual(recorder.messages, [READ])
        self.assertEqual(
            recorder.errors,
            [f"bad CRC: got {bad[-2:].hex()}, computed {READ[-2:].hex()}"],
        )
        self.assertTrue(framer.transport.disconnecting)

    def test_unknownFunctionCode(self):
        """
        A function code with no length rule (a vendor's 0x41, diagnostics
        0x08, an exception code from a client) is refused at once.
        """
        for code in 0x41, 0x08, 0x83, 0x00:
            framer, recorder = feed(RTURequestReceiver, bytes((1, code)))
            self.assertEqual(recorder.errors, [f"unknown function code {code}"])
            self.assertTrue(framer.transport.disconnecting)
        _, recorder = feed(ResponseFrames, b"\x01\x41")
        self.assertEqual(recorder.errors, ["unknown function code 65"])

    def test_otherMEIType(self):
        """
        Function code 43 is framed only for MEI type 14 (device
        identification).
        """
        _, recorder = feed(RTURequestReceiver, b"\x01\x2b\x0d")
        self.assertEqual(recorder.errors, ["MEI type 13 is not supported"])
        _, recorder = feed(ResponseFrames, b"\x01\x2b\x0d")
        self.assertEqual(recorder.errors, ["MEI type 13 is not supported"])

    def test_broadcastRefused(self):
        """
        A request to address 0 would get no response: it is refused.
        """
        framer, recorder = feed(RTURequestReceiver, READ + b"\x00")
        self.assertEqual(recorder.messages, [READ])
        self.assertEqual(len(recorder.errors), 1)
        self.assertIn("broadcast", recorder.errors[0])
        self.assertTrue(framer.transport.disconnecting)

    def test_responseMatchedToRequest(self):
        """
        Only a response from the addressed device to the function asked is
        passed on; others are dropped, and so is any response when none is
        expected.
        """
        framer, recorder = feed(RTUResponseReceiver, READ_ANSWER)
        framer.expectResponseTo(WRITE)
        otherDevice = rtu(reg.WriteMultipleRegistersResponse(address=8, count=3), address=18)
        framer.dataReceived(READ_ANSWER + otherDevice + WRITE_ANSWER + WRITE_ANSWER)
        self.assertEqual(recorder.messages, [WRITE_ANSWER])
        self.assertEqual(recorder.errors, [])

    def test_nothingAfterClose(self):
        class Closing(Recording):
            def messageReceived(self, message):
                Recording.messageReceived(self, message)
                self.framer.transport.loseConnection()

        _, recorder = feed(RTURequestReceiver, READ + WRITE, recorder=Closing())
        self.assertEqual(recorder.messages, [READ])


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("modbus-serial"), application)
        self.assertIs(application.requestFramer, RTURequestReceiver)
        self.assertIs(application.responseFramer, RTUResponseReceiver)

    def test_unavailable(self):
        """
        No target connection: exception 0x0A from the addressed device, for
        its function code, with a correct CRC.
        """
        answer = application.errorResponse(WRITE, TargetUnavailable("refused"))
        self.assertEqual(answer[:3], b"\x11\x90\x0a")
        self.assertEqual(answer[3] | answer[4] << 8, referenceCRC(answer[:3]))
        self.assertEqual(answer, rtu(ExceptionResponse(0x10, 0x0A), address=17))

    def test_timeout(self):
        expected = b"\x11\x83\x0b" + referenceCRC(b"\x11\x83\x0b").to_bytes(2, "little")
        self.assertEqual(application.errorResponse(READ, TargetTimeout("t")), expected)
        self.assertEqual(application.errorResponse(READ, TargetLost("l")), expected)
        self.assertEqual(exceptionFrame(READ, 0x0B), expected)

    def test_describe(self):
        self.assertEqual(application.describe(READ), "address=17 fc=3")


# -- properties


def requestFrames():
    """
    Valid request frames of every supported function code.
    """
    address = st.integers(1, 247)

    def fixed(code, size):
        return st.tuples(address, st.binary(min_size=size - 4, max_size=size - 4)).map(
            lambda t: withCRC(bytes((t[0], code)) + t[1])
        )

    def counted(code, before, most):
        return st.tuples(
            address, st.binary(min_size=before, max_size=before), st.binary(max_size=most)
        ).map(lambda t: withCRC(bytes((t[0], code)) + t[1] + bytes((len(t[2]),)) + t[2]))

    return st.one_of(
        [fixed(code, 8) for code in (1, 2, 3, 4, 5, 6)]
        + [fixed(code, 4) for code in (7, 11, 12, 17)]
        + [fixed(22, 10), fixed(24, 6)]
        + [counted(code, 4, 246) for code in (15, 16)]
        + [counted(code, 0, 250) for code in (20, 21)]
        + [counted(23, 8, 242)]
        + [
            st.tuples(address, st.binary(min_size=2, max_size=2)).map(
                lambda t: withCRC(bytes((t[0], 0x2B, 0x0E)) + t[1])
            )
        ]
    )


def responseFrames():
    """
    Valid response frames, including exceptions and device identification.
    """
    address = st.integers(0, 255)
    deviceId = st.tuples(
        address, st.lists(st.binary(max_size=30), max_size=6)
    ).map(
        lambda t: withCRC(
            bytes((t[0], 0x2B, 0x0E, 1, 1, 0, 0, len(t[1])))
            + b"".join(bytes((n, len(v))) + v for n, v in enumerate(t[1]))
        )
    )
    fifo = st.tuples(address, st.binary(max_size=60)).map(
        lambda t: withCRC(bytes((t[0], 0x18)) + len(t[1]).to_bytes(2, "big") + t[1])
    )
    counted = st.tuples(
        address, st.sampled_from([1, 2, 3, 4, 12, 17, 20, 21, 23]), st.binary(max_size=251)
    ).map(lambda t: withCRC(bytes((t[0], t[1], len(t[2]))) + t[2]))
    fixed = st.tuples(
        address, st.sampled_from([(5, 8), (6, 8), (7, 5), (11, 8), (15, 8), (16, 8), (22, 10)])
    ).map(lambda t: withCRC(bytes((t[0], t[1][0])) + b"\x00" * (t[1][1] - 4)))
    exception = st.tuples(address, st.integers(0x80, 0xFF), st.integers(0, 255)).map(
        lambda t: withCRC(bytes(t))
    )
    return st.one_of(deviceId, fifo, counted, fixed, exception)


cuts = st.lists(st.integers(min_value=0), max_size=20)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(requestFrames(), max_size=6), cuts)
    def test_requestsAnyChunking(self, frames, cuts):
        framer, recorder = feed(RTURequestReceiver)
        feedLikeAReactor(framer, chunked(b"".join(frames), cuts))
        self.assertEqual(recorder.messages, frames)
        self.assertFalse(framer.transport.disconnecting)

    @settings(max_examples=200, deadline=None)
    @given(st.lists(responseFrames(), max_size=6), cuts)
    def test_responsesAnyChunking(self, frames, cuts):
        framer, recorder = feed(ResponseFrames)
        feedLikeAReactor(framer, chunked(b"".join(frames), cuts))
        self.assertEqual(recorder.messages, frames)
        self.assertFalse(framer.transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=600),
            st.lists(st.one_of(requestFrames(), responseFrames(), st.binary(max_size=8))).map(
                b"".join
            ),
        ),
        cuts,
    )
    def test_arbitraryBytes(self, data, cuts):
        """
        Whatever the bytes, a framer raises nothing, buffers less than 256
        bytes, and delivers only whole frames with a good CRC that are, in
        order, exactly the start of the stream; it stops at its first
        framing error.
        """
        for framerClass in RTURequestReceiver, ResponseFrames:
            framer, recorder = feed(framerClass)
            feedLikeAReactor(framer, chunked(data, cuts))
            delivered = b"".join(recorder.messages)
            self.assertEqual(data[: len(delivered)], delivered)
            for frame in recorder.messages:
                self.assertTrue(checkCRC(frame))
                self.assertLessEqual(len(frame), 256)
            self.assertLessEqual(len(recorder.errors), 1)
            self.assertEqual(framer.transport.disconnecting, bool(recorder.errors))


# -- end to end: pymodbus RTU-over-TCP clients and server


class RTUDevice:
    """
    pymodbus's own server with the RTU framer over TCP, in a thread with its
    own asyncio loop: 1000 holding registers for any device id, and device
    identification objects.
    """

    def __init__(self):
        self.connections = 0
        self.loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        identity = ModbusDeviceIdentification(
            info_name={"VendorName": "tcpmux", "ProductCode": "RTU-1", "MajorMinorRevision": "1.0"}
        )
        device = SimDevice(
            id=0,
            simdata=[SimData(address=0, count=1000, values=0, datatype=DataType.REGISTERS)],
        )
        self.server = ModbusTcpServer(
            device,
            address=("127.0.0.1", 0),
            framer=FramerType.RTU,
            identity=identity,
            trace_connect=self._connected,
        )
        await self.server.serve_forever(background=True)
        self.port = self.server.transport.sockets[0].getsockname()[1]
        self._ready.set()
        await self.server.serving

    def _connected(self, connected):
        if connected:
            self.connections += 1

    def start(self, testCase):
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the pymodbus RTU server did not start")
        testCase.addCleanup(deferToThread, self.stop)
        return self.port

    def stop(self):
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self._thread.join(10)


def rtuClient(port):
    client = ModbusTcpClient(
        "127.0.0.1", port=port, framer=FramerType.RTU, timeout=10, retries=0
    )
    assert client.connect(), "cannot connect to tcpmux"
    return client


def rtuClientSession(port, index, rounds=5):
    """
    One pymodbus RTU client: write its own registers, read them back,
    several times; return what it read.
    """
    client = rtuClient(port)
    seen = []
    try:
        base = index * 10
        for round_ in range(rounds):
            values = [index * 100 + round_, round_, index]
            written = client.write_registers(base, values, device_id=index)
            assert not written.isError(), written
            assert written.dev_id == index, written
            read = client.read_holding_registers(base, count=3, device_id=index)
            assert not read.isError(), read
            assert read.dev_id == index, read
            seen.append(list(read.registers))
    finally:
        client.close()
    return seen


def deviceInformation(port):
    client = rtuClient(port)
    try:
        return client.read_device_information(read_code=1, device_id=3)
    finally:
        client.close()


def oneRead(port):
    client = rtuClient(port)
    try:
        return client.read_holding_registers(0, count=1, device_id=5)
    finally:
        client.close()


class Silent(Protocol):
    """
    A target that reads requests and never answers.
    """


class EndToEndTests(TestCase):
    timeout = 60

    async def test_manyClientsOneConnection(self):
        """
        Eight pymodbus RTU clients at once, each with its own device id,
        write and read back their own registers over the device's single
        connection; a device identification response is framed from its
        object list.
        """
        device = RTUDevice()
        port, _ = await startMultiplexer(self, "modbus-serial", device.start(self))
        results = await gatherResults(
            [deferToThread(rtuClientSession, port, index) for index in range(1, 9)]
            + [deferToThread(deviceInformation, port)]
        )
        for index, seen in zip(range(1, 9), results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(5)])
        info = results[-1]
        self.assertFalse(info.isError(), info)
        self.assertEqual(info.information, {0: b"tcpmux", 1: b"RTU-1", 2: b"1.0"})
        self.assertEqual(device.connections, 1)

    async def test_badCRCClosesOnlyThatClient(self):
        """
        A client sending a frame with a bad CRC is closed; a pymodbus client
        connected at the same time carries on.
        """
        device = RTUDevice()
        port, _ = await startMultiplexer(self, "modbus-serial", device.start(self))
        good = rtuClient(port)
        self.addCleanup(good.close)

        def badClient():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(READ[:-1] + b"\x00")
                return sock.recv(100)

        self.assertEqual(await deferToThread(badClient), b"")
        read = await deferToThread(good.read_holding_registers, 0, count=2, device_id=1)
        self.assertFalse(read.isError(), read)
        self.assertEqual(read.registers, [0, 0])
        self.assertEqual(device.connections, 1)

    async def test_targetUnavailable(self):
        """
        With nothing listening at the target, a pymodbus client gets
        exception 0x0A (gateway path unavailable).
        """
        port, _ = await startMultiplexer(self, "modbus-serial", freePort())
        response = await deferToThread(oneRead, port)
        self.assertTrue(response.isError())
        self.assertEqual(response.exception_code, 0x0A)
        self.assertEqual(response.dev_id, 5)

    async def test_timeout(self):
        """
        A target that does not answer within --timeout: the client gets
        exception 0x0B (gateway target failed to respond).
        """
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Silent)
        )
        self.addCleanup(listening.stopListening)
        port, _ = await startMultiplexer(
            self, "modbus-serial", listening.getHost().port, "--timeout", "0.3"
        )
        response = await deferToThread(oneRead, port)
        self.assertTrue(response.isError())
        self.assertEqual(response.exception_code, 0x0B)


