"""
A new user's first hour: start-up mistakes through a real C{twistd}
(one clear line, no traceback, a non-zero exit status), the version, the
start-up log line, a device whose only connection is taken, and verbose
dumps of large messages.
"""

import os
import time

from twisted.internet import reactor
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase

import twisted
from tcpmux import __version__
from tcpmux.errors import TargetUnavailable
from tcpmux.protocols.echo import application as echo
from tcpmux.protocols.modbus import application as modbus
from tests.faults import FaultTarget, answer, ask, captureLogs, connect
from tests.memory import MemoryTarget, connectClient, memoryMultiplexer
from tests.modbus import exceptionResponse, readRequest, readResponse
from tests.support import freePort, runTwistd, startMultiplexer

CLOSED = "closed the connection right after accepting it"
HINT = "another client may hold its only connection"


class StartupTests(TestCase):
    """
    C{twistd tcpmux} as a user types it.
    """

    timeout = 30

    async def twistd(self, *args):
        """
        Run C{twistd} with C{args} to its end.

        @return: its exit status and output lines.
        """
        child = runTwistd(self, *args)
        status = await child.ended
        return status, [line for line in child.lines if line.strip()]

    async def assertRefused(self, message, *tcpmuxArgs):
        """
        C{twistd -n tcpmux tcpmuxArgs} exits 1 having said C{message} on one
        line, with no traceback, and no more than a pointer to --help
        besides.
        """
        status, lines = await self.twistd("-n", "--pidfile=", "tcpmux", *tcpmuxArgs)
        self.assertEqual(status, 1, lines)
        self.assertEqual(len([line for line in lines if message in line]), 1, lines)
        self.assertIn(message, lines[-1])
        self.assertFalse([line for line in lines if "Traceback" in line], lines)
        self.assertLessEqual(len(lines), 3, lines)
        return lines[-1]

    async def test_version(self):
        """
        C{twistd tcpmux --version} prints tcpmux's version and Twisted's,
        and exits 0.
        """
        status, lines = await self.twistd("tcpmux", "--version")
        self.assertEqual(status, 0)
        self.assertEqual(len(lines), 1, lines)
        self.assertIn(f"tcpmux {__version__} (Twisted {twisted.__version__}", lines[0])

    async def test_targetRequired(self):
        line = await self.assertRefused("--target is required")
        self.assertIn("host:port", line)

    async def test_listenPortOutOfRange(self):
        for listen in ("99999", "tcp:99999"):
            await self.assertRefused(
                "port must be 0..65535", "-t", "127.0.0.1:502", "-l", listen
            )

    async def test_badTargetsInTheUsersTerms(self):
        await self.assertRefused("port must be a number", "-t", "localhost:notaport")
        await self.assertRefused("tcp: endpoint needs port=", "-t", "tcp:host=x")
        await self.assertRefused(
            "--timeout must be a positive duration",
            "-t", "127.0.0.1:502", "--timeout", "-1",
        )

    def occupiedPort(self):
        """
        A port of 127.0.0.1 something else listens on until the test ends.
        """
        port = reactor.listenTCP(
            0, ServerFactory.forProtocol(Protocol), interface="127.0.0.1"
        )
        self.addCleanup(port.stopListening)
        return port.getHost().port

    async def test_portInUse(self):
        """
        In the foreground, a listen address in use is one line in the log
        and exit status 1.
        """
        port = self.occupiedPort()
        listen = f"tcp:{port}:interface=127.0.0.1"
        status, lines = await self.twistd(
            "-n", "--pidfile=", "--logfile=-", "tcpmux",
            "-t", f"127.0.0.1:{freePort()}", "-l", listen,
        )
        self.assertEqual(status, 1, lines)
        message = f"cannot listen on {listen}: address already in use"
        self.assertEqual(len([line for line in lines if message in line]), 1, lines)
        self.assertFalse([line for line in lines if "Traceback" in line], lines)

    async def test_portInUseDaemonized(self):
        """
        Daemonized, twistd's launching process says why and exits 1 (it
        does not wait for a daemon that is gone).
        """
        port = self.occupiedPort()
        base = os.path.abspath(self.mktemp())
        os.makedirs(base)
        status, lines = await self.twistd(
            f"--pidfile={os.path.join(base, 'tcpmux.pid')}",
            f"--logfile={os.path.join(base, 'tcpmux.log')}",
            "tcpmux", "-t", f"127.0.0.1:{freePort()}", "-l", f"tcp:{port}",
        )
        self.assertEqual(status, 1, lines)
        self.assertIn(
            f"cannot listen on tcp:{port}: address already in use", "\n".join(lines)
        )

    async def test_startupLogLine(self):
        """
        One start-up line says the version, the protocol, where tcpmux
        listens and the target.
        """
        target = FaultTarget("modbus", answer)
        targetPort = target.listen(self)
        listen = f"tcp:{freePort()}:interface=127.0.0.1"
        child = runTwistd(
            self, "-n", "--pidfile=", "--logfile=-", "tcpmux",
            "-p", "modbus", "-t", f"127.0.0.1:{targetPort}", "-l", listen,
        )
        line = await child.waitFor("starting: protocol modbus")
        self.assertIn(f"tcpmux {__version__} (Twisted {twisted.__version__}", line)
        self.assertIn(f"listening on {listen}", line)
        self.assertIn(f"target 127.0.0.1:{targetPort}", line)
        await child.waitFor("Connected to target")
        child.signal("TERM")
        self.assertEqual(await child.ended, 0)


class SlotTaken(ServerFactory):
    """
    A device whose only connection someone else holds: it accepts, then
    closes at once.
    """

    noisy = False

    def __init__(self):
        self.accepted = []

    def buildProtocol(self, addr):
        self.accepted.append(time.monotonic())
        return Closing()


class Closing(Protocol):
    def connectionMade(self):
        self.transport.loseConnection()


class SlotTakenTests(TestCase):
    timeout = 30

    async def test_backOffAndHint(self):
        """
        Against a device that accepts and closes at once, polled by a
        client, tcpmux backs off as after a refusal (not an attempt per
        request), logs the likely cause once, and the client gets 0x0A or
        0x0B at once each time.
        """
        logs = captureLogs(self)
        device = SlotTaken()
        devicePort = reactor.listenTCP(0, device, interface="127.0.0.1")
        self.addCleanup(devicePort.stopListening)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort.getHost().port,
            "--retry-delay", "200ms", "--timeout", "5",
        )
        client = await connect(self, port)
        started = time.monotonic()
        tid = 0
        while time.monotonic() - started < 2.0:
            tid += 1
            asked = time.monotonic()
            response = await ask(client, readRequest(tid, 1))
            self.assertIn(
                response, (exceptionResponse(tid, 0x0A), exceptionResponse(tid, 0x0B))
            )
            # At once, not after --timeout (5 s); the margin is for a
            # loaded machine.
            self.assertLess(time.monotonic() - asked, 1.0)
            await deferLater(reactor, 0.05)
        self.assertGreater(tid, 10)
        # Without the back-off: about one attempt per request (some 40).
        self.assertLessEqual(len(device.accepted), 8, device.accepted)
        hints = [line for line in logs if HINT in line]
        self.assertEqual(len(hints), 1, logs)
        self.assertEqual(
            hints[0], f"target 127.0.0.1:{devicePort.getHost().port} {CLOSED}; {HINT}"
        )


class ClosedAtOnceUnitTests(SynchronousTestCase):
    """
    L{TargetClientFactory} and connections closed before they answered
    anything.
    """

    def setUp(self):
        self.logs = captureLogs(self)
        self.target = MemoryTarget(echo, retryDelay=1.0, maxRetryDelay=30.0)
        self.target.factory.jitter = 0
        self.target.factory.start()

    def closeAtOnce(self):
        transport, _ = self.target.accept()
        transport.loseConnection()

    def ask(self):
        results = []
        self.target.factory.roundTrip(b"a\n").addBoth(results.append)
        return results

    def waitForAttempt(self):
        waited = 0.0
        while not self.target.pendingAttempts():
            self.target.reactor.advance(0.25)
            waited += 0.25
        return waited

    def test_backOffGrows(self):
        """
        Connections closed at once are failed attempts: the delay before
        the next grows as after refusals, and a request meanwhile fails
        at once, with the hint, without an attempt of its own.
        """
        self.closeAtOnce()
        gaps = []
        for attempt in range(4):
            gaps.append(self.waitForAttempt())
            self.closeAtOnce()
            results = self.ask()
            results[0].trap(TargetUnavailable)
            self.assertIn(CLOSED, str(results[0].value))
            self.assertEqual(self.target.pendingAttempts(), 0)
        self.assertTrue(all(a < b for a, b in zip(gaps, gaps[1:])), gaps)
        self.assertLessEqual(max(gaps), 30.0)
        hints = [line for line in self.logs if HINT in line]
        self.assertEqual(hints[0], f"target 192.0.2.1:502 {CLOSED}; {HINT}")

    def test_onceIsNotTheHint(self):
        """
        One connection closed at once (a target that crashed) is reported
        as a lost connection; a request still makes an attempt at once.
        """
        self.closeAtOnce()
        self.ask()
        self.assertEqual(self.target.pendingAttempts(), 1)
        self.assertFalse([line for line in self.logs if HINT in line])

    def test_answeredThenClosedIsNormal(self):
        """
        A connection that answered, then closed (HTTP's "Connection:
        close", a target that closes after every answer), is no failed
        attempt: the next request opens a new one at once, every time.
        """
        results = self.ask()
        for round in range(5):
            transport, _ = self.target.accept()
            self.assertEqual(transport.value(), b"a\n")
            transport.protocol.dataReceived(b"a\n")
            self.assertEqual(results, [b"a\n"])
            transport.loseConnection()
            results = self.ask()
            self.assertEqual(results, [])
            self.assertEqual(self.target.pendingAttempts(), 1)
        self.assertFalse([line for line in self.logs if HINT in line])

    def test_modbusAnsweredThenClosedIsNormal(self):
        """
        The same for a Modbus target, whose answers are matched by
        transaction id: a connection that answered, then closed, is no
        failed attempt.
        """
        self.target = MemoryTarget(modbus, retryDelay=1.0, maxRetryDelay=30.0)
        self.target.factory.start()
        def ask():
            results = []
            self.target.factory.roundTrip(readRequest(7, 100)).addBoth(results.append)
            return results

        results = ask()
        for round in range(3):
            transport, _ = self.target.accept()
            wireId = int.from_bytes(transport.value()[:2], "big")
            transport.protocol.dataReceived(readResponse(wireId, 42))
            self.assertEqual(results, [readResponse(7, 42)])
            transport.loseConnection()
            results = ask()
            self.assertEqual(results, [])
            self.assertEqual(self.target.pendingAttempts(), 1)
        self.assertFalse([line for line in self.logs if HINT in line])

    def test_unrequestedBytesAreNoAnswer(self):
        """
        Bytes a target pushes with nothing asked, or an answer with an id
        no request carried, do not make its connection one that answered.
        """
        transport, session = self.target.accept()
        transport.protocol.dataReceived(b"pushed\n")
        self.assertFalse(session.answered)
        target = MemoryTarget(modbus, retryDelay=1.0, maxRetryDelay=30.0)
        target.factory.start()
        transport, session = target.accept()
        target.factory.roundTrip(readRequest(7, 100)).addErrback(lambda failure: None)
        wireId = int.from_bytes(transport.value()[:2], "big")
        transport.protocol.dataReceived(readResponse(wireId + 1, 42))
        self.assertFalse(session.answered)

    def test_renewalIsNormal(self):
        """
        A connection tcpmux itself closed (a request given up on) is
        renewed at once, however soon.
        """
        for round in range(3):
            transport, _ = self.target.accept()
            pending = self.target.factory.roundTrip(b"b\n")
            pending.addErrback(lambda failure: None)
            pending.cancel()
            self.assertFalse(transport.connected)
            self.assertEqual(self.target.pendingAttempts(), 1)
        self.assertFalse([line for line in self.logs if HINT in line])

    def test_openLongerIsNormal(self):
        """
        A connection open for a while, even one that never answered (a
        device closing idle connections), is no failed attempt.
        """
        for round in range(3):
            transport, _ = self.target.accept()
            self.target.reactor.advance(5)
            transport.loseConnection()
            self.ask()
            self.assertEqual(self.target.pendingAttempts(), 1)
        self.assertFalse([line for line in self.logs if HINT in line])


class VerboseDumpTests(SynchronousTestCase):
    def test_largeMessagesTruncated(self):
        """
        C{-v} dumps the first 64 bytes of each message and says how many
        more there were; the size is the whole message's.
        """
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        multiplexer, target = memoryMultiplexer(echo, {"verbose": True})
        multiplexer.start()
        targetTransport, _ = target.accept()
        client, transport = connectClient(multiplexer)
        line = b"x" * 59_999 + b"\n"
        client.dataReceived(line)
        targetTransport.protocol.dataReceived(line)
        self.assertEqual(transport.value(), line)
        dumps = [e for e in events if "hex" in e]
        self.assertEqual([e["what"] for e in dumps], ["request from", "response to"])
        for dump in dumps:
            self.assertEqual(dump["size"], 60_000)
            self.assertEqual(dump["hex"], " ".join(["78"] * 64) + " ... (59936 more bytes)")

    def test_smallMessagesWhole(self):
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        multiplexer, target = memoryMultiplexer(modbus, {"verbose": True})
        multiplexer.start()
        target.accept()
        client, transport = connectClient(multiplexer)
        client.dataReceived(readRequest(1, 2))
        dump = [e for e in events if "hex" in e][0]
        self.assertEqual(dump["hex"], readRequest(1, 2).hex(" "))
