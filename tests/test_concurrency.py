"""
Tests for more than one round trip in flight: C{--connections} (a
L{tcpmux.target.pool.TargetPool}) and C{--pipeline}
(L{tcpmux.target.pipeline}), in memory
and end to end with pymodbus.
"""

import struct

from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.errors import InvalidResponse, TargetLost, TargetTimeout
from tcpmux.multiplexer import Multiplexer
from tcpmux.target.pool import TargetPool
from tcpmux.protocols.echo import application as echo
from tcpmux.protocols.modbus import application as modbus
from tcpmux.tap import Options
from tests.memory import MemoryTarget, connectClient
from tests.modbus import clientSession, readRequest, readResponse, splitModbus
from tests.support import runExample, startMultiplexer


class PipelineTests(SynchronousTestCase):
    def setUp(self):
        self.target = MemoryTarget(modbus, pipeline=4, timeout=5.0)
        self.target.factory.start()
        self.transport, self.session = self.target.accept()

    def test_idsRewrittenAndMappedBack(self):
        """
        Requests in flight together carry ids unique on the connection, even
        when clients chose the same id; each response goes back with its
        client's own id, whatever order the target answers in.
        """
        results = []
        for address in range(3):
            trip = self.target.factory.roundTrip(readRequest(7, address))
            trip.addCallback(results.append)
        sent, rest = splitModbus(self.transport.value())
        self.assertEqual((len(sent), rest), (3, b""))
        wireIds = [struct.unpack(">H", request[:2])[0] for request in sent]
        self.assertEqual(len(set(wireIds)), 3)
        self.assertEqual(
            [request[2:] for request in sent], [readRequest(7, a)[2:] for a in range(3)]
        )
        # The target answers out of order.
        for index in (2, 0, 1):
            self.transport.protocol.dataReceived(readResponse(wireIds[index], 100 + index))
        self.assertEqual(results, [readResponse(7, value) for value in (102, 100, 101)])

    def test_oldIdDroppedUnknownIdFails(self):
        """
        A response with an id given out before reaches no one; one with an
        id never given out fails the round trips in flight at once.
        """
        results, failures = [], []
        self.target.factory.roundTrip(readRequest(1, 0)).addCallback(results.append)
        (sent,), rest = splitModbus(self.transport.value())
        wireId = struct.unpack(">H", sent[:2])[0]
        self.transport.protocol.dataReceived(readResponse(wireId, 6))
        self.assertEqual(results, [readResponse(1, 6)])
        self.target.factory.roundTrip(readRequest(2, 0)).addCallbacks(
            results.append, failures.append
        )
        self.transport.protocol.dataReceived(readResponse(wireId, 6))
        self.assertEqual((len(results), failures), (1, []))
        self.transport.protocol.dataReceived(readResponse(wireId + 100, 5))
        failures[0].trap(InvalidResponse)
        self.assertFalse(self.transport.connected)

    def wireId(self):
        """
        The id of the one request written since the last call.
        """
        (sent,), rest = splitModbus(self.transport.value())
        self.assertEqual(rest, b"")
        self.transport.clear()
        return struct.unpack(">H", sent[:2])[0]

    def test_idsWrapAndSkipThoseInFlight(self):
        """
        Ids on the connection run from 1 to 0xFFFF, then wrap to 0; an id
        still in flight when its turn comes round again is skipped, and its
        answer, when it comes, still reaches its own client. A late answer
        with an id given out before the wrap is dropped, not taken for a
        target out of step.
        """
        results = []
        held = self.target.factory.roundTrip(readRequest(9, 0))
        held.addCallback(results.append)
        heldId = self.wireId()
        self.assertEqual(heldId, 1)
        # A whole cycle of ids, each answered at once, around the one held.
        seen = []
        for n in range(0x10000):
            self.target.factory.roundTrip(readRequest(n & 0xFF, 0))
            seen.append(self.wireId())
            self.transport.protocol.dataReceived(readResponse(seen[-1], n & 0xFF))
        self.assertEqual(seen[:2], [2, 3])
        self.assertEqual(seen[0xFFFD : 0xFFFD + 3], [0xFFFF, 0, 2])
        self.assertNotIn(heldId, seen)
        self.assertEqual(len(results), 0)
        self.transport.protocol.dataReceived(readResponse(heldId, 42))
        self.assertEqual(results, [readResponse(9, 42)])
        # A repeat of an answer from before the wrap: dropped, the
        # connection kept.
        trip = self.target.factory.roundTrip(readRequest(5, 0))
        trip.addCallback(results.append)
        nextId = self.wireId()
        self.transport.protocol.dataReceived(readResponse(0xFFF0, 1))
        self.assertTrue(self.transport.connected)
        self.transport.protocol.dataReceived(readResponse(nextId, 7))
        self.assertEqual(results[1:], [readResponse(5, 7)])

    def test_abandonRenewsAndFailsOthers(self):
        """
        Abandoning a round trip (its asker's deadline) renews the connection,
        since a late answer could meet a reused id: it fails with
        L{TargetTimeout}, the other round trips on it with L{TargetLost}.
        """
        failures = []
        first = self.target.factory.roundTrip(readRequest(1, 0))
        first.addErrback(failures.append)
        second = self.target.factory.roundTrip(readRequest(2, 0))
        second.addErrback(failures.append)
        first.cancel()
        self.assertEqual(len(failures), 2)
        failures[0].trap(TargetTimeout)
        failures[1].trap(TargetLost)
        self.assertFalse(self.transport.connected)
        self.assertEqual(self.target.pendingAttempts(), 1)

    def test_notForEcho(self):
        """
        Protocols whose responses do not name their request cannot be
        pipelined: a usage error says so.
        """
        self.assertRaises(ValueError, MemoryTarget, echo, pipeline=2)
        options = Options()
        error = self.assertRaises(
            usage.UsageError, options.parseOptions, ["-p", "echo", "--pipeline", "2"]
        )
        self.assertIn("--pipeline needs a protocol", str(error))


class PoolTests(SynchronousTestCase):
    def setUp(self):
        reactor = MemoryReactorClock()
        self.targets = [MemoryTarget(echo, reactor=reactor) for _ in range(3)]
        self.pool = TargetPool([t.factory for t in self.targets])
        self.multiplexer = Multiplexer(echo, self.pool, clock=reactor)
        self.multiplexer.start()
        self.transports = [t.accept()[0] for t in self.targets]

    def test_spreadsOverConnections(self):
        """
        Three clients' requests go out at once, one on each connection, and
        each answer reaches its own client.
        """
        clients = [connectClient(self.multiplexer, 1 + n) for n in range(3)]
        for n, (client, _) in enumerate(clients):
            client.dataReceived(b"client %d\n" % n)
        sent = sorted(t.value() for t in self.transports)
        self.assertEqual(sent, [b"client 0\n", b"client 1\n", b"client 2\n"])
        for transport in self.transports:
            transport.protocol.dataReceived(transport.value())
        for n, (_, transport) in enumerate(clients):
            self.assertEqual(transport.value(), b"client %d\n" % n)

    def test_perClientOrder(self):
        """
        One client's pipelined requests still go one at a time, in order,
        even with idle connections around.
        """
        client, clientTransport = connectClient(self.multiplexer)
        client.dataReceived(b"1\n2\n3\n")
        inFlight = [t for t in self.transports if t.value()]
        self.assertEqual(len(inFlight), 1)
        for expected in (b"1\n", b"2\n", b"3\n"):
            (transport,) = [t for t in self.transports if t.value()]
            self.assertEqual(transport.value(), expected)
            transport.clear()
            transport.protocol.dataReceived(expected)
        self.assertEqual(clientTransport.value(), b"1\n2\n3\n")

    def test_prefersReadyConnection(self):
        """
        A connection that is down is not chosen while another has room.
        """
        self.transports[0].loseConnection()
        self.targets[0].refuse()
        client, clientTransport = connectClient(self.multiplexer)
        client.dataReceived(b"x\n")
        self.assertEqual(self.transports[1].value() + self.transports[2].value(), b"x\n")


class ConcurrencyEndToEndTests(TestCase):
    timeout = 60

    async def test_connections(self):
        """
        With C{--connections 3} against a device that serves three, ten
        pymodbus clients each get their own answers, over three connections.
        """
        device, devicePort = await runExample(
            self, "modbus_device.py", "--port", "0", "--max-connections", "3"
        )
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--connections", "3"
        )
        results = await gatherResults(
            [deferToThread(clientSession, port, index) for index in range(10)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(5)])
        self.assertEqual(device.count("accepted connection"), 3)
        self.assertEqual(device.count("refused connection"), 0)

    async def test_pipeline(self):
        """
        With C{--pipeline 4}, ten pymodbus clients (which check that every
        answer carries their own transaction id) each get their own answers
        over one connection to a device that answers pipelined requests out
        of order; several were in flight at once.
        """
        device = PipeliningDevice()
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: PipeliningDeviceProtocol(device))
        )
        self.addCleanup(listening.stopListening)
        port, multiplexer = await startMultiplexer(
            self, "modbus", listening.getHost().port, "--pipeline", "4"
        )
        results = await gatherResults(
            [deferToThread(clientSession, port, index, 10) for index in range(10)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(seen, [[index * 100 + r, r, index] for r in range(10)])
        self.assertEqual(device.connections, 1)
        self.assertGreater(device.mostInFlight, 1)
        self.assertLessEqual(device.mostInFlight, 4)


class PipeliningDevice:
    """
    Holding registers shared by the connections of L{PipeliningDeviceProtocol}.
    """

    def __init__(self):
        self.registers = [0] * 1000
        self.connections = 0
        self.mostInFlight = 0


class PipeliningDeviceProtocol(Protocol):
    """
    A Modbus TCP device (function codes 3 and 16) that answers pipelined
    requests, each after a delay that makes later requests overtake earlier
    ones, as a device with concurrent request handling does. Many real
    devices (and pymodbus's own server) answer only one request at a time.
    """

    def __init__(self, device):
        self.device = device
        self.buffer = b""
        self.inFlight = 0
        self.count = 0

    def connectionMade(self):
        self.device.connections += 1

    def dataReceived(self, data):
        requests, self.buffer = splitModbus(self.buffer + data)
        for request in requests:
            self.inFlight += 1
            self.device.mostInFlight = max(self.device.mostInFlight, self.inFlight)
            self.count += 1
            # 5 ms, 4 ms, 3 ms, ...: a later request is answered first.
            delay = 0.001 * (5 - self.count % 5)
            reactor.callLater(delay, self.answer, request)

    def answer(self, request):
        self.inFlight -= 1
        tid, _, _, unit, function = struct.unpack(">HHHBB", request[:8])
        registers = self.device.registers
        if function == 3:
            address, count = struct.unpack(">HH", request[8:12])
            values = registers[address : address + count]
            pdu = struct.pack(">BB", 3, 2 * count) + struct.pack(f">{count}H", *values)
        elif function == 16:
            address, count = struct.unpack(">HH", request[8:12])
            values = struct.unpack(f">{count}H", request[13 : 13 + 2 * count])
            registers[address : address + count] = values
            pdu = struct.pack(">BHH", 16, address, count)
        else:
            pdu = struct.pack(">BB", function | 0x80, 1)
        self.transport.write(struct.pack(">HHHB", tid, 0, len(pdu) + 1, unit) + pdu)
