"""
Tests for L{tcpmux.protocols.iso8583}: 2-byte binary length framing, and
ISO 8583 clients (pyiso8583) sharing one host link through tcpmux.
"""

import socket
import struct

import iso8583
from hypothesis import given, settings
from hypothesis import strategies as st
from iso8583.specs import default_ascii as spec
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.iso8583 import ISO8583Receiver, application
from tests.framers import KeepingOpen, Recording, bytewise, chunked, feed, feedLikeAReactor
from tests.iso import (
    closedAfterRequest,
    exampleClientThrough,
    expectedSession,
    framed,
    isoClientSession,
    isoRequest,
    manyTerminals,
    receiveFramed,
)
from tests.support import freePort, runExample, startMultiplexer


ECHO = framed(b"0800822000000000000004000000000000001124202200000001301")
PURCHASE = framed(b"0200" + b"x" * 300)
KEEPALIVE = b"\x00\x00"


class SmallReceiver(ISO8583Receiver):
    MAX_LENGTH = 100
    maxMessageSize = 102


class FramingTests(SynchronousTestCase):
    def test_whole(self):
        """
        A message is delivered with its length header, as on the wire.
        """
        framer, recorder = feed(ISO8583Receiver, ECHO)
        self.assertEqual(recorder.messages, [ECHO])
        self.assertFalse(framer.transport.disconnecting)

    def test_byteAtATime(self):
        """
        Messages arriving a byte at a time are each delivered once, whole.
        """
        _, recorder = feed(ISO8583Receiver, *bytewise(ECHO + PURCHASE))
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])

    def test_merged(self):
        """
        Several messages in one read are delivered one by one; a partial one
        waits for the rest.
        """
        framer, recorder = feed(ISO8583Receiver, ECHO + PURCHASE + ECHO[:1])
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])
        self.assertEqual(framer.buffered(), 1)
        framer.dataReceived(ECHO[1:])
        self.assertEqual(recorder.messages, [ECHO, PURCHASE, ECHO])

    def test_keepAliveDropped(self):
        """
        A zero length header is a keep-alive: it is not a message, and the
        messages around it are delivered.
        """
        framer, recorder = feed(
            ISO8583Receiver, KEEPALIVE + ECHO + KEEPALIVE, KEEPALIVE[:1], KEEPALIVE[1:]
        )
        framer.dataReceived(PURCHASE)
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])
        self.assertEqual(recorder.errors, [])
        self.assertFalse(framer.transport.disconnecting)

    def test_largest(self):
        """
        A 65535-byte message (the largest a 2-byte header can describe) is
        delivered.
        """
        big = framed(b"0200" + b"\x00" * 65531)
        self.assertEqual(len(big), ISO8583Receiver.maxMessageSize)
        framer, recorder = feed(ISO8583Receiver, big[:40000], big[40000:])
        self.assertEqual(recorder.messages, [big])
        self.assertFalse(framer.transport.disconnecting)

    def test_lengthLimit(self):
        """
        With a lower C{MAX_LENGTH}, a longer header is a framing error at
        once: the connection is closed and nothing more is delivered.
        """
        framer, recorder = feed(
            SmallReceiver, framed(b"a" * 100) + b"\x00\x65", framed(b"b")
        )
        framer.dataReceived(framed(b"c"))
        self.assertEqual(recorder.messages, [framed(b"a" * 100)])
        self.assertEqual(recorder.errors, ["ISO 8583 length header is 101, more than 100"])
        self.assertTrue(framer.transport.disconnecting)

    def test_nothingAfterErrorWhileOpen(self):
        """
        After a length over the limit nothing more is delivered, and nothing
        kept, even while the receiver keeps the connection open.
        """
        framer, recorder = feed(
            SmallReceiver,
            framed(b"a") + b"\x00\x65" + framed(b"b"),
            framed(b"c"),
            recorder=KeepingOpen(),
        )
        self.assertEqual(recorder.messages, [framed(b"a")])
        self.assertEqual(len(recorder.errors), 1)
        self.assertFalse(framer.transport.disconnecting)
        self.assertEqual(framer.buffered(), 0)

    def test_nothingAfterClose(self):
        """
        Once the connection is closing, messages still buffered from the
        same read are not delivered.
        """

        class Closing(Recording):
            def messageReceived(self, message):
                Recording.messageReceived(self, message)
                self.framer.transport.loseConnection()

        _, recorder = feed(ISO8583Receiver, ECHO + PURCHASE + ECHO, recorder=Closing())
        self.assertEqual(recorder.messages, [ECHO])


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("iso8583"), application)
        self.assertEqual(application.name, "iso8583")
        self.assertIs(application.requestFramer, ISO8583Receiver)
        self.assertIs(application.responseFramer, ISO8583Receiver)

    def test_errorsCloseTheClient(self):
        """
        There is no spec-independent ISO 8583 error answer: a failed round
        trip closes the client.
        """
        for error in TargetUnavailable("x"), TargetTimeout("x"), TargetLost("x"):
            self.assertIsNone(application.errorResponse(ECHO, error))

    def test_describe(self):
        self.assertEqual(application.describe(ECHO), "mti=0800")
        self.assertEqual(application.describe(framed(b"\x02\x00\x01")), "")


def referenceParse(data, limit=0xFFFF):
    """
    The messages a correct framer delivers from C{data}, and whether it
    must report a framing error.
    """
    messages = []
    start = 0
    while len(data) - start >= 2:
        (length,) = struct.unpack(">H", data[start : start + 2])
        if length > limit:
            return messages, True
        end = start + 2 + length
        if end > len(data):
            break
        if length:
            messages.append(data[start:end])
        start = end
    return messages, False


payloads = st.lists(st.binary(max_size=300), max_size=8)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(payloads, st.lists(st.integers(min_value=0), max_size=20))
    def test_anyChunking(self, messages, cuts):
        """
        However a valid stream is cut into reads, the same messages come out
        (keep-alives, the empty ones, dropped).
        """
        data = b"".join(framed(m) for m in messages)
        framer, recorder = feed(ISO8583Receiver)
        feedLikeAReactor(framer, chunked(data, cuts))
        self.assertEqual(recorder.messages, [framed(m) for m in messages if m])
        self.assertFalse(framer.transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=20))
    def test_arbitraryBytes(self, data, cuts):
        """
        Arbitrary bytes deliver exactly what a reference parser finds and
        raise nothing, with a lowered limit too.
        """
        for framerClass, limit in (ISO8583Receiver, 0xFFFF), (SmallReceiver, 100):
            framer, recorder = feed(framerClass)
            feedLikeAReactor(framer, chunked(data, cuts))
            messages, error = referenceParse(data, limit)
            self.assertEqual(recorder.messages, messages)
            self.assertEqual(bool(recorder.errors), error)
            self.assertEqual(framer.transport.disconnecting, error)


class EndToEndTests(TestCase):
    timeout = 60

    async def test_manyTerminalsOneHostLink(self):
        """
        Six terminals at once, each pipelining 0800 and 0200 requests, all
        get their own answers (STAN, terminal id and amount checked) over
        the host's single connection.
        """
        await manyTerminals(self, "iso8583", "binary")

    async def test_keepAliveNotForwarded(self):
        """
        A client's keep-alive (zero length) is not forwarded: the host sees
        only the real request, and the client gets its answer.
        """
        host, hostPort = await runExample(self, "iso8583_server.py", "--port", "0")
        port, _ = await startMultiplexer(self, "iso8583", hostPort)

        def client():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(KEEPALIVE + framed(isoRequest("0800", 5, "TERM0005")) + KEEPALIVE)
                answer, _ = iso8583.decode(receiveFramed(sock, "binary"), spec)
                return answer["11"]

        self.assertEqual(await deferToThread(client), "000005")
        self.assertEqual(host.count("answered"), 1)
        self.assertEqual(host.count("cannot decode"), 0)

    async def test_targetUnavailableClosesClient(self):
        """
        With nothing listening at the target, a request gets no answer: the
        client is closed.
        """
        port, _ = await startMultiplexer(self, "iso8583", freePort())
        self.assertEqual(
            await deferToThread(
                closedAfterRequest, port, isoRequest("0800", 1, "TERM0001"), "binary"
            ),
            b"",
        )

    async def test_timeoutClosesClientOnly(self):
        """
        A host that does not answer within --timeout: the waiting client is
        closed, and the next one is answered on a renewed link.
        """
        SlowFirstHost.connections = 0
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(SlowFirstHost)
        )
        self.addCleanup(listening.stopListening)
        port, _ = await startMultiplexer(
            self, "iso8583", listening.getHost().port, "--timeout", "0.5"
        )
        self.assertEqual(
            await deferToThread(
                closedAfterRequest, port, isoRequest("0800", 1, "SLOWTERM"), "binary"
            ),
            b"",
        )
        self.assertEqual(
            await deferToThread(isoClientSession, port, "binary", 2, 1, 2),
            expectedSession(2, 1, 2),
        )
        self.assertEqual(SlowFirstHost.connections, 2)

    async def test_exampleClient(self):
        """
        examples/iso8583_client.py through tcpmux prints each answer with
        its request's STAN and exits 0.
        """
        await exampleClientThrough(self, "iso8583", "binary")


class SlowFirstHost(Protocol):
    """
    An ISO 8583 host that never answers on its first connection and answers
    every request at once on later ones (0800 -> 0810, 0200 -> 0210, with
    the request's STAN, terminal id and amount).
    """

    connections = 0
    _buffer = b""

    def connectionMade(self):
        SlowFirstHost.connections += 1
        self.silent = SlowFirstHost.connections == 1

    def dataReceived(self, data):
        self._buffer += data
        while len(self._buffer) >= 2:
            (length,) = struct.unpack(">H", self._buffer[:2])
            if len(self._buffer) < 2 + length:
                return
            raw, self._buffer = self._buffer[2 : 2 + length], self._buffer[2 + length :]
            if self.silent:
                continue
            request, _ = iso8583.decode(raw, spec)
            response = {
                "t": request["t"][:2] + "1" + request["t"][3],
                "11": request["11"],
                "39": "00",
                "41": request["41"],
            }
            if "4" in request:
                response["4"] = request["4"]
            self.transport.write(framed(bytes(iso8583.encode(response, spec)[0])))
