"""
Tests for L{tcpmux.protocols.modbus}: MBAP framing, transaction id checks
and gateway exception responses.
"""

import socket

from pymodbus.client import ModbusTcpClient
from twisted.internet.defer import gatherResults
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.modbus import (
    ModbusTCPReceiver,
    application,
    exceptionResponse,
)
from tests.framers import KeepingOpen, Recording, feed
from tests.modbus import adu, clientSession
from tests.support import runExample, startMultiplexer


READ = adu(1, 1, b"\x03\x00\x00\x00\x02")
WRITE = adu(2, 7, b"\x10\x00\x10\x00\x01\x02\x12\x34")


class ModbusFramingTests(SynchronousTestCase):
    def test_byteAtATime(self):
        """
        An ADU arriving a byte at a time is delivered once, whole.
        """
        data = READ + WRITE
        _, recorder = feed(ModbusTCPReceiver, *[data[i : i + 1] for i in range(len(data))])
        self.assertEqual(recorder.messages, [READ, WRITE])

    def test_merged(self):
        """
        Several ADUs in one read are delivered one by one; the remainder
        waits.
        """
        framer, recorder = feed(ModbusTCPReceiver, READ + WRITE + READ[:5])
        self.assertEqual(recorder.messages, [READ, WRITE])
        framer.dataReceived(READ[5:])
        self.assertEqual(recorder.messages, [READ, WRITE, READ])

    def test_largestADU(self):
        """
        A 260-byte ADU (length field 254) is valid.
        """
        big = adu(9, 1, b"\x10" + b"\x00" * 252)
        self.assertEqual(len(big), 260)
        framer, recorder = feed(ModbusTCPReceiver, big)
        self.assertEqual(recorder.messages, [big])
        self.assertFalse(framer.transport.disconnecting)

    def test_wrongProtocolId(self):
        """
        A protocol id other than 0 is refused as soon as its bytes arrive,
        and the connection is closed.
        """
        framer, recorder = feed(ModbusTCPReceiver, READ[:2] + b"\x00\x01")
        self.assertEqual(recorder.errors, ["Modbus TCP protocol id is 1, not 0"])
        self.assertTrue(framer.transport.disconnecting)

    def test_lengthTooLarge(self):
        """
        A length field over 254 is refused without waiting for the body.
        """
        framer, recorder = feed(ModbusTCPReceiver, b"\x00\x01\x00\x00\x00\xff")
        self.assertEqual(recorder.errors, ["Modbus TCP length field is 255, not 2..254"])
        self.assertTrue(framer.transport.disconnecting)

    def test_lengthTooSmall(self):
        """
        A length field under 2 (no function code) is refused.
        """
        _, recorder = feed(ModbusTCPReceiver, b"\x00\x01\x00\x00\x00\x01\x01")
        self.assertEqual(recorder.errors, ["Modbus TCP length field is 1, not 2..254"])
        self.assertEqual(recorder.messages, [])

    def test_nothingAfterError(self):
        """
        After a framing error, valid ADUs in the same read are not delivered.
        """
        _, recorder = feed(ModbusTCPReceiver, READ + b"\x00\x01\x00\x07" + READ)
        self.assertEqual(recorder.messages, [READ])
        self.assertEqual(len(recorder.errors), 1)

    def test_nothingAfterErrorWhileOpen(self):
        """
        After a framing error nothing more is delivered, from the same read
        or a later one, even while the receiver keeps the connection open.
        """
        framer, recorder = feed(
            ModbusTCPReceiver, READ + b"\x00\x01\x00\x07" + READ, recorder=KeepingOpen()
        )
        framer.dataReceived(READ)
        self.assertEqual(recorder.messages, [READ])
        self.assertEqual(len(recorder.errors), 1)
        self.assertEqual(framer.buffered(), 0)

    def test_responseFramerPassesEveryResponse(self):
        """
        The response framer passes on every response, whatever its
        transaction id: the target session matches them to requests by id.
        """
        recorder = Recording()
        framer = application.pipelining.buildResponseFramer(recorder)
        framer.makeConnection(StringTransport())
        late = adu(1, 1, b"\x03\x04\x00\x01\x00\x02")
        answer = adu(2, 7, b"\x10\x00\x10\x00\x01")
        framer.dataReceived(late + answer)
        self.assertEqual(recorder.messages, [late, answer])
        self.assertIs(recorder.framer, framer)


class ExceptionResponseTests(SynchronousTestCase):
    def test_unavailable(self):
        """
        With no target connection the client gets exception 0x0A with its
        own transaction id, unit id and function code.
        """
        self.assertEqual(
            application.errorResponse(WRITE, TargetUnavailable("refused")),
            b"\x00\x02\x00\x00\x00\x03\x07\x90\x0a",
        )

    def test_timeout(self):
        """
        A timeout, or a connection lost mid-request, gives 0x0B.
        """
        expected = b"\x00\x01\x00\x00\x00\x03\x01\x83\x0b"
        self.assertEqual(application.errorResponse(READ, TargetTimeout("t")), expected)
        self.assertEqual(application.errorResponse(READ, TargetLost("l")), expected)

    def test_exceptionResponse(self):
        self.assertEqual(
            exceptionResponse(READ, 0x06), b"\x00\x01\x00\x00\x00\x03\x01\x83\x06"
        )


class MisbehavingClientTests(TestCase):
    timeout = 30

    async def test_stalledHalfSentClientDelaysNoOne(self):
        """
        A client that sent half a request and stalls holds up nobody: only
        whole requests queue for the target.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, _ = await startMultiplexer(self, "modbus", devicePort)
        stalled = socket.create_connection(("127.0.0.1", port))
        self.addCleanup(stalled.close)
        stalled.sendall(READ[:9])
        results = await gatherResults(
            [deferToThread(clientSession, port, index) for index in range(3)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(
                seen, [[index * 100 + r, r, index] for r in range(5)]
            )
        # The stalled client finishes its request later and is answered.
        stalled.sendall(READ[9:])
        stalled.settimeout(10)
        answer = await deferToThread(stalled.recv, 100)
        self.assertEqual(answer[:2], READ[:2])
        self.assertEqual(answer[7], 3)
        self.assertEqual(device.count("accepted connection"), 1)

    async def test_clientLeavesBeforeItsAnswer(self):
        """
        A client that sends requests and leaves before the answers harms no
        one: the next client gets its own answers.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(self, "modbus", devicePort)

        def hitAndRun():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"".join(adu(n, 1, b"\x03\x00\x00\x00\x01") for n in range(20)))

        await deferToThread(hitAndRun)
        results = await gatherResults(
            [deferToThread(clientSession, port, index) for index in range(1, 4)]
        )
        for index, seen in zip(range(1, 4), results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(5)])
        self.assertEqual(device.count("accepted connection"), 1)

    async def test_badHeaderClosesOnlyThatClient(self):
        """
        A client sending a wrong protocol id is disconnected; a pymodbus
        client connected at the same time carries on.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, _ = await startMultiplexer(self, "modbus", devicePort)
        good = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
        self.assertTrue(await deferToThread(good.connect))
        self.addCleanup(good.close)

        def badClient():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"\x00\x01\x00\x05\x00\x06\x01\x03\x00\x00\x00\x01")
                return sock.recv(100)

        self.assertEqual(await deferToThread(badClient), b"")
        read = await deferToThread(good.read_holding_registers, 0, count=2, device_id=1)
        self.assertFalse(read.isError())
        self.assertEqual(len(read.registers), 2)
