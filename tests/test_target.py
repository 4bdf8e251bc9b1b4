"""
Tests for L{tcpmux.target}: one connection, round trips, timeouts, renewal
and reconnection, driven by a L{MemoryReactorClock}.
"""

from twisted.trial.unittest import SynchronousTestCase

from tcpmux.errors import InvalidResponse, TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.echo import application as echo
from tcpmux.protocols.modbus import application as modbus
from tests.memory import MemoryTarget


class TargetConnectionTests(SynchronousTestCase):
    def test_connectsAtStart(self):
        """
        The connection is opened when started, before any request.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        self.assertEqual(target.pendingAttempts(), 1)

    def test_roundTrip(self):
        """
        A request is written to the target and the whole response fires the
        round trip's Deferred.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        results = []
        target.factory.roundTrip(b"ping\n").addCallback(results.append)
        self.assertEqual(transport.value(), b"ping\n")
        transport.protocol.dataReceived(b"po")
        self.assertEqual(results, [])
        transport.protocol.dataReceived(b"ng\n")
        self.assertEqual(results, [b"pong\n"])

    def test_delayAfterConnect(self):
        """
        With a delay, the first request waits that long after the connection
        is made.
        """
        target = MemoryTarget(echo, delay=1.5)
        target.factory.start()
        transport, _ = target.accept()
        target.factory.roundTrip(b"a\n")
        target.reactor.advance(1.4)
        self.assertEqual(transport.value(), b"")
        target.reactor.advance(0.1)
        self.assertEqual(transport.value(), b"a\n")

    def test_abandonedRoundTripRenewsConnection(self):
        """
        Cancelling a round trip that was written (its asker's deadline
        passed) fails it with L{TargetTimeout}, aborts the connection and
        opens a new one at once, so a late answer can never be taken for
        the next response.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, session = target.accept()
        failures = []
        pending = target.factory.roundTrip(b"a\n")
        pending.addErrback(failures.append)
        pending.cancel()
        self.assertEqual(len(failures), 1)
        failures[0].trap(TargetTimeout)
        self.assertFalse(transport.connected)
        # A new connection is on its way at once; the next round trip
        # waits for it.
        self.assertEqual(target.pendingAttempts(), 1)
        results = []
        target.factory.roundTrip(b"b\n").addCallback(results.append)
        newTransport, _ = target.accept()
        self.assertEqual(newTransport.value(), b"b\n")
        newTransport.protocol.dataReceived(b"b\n")
        self.assertEqual(results, [b"b\n"])

    def test_closingConnectionNotOffered(self):
        """
        A connection its receiver is closing (HTTP "Connection: close") gets
        no further request: the next one waits, and goes out on a new
        connection opened as soon as the old one is gone.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        transport.disconnecting = True  # as loseConnection() on TCP does
        results = []
        target.factory.roundTrip(b"next\n").addCallback(results.append)
        self.assertEqual(transport.value(), b"")
        transport.loseConnection()  # the close completes
        newTransport, _ = target.accept()
        self.assertEqual(newTransport.value(), b"next\n")
        newTransport.protocol.dataReceived(b"next\n")
        self.assertEqual(results, [b"next\n"])

    def test_lostMidRequest(self):
        """
        The connection dropping before the response fails the round trip
        with L{TargetLost}.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        failures = []
        target.factory.roundTrip(b"a\n").addErrback(failures.append)
        transport.loseConnection()
        failures[0].trap(TargetLost)

    def test_refusedFailsAtOnce(self):
        """
        When the last attempt was refused less than the retry delay ago, a
        round trip fails at once with L{TargetUnavailable}; later, a round
        trip triggers a new attempt itself.
        """
        target = MemoryTarget(echo, retryDelay=2.0)
        target.factory.start()
        target.refuse()
        failures = []
        target.factory.roundTrip(b"a\n").addErrback(failures.append)
        failures[0].trap(TargetUnavailable)
        self.assertIn("Connection was refused", str(failures[0].value))
        self.assertEqual(target.pendingAttempts(), 0)

        target.reactor.advance(1.0)  # not yet time for the back-off retry
        self.assertEqual(target.pendingAttempts(), 0)
        target.reactor.advance(1.1)
        results = []
        target.factory.roundTrip(b"b\n").addCallback(results.append)
        self.assertEqual(target.pendingAttempts(), 1)
        transport, _ = target.accept()
        transport.protocol.dataReceived(b"b\n")
        self.assertEqual(results, [b"b\n"])

    def test_waitingRequestFailsWhenRefused(self):
        """
        A round trip waiting for a connection attempt fails with
        L{TargetUnavailable} as soon as that attempt is refused.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        failures = []
        target.factory.roundTrip(b"a\n").addErrback(failures.append)
        self.assertEqual(failures, [])
        target.refuse()
        failures[0].trap(TargetUnavailable)

    def test_abandonedWhileWaitingForConnection(self):
        """
        Cancelling a round trip still waiting for a connection fails it with
        L{TargetUnavailable}; it is never written, and the attempt goes on
        for the next request.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        failures = []
        pending = target.factory.roundTrip(b"a\n")
        pending.addErrback(failures.append)
        pending.cancel()
        failures[0].trap(TargetUnavailable)
        transport, _ = target.accept()
        self.assertEqual(transport.value(), b"")

    def test_backoff(self):
        """
        Failed attempts are retried after a delay that starts at the retry
        delay and grows up to the maximum.
        """
        target = MemoryTarget(echo, retryDelay=1.0, maxRetryDelay=5.0)
        target.factory.jitter = 0
        target.factory.start()
        gaps = []
        for attempt in range(5):
            target.refuse()
            waited = 0.0
            while not target.pendingAttempts():
                target.reactor.advance(0.25)
                waited += 0.25
            gaps.append(waited)
        self.assertEqual(gaps[0], 1.0)
        self.assertTrue(all(a <= b for a, b in zip(gaps, gaps[1:])), gaps)
        self.assertLessEqual(max(gaps), 5.0)

    def test_modbusIdsRewrittenAndMappedBack(self):
        """
        On the target connection a Modbus request carries tcpmux's own
        transaction id, and the response goes back with the client's.
        """
        target = MemoryTarget(modbus)
        target.factory.start()
        transport, _ = target.accept()
        results = []
        request = b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"
        target.factory.roundTrip(request).addCallback(results.append)
        self.assertEqual(transport.value(), b"\x00\x01" + request[2:])
        transport.protocol.dataReceived(b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x02")
        self.assertEqual(results, [b"\x00\x07\x00\x00\x00\x05\x01\x03\x02\x00\x02"])

    def test_lateModbusAnswerDropped(self):
        """
        A Modbus response with an id given out before on this connection (a
        late or repeated answer) is dropped; the right one completes the
        round trip, and the connection is kept.
        """
        target = MemoryTarget(modbus)
        target.factory.start()
        transport, _ = target.accept()
        results = []
        request = b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"
        target.factory.roundTrip(request).addCallback(results.append)
        first = b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x01"
        transport.protocol.dataReceived(first)
        target.factory.roundTrip(request).addCallback(results.append)
        transport.protocol.dataReceived(first)  # the same answer, again
        self.assertEqual(len(results), 1)
        transport.protocol.dataReceived(b"\x00\x02\x00\x00\x00\x05\x01\x03\x02\x00\x02")
        self.assertEqual(results[1], b"\x00\x07\x00\x00\x00\x05\x01\x03\x02\x00\x02")
        self.assertTrue(transport.connected)

    def test_modbusIdNeverGivenOutFailsAtOnce(self):
        """
        A Modbus response with an id no request carried means the target is
        out of step: the round trip fails at once with L{InvalidResponse}
        (not after the timeout) and the connection is renewed.
        """
        target = MemoryTarget(modbus)
        target.factory.start()
        transport, _ = target.accept()
        failures = []
        request = b"\x00\x07\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"
        target.factory.roundTrip(request).addErrback(failures.append)
        transport.protocol.dataReceived(b"\x01\x00\x00\x00\x00\x05\x01\x03\x02\x00\x02")
        failures[0].trap(InvalidResponse)
        self.assertFalse(transport.connected)
        self.assertEqual(target.pendingAttempts(), 1)

    def test_surplusAfterResponseRenews(self):
        """
        Bytes that follow a whole response in the same read answer nothing:
        the response goes to its asker, and the connection is renewed before
        the next request is written, which goes out on a new connection.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        results = []

        def next(response):
            results.append(response)
            # The asker's callback lets the next request go at once.
            target.factory.roundTrip(b"b\n").addCallback(results.append)

        target.factory.roundTrip(b"a\n").addCallback(next)
        transport.clear()
        transport.protocol.dataReceived(b"a\na\n")
        self.assertEqual(results, [b"a\n"])
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"")
        newTransport, _ = target.accept()
        self.assertEqual(newTransport.value(), b"b\n")
        newTransport.protocol.dataReceived(b"b\n")
        self.assertEqual(results, [b"a\n", b"b\n"])

    def test_unrequestedResponseRenews(self):
        """
        A response when no request is in flight is dropped, and the
        connection renewed.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        transport.protocol.dataReceived(b"pushed\n")
        self.assertFalse(transport.connected)
        self.assertEqual(target.pendingAttempts(), 1)

    def test_stop(self):
        """
        Stopping closes the connection and makes no new attempt.
        """
        target = MemoryTarget(echo)
        target.factory.start()
        transport, _ = target.accept()
        stopped = target.factory.stop()
        self.assertFalse(transport.connected)
        self.assertEqual(self.successResultOf(stopped), None)
        target.reactor.advance(100)
        self.assertEqual(target.pendingAttempts(), 0)
