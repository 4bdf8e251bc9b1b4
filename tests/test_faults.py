"""
Fault injection, end to end over real TCP on 127.0.0.1: a target that dies
and comes back, never answers, answers late, closes after every answer or
refuses connections; clients that leave mid-queue, send garbage or do not
read their answers. Each test asserts exactly what every client sees.
"""

import time

from pymodbus.client import ModbusTcpClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.faults import (
    FaultTarget,
    answer,
    answerAndClose,
    ask,
    captureLogs,
    connect,
    hold,
    onCall,
    silent,
)
from tests.modbus import exceptionResponse, readRequest, readResponse
from tests.support import freePort, runExample, startMultiplexer, until

GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED = 0x0B


def pymodbusRead(port, address):
    """
    One pymodbus client, one read: the register, or the exception code.
    """
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
    assert client.connect(), "cannot connect to tcpmux"
    try:
        response = client.read_holding_registers(address, count=1, device_id=1)
    finally:
        client.close()
    if response.isError():
        return ("exception", response.exception_code)
    return ("value", response.registers[0])


def within(started, limit):
    return time.monotonic() - started < limit



def withoutIds(requests):
    """
    Modbus requests without their transaction ids, which tcpmux rewrites on
    the target connection.
    """
    return [request[2:] for request in requests]


class TargetRestartedTests(TestCase):
    timeout = 30

    async def test_modbusDeviceKilledMidRequestAndRestarted(self):
        """
        The pymodbus device dies holding a request: that client gets 0x0B;
        while it is down a client gets 0x0A at once; after it comes back on
        the same port, requests succeed within --retry-delay + 1 s, and
        tcpmux was never restarted.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--retry-delay", "500ms", "--timeout", "5"
        )
        self.assertEqual(await deferToThread(pymodbusRead, port, 7), ("value", 0))

        # Freeze the device, so the next request is in flight and unanswered.
        device.signal("STOP")
        sent = onCall(multiplexer.target, "roundTrip")()
        inFlight = deferToThread(pymodbusRead, port, 7)
        await sent
        device.signal("KILL")
        await device.ended
        self.assertEqual(await inFlight, ("exception", GATEWAY_TARGET_FAILED))

        started = time.monotonic()
        self.assertEqual(
            await deferToThread(pymodbusRead, port, 7),
            ("exception", GATEWAY_PATH_UNAVAILABLE),
        )
        self.assertTrue(within(started, 1.0))

        restarted, _ = await runExample(
            self, "modbus_device.py", "--port", str(devicePort)
        )
        back = time.monotonic()

        def poll():
            # A poller keeps asking; each refusal is answered at once.
            while True:
                result = pymodbusRead(port, 7)
                if result == ("value", 0):
                    return time.monotonic()
                assert result == ("exception", GATEWAY_PATH_UNAVAILABLE), result
                time.sleep(0.05)

        answered = await deferToThread(poll)
        self.assertLess(answered - back, 0.5 + 1)
        self.assertEqual(restarted.count("accepted connection"), 1)

    async def test_echoTargetKilledMidRequestAndRestarted(self):
        """
        For a protocol with no error message (echo), the client whose
        request was in flight, and a client asking while the target is
        down, are disconnected; after the target is back on the same port a
        client is answered within --retry-delay + 1 s.
        """
        target = FaultTarget("echo", hold)
        targetPort = target.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "echo", targetPort, "--retry-delay", "500ms", "--timeout", "5"
        )
        a = await connect(self, port, "echo")
        received = target.nextRequest()
        a.send(b"first\n")
        self.assertEqual(await received, b"first\n")
        await target.kill()
        await a.closed
        self.assertEqual(a.messages, [])

        started = time.monotonic()
        b = await connect(self, port, "echo")
        b.send(b"while down\n")
        await b.closed
        self.assertEqual(b.messages, [])
        self.assertTrue(within(started, 1.0))

        target.behaviour = answer
        target.listen(self, targetPort)
        back = time.monotonic()
        while True:
            c = await connect(self, port, "echo")
            c.send(b"back\n")
            try:
                self.assertEqual(await c.receive(), [b"back\n"])
                break
            except Exception:
                await deferLater(reactor, 0.05)
        self.assertLess(time.monotonic() - back, 0.5 + 1)


class SilentTargetTests(TestCase):
    timeout = 30

    async def test_everyWaitingClientGetsItsError(self):
        """
        The target accepts but never answers: three clients asking at once
        each get 0x0B within --timeout (+ 0.3 s); the connection is renewed.
        """
        target = FaultTarget("modbus", silent)
        targetPort = target.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", targetPort, "--timeout", "1"
        )
        clients = [await connect(self, port) for _ in range(3)]
        await until(lambda: target.accepted == 1)
        renewed = target.nextConnection()
        started = time.monotonic()
        answers = [ask(client, readRequest(10 + i, i)) for i, client in enumerate(clients)]
        for i, d in enumerate(answers):
            self.assertEqual(
                await d, exceptionResponse(10 + i, GATEWAY_TARGET_FAILED)
            )
        self.assertTrue(within(started, 1.0 + 0.3))
        self.assertEqual(withoutIds(target.requests), withoutIds([readRequest(10, 0)]))
        await renewed
        self.assertEqual(target.accepted, 2)

    async def test_queuedRequestSentOnRenewedConnection(self):
        """
        The first connection never answers; a request queued behind the one
        that times out is sent on the renewed connection and answered.
        """
        target = FaultTarget("modbus", silent)
        targetPort = target.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", targetPort, "--timeout", "1"
        )
        a = await connect(self, port)
        b = await connect(self, port)
        received = target.nextRequest()
        aAnswer = ask(a, readRequest(1, 100))
        await received
        # The renewed connection answers.
        renewed = target.nextConnection()
        await deferLater(reactor, 0.4)
        bAnswer = ask(b, readRequest(2, 200))
        first = await renewed
        target.behaviour = answer
        self.assertEqual(await aAnswer, exceptionResponse(1, GATEWAY_TARGET_FAILED))
        self.assertEqual(await bAnswer, readResponse(2, 200))
        self.assertIn(first, target.connections)
        self.assertEqual(
            withoutIds(target.requests),
            withoutIds([readRequest(1, 100), readRequest(2, 200)]),
        )

    async def test_echoClientDisconnected(self):
        """
        For echo, the client whose request timed out is disconnected, within
        --timeout (+ 0.3 s).
        """
        target = FaultTarget("echo", silent)
        port, multiplexer = await startMultiplexer(
            self, "echo", target.listen(self), "--timeout", "500ms"
        )
        a = await connect(self, port, "echo")
        started = time.monotonic()
        a.send(b"hello\n")
        await a.closed
        self.assertTrue(within(started, 0.5 + 0.3))
        self.assertEqual(a.messages, [])


def late(delay):
    """
    Answer the first request after C{delay} seconds, on its connection;
    answer the rest at once.
    """
    sent = Deferred()

    def behaviour(connection, request):
        if len(connection.factory.requests) == 1:

            def answerLate():
                if connection.transport.connected:
                    connection.answer(request)
                sent.callback(None)

            reactor.callLater(delay, answerLate)
        else:
            connection.answer(request)

    return behaviour, sent


class LateAnswerTests(TestCase):
    timeout = 30

    async def test_modbusLateAnswerReachesNoOne(self):
        """
        The target answers after --timeout: the client that asked got 0x0B
        and nothing else, and the next client gets its own answer only.
        """
        behaviour, lateSent = late(0.8)
        target = FaultTarget("modbus", behaviour)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--timeout", "500ms"
        )
        a = await connect(self, port)
        b = await connect(self, port)
        self.assertEqual(
            await ask(a, readRequest(5, 1)), exceptionResponse(5, GATEWAY_TARGET_FAILED)
        )
        self.assertEqual(await ask(b, readRequest(5, 2)), readResponse(5, 2))
        await lateSent
        # One more round trip each, after the late answer was written.
        self.assertEqual(await ask(b, readRequest(6, 3)), readResponse(6, 3))
        self.assertEqual(await ask(a, readRequest(6, 4)), readResponse(6, 4))
        self.assertEqual(
            a.messages,
            [exceptionResponse(5, GATEWAY_TARGET_FAILED), readResponse(6, 4)],
        )
        self.assertEqual(b.messages, [readResponse(5, 2), readResponse(6, 3)])
        self.assertEqual(target.accepted, 2)

    async def test_echoLateAnswerReachesNoOne(self):
        """
        Echo has no ids to match: the connection is renewed after the
        timeout, so the late line reaches no one.
        """
        behaviour, lateSent = late(0.8)
        target = FaultTarget("echo", behaviour)
        port, multiplexer = await startMultiplexer(
            self, "echo", target.listen(self), "--timeout", "500ms"
        )
        a = await connect(self, port, "echo")
        b = await connect(self, port, "echo")
        a.send(b"late\n")
        await a.closed
        self.assertEqual(await ask(b, b"next\n"), b"next\n")
        await lateSent
        self.assertEqual(await ask(b, b"after\n"), b"after\n")
        self.assertEqual(a.messages, [])
        self.assertEqual(b.messages, [b"next\n", b"after\n"])
        self.assertEqual(target.accepted, 2)


class ClosingAndRefusingTargetTests(TestCase):
    timeout = 30

    async def test_targetClosesAfterEveryResponse(self):
        """
        A target that closes after every answer: each request of a client
        that waits for its answers is answered, on a new connection.
        """
        target = FaultTarget("modbus", answerAndClose)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--timeout", "2"
        )
        a = await connect(self, port)
        for i in range(10):
            self.assertEqual(await ask(a, readRequest(i, i)), readResponse(i, i))
        self.assertGreaterEqual(target.accepted, 10)

    async def test_refusedIsAnImmediateModbusError(self):
        """
        Nothing listens on the target's port: a client gets 0x0A at once,
        not after --timeout, every time it asks.
        """
        port, multiplexer = await startMultiplexer(
            self, "modbus", freePort(), "--timeout", "10", "--retry-delay", "200ms"
        )
        a = await connect(self, port)
        for i in range(3):
            started = time.monotonic()
            self.assertEqual(
                await ask(a, readRequest(i, 0)),
                exceptionResponse(i, GATEWAY_PATH_UNAVAILABLE),
            )
            self.assertTrue(within(started, 0.5))
            await deferLater(reactor, 0.25)

    async def test_refusedDisconnectsEchoClientAtOnce(self):
        port, multiplexer = await startMultiplexer(
            self, "echo", freePort(), "--timeout", "10"
        )
        a = await connect(self, port, "echo")
        started = time.monotonic()
        a.send(b"anyone?\n")
        await a.closed
        self.assertTrue(within(started, 0.5))


class DepartingClientTests(TestCase):
    timeout = 30

    async def test_queuedRequestsOfDepartedClientNeverSent(self):
        """
        A client sends three requests while another client's request is in
        flight, then leaves: none of its requests reaches the target.
        """
        target = FaultTarget("modbus", hold)
        port, multiplexer = await startMultiplexer(self, "modbus", target.listen(self))
        a = await connect(self, port)
        b = await connect(self, port)
        c = await connect(self, port)
        received = target.nextRequest()
        aAnswer = ask(a, readRequest(1, 1))
        await received
        queued = onCall(multiplexer.queue, "dispatch")
        b.send(readRequest(2, 2) + readRequest(3, 3) + readRequest(4, 4))
        while len(multiplexer.queue.lock.waiting) < 1:
            await queued()
        left = onCall(multiplexer.clients, "remove")()
        # Gone for good (a close alone could be a half-close, after which
        # it is still answered: see HalfCloseTests).
        b.transport.abortConnection()
        await left
        target.behaviour = answer
        target.answerHeld()
        self.assertEqual(await aAnswer, readResponse(1, 1))
        self.assertEqual(await ask(c, readRequest(5, 5)), readResponse(5, 5))
        self.assertEqual(
            withoutIds(target.requests), withoutIds([readRequest(1, 1), readRequest(5, 5)])
        )


class BadInputTests(TestCase):
    timeout = 30

    async def closedWithReason(self, protocol, data, reason, target=None):
        """
        A client sends C{data}: it alone is closed, a log line names it and
        C{reason}, and another client is still answered.
        """
        logs = captureLogs(self)
        if target is None:
            target = FaultTarget(protocol, answer)
        port, multiplexer = await startMultiplexer(
            self, protocol, target.listen(self), "--timeout", "2"
        )
        bad = await connect(self, port, protocol)
        good = await connect(self, port, protocol)
        name = f"127.0.0.1:{bad.localPort}"
        bad.send(data)
        await bad.closed
        self.assertEqual(bad.messages, [])
        matching = [line for line in logs if name in line and reason in line]
        self.assertEqual(len(matching), 1, logs)
        self.assertIn(f"Closing client {name}: ", matching[0])
        request = readRequest(9, 9) if protocol == "modbus" else b"ok\n"
        self.assertEqual(await ask(good, request), readResponse(9, 9) if protocol == "modbus" else b"ok\n")
        self.assertEqual(withoutIds(target.requests), withoutIds([request]))
        return matching[0]

    async def test_garbage(self):
        await self.closedWithReason(
            "modbus", b"GET / HTTP/1.1\r\n\r\n", "protocol id is 21536, not 0"
        )

    async def test_wrongProtocolId(self):
        await self.closedWithReason(
            "modbus", b"\x00\x01\x00\x07\x00\x06\x01\x03\x00\x00\x00\x01",
            "protocol id is 7, not 0",
        )

    async def test_oversizedModbusFrame(self):
        await self.closedWithReason(
            "modbus", b"\x00\x01\x00\x00\x01\x2c\x01\x10", "length field is 300"
        )

    async def test_oversizedEchoLine(self):
        await self.closedWithReason(
            "echo", b"x" * 70000 + b"\n", "line longer than 65536 bytes"
        )

    async def test_truncatedFrameThenDisconnect(self):
        """
        A client sends half a request and leaves: the log says so, naming
        it, and nothing reaches the target.
        """
        logs = captureLogs(self)
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(self, "modbus", target.listen(self))
        bad = await connect(self, port)
        name = f"127.0.0.1:{bad.localPort}"
        left = onCall(multiplexer.clients, "remove")()
        await until(lambda: len(multiplexer.clients) == 1)
        (session,) = multiplexer.clients
        bad.send(readRequest(1, 1)[:7])
        await until(lambda: session.framer.buffered() == 7)
        bad.transport.loseConnection()
        await left
        self.assertEqual(
            [line for line in logs if name in line and "middle of a request" in line],
            [f"Client {name} disconnected (0 now) in the middle of a request: "
             "7 bytes discarded"],
        )
        self.assertEqual(target.requests, [])

    async def test_truncatedFrameIdleClosedByClientTimeout(self):
        """
        A client sends half a request and waits: --client-timeout closes it,
        with a log line naming it.
        """
        logs = captureLogs(self)
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--client-timeout", "300ms"
        )
        bad = await connect(self, port)
        name = f"127.0.0.1:{bad.localPort}"
        started = time.monotonic()
        bad.send(readRequest(1, 1)[:9])
        await bad.closed
        self.assertTrue(0.3 <= time.monotonic() - started < 0.8)
        self.assertIn(
            f"Closing client {name}: request incomplete after 0.3s "
            "(--client-timeout)",
            logs,
        )
        self.assertEqual(target.requests, [])


class PipeliningTests(TestCase):
    timeout = 30

    async def test_pipelinedRequestsBoundedAndAllAnswered(self):
        """
        A client writes 3,000 requests without reading: tcpmux stops reading
        it once --max-queue requests wait (never holding more than one
        read's worth beyond that), and all 3,000 are answered in order once
        it reads.
        """
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(
            self, "modbus", target.listen(self), "--max-queue", "8"
        )
        a = await connect(self, port)
        a.transport.pauseProducing()
        longest = [0]
        await until(lambda: len(multiplexer.clients) == 1)
        (session,) = multiplexer.clients
        original = session.messageReceived

        def messageReceived(request):
            original(request)
            longest[0] = max(longest[0], len(session.requests))

        session.messageReceived = messageReceived
        count = 3000
        a.send(b"".join(readRequest(i, i % 1000) for i in range(count)))
        while len(target.requests) < 50:
            await target.nextRequest()
        a.transport.resumeProducing()
        messages = await a.receive(count, timeout=20)
        self.assertEqual(messages, [readResponse(i, i % 1000) for i in range(count)])
        # One read is at most 64 KiB: 5,461 requests of 12 bytes.
        self.assertLessEqual(longest[0], 8 + 65536 // 12)
        self.assertFalse(session.readPaused)

    async def test_slowReaderIsNotRead(self):
        """
        An echo client writes 200 lines of 60 KB and reads nothing: tcpmux
        stops sending its requests once its answers back up, then stops
        reading it; once it reads, every line comes back, in order.
        """
        target = FaultTarget("echo", answer)
        port, multiplexer = await startMultiplexer(
            self, "echo", target.listen(self), "--max-queue", "4"
        )
        a = await connect(self, port, "echo")
        a.transport.pauseProducing()
        lines = [b"%05d" % i + b"x" * 60000 + b"\n" for i in range(200)]
        await until(lambda: len(multiplexer.clients) == 1)
        (session,) = multiplexer.clients
        for line in lines:
            a.send(line)
        await until(lambda: session.writePaused and session.readPaused)
        sentBeforeReading = len(target.requests)
        self.assertLess(sentBeforeReading, 200)
        self.assertLessEqual(len(session.requests), 4 + 65536 // 60006 + 1)
        a.transport.resumeProducing()
        self.assertEqual(await a.receive(200, timeout=20), lines)
        self.assertEqual(target.requests, lines)
