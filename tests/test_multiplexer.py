"""
Tests for L{tcpmux.multiplexer}: the round-trip queue, per-client order,
fairness, departed clients, back-pressure and gateway errors, with clients
and target in memory.
"""

import tracemalloc

from twisted.trial.unittest import SynchronousTestCase

from tcpmux.protocols.echo import application as echo
from tcpmux.protocols.http import application as http
from tcpmux.protocols.modbus import application as modbus
from tests.memory import connectClient, memoryMultiplexer


def line(text):
    return text.encode() + b"\n"


class QueueTests(SynchronousTestCase):
    def setUp(self):
        self.multiplexer, self.target = memoryMultiplexer(echo)
        self.multiplexer.start()
        self.targetTransport, _ = self.target.accept()

    def answer(self):
        """
        The target answers the request it has, echoing it; return it.
        """
        request = self.targetTransport.value()
        self.targetTransport.clear()
        self.targetTransport.protocol.dataReceived(request)
        return request

    def test_oneRoundTripAtATime(self):
        """
        Only one request is on the target connection at a time; the next
        is written once the previous answer arrived.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(line("a1"))
        b.dataReceived(line("b1"))
        self.assertEqual(self.targetTransport.value(), line("a1"))
        self.assertEqual(self.answer(), line("a1"))
        self.assertEqual(aTransport.value(), line("a1"))
        self.assertEqual(self.targetTransport.value(), line("b1"))
        self.answer()
        self.assertEqual(bTransport.value(), line("b1"))

    def test_clientsTakeTurns(self):
        """
        A client that sent many requests at once does not starve the
        others: clients take turns, and each client's answers are in order.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(line("a1") + line("a2") + line("a3"))
        b.dataReceived(line("b1"))
        order = [self.answer() for _ in range(4)]
        self.assertEqual(order, [line("a1"), line("b1"), line("a2"), line("a3")])
        self.assertEqual(aTransport.value(), line("a1") + line("a2") + line("a3"))
        self.assertEqual(bTransport.value(), line("b1"))

    def test_halfSentRequestDoesNotQueue(self):
        """
        A partial request holds up nobody.
        """
        a, _ = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(b"half a li")
        b.dataReceived(line("b1"))
        self.assertEqual(self.answer(), line("b1"))
        self.assertEqual(bTransport.value(), line("b1"))

    def test_departedClientsRequestsNotSent(self):
        """
        Requests queued by a client that left are never sent, and the answer
        to its request in flight is dropped.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(line("a1"))
        a.dataReceived(line("a2"))
        b.dataReceived(line("b1"))
        aTransport.loseConnection()
        self.assertEqual(self.answer(), line("a1"))
        self.assertEqual(self.answer(), line("b1"))
        self.assertEqual(self.targetTransport.value(), b"")
        self.assertEqual(bTransport.value(), line("b1"))

    def test_backPressure(self):
        """
        A client with C{maxQueue} requests waiting is no longer read; it is
        read again once its queue drains.
        """
        self.multiplexer.maxQueue = 3  # read by each new client's session
        a, aTransport = connectClient(self.multiplexer, 1)
        a.dataReceived(line("1") + line("2") + line("3"))
        self.assertEqual(aTransport.producerState, "producing")
        a.dataReceived(line("4"))
        self.assertEqual(aTransport.producerState, "paused")
        self.answer()
        self.assertEqual(aTransport.producerState, "producing")

    def test_slowReaderNotSent(self):
        """
        While a client's transport buffer is full, its next request waits,
        and other clients go ahead.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(line("a1") + line("a2"))
        b.dataReceived(line("b1"))
        a.receiver.pauseProducing()  # as its transport does when the buffer is full
        self.answer()  # a1
        self.assertEqual(self.answer(), line("b1"))
        self.assertEqual(self.targetTransport.value(), b"")
        a.receiver.resumeProducing()
        self.assertEqual(self.answer(), line("a2"))

    def test_framingErrorClosesOnlyThatClient(self):
        """
        A client that sends an unframeable message is closed; another client
        is served.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        b, bTransport = connectClient(self.multiplexer, 2)
        a.dataReceived(b"x" * 70000)
        self.assertFalse(aTransport.connected)
        b.dataReceived(line("b1"))
        self.answer()
        self.assertEqual(bTransport.value(), line("b1"))

    def test_framingErrorAfterWholeRequests(self):
        """
        Whole requests that came before bad bytes are answered first, in
        order; then the client is closed.
        """
        a, aTransport = connectClient(self.multiplexer, 1)
        a.dataReceived(line("a1") + line("a2") + b"x" * 70000)
        self.assertTrue(aTransport.connected)
        self.answer()
        self.assertTrue(aTransport.connected)
        self.answer()
        self.assertEqual(aTransport.value(), line("a1") + line("a2"))
        self.assertFalse(aTransport.connected)

    def test_maxClients(self):
        """
        A client over C{maxClients} is refused.
        """
        self.multiplexer.clients.maxClients = 2
        connectClient(self.multiplexer, 1)
        connectClient(self.multiplexer, 2)
        self.assertIsNone(self.multiplexer.buildProtocol(None))


class RepeatedFailureLogTests(SynchronousTestCase):
    def test_floodSummarized(self):
        """
        With the target refusing, the first failed request is logged at
        once; the same failure again within the window is counted and
        logged as one summary line when the window ends. Every client still
        gets its own error response.
        """
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        multiplexer, target = memoryMultiplexer(modbus)
        multiplexer.start()
        target.refuse()
        request = b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01"
        clients = [connectClient(multiplexer, 1 + n) for n in range(5)]
        for client, _ in clients:
            client.dataReceived(request)
        for _, transport in clients:
            self.assertEqual(transport.value(), b"\x00\x01\x00\x00\x00\x03\x01\x83\x0a")

        def failureLines():
            return [
                e["log_format"] for e in events
                if "failed" in e.get("log_format", "")
            ]

        self.assertEqual(failureLines(), ["Request from {client} failed: {error}"])
        target.reactor.advance(multiplexer.queue.failures.window)
        self.assertEqual(len(failureLines()), 2)
        summary = [e for e in events if "count" in e and "failed" in e["log_format"]]
        self.assertEqual(summary[0]["count"], 4)


class VerboseTests(SynchronousTestCase):
    def test_hexDumpsAndTiming(self):
        """
        With C{verbose}, every request and response is logged as a hex
        dump, the response with the round trip's time; without it, neither.
        """
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        for verbose in (False, True):
            del events[:]
            multiplexer, target = memoryMultiplexer(modbus, {"verbose": verbose})
            multiplexer.start()
            targetTransport, _ = target.accept()
            client, transport = connectClient(multiplexer)
            client.dataReceived(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01")
            targetTransport.protocol.dataReceived(b"\x00\x01\x00\x00\x00\x05\x01\x03\x02\x00\x2a")
            dumps = [e for e in events if "hex" in e]
            if not verbose:
                self.assertEqual(dumps, [])
                continue
            self.assertEqual([e["what"] for e in dumps], ["request from", "response to"])
            self.assertEqual(dumps[0]["hex"], "00 01 00 00 00 06 01 03 00 00 00 01")
            self.assertEqual(dumps[0]["summary"], "tid=0001 unit=1 fc=3")
            self.assertIn(" ms", dumps[1]["timing"])


class HTTPOrderTests(SynchronousTestCase):
    def test_badRequestAnsweredAfterEarlierOnes(self):
        """
        An HTTP client that pipelines a good request and then a malformed
        one gets the good request's response first, then its 400.
        """
        multiplexer, target = memoryMultiplexer(http)
        multiplexer.start()
        targetTransport, _ = target.accept()
        client, transport = connectClient(multiplexer)
        good = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
        client.dataReceived(good + b"NOT HTTP AT ALL\r\n\r\n")
        self.assertEqual(targetTransport.value(), good)
        self.assertEqual(transport.value(), b"")
        ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
        targetTransport.protocol.dataReceived(ok)
        self.assertTrue(transport.value().startswith(ok + b"HTTP/1.1 400 "))
        self.assertFalse(transport.connected)


class GatewayErrorTests(SynchronousTestCase):
    def test_modbusTimeout(self):
        """
        A Modbus client whose request times out gets exception 0x0B with its
        own transaction id, and stays connected; the next request goes out
        on a new connection.
        """
        multiplexer, target = memoryMultiplexer(modbus, {"timeout": 2.0}, timeout=2.0)
        multiplexer.start()
        targetTransport, _ = target.accept()
        client, transport = connectClient(multiplexer)
        client.dataReceived(b"\x12\x34\x00\x00\x00\x06\x05\x03\x00\x00\x00\x01")
        target.reactor.advance(2.0)
        self.assertEqual(transport.value(), b"\x12\x34\x00\x00\x00\x03\x05\x83\x0b")
        self.assertTrue(transport.connected)
        self.assertEqual(target.pendingAttempts(), 1)

    def test_tooLateToSend(self):
        """
        A request whose connection comes back with less than a tenth of its
        timeout left is not written (its answer would come too late and
        cost the new connection): the client gets 0x0B. The next request
        goes out on that connection.
        """
        multiplexer, target = memoryMultiplexer(modbus, {"timeout": 2.0}, timeout=2.0)
        multiplexer.start()
        first, _ = target.accept()
        first.loseConnection()
        client, transport = connectClient(multiplexer)
        client.dataReceived(b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01")
        self.assertEqual(target.pendingAttempts(), 1)
        target.reactor.advance(1.85)
        second, _ = target.accept()
        self.assertEqual(second.value(), b"")
        self.assertEqual(transport.value(), b"\x00\x01\x00\x00\x00\x03\x01\x83\x0b")
        transport.clear()
        client.dataReceived(b"\x00\x02\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01")
        # On the target connection tcpmux's own transaction id replaces 0002.
        self.assertEqual(second.value()[2:], b"\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01")

    def test_modbusUnavailable(self):
        """
        With the target refusing, a Modbus client gets exception 0x0A at once.
        """
        multiplexer, target = memoryMultiplexer(modbus)
        multiplexer.start()
        target.refuse()
        client, transport = connectClient(multiplexer)
        client.dataReceived(b"\x00\x01\x00\x00\x00\x06\x01\x04\x00\x00\x00\x01")
        self.assertEqual(transport.value(), b"\x00\x01\x00\x00\x00\x03\x01\x84\x0a")

    def test_echoClientClosed(self):
        """
        An echo client whose round trip failed is disconnected.
        """
        multiplexer, target = memoryMultiplexer(echo)
        multiplexer.start()
        target.refuse()
        client, transport = connectClient(multiplexer)
        client.dataReceived(line("x"))
        self.assertFalse(transport.connected)
        self.assertEqual(transport.value(), b"")


class MemoryPerClientTests(SynchronousTestCase):
    """
    Clients that all connect before the first is answered (as they do when
    tcpmux restarts) add little memory each with their first round trip.
    """

    def firstRoundTripGrowth(self, application, request, answer):
        """
        The Python memory (C{tracemalloc}) that 300 connected clients' first
        round trips add, per client.
        """
        multiplexer, target = memoryMultiplexer(application)
        multiplexer.start()
        targetTransport, _ = target.accept()
        clients = [connectClient(multiplexer, 5000 + n) for n in range(300)]
        tracemalloc.start()
        self.addCleanup(tracemalloc.stop)
        before = tracemalloc.take_snapshot()
        for client, transport in clients:
            client.dataReceived(request)
            sent = targetTransport.value()
            targetTransport.clear()
            targetTransport.protocol.dataReceived(answer(sent))
            self.assertEqual(transport.value(), answer(request))
            transport.clear()
        after = tracemalloc.take_snapshot()
        growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        return growth / len(clients)

    def test_echo(self):
        """
        The session and the framer set, when they are made, every attribute
        a served client sets: one gained later by an instance made before
        others of its class gained it moves the instance's values into a
        dict of its own (CPython 3.11+: about 1.1 KB per client).
        """
        growth = self.firstRoundTripGrowth(echo, line("hello"), lambda sent: sent)
        self.assertLess(growth, 400)

    def test_modbus(self):
        """
        The same for a length-prefixed framer, through the transaction-id
        rewriting.
        """

        def answer(request):
            return request[:4] + b"\x00\x05" + request[6:8] + b"\x02\x00\x07"

        growth = self.firstRoundTripGrowth(
            modbus, b"\x00\x01\x00\x00\x00\x06\x01\x03\x00\x00\x00\x01", answer
        )
        self.assertLess(growth, 400)
