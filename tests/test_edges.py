"""
Edge cases end to end over real TCP on 127.0.0.1: a client that half-closes
its connection, SIGTERM with requests queued, slow-drip clients holding
--max-clients slots, recovery after a refused connection, sessions freed by
reference counting alone, and logs that stay small under repeated events.
"""

import gc
from collections import Counter
import socket
import struct
import time
import weakref

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web.server import Site
from twisted.web.static import Data

from tests.faults import (
    FaultTarget,
    answer,
    answerAndClose,
    ask,
    captureLogs,
    connect,
    hold,
)
from tests.modbus import exceptionResponse, readRequest, readResponse, splitModbus
from tests.support import (
    freePort,
    receiveUntilClosed,
    runTwistd,
    startMultiplexer,
    until,
)

GATEWAY_PATH_UNAVAILABLE = 0x0A


def onlySession(multiplexer):
    """
    The one connected client's session (without keeping it in a frame).
    """
    (session,) = multiplexer.clients
    return session


def framerOf(session):
    """
    The request framer a session receives from.
    """
    return session.framer


async def turns(count=5):
    """
    Let the reactor run C{count} times.
    """
    for _ in range(count):
        await deferLater(reactor, 0)


def halfCloseExchange(port, data, shutDown):
    """
    In a thread: send C{data} on a new blocking socket, shut down its
    sending side, call C{shutDown}, then read until the connection ends.

    @return: every byte received.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        shutDown()
        return receiveUntilClosed(sock)


class HalfCloseTests(TestCase):
    """
    A client that shuts down its sending side (SHUT_WR, C{nc -N}) still gets
    an answer to every whole request it sent, then the connection ends.
    """

    timeout = 15

    async def exchange(self, kind, data, expectedRequests):
        """
        Send C{data} and half-close while the target holds the first
        request; once tcpmux has seen the half-close, let the target answer.

        @return: what the client received before the connection ended.
        """
        target = FaultTarget(kind, hold)
        port, multiplexer = await startMultiplexer(self, kind, target.listen(self))
        received = target.nextRequest()
        shutDown = Deferred()
        result = deferToThread(
            halfCloseExchange,
            port,
            data,
            lambda: reactor.callFromThread(shutDown.callback, None),
        )
        await received
        await shutDown
        # Time for tcpmux to read the end of the client's input.
        await deferLater(reactor, 0.2)
        target.behaviour = answer
        target.answerHeld()
        response = await result
        self.assertEqual(len(target.requests), expectedRequests)
        return response

    async def test_modbusRequestThenHalfClose(self):
        """
        A Modbus request, then SHUT_WR: the answer comes, then the end.
        """
        response = await self.exchange("modbus", readRequest(7, 70), 1)
        self.assertEqual(response, readResponse(7, 70))

    async def test_threePipelinedEchoLinesThenHalfClose(self):
        """
        Three echo lines in one write, then SHUT_WR: all three come back,
        in order, then the end.
        """
        lines = [b"one\n", b"two\n", b"three\n"]
        response = await self.exchange("echo", b"".join(lines), 3)
        self.assertEqual(response, b"".join(lines))


class SIGTERMWithQueueTests(TestCase):
    timeout = 30

    async def test_everyAcceptedRequestAnswered(self):
        """
        SIGTERM while the target holds one request and 59 more wait behind
        it: the held one gets its answer (given during the stop), every
        other one gets 0x0A, no client is closed owing an answer, and
        tcpmux exits 0.
        """
        target = FaultTarget("modbus", hold)
        targetPort = target.listen(self)
        port = freePort()
        child = runTwistd(self, 
            "--nodaemon", "--pidfile=", "--logfile=-", "tcpmux",
            "--protocol", "modbus", "--target", f"127.0.0.1:{targetPort}",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--timeout", "5",
        )
        await child.waitFor("Connected to target")
        clients = [await connect(self, port) for _ in range(20)]

        def requests(i):
            return [readRequest(i * 3 + k, i * 10 + k) for k in range(3)]

        received = target.nextRequest()
        clients[0].send(requests(0)[0])
        await received
        clients[0].send(b"".join(requests(0)[1:]))
        for i, client in enumerate(clients[1:], 1):
            client.send(b"".join(requests(i)))
        # Time for tcpmux to read them all.
        await deferLater(reactor, 0.5)
        self.assertEqual(len(target.requests), 1)

        child.signal("TERM")
        await child.waitFor("Received SIGTERM")
        target.behaviour = answer
        target.answerHeld()
        await gatherResults([client.closed for client in clients])
        self.assertEqual(await child.ended, 0)

        self.assertEqual(clients[0].messages[0], readResponse(0, 0))
        for i, client in enumerate(clients):
            self.assertEqual(len(client.messages), 3, (i, client.messages))
            for k, message in enumerate(client.messages):
                tid, address = i * 3 + k, i * 10 + k
                self.assertIn(
                    message,
                    [
                        readResponse(tid, address),
                        exceptionResponse(tid, GATEWAY_PATH_UNAVAILABLE),
                    ],
                    (i, k),
                )


class SlowDripTests(TestCase):
    timeout = 15

    async def test_slowDripClientsClosedAndSlotsFreed(self):
        """
        Three clients holding every --max-clients slot, each sending one
        byte of a request every 150 ms and never finishing it, are closed
        after --client-timeout (0.5 s), and a fourth client is then
        answered.
        """
        logs = captureLogs(self)
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self),
            "--max-clients", "3", "--client-timeout", "500ms",
        )
        started = time.monotonic()
        drippers = [await connect(self, port) for _ in range(3)]
        await until(lambda: len(multiplexer.clients) == 3)
        names = [f"127.0.0.1:{client.localPort}" for client in drippers]

        async def drip(client):
            for byte in readRequest(1, 1)[:-1]:
                if client.closed.called:
                    return
                client.send(bytes([byte]))
                await deferLater(reactor, 0.15)

        dripping = [Deferred.fromCoroutine(drip(client)) for client in drippers]
        await gatherResults(
            [client.closed.addTimeout(3, reactor) for client in drippers]
        )
        elapsed = time.monotonic() - started
        self.assertTrue(0.48 <= elapsed < 1.2, elapsed)
        for name in names:
            self.assertIn(
                f"Closing client {name}: request incomplete after 0.5s "
                "(--client-timeout)",
                logs,
            )
        await gatherResults(dripping)
        self.assertEqual(target.requests, [])

        await until(lambda: len(multiplexer.clients) == 0)
        fourth = await connect(self, port)
        self.assertEqual(await ask(fourth, readRequest(4, 44)), readResponse(4, 44))


class RefusedRecoveryTests(TestCase):
    timeout = 15

    async def test_refusalReportedAtOnceAndRecoveryFast(self):
        """
        Nothing listens on the target's port: after --retry-delay has
        passed, a request that triggers a new attempt gets 0x0A as soon as
        it is refused, not an attempt interval later; once the target
        listens, a request succeeds within --retry-delay + 0.5 s.
        """
        targetPort = freePort()
        port, multiplexer = await startMultiplexer(
            self, "modbus", targetPort, "--retry-delay", "300ms", "--timeout", "5"
        )
        client = await connect(self, port)
        started = time.monotonic()
        self.assertEqual(
            await ask(client, readRequest(1, 1)),
            exceptionResponse(1, GATEWAY_PATH_UNAVAILABLE),
        )
        self.assertLess(time.monotonic() - started, 0.5)

        await deferLater(reactor, 0.4)
        started = time.monotonic()
        self.assertEqual(
            await ask(client, readRequest(2, 2)),
            exceptionResponse(2, GATEWAY_PATH_UNAVAILABLE),
        )
        # A refusal on 127.0.0.1 takes well under a millisecond; the
        # host-name endpoint used to add its 0.3 s attempt interval.
        self.assertLess(time.monotonic() - started, 0.25)

        target = FaultTarget("modbus", answer)
        target.listen(self, targetPort)
        back = time.monotonic()
        tid = 3
        while True:
            response = await ask(client, readRequest(tid, 9))
            if response == readResponse(tid, 9):
                break
            self.assertEqual(response, exceptionResponse(tid, GATEWAY_PATH_UNAVAILABLE))
            self.assertLess(time.monotonic() - back, 0.3 + 0.5)
            tid += 1
            await deferLater(reactor, 0.02)
        self.assertLess(time.monotonic() - back, 0.3 + 0.5)


class RawClient(Protocol):
    """
    A client that ignores what it receives and can wait for its end.
    """

    def __init__(self):
        self.closed = Deferred()

    def connectionLost(self, reason):
        self.closed.callback(None)


class FreedByReferenceCountingTests(TestCase):
    """
    With the cyclic garbage collector off, a client's session and framer are
    freed as soon as its connection is gone: nothing in tcpmux keeps them in
    a reference cycle.
    """

    timeout = 15

    def setUp(self):
        gc.collect()
        gc.disable()
        self.addCleanup(gc.enable)

    async def assertFreedAfter(self, multiplexer, leave):
        """
        Take weak references to the one client's session and framer, call
        C{leave}, and check both are gone once the client is.
        """
        await until(lambda: len(multiplexer.clients) == 1)
        sessionRef = weakref.ref(onlySession(multiplexer))
        framerRef = weakref.ref(framerOf(sessionRef()))
        await leave(sessionRef, framerRef)
        await until(lambda: len(multiplexer.clients) == 0)
        await turns()
        self.assertIsNone(sessionRef(), "the session outlived its connection")
        self.assertIsNone(framerRef(), "the framer outlived its connection")

    async def httpHalfRequest(self, abort):
        site = Site(Data(b"ok", "text/plain"))
        site.noisy = False
        listening = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port, multiplexer = await startMultiplexer(
            self, "http", listening.getHost().port
        )
        client = await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(
            Factory.forProtocol(RawClient)
        )
        body = b"x" * (1024 * 1024)

        async def leave(sessionRef, framerRef):
            client.transport.write(
                b"POST /upload HTTP/1.1\r\nHost: device\r\n"
                b"Content-Length: 5000000\r\n\r\n" + body
            )
            await until(lambda: framerRef().buffered() >= len(body))
            if abort:
                client.transport.abortConnection()
            else:
                client.transport.loseConnection()
            await client.closed

        await self.assertFreedAfter(multiplexer, leave)

    async def test_httpHalfRequestThenClose(self):
        """
        An HTTP client that announced 5 MB of body, sent 1 MB, then closed
        (which tcpmux sees first as a half-close).
        """
        await self.httpHalfRequest(abort=False)

    async def test_httpHalfRequestThenAbort(self):
        """
        The same, the client resetting the connection.
        """
        await self.httpHalfRequest(abort=True)

    async def test_modbusRoundTripThenClose(self):
        """
        A Modbus client that completed a round trip, then closed.
        """
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(self, "modbus", target.listen(self))
        client = await connect(self, port)

        async def leave(sessionRef, framerRef):
            self.assertEqual(await ask(client, readRequest(1, 5)), readResponse(1, 5))
            client.transport.loseConnection()
            await client.closed

        await self.assertFreedAfter(multiplexer, leave)


def captureEvents(testCase):
    """
    Collect tcpmux's own log events (not Twisted's, nor the tests') until
    the test ends.
    """
    events = []

    def observer(event):
        if event.get("log_namespace", "").startswith("tcpmux"):
            events.append(event)

    globalLogPublisher.addObserver(observer)
    testCase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


def summary(events):
    """
    How many times each log format occurs among C{events}.
    """
    return dict(Counter(event.get("log_format") for event in events))


def loud(events):
    """
    The events logged at info level or above.
    """
    return [event for event in events if event.get("log_level") != LogLevel.debug]


class PushingTargetProtocol(Protocol):
    """
    Pushes unrequested Modbus responses, one per write, while the factory
    has any left to push; answers requests once it has none.
    """

    def connectionMade(self):
        self.buffer = b""
        self.factory.accepted += 1
        self.push()

    def push(self):
        if not self.transport.connected or self.transport.disconnecting:
            return
        if self.factory.remaining <= 0:
            return
        self.factory.remaining -= 1
        self.transport.write(readResponse(0xFFFF, self.factory.remaining))
        reactor.callLater(0, self.push)

    def dataReceived(self, data):
        messages, self.buffer = splitModbus(self.buffer + data)
        for request in messages:
            tid, _, _, unit, function, address = struct.unpack(">HHHBBH", request[:10])
            self.transport.write(readResponse(tid, address, unit))


class PushingTarget(ServerFactory):
    protocol = PushingTargetProtocol
    noisy = False

    def __init__(self, count):
        self.remaining = count
        self.accepted = 0


class SmallLogsTests(TestCase):
    timeout = 20

    async def test_unrequestedPushesLogFewLines(self):
        """
        A target that pushes 2,000 unrequested responses while the clients
        are idle: few info or warning lines, and a client is answered after.
        """
        events = captureEvents(self)
        target = PushingTarget(2000)
        listening = reactor.listenTCP(0, target, interface="127.0.0.1")
        self.addCleanup(listening.stopListening)
        port, multiplexer = await startMultiplexer(
            self, "modbus", listening.getHost().port
        )
        idle = [await connect(self, port) for _ in range(3)]
        await until(lambda: target.remaining == 0, timeout=15)
        await deferLater(reactor, 0.1)
        self.assertEqual(await ask(idle[0], readRequest(3, 33)), readResponse(3, 33))
        lines = loud(events)
        self.assertLess(len(lines), 20, summary(lines))
        self.assertEqual(idle[0].messages, [readResponse(3, 33)])
        self.assertEqual([client.messages for client in idle[1:]], [[], []])

    async def test_closeAfterEveryResponseLogsFewLines(self):
        """
        200 round trips to a target that closes after every response, by 20
        clients that connect and disconnect: few info or warning lines, and
        none about routine client connects and disconnects.
        """
        events = captureEvents(self)
        target = FaultTarget("modbus", answerAndClose)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--timeout", "2"
        )
        for i in range(20):
            client = await connect(self, port, cleanup=False)
            for k in range(10):
                tid = i * 10 + k
                self.assertEqual(await ask(client, readRequest(tid, tid)), readResponse(tid, tid))
            client.transport.loseConnection()
            await client.closed
        await until(lambda: len(multiplexer.clients) == 0)
        self.assertGreaterEqual(target.accepted, 200)
        lines = loud(events)
        self.assertLess(len(lines), 20, summary(lines))
        self.assertEqual(
            [event["log_format"] for event in lines if "Client" in event["log_format"]],
            [],
        )
