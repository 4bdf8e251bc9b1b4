"""
Modbus RTU targets: Modbus TCP clients through tcpmux to RTU devices on a
serial line (a pseudo-terminal stands in for the USB adapter) and behind a
transparent RS-485-to-Ethernet converter (an RTU device over TCP).

The devices here are pymodbus's own serial server, or small hand-written
RTU devices whose framing and CRC are written from the specification
(L{tests.modbus.referenceCRC}), independent of tcpmux's framers.
"""

import asyncio
import os
import select
import socket
import struct
import sys
import tempfile
import threading
import time
import tty

from pymodbus import FramerType
from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.gateway import rtu
from tcpmux.tap import Options
from tests.faults import ask, connect
from tests.modbus import adu, clientSession, referenceCRC
from tests.support import freePort, receiveExactly, startMultiplexer, until


# -- RTU frames, from the specification


def withCRC(body):
    return body + struct.pack("<H", referenceCRC(body))


def crcIsGood(frame):
    return len(frame) > 2 and struct.unpack("<H", frame[-2:])[0] == referenceCRC(frame[:-2])


def requestSize(buffer):
    """
    The size of the RTU request at the start of C{buffer}, or L{None} while
    more bytes are needed (function codes 3, 4, 5, 6, 15, 16 only).
    """
    if len(buffer) < 2:
        return None
    if buffer[1] in (3, 4, 5, 6):
        return 8
    if buffer[1] in (15, 16):
        return None if len(buffer) < 7 else 9 + buffer[6]
    raise AssertionError(f"the test device got function code {buffer[1]}")


class Registers:
    """
    A device's holding registers (unset ones read as their own address),
    and its normal answers to function codes 3, 6 and 16.
    """

    def __init__(self):
        self.values = {}

    def answer(self, frame):
        assert crcIsGood(frame), frame.hex()
        unit, code = frame[0], frame[1]
        if code == 3:
            start, count = struct.unpack(">HH", frame[2:6])
            words = [self.values.get(start + i, start + i) for i in range(count)]
            return withCRC(struct.pack(f">BBB{count}H", unit, 3, 2 * count, *words))
        if code == 6:
            address, value = struct.unpack(">HH", frame[2:6])
            self.values[address] = value
            return frame
        if code == 16:
            start, count = struct.unpack(">HH", frame[2:6])
            words = struct.unpack(f">{count}H", frame[7 : 7 + 2 * count])
            for i, word in enumerate(words):
                self.values[start + i] = word
            return withCRC(frame[:6])
        return withCRC(bytes((unit, code | 0x80, 1)))


def readRequest(tid, address, unit=1, count=1):
    return adu(tid, unit, struct.pack(">BHH", 3, address, count))


def writeRequest(tid, address, value, unit=1):
    return adu(tid, unit, struct.pack(">BHH", 6, address, value))


def exceptionCode(response):
    """
    The exception code of a Modbus TCP response, or L{None}.
    """
    return response[8] if response[7] & 0x80 else None


# -- a serial line: pseudo-terminals


class PseudoTerminal:
    """
    A pseudo-terminal pair in raw mode: tcpmux (or pymodbus) opens C{path},
    the test reads and writes C{master}. Closed when the test ends.
    """

    def __init__(self, testCase):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        testCase.addCleanup(self.close)

    def close(self):
        """
        Close both ends: whoever has C{path} open reads an error (an
        adapter pulled out).
        """
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1


def target(path, baudrate=9600):
    """
    The C{serial:} target description of the pseudo-terminal at C{path}
    (pseudo-terminals take no parity).
    """
    return f"serial:{path}:baudrate={baudrate}:parity=N"


class LineDevice(threading.Thread):
    """
    An RTU device on a pseudo-terminal's master side, in a thread of its
    own, as independent of the reactor as a real device: frames requests
    by their function code, answers each with C{answer(frame)} (no answer
    for a broadcast, nor for L{None}), and records when each request's
    first byte came and when each answer was about to be written.

    @ivar requests: C{(time, frame)} for every request.
    @ivar answers: C{(time, frame)} for every answer.
    """

    def __init__(self, testCase, fd, answer=None):
        threading.Thread.__init__(self, daemon=True)
        self.fd = fd
        self.registers = Registers()
        self.answer = answer or self.registers.answer
        self.requests = []
        self.answers = []
        self._stopping = threading.Event()
        self.start()
        testCase.addCleanup(self.stop)

    def stop(self):
        self._stopping.set()
        self.join(5)

    def run(self):
        buffer = b""
        started = None
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select([self.fd], [], [], 0.02)
                if not readable:
                    continue
                data = os.read(self.fd, 1024)
            except (OSError, ValueError):
                return
            now = time.monotonic()
            if not buffer:
                started = now
            buffer += data
            while True:
                size = requestSize(buffer)
                if size is None or len(buffer) < size:
                    break
                frame, buffer = buffer[:size], buffer[size:]
                self.requests.append((started, frame))
                started = now
                reply = self.answer(frame)
                if reply is None or frame[0] == 0:
                    continue
                # (Timed before the write: tcpmux cannot see the answer
                # earlier, so a silence measured from here is never longer
                # than the one tcpmux left.)
                self.answers.append((time.monotonic(), reply))
                os.write(self.fd, reply)

    def silences(self):
        """
        For each request that followed an answer: the time from the answer
        being written to the request's first byte.
        """
        result = []
        answers = list(self.answers)
        for started, frame in self.requests:
            before = [at for at, _ in answers if at < started]
            if before:
                result.append(started - before[-1])
        return result


class Bridge(threading.Thread):
    """
    Copies bytes both ways between two pseudo-terminals' master sides: a
    null-modem cable between the two paths.
    """

    def __init__(self, testCase, one, other):
        threading.Thread.__init__(self, daemon=True)
        self.ends = {one.master: other.master, other.master: one.master}
        self._stopping = threading.Event()
        self.start()
        testCase.addCleanup(self.stop)

    def stop(self):
        self._stopping.set()
        self.join(5)

    def run(self):
        while not self._stopping.is_set():
            try:
                readable, _, _ = select.select(list(self.ends), [], [], 0.02)
                for fd in readable:
                    os.write(self.ends[fd], os.read(fd, 4096))
            except (OSError, ValueError):
                return


def simulatedDevices(*units):
    return [
        SimDevice(
            id=unit,
            simdata=[SimData(address=0, count=100, values=0, datatype=DataType.REGISTERS)],
        )
        for unit in units
    ]


class PymodbusThread(threading.Thread):
    """
    A pymodbus server (C{makeServer()}, called in the thread's own asyncio
    loop) until the test ends.
    """

    def __init__(self, testCase, makeServer):
        threading.Thread.__init__(self, daemon=True)
        self.makeServer = makeServer
        self.ready = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.server = None
        self.start()
        testCase.addCleanup(self.stop)

    def run(self):
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self):
        self.server = self.makeServer()
        await self.server.serve_forever(background=True)
        self.ready.set()
        await self.server.serving

    def stop(self):
        if self.server is not None and self.is_alive():
            asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(5)
        self.join(5)


# -- a transparent converter: RTU frames over TCP


class ConverterProtocol(Protocol):
    def connectionMade(self):
        self.buffer = b""
        self.factory.connections += 1

    def dataReceived(self, data):
        self.buffer += data
        while True:
            size = requestSize(self.buffer)
            if size is None or len(self.buffer) < size:
                return
            frame, self.buffer = self.buffer[:size], self.buffer[size:]
            self.factory.requests.append(frame)
            reply = self.factory.behaviour(frame)
            if reply and frame[0]:
                self.transport.write(reply)


class Converter(ServerFactory):
    """
    An RS-485-to-Ethernet converter in transparent mode, with its device:
    RTU frames over TCP, each answered with C{behaviour(frame)}.
    """

    protocol = ConverterProtocol
    noisy = False

    def __init__(self, behaviour=None):
        self.registers = Registers()
        self.behaviour = behaviour or self.registers.answer
        self.connections = 0
        self.requests = []

    def listen(self, testCase):
        port = reactor.listenTCP(0, self, interface="127.0.0.1")
        testCase.addCleanup(port.stopListening)
        return port.getHost().port


# -- pymodbus clients


def pymodbusClient(port):
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0)
    assert client.connect(), "cannot connect to tcpmux"
    return client


class SerialDeviceTests(TestCase):
    """
    pymodbus's own serial RTU server on a serial line (two pseudo-terminals
    joined), tcpmux on the other end, pymodbus TCP clients through it.
    """

    timeout = 30

    async def test_pymodbusClientsThroughSerialLine(self):
        """
        Four pymodbus TCP clients at once write and read back their own
        registers of unit 1 on a serial line: every answer is the client's
        own (pymodbus checks the transaction id). A broadcast write (unit
        0) reaches both devices on the line and its client gets no answer,
        as pymodbus's C{no_response_expected} expects; a read for unit 0
        gets exception 0x0A at once.
        """
        ours, theirs = PseudoTerminal(self), PseudoTerminal(self)
        Bridge(self, ours, theirs)
        device = PymodbusThread(
            self,
            lambda: ModbusSerialServer(
                simulatedDevices(1, 2),
                framer=FramerType.RTU,
                port=theirs.path,
                baudrate=19200,
                parity="N",
                broadcast_enable=True,
            ),
        )
        self.assertTrue(await deferToThread(device.ready.wait, 5))
        port, multiplexer = await startMultiplexer(
            self, "modbus", target(ours.path, 19200), "--timeout", "5"
        )
        results = await gatherResults(
            [deferToThread(clientSession, port, index, 3) for index in range(4)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(3)])

        def broadcast():
            client = pymodbusClient(port)
            try:
                sent = client.write_register(
                    60, 4321, device_id=0, no_response_expected=True
                )
                first = client.read_holding_registers(60, count=1, device_id=1)
                second = client.read_holding_registers(60, count=1, device_id=2)
                zero = client.read_holding_registers(60, count=1, device_id=0)
                return sent, first, second, zero
            finally:
                client.close()

        sent, first, second, zero = await deferToThread(broadcast)
        self.assertIsNone(sent)
        self.assertEqual(first.registers, [4321])
        self.assertEqual(second.registers, [4321])
        self.assertTrue(zero.isError())
        self.assertEqual(zero.exception_code, 0x0A)


class ConverterTests(TestCase):
    """
    C{--target-framing rtu}: a transparent converter, RTU frames over TCP.
    """

    timeout = 30

    async def test_pymodbusRTUOverTCP(self):
        """
        pymodbus's own server speaking RTU frames over TCP stands for the
        converter and its device; pymodbus TCP clients read and write
        through tcpmux.
        """
        devicePort = freePort()
        device = PymodbusThread(
            self,
            lambda: ModbusTcpServer(
                simulatedDevices(1),
                framer=FramerType.RTU,
                address=("127.0.0.1", devicePort),
            ),
        )
        self.assertTrue(await deferToThread(device.ready.wait, 5))
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--target-framing", "rtu", "--timeout", "5"
        )
        results = await gatherResults(
            [deferToThread(clientSession, port, index, 3) for index in range(3)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(3)])

    async def test_conversion(self):
        """
        The device gets each request as an RTU frame (unit, PDU, CRC); the
        client gets the answer as Modbus TCP with its own transaction id
        and unit, whatever id other clients chose.
        """
        converter = Converter()
        devicePort = converter.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--target-framing", "rtu"
        )
        one, two = await connect(self, port), await connect(self, port)
        answers = await gatherResults(
            [ask(one, writeRequest(7, 5, 1234, unit=3)), ask(two, readRequest(7, 9, unit=4))]
        )
        self.assertEqual(answers[0], writeRequest(7, 5, 1234, unit=3))
        self.assertEqual(answers[1], adu(7, 4, bytes((3, 2, 0, 9))))
        self.assertEqual(
            converter.requests,
            [withCRC(bytes.fromhex("03060005 04d2")), withCRC(bytes.fromhex("04030009 0001"))],
        )
        self.assertEqual(
            await ask(one, readRequest(0x1234, 5, unit=3)),
            adu(0x1234, 3, bytes((3, 2)) + struct.pack(">H", 1234)),
        )

    async def test_modbusRTUClients(self):
        """
        C{modbus-rtu} clients (an MBAP header, then a CRC) are converted
        too: the device gets an RTU frame, the client its answer in its own
        framing, CRC included.
        """
        converter = Converter()
        devicePort = converter.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus-rtu", devicePort, "--target-framing", "rtu"
        )

        def mbapWithCRC(tid, body):
            return struct.pack(">HHH", tid, 0, len(body) + 2) + withCRC(body)

        def talk():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(mbapWithCRC(0x0102, bytes.fromhex("050300040001")))
                return receiveExactly(sock, 6 + 7)

        answer = await deferToThread(talk)
        self.assertEqual(answer, mbapWithCRC(0x0102, bytes.fromhex("0503020004")))
        self.assertEqual(converter.requests, [withCRC(bytes.fromhex("050300040001"))])

    async def test_badCRC(self):
        """
        An answer with a bad CRC is refused: its client gets exception 0x0B
        and the connection is renewed; the next request is answered on the
        new one.
        """
        registers = Registers()
        corrupt = [True]

        def behaviour(frame):
            answer = registers.answer(frame)
            if corrupt and corrupt.pop():
                return answer[:-1] + bytes((answer[-1] ^ 0xFF,))
            return answer

        converter = Converter(behaviour)
        devicePort = converter.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--target-framing", "rtu", "--timeout", "5"
        )
        client = await connect(self, port)
        response = await ask(client, readRequest(1, 2))
        self.assertEqual(exceptionCode(response), 0x0B)
        self.assertEqual(response[:2], b"\x00\x01")
        self.assertEqual(await ask(client, readRequest(2, 3)), adu(2, 1, bytes((3, 2, 0, 3))))
        self.assertEqual(converter.connections, 2)

    async def test_wrongUnitOrFunction(self):
        """
        An answer from another unit, or to another function code, is
        refused as well (0x0B, connection renewed); with C{--retries} a
        read is sent again and answered.
        """
        registers = Registers()
        wrong = [
            lambda answer: withCRC(bytes((answer[0] + 1,)) + answer[1:-2]),
            lambda answer: withCRC(bytes((answer[0], 4)) + answer[2:-2]),
        ]

        def behaviour(frame):
            answer = registers.answer(frame)
            return wrong.pop(0)(answer) if wrong else answer

        converter = Converter(behaviour)
        devicePort = converter.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--target-framing", "rtu", "--timeout", "5"
        )
        client = await connect(self, port)
        self.assertEqual(exceptionCode(await ask(client, readRequest(1, 2))), 0x0B)
        self.assertEqual(exceptionCode(await ask(client, readRequest(2, 2))), 0x0B)
        self.assertEqual(await ask(client, readRequest(3, 2)), adu(3, 1, bytes((3, 2, 0, 2))))
        self.assertEqual(converter.connections, 3)

        wrong.append(lambda answer: withCRC(b"\x09" + answer[1:-2]))
        port, multiplexer = await startMultiplexer(
            self,
            "modbus",
            devicePort,
            "--target-framing",
            "rtu",
            "--timeout",
            "5",
            "--retries",
            "1",
        )
        client = await connect(self, port)
        self.assertEqual(await ask(client, readRequest(4, 6)), adu(4, 1, bytes((3, 2, 0, 6))))

    async def test_notSent(self):
        """
        A function code whose answer cannot be framed by its length (a
        vendor's) gets exception 0x01, and a read for unit 0 (the broadcast
        address) 0x0A, neither sent; a broadcast write is sent and not
        answered, and the next request is answered as usual.
        """
        converter = Converter()
        devicePort = converter.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--target-framing", "rtu"
        )
        client = await connect(self, port)
        self.assertEqual(await ask(client, adu(1, 1, b"\x41\x00")), adu(1, 1, b"\xc1\x01"))
        self.assertEqual(exceptionCode(await ask(client, readRequest(2, 0, unit=0))), 0x0A)
        self.assertEqual(converter.requests, [])
        client.send(writeRequest(3, 8, 77, unit=0))
        self.assertEqual(await ask(client, readRequest(4, 8)), adu(4, 1, bytes((3, 2, 0, 77))))
        # (No answer to the broadcast came before the read's.)
        self.assertEqual(len(client.messages), 3)
        self.assertEqual(converter.requests[0], withCRC(bytes.fromhex("00060008004d")))


class SerialLineTests(TestCase):
    """
    A serial line: the silence between frames, a bad answer, a missing
    or pulled-out adapter, raw RTU clients.
    """

    timeout = 30

    async def measureSilence(self, baudrate):
        line = PseudoTerminal(self)
        device = LineDevice(self, line.master)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target(line.path, baudrate), "--timeout", "5"
        )
        client = await connect(self, port)
        # Twenty reads in one write: each is sent as soon as tcpmux lets it
        # go after the last answer.
        client.send(b"".join(readRequest(tid, tid) for tid in range(20)))
        answers = await client.receive(20)
        self.assertEqual(answers[19], adu(19, 1, bytes((3, 2, 0, 19))))
        # And a broadcast write, then a read.
        client.send(writeRequest(20, 1, 5, unit=0) + readRequest(21, 1))
        await client.receive(21)
        silences = device.silences()
        # (Every request but the first followed an answer; the last one,
        # the broadcast.)
        self.assertEqual(len(silences), 21)
        afterBroadcast = device.requests[21][0] - device.requests[20][0]
        return silences[:20], afterBroadcast

    async def test_silence9600(self):
        """
        At 9,600 bit/s tcpmux leaves at least 3.5 characters of 11 bits
        (4.01 ms) between an answer and the next request, and no more than
        a reactor's turn or so beyond; after a broadcast, its 8 bytes on
        the line, the silence and the devices' turnaround (100 ms).
        """
        silences, afterBroadcast = await self.measureSilence(9600)
        expected = 3.5 * 11 / 9600
        self.assertGreaterEqual(min(silences), expected)
        # Spacing, not a long timer (generous: the machine may be busy).
        self.assertLess(sorted(silences)[len(silences) // 2], expected + 0.1)
        self.assertGreaterEqual(afterBroadcast, 8 * 11 / 9600 + expected + 0.1)

    async def test_silence19200(self):
        """
        At 19,200 bit/s: at least 2.005 ms.
        """
        silences, afterBroadcast = await self.measureSilence(19200)
        expected = 3.5 * 11 / 19200
        self.assertGreaterEqual(min(silences), expected)
        self.assertLess(sorted(silences)[len(silences) // 2], expected + 0.1)
        self.assertGreaterEqual(afterBroadcast, 8 * 11 / 19200 + expected + 0.1)

    async def test_badCRCFlushesInput(self):
        """
        A bad CRC on a serial line: the client gets 0x0B, the port is
        opened again and its input flushed, so that what the device sent
        after the bad frame reaches no one; the next read is answered.
        """
        line = PseudoTerminal(self)
        registers = Registers()
        bad = [True]

        def answer(frame):
            reply = registers.answer(frame)
            if bad and bad.pop():
                return reply[:-2] + b"\x00\x00" + b"\x01\x03\x02"
            return reply

        LineDevice(self, line.master, answer)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target(line.path), "--timeout", "5"
        )
        connection = multiplexer.target.target.target
        first = connection.session
        client = await connect(self, port)
        self.assertEqual(exceptionCode(await ask(client, readRequest(1, 4))), 0x0B)
        await until(lambda: connection.session not in (None, first))
        self.assertEqual(await ask(client, readRequest(2, 5)), adu(2, 1, bytes((3, 2, 0, 5))))

    async def test_missingDeviceThenPluggedIn(self):
        """
        A device path that does not exist (an adapter not plugged in):
        clients get exception 0x0A, and tcpmux tries again with its
        back-off; once the path exists, reads are answered. Pulled out
        again (the line closes), then back on another pseudo-terminal:
        answered again, without a restart.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(os.rmdir, directory)
        path = os.path.join(directory, "ttyRS485")
        self.addCleanup(lambda: os.path.lexists(path) and os.unlink(path))
        port, multiplexer = await startMultiplexer(
            self,
            "modbus",
            target(path),
            "--timeout",
            "5",
            "--retry-delay",
            "50ms",
            "--max-retry-delay",
            "200ms",
        )
        client = await connect(self, port)
        self.assertEqual(exceptionCode(await ask(client, readRequest(1, 1))), 0x0A)

        async def answeredAgain(tid):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                response = await ask(client, readRequest(tid, 7))
                if exceptionCode(response) is None:
                    return response
                self.assertEqual(exceptionCode(response), 0x0A)
                await deferLater(reactor, 0.02)
            self.fail("never answered")

        for plug in range(2):
            line = PseudoTerminal(self)
            LineDevice(self, line.master)
            if os.path.lexists(path):
                os.unlink(path)
            os.symlink(line.path, path)
            response = await answeredAgain(10 + plug)
            self.assertEqual(response, adu(10 + plug, 1, bytes((3, 2, 0, 7))))
            line.close()
            connection = multiplexer.target.target.target
            await until(lambda: connection.session is None)
            self.assertEqual(exceptionCode(await ask(client, readRequest(20 + plug, 1))), 0x0A)

    async def test_rawRTUClientsPassThrough(self):
        """
        C{--protocol modbus-serial} clients (raw RTU over TCP) reach a
        serial device as they are.
        """
        line = PseudoTerminal(self)
        device = LineDevice(self, line.master)
        port, multiplexer = await startMultiplexer(
            self, "modbus-serial", target(line.path), "--timeout", "5"
        )
        request = withCRC(bytes.fromhex("0206000b0063"))

        def talk():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(request)
                echoed = receiveExactly(sock, 8)
                sock.sendall(withCRC(bytes.fromhex("0203000b0001")))
                return echoed, receiveExactly(sock, 7)

        echoed, read = await deferToThread(talk)
        self.assertEqual(echoed, request)
        self.assertEqual(read, withCRC(bytes.fromhex("0203020063")))
        self.assertEqual(device.requests[0][1], request)


class OptionTests(SynchronousTestCase):
    """
    C{--target-framing} and C{serial:} targets on the command line.
    """

    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def refused(self, *args):
        with self.assertRaises(usage.UsageError) as caught:
            self.parse(*args)
        return str(caught.exception)

    def test_serialDescription(self):
        """
        C{serial:} takes the device, then baud rate, parity, data and stop
        bits; the Modbus serial defaults are 19,200 bit/s, even parity.
        """
        endpoint = clientFromString(
            reactor, "serial:/dev/ttyUSB0:baudrate=9600:parity=E:stopbits=1:bytesize=8"
        )
        self.assertEqual(
            (endpoint.device, endpoint.baudrate, endpoint.parity, endpoint.stopbits),
            ("/dev/ttyUSB0", 9600, "E", 1),
        )
        default = clientFromString(reactor, r"serial:/dev/serial/by-path/pci-0\:1")
        self.assertEqual(default.device, "/dev/serial/by-path/pci-0:1")
        self.assertEqual((default.baudrate, default.parity), (19200, "E"))

    def test_silence(self):
        """
        3.5 characters of 11 bits (or the port's own framing if longer),
        and 1.75 ms above 19,200 bit/s.
        """

        def silence(text):
            return clientFromString(reactor, "serial:/dev/x:" + text).silence

        self.assertAlmostEqual(silence("baudrate=9600"), 3.5 * 11 / 9600)
        self.assertAlmostEqual(silence("baudrate=19200:parity=N"), 3.5 * 11 / 19200)
        self.assertAlmostEqual(silence("baudrate=1200:stopbits=2"), 3.5 * 12 / 1200)
        self.assertEqual(silence("baudrate=38400"), 0.00175)
        self.assertEqual(silence("baudrate=115200"), 0.00175)

    def test_badDescriptions(self):
        """
        A mistake in a C{serial:} target is one line that says what is
        wrong.
        """
        for text, expected in [
            ("serial:/dev/x:baudrate=fast", "baudrate must be a whole number"),
            ("serial:/dev/x:parity=Q", "parity must be one of N, E, O, M, S"),
            ("serial:/dev/x:bytesize=9", "bytesize must be 5, 6, 7, 8"),
            ("serial:/dev/x:baud=9600", "unknown setting 'baud'"),
            ("serial:", "needs a device"),
        ]:
            message = self.refused("--protocol", "modbus", "--target", text)
            self.assertIn(expected, message)
            self.assertTrue(message.startswith(f"bad target {text!r}: serial: "), message)
            self.assertNotIn("\n", message)

    def test_withoutPyserial(self):
        """
        Without pyserial, a C{serial:} target is refused with one line
        naming the extra to install.
        """
        saved = sys.modules.get("serial")
        sys.modules["serial"] = None
        self.addCleanup(sys.modules.__setitem__, "serial", saved)
        message = self.refused("--protocol", "modbus", "--target", "serial:/dev/ttyUSB0")
        self.assertEqual(
            message,
            "serial: targets need pyserial, which is not installed: "
            "pip install 'tcpmux[serial]'",
        )
        self.assertEqual(
            self.refused(
                "--protocol", "modbus", "--target", "10.0.0.1:502",
                "--route", "2=serial:/dev/ttyUSB0",
            ),
            message,
        )

    def test_combinations(self):
        """
        What an RTU target cannot do is refused up front.
        """
        serial = "serial:/dev/ttyUSB0"
        cases = [
            (("--protocol", "echo", "--target", "h:1", "--target-framing", "rtu"),
             "--target-framing rtu is for Modbus clients"),
            (("--protocol", "modbus", "--target", "h:1", "--target-framing", "ascii"),
             "--target-framing must be same or rtu"),
            (("--protocol", "modbus", "--target", serial, "--target-framing", "same"),
             "is a serial line, which carries Modbus RTU"),
            (("--protocol", "modbus", "--target", serial, "--pipeline", "2"),
             "Modbus RTU has no transaction id"),
            (("--protocol", "modbus", "--target", "h:1", "--target-framing", "rtu",
              "--pipeline", "2"),
             "Modbus RTU has no transaction id"),
            (("--protocol", "modbus", "--target", serial, "--connections", "2"),
             "a serial port is opened once"),
            (("--protocol", "modbus", "--target", serial, "--unit-map", "1=0"),
             "unit 0 is the broadcast address"),
        ]
        for args, expected in cases:
            self.assertIn(expected, self.refused(*args))

    def test_accepted(self):
        """
        A serial target implies RTU framing; C{--target-framing rtu} makes a
        TCP target RTU; C{--route} may mix both.
        """
        from tcpmux.protocols import get

        modbus = get("modbus")
        options = self.parse(
            "--protocol", "modbus", "--target", "192.0.2.1:502",
            "--route", "2=serial:/dev/ttyUSB0:baudrate=9600",
        )
        self.assertFalse(rtu.isRTU(modbus, options, options["target"]))
        self.assertTrue(rtu.isRTU(modbus, options, options["route"][2]))
        options = self.parse(
            "--protocol", "modbus", "--target", "192.0.2.1:502", "--target-framing", "RTU"
        )
        self.assertEqual(options["target-framing"], "rtu")
        self.assertTrue(rtu.isRTU(modbus, options, options["target"]))
        self.assertFalse(rtu.isRTU(get("echo"), self.parse("--target", "serial:/dev/x"), "serial:/dev/x"))



# -- the Modbus gateway options, end to end with an RTU target


def pymodbusCall(port, call):
    """
    Connect a pymodbus TCP client to tcpmux, C{call(client)}, close it.
    """
    client = pymodbusClient(port)
    try:
        return call(client)
    finally:
        client.close()


def readOne(port, address, unit=1):
    """
    One pymodbus read of one holding register: C{("value", v)} or
    C{("exception", code)}.
    """
    response = pymodbusCall(
        port, lambda c: c.read_holding_registers(address, count=1, device_id=unit)
    )
    if response.isError():
        return ("exception", response.exception_code)
    return ("value", response.registers[0])


def writeOne(port, address, value, unit=1):
    """
    One pymodbus write of one holding register: C{("written", value)} or
    C{("exception", code)}.
    """
    response = pymodbusCall(
        port, lambda c: c.write_register(address, value, device_id=unit)
    )
    if response.isError():
        return ("exception", response.exception_code)
    return ("written", response.registers[0])


class GatewayOptionsTests(TestCase):
    """
    The Modbus gateway options (routes, unit map, read-only, cache, request
    gap) with an RTU target, end to end: pymodbus TCP clients, tcpmux, a
    device on a serial line (a pseudo-terminal).
    """

    timeout = 30

    async def lineDevice(self, *extraArgs, baudrate=19200):
        line = PseudoTerminal(self)
        device = LineDevice(self, line.master)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target(line.path, baudrate), "--timeout", "5", *extraArgs
        )
        return port, device

    def seen(self, device):
        """
        C{(unit, function code)} of each request the line device received.
        """
        return [(frame[0], frame[1]) for _, frame in device.requests]

    async def test_routeMixesTCPAndSerial(self):
        """
        C{--route 2=serial:...} beside a Modbus TCP default target: unit 1
        is the TCP device's, unit 2 pymodbus's RTU server's on the serial
        line, each with its own values, clients at once; writes reach the
        right device only.
        """
        from tests.test_gateway import RecordingDevice

        tcpDevice = RecordingDevice()
        ours, theirs = PseudoTerminal(self), PseudoTerminal(self)
        Bridge(self, ours, theirs)
        serialDevice = PymodbusThread(
            self,
            lambda: ModbusSerialServer(
                [
                    SimDevice(
                        id=2,
                        simdata=[
                            SimData(
                                address=0,
                                count=100,
                                values=[1000 + i for i in range(100)],
                                datatype=DataType.REGISTERS,
                            )
                        ],
                    )
                ],
                framer=FramerType.RTU,
                port=theirs.path,
                baudrate=19200,
                parity="N",
            ),
        )
        self.assertTrue(await deferToThread(serialDevice.ready.wait, 5))
        port, multiplexer = await startMultiplexer(
            self,
            "modbus",
            tcpDevice.listen(self),
            "--route",
            "2=" + target(ours.path, 19200),
            "--timeout",
            "5",
        )
        reads = await gatherResults(
            [
                deferToThread(readOne, port, address, 1 + address % 2)
                for address in range(6)
            ]
        )
        self.assertEqual(
            reads,
            [("value", a if a % 2 == 0 else 1000 + a) for a in range(6)],
        )
        self.assertEqual(await deferToThread(writeOne, port, 7, 4321, 2), ("written", 4321))
        self.assertEqual(await deferToThread(readOne, port, 7, 2), ("value", 4321))
        self.assertEqual(await deferToThread(readOne, port, 7, 1), ("value", 7))
        self.assertEqual(sorted(tcpDevice.seen()), [(1, 3)] * 4)

    async def test_unitMap(self):
        """
        C{--unit-map 1=5}: the RTU device sees unit 5, pymodbus sees its
        answers come from unit 1; other units pass unchanged.
        """
        port, device = await self.lineDevice("--unit-map", "1=5")
        self.assertEqual(await deferToThread(readOne, port, 9, 1), ("value", 9))
        self.assertEqual(await deferToThread(writeOne, port, 9, 99, 1), ("written", 99))
        self.assertEqual(await deferToThread(readOne, port, 9, 1), ("value", 99))
        self.assertEqual(await deferToThread(readOne, port, 3, 2), ("value", 3))
        self.assertEqual(self.seen(device), [(5, 3), (5, 6), (5, 3), (2, 3)])

        client = await connect(self, port)
        self.assertEqual(
            await ask(client, readRequest(77, 4, unit=1)), adu(77, 1, bytes((3, 2, 0, 4)))
        )

    async def test_readOnlyDeny(self):
        """
        C{--read-only deny}: a write gets exception 0x01 and never reaches
        the device; reads are answered.
        """
        port, device = await self.lineDevice("--read-only", "deny")
        self.assertEqual(await deferToThread(writeOne, port, 4, 1234), ("exception", 0x01))
        self.assertEqual(
            await deferToThread(
                pymodbusCall,
                port,
                lambda c: c.write_registers(4, [1, 2], device_id=1).exception_code,
            ),
            0x01,
        )
        self.assertEqual(self.seen(device), [])
        self.assertEqual(await deferToThread(readOne, port, 4), ("value", 4))
        self.assertEqual(self.seen(device), [(1, 3)])

    async def test_cache(self):
        """
        C{--cache-ttl 1s}: identical reads, one after the other and at once,
        reach the device once; a write through tcpmux forgets the value.
        """
        port, device = await self.lineDevice("--cache-ttl", "1s")
        self.assertEqual(await deferToThread(readOne, port, 12), ("value", 12))
        self.assertEqual(
            await gatherResults([deferToThread(readOne, port, 12) for _ in range(4)]),
            [("value", 12)] * 4,
        )
        self.assertEqual(self.seen(device), [(1, 3)])
        self.assertEqual(await deferToThread(writeOne, port, 12, 5), ("written", 5))
        self.assertEqual(await deferToThread(readOne, port, 12), ("value", 5))
        self.assertEqual(self.seen(device), [(1, 3), (1, 6), (1, 3)])

    async def test_requestGap(self):
        """
        C{--request-gap 50ms}: three clients read at once; the device
        receives each request at least 50 ms after the one before.
        """
        port, device = await self.lineDevice("--request-gap", "50ms")

        def reads(first):
            return [readOne(port, first + i) for i in range(3)]

        results = await gatherResults([deferToThread(reads, 10 * c) for c in range(3)])
        self.assertEqual(
            results, [[("value", 10 * c + i) for i in range(3)] for c in range(3)]
        )
        times = [at for at, _ in device.requests]
        self.assertEqual(len(times), 9)
        gaps = [later - earlier for earlier, later in zip(times, times[1:])]
        self.assertGreaterEqual(min(gaps), 0.049)
        # (And from each answer to the next request, as the gap is counted.)
        self.assertEqual(len(device.silences()), 8)
        self.assertGreaterEqual(min(device.silences()), 0.049)

    async def test_readOnlyBroadcast(self):
        """
        A broadcast write (unit 0) under C{--read-only ignore} or C{deny}
        is not sent and, as the broadcast itself would not be, not answered:
        the client's next answer is its next request's.
        """
        for mode in ("ignore", "deny"):
            port, device = await self.lineDevice("--read-only", mode)
            client = await connect(self, port)
            client.send(writeRequest(1, 60, 4321, unit=0) + readRequest(2, 60))
            self.assertEqual(await client.receive(1), [adu(2, 1, bytes((3, 2, 0, 60)))])
            self.assertEqual(self.seen(device), [(1, 3)])
            self.assertEqual(exceptionCode(await ask(client, writeRequest(3, 60, 1))), (
                None if mode == "ignore" else 0x01
            ))

    async def test_overConverter(self):
        """
        The same options with a transparent converter (C{--target-framing
        rtu}, RTU frames over TCP): unit map, read-only, cache.
        """
        converter = Converter()
        port, multiplexer = await startMultiplexer(
            self, "modbus", converter.listen(self), "--target-framing", "rtu",
            "--unit-map", "1=5", "--read-only", "deny:2", "--cache-ttl", "5s",
            "--timeout", "5",
        )
        self.assertEqual(await deferToThread(readOne, port, 9, 1), ("value", 9))
        self.assertEqual(await deferToThread(readOne, port, 9, 1), ("value", 9))
        self.assertEqual(await deferToThread(writeOne, port, 9, 99, 2), ("exception", 0x01))
        self.assertEqual(await deferToThread(writeOne, port, 9, 99, 1), ("written", 99))
        self.assertEqual(await deferToThread(readOne, port, 9, 1), ("value", 99))
        self.assertEqual(
            [(frame[0], frame[1]) for frame in converter.requests],
            [(5, 3), (5, 6), (5, 3)],
        )
