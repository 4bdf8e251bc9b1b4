"""
Limits and lifecycle: SIGTERM to a real C{twistd tcpmux} (daemonized, and in
the foreground with a round trip in flight), --max-clients,
--client-timeout and --idle-close.
"""

import os
import signal

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.multiplexer import Multiplexer
from tcpmux.protocols.echo import application as echo
from tests.faults import FaultTarget, answer, ask, captureLogs, connect, hold
from tests.memory import connectClient
from tests.modbus import exceptionResponse, readRequest, readResponse
from tests.support import freePort, runTwistd, startMultiplexer, until


def alive(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return not any(
                line.startswith("State:") and "Z" in line.split()[1] for line in f
            )
    except FileNotFoundError:
        return False


class SIGTERMTests(TestCase):
    timeout = 30

    async def test_daemonized(self):
        """
        C{twistd tcpmux} daemonizes and writes its pidfile; on SIGTERM it
        stops and removes the pidfile.
        """
        target = FaultTarget("echo", answer)
        targetPort = target.listen(self)
        port = freePort()
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        pidfile = os.path.join(base, "tcpmux.pid")
        logfile = os.path.join(base, "tcpmux.log")
        launcher = runTwistd(self, 
            f"--pidfile={pidfile}", f"--logfile={logfile}", "tcpmux",
            "--protocol", "echo", "--target", f"127.0.0.1:{targetPort}",
            "--listen", f"tcp:{port}:interface=127.0.0.1",
        )
        self.assertEqual(await launcher.ended, 0)
        await until(lambda: os.path.exists(pidfile) and target.accepted == 1)
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(lambda: alive(pid) and os.kill(pid, signal.SIGKILL))
        client = await connect(self, port, "echo")
        self.assertEqual(await ask(client, b"hello\n"), b"hello\n")
        os.kill(pid, signal.SIGTERM)
        await client.closed
        await until(lambda: not alive(pid))
        self.assertFalse(os.path.exists(pidfile))
        with open(logfile) as f:
            log = f.read()
        self.assertIn("Received SIGTERM, shutting down.", log)
        self.assertIn("Server Shut Down.", log)

    async def sigtermInFlight(self, answerDuringStop):
        target = FaultTarget("modbus", hold)
        targetPort = target.listen(self)
        port = freePort()
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        pidfile = os.path.join(base, "tcpmux.pid")
        child = runTwistd(self, 
            "--nodaemon", f"--pidfile={pidfile}", "--logfile=-", "tcpmux",
            "--protocol", "modbus", "--target", f"127.0.0.1:{targetPort}",
            "--listen", f"tcp:{port}:interface=127.0.0.1", "--timeout", "1",
        )
        await child.waitFor("Connected to target")
        self.assertTrue(os.path.exists(pidfile))
        client = await connect(self, port)
        received = target.nextRequest()
        answered = ask(client, readRequest(3, 33))
        await received
        child.signal("TERM")
        await child.waitFor("Received SIGTERM")
        if answerDuringStop:
            target.behaviour = answer
            target.answerHeld()
        response = await answered
        await client.closed
        self.assertEqual(await child.ended, 0)
        self.assertFalse(os.path.exists(pidfile))
        return response, child

    async def test_roundTripInFlightFinishes(self):
        """
        SIGTERM with a round trip in flight: the answer that comes during
        the stop still reaches the client, then tcpmux exits 0 and removes
        its pidfile.
        """
        response, child = await self.sigtermInFlight(True)
        self.assertEqual(response, readResponse(3, 33))

    async def test_roundTripInFlightFails(self):
        """
        SIGTERM with a round trip the target never answers: it fails with
        0x0B within --timeout, then tcpmux exits 0.
        """
        response, child = await self.sigtermInFlight(False)
        self.assertEqual(response, exceptionResponse(3, 0x0B))


class MaxClientsTests(TestCase):
    timeout = 20

    async def test_overTheLimitClosedAndLogged(self):
        logs = captureLogs(self)
        target = FaultTarget("echo", answer)
        port, multiplexer = await startMultiplexer(
            self, "echo", target.listen(self), "--max-clients", "2"
        )
        a = await connect(self, port, "echo")
        b = await connect(self, port, "echo")
        await until(lambda: len(multiplexer.clients) == 2)
        c = await connect(self, port, "echo")
        cPort = c.localPort
        await c.closed
        self.assertIn(
            f"Refusing client 127.0.0.1:{cPort}: 2 clients already "
            "connected (--max-clients)",
            logs,
        )
        self.assertEqual(await ask(a, b"a\n"), b"a\n")
        b.transport.loseConnection()
        await until(lambda: len(multiplexer.clients) == 1)
        d = await connect(self, port, "echo")
        self.assertEqual(await ask(d, b"d\n"), b"d\n")


class FakeTarget:
    """
    A target whose round trips wait until answered by the test.
    """

    name = "fake"
    concurrency = 1

    def __init__(self):
        self.pending = []
        self.started = 0
        self.released = 0

    def start(self):
        self.started += 1

    def release(self):
        self.released += 1

    def stop(self):
        from twisted.internet.defer import succeed

        return succeed(None)

    def roundTrip(self, request, deadline=None, partReceived=None):
        d = Deferred()
        self.pending.append((request, d))
        return d


class ClientTimeoutUnitTests(SynchronousTestCase):
    def setUp(self):
        self.clock = Clock()
        self.target = FakeTarget()
        self.multiplexer = Multiplexer(
            echo, self.target, clientTimeout=10.0, clock=self.clock
        )
        self.logs = captureLogs(self)

    def test_idleClientClosed(self):
        client, transport = connectClient(self.multiplexer, 4001)
        self.clock.advance(9.9)
        self.assertTrue(transport.connected)
        self.clock.advance(0.1)
        self.assertFalse(transport.connected)
        self.assertIn(
            "Closing client 127.0.0.1:4001: idle for 10.0s (--client-timeout)",
            self.logs,
        )

    def test_wholeRequestPostpones(self):
        client, transport = connectClient(self.multiplexer, 4002)
        self.clock.advance(8)
        client.dataReceived(b"whole\n")
        self.target.pending.pop()[1].callback(b"whole\n")
        self.clock.advance(8)
        self.assertTrue(transport.connected)
        self.clock.advance(2)
        self.assertFalse(transport.connected)

    def test_incompleteRequestDoesNotPostpone(self):
        """
        A client that keeps sending bytes of a request it never finishes (a
        slow drip) is closed once --client-timeout has passed since its
        last whole request.
        """
        client, transport = connectClient(self.multiplexer, 4005)
        for second in range(9):
            self.clock.advance(1)
            client.dataReceived(b"x")
        self.assertTrue(transport.connected)
        self.clock.advance(1)
        self.assertFalse(transport.connected)
        self.assertIn(
            "Closing client 127.0.0.1:4005: request incomplete after 10.0s "
            "(--client-timeout)",
            self.logs,
        )

    def test_waitingForAnswerIsNotIdle(self):
        client, transport = connectClient(self.multiplexer, 4003)
        client.dataReceived(b"slow\n")
        self.clock.advance(25)
        self.assertTrue(transport.connected)
        request, d = self.target.pending.pop()
        d.callback(b"slow\n")
        self.assertEqual(transport.value(), b"slow\n")
        self.clock.advance(9.9)
        self.assertTrue(transport.connected)
        self.clock.advance(0.1)
        self.assertFalse(transport.connected)

    def test_oneTimerMovedOn(self):
        """
        Round trips one after another move the client's one timer on,
        rather than cancel it and set another each (a cancelled call stays
        in the reactor's heap): idleness still counts from the last answer.
        """
        client, transport = connectClient(self.multiplexer, 4006)
        [timer] = self.clock.getDelayedCalls()
        for second in range(12):
            self.clock.advance(1)
            client.dataReceived(b"again\n")
            self.target.pending.pop()[1].callback(b"again\n")
        self.assertEqual(self.clock.getDelayedCalls(), [timer])
        self.assertFalse(timer.cancelled)
        self.clock.advance(9.9)
        self.assertTrue(transport.connected)
        self.clock.advance(0.1)
        self.assertFalse(transport.connected)

    def test_offByDefault(self):
        multiplexer = Multiplexer(echo, self.target, clock=self.clock)
        client, transport = connectClient(multiplexer, 4004)
        self.clock.advance(3600 * 24)
        self.assertTrue(transport.connected)


class IdleCloseUnitTests(SynchronousTestCase):
    def setUp(self):
        self.logs = captureLogs(self)
    def test_releasedAndReopened(self):
        clock = Clock()
        target = FakeTarget()
        multiplexer = Multiplexer(echo, target, idleClose=30.0, clock=clock)
        multiplexer.start()
        self.assertEqual((target.started, target.released), (1, 0))
        clock.advance(29)
        client, transport = connectClient(multiplexer, 4010)
        clock.advance(100)
        self.assertEqual((target.started, target.released), (1, 0))
        transport.loseConnection()
        clock.advance(29.9)
        self.assertEqual(target.released, 0)
        clock.advance(0.1)
        self.assertEqual(target.released, 1)
        connectClient(multiplexer, 4011)
        self.assertEqual(target.started, 2)
        self.assertTrue(self.logs)

    def test_keptByDefault(self):
        clock = Clock()
        target = FakeTarget()
        multiplexer = Multiplexer(echo, target, clock=clock)
        multiplexer.start()
        clock.advance(3600 * 24)
        self.assertEqual(target.released, 0)


class IdleCloseTests(TestCase):
    timeout = 20

    async def test_realConnectionReleasedAndReopened(self):
        """
        The connection is opened at start; with no client for --idle-close
        it is closed; a client re-opens it and is answered.
        """
        target = FaultTarget("modbus", answer)
        targetPort = target.listen(self)
        opened = target.nextConnection()
        port, multiplexer = await startMultiplexer(
            self, "modbus", targetPort, "--idle-close", "300ms"
        )
        first = await opened
        await until(lambda: not first.transport.connected)
        self.assertEqual(target.accepted, 1)
        client = await connect(self, port)
        self.assertEqual(await ask(client, readRequest(1, 5)), readResponse(1, 5))
        self.assertEqual(target.accepted, 2)
        client.transport.loseConnection()
        await until(lambda: not target.connections)
        self.assertEqual(target.accepted, 2)
