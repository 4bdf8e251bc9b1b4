"""
Tests for L{tcpmux.protocols.iso8583}: 2-byte binary length framing, and
ISO 8583 clients (pyiso8583) sharing one host link through tcpmux.
"""

import os
import socket
import struct
import sys

import iso8583
from hypothesis import given, settings
from hypothesis import strategies as st
from iso8583.specs import default_ascii as spec
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.iso8583 import ISO8583Receiver, application
from tests.framers import Recording, bytewise, chunked, feed, feedLikeAReactor
from tests.support import EXAMPLES, ROOT, childEnvironment, runExample, startMultiplexer


def framed(payload):
    return struct.pack(">H", len(payload)) + payload


ECHO = framed(b"0800822000000000000004000000000000001124202200000001301")
PURCHASE = framed(b"0200" + b"x" * 300)
KEEPALIVE = b"\x00\x00"


class RecordingReceiver(Recording, ISO8583Receiver):
    pass


class SmallReceiver(RecordingReceiver):
    MAX_LENGTH = 100
    maxMessageSize = 102


class FramingTests(SynchronousTestCase):
    def test_whole(self):
        """
        A message is delivered with its length header, as on the wire.
        """
        receiver, transport = feed(RecordingReceiver, ECHO)
        self.assertEqual(receiver.messages, [ECHO])
        self.assertFalse(transport.disconnecting)

    def test_byteAtATime(self):
        """
        Messages arriving a byte at a time are each delivered once, whole.
        """
        receiver, _ = feed(RecordingReceiver, *bytewise(ECHO + PURCHASE))
        self.assertEqual(receiver.messages, [ECHO, PURCHASE])

    def test_merged(self):
        """
        Several messages in one read are delivered one by one; a partial one
        waits for the rest.
        """
        receiver, _ = feed(RecordingReceiver, ECHO + PURCHASE + ECHO[:1])
        self.assertEqual(receiver.messages, [ECHO, PURCHASE])
        receiver.dataReceived(ECHO[1:])
        self.assertEqual(receiver.messages, [ECHO, PURCHASE, ECHO])

    def test_keepAliveDropped(self):
        """
        A zero length header is a keep-alive: it is not a message, and the
        messages around it are delivered.
        """
        receiver, transport = feed(
            RecordingReceiver, KEEPALIVE + ECHO + KEEPALIVE, KEEPALIVE[:1], KEEPALIVE[1:]
        )
        receiver.dataReceived(PURCHASE)
        self.assertEqual(receiver.messages, [ECHO, PURCHASE])
        self.assertEqual(receiver.errors, [])
        self.assertFalse(transport.disconnecting)

    def test_largest(self):
        """
        A 65535-byte message (the largest a 2-byte header can describe) is
        delivered.
        """
        big = framed(b"0200" + b"\x00" * 65531)
        self.assertEqual(len(big), ISO8583Receiver.maxMessageSize)
        receiver, transport = feed(RecordingReceiver, big[:40000], big[40000:])
        self.assertEqual(receiver.messages, [big])
        self.assertFalse(transport.disconnecting)

    def test_lengthLimit(self):
        """
        With a lower C{MAX_LENGTH}, a longer header is a framing error at
        once: the connection is closed and nothing more is delivered.
        """
        receiver, transport = feed(
            SmallReceiver, framed(b"a" * 100) + b"\x00\x65", framed(b"b")
        )
        receiver.dataReceived(framed(b"c"))
        self.assertEqual(receiver.messages, [framed(b"a" * 100)])
        self.assertEqual(receiver.errors, ["ISO 8583 length header is 101, more than 100"])
        self.assertTrue(transport.disconnecting)

    def test_nothingAfterClose(self):
        """
        Once the connection is closing, messages still buffered from the
        same read are not delivered.
        """

        class Closing(RecordingReceiver):
            def messageReceived(self, message):
                RecordingReceiver.messageReceived(self, message)
                self.transport.loseConnection()

        receiver, _ = feed(Closing, ECHO + PURCHASE + ECHO)
        self.assertEqual(receiver.messages, [ECHO])


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("iso8583"), application)
        self.assertEqual(application.name, "iso8583")
        self.assertIs(application.requestReceiver, ISO8583Receiver)
        self.assertIs(application.responseReceiver, ISO8583Receiver)

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
        receiver, transport = feed(RecordingReceiver)
        feedLikeAReactor(receiver, chunked(data, cuts))
        self.assertEqual(receiver.messages, [framed(m) for m in messages if m])
        self.assertFalse(transport.disconnecting)

    @settings(max_examples=300, deadline=None)
    @given(st.binary(max_size=600), st.lists(st.integers(min_value=0), max_size=20))
    def test_arbitraryBytes(self, data, cuts):
        """
        Arbitrary bytes deliver exactly what a reference parser finds and
        raise nothing, with a lowered limit too.
        """
        for receiverClass, limit in (RecordingReceiver, 0xFFFF), (SmallReceiver, 100):
            receiver, transport = feed(receiverClass)
            feedLikeAReactor(receiver, chunked(data, cuts))
            messages, error = referenceParse(data, limit)
            self.assertEqual(receiver.messages, messages)
            self.assertEqual(bool(receiver.errors), error)
            self.assertEqual(transport.disconnecting, error)


# -- end to end: pyiso8583 clients, tcpmux, examples/iso8583_server.py


def sendFramed(sock, raw, header):
    if header == "ascii":
        sock.sendall(b"%04d" % len(raw) + raw)
    else:
        sock.sendall(framed(raw))


def receiveExactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def receiveFramed(sock, header):
    if header == "ascii":
        length = int(receiveExactly(sock, 4))
    else:
        (length,) = struct.unpack(">H", receiveExactly(sock, 2))
    return receiveExactly(sock, length)


def isoRequest(mti, stan, terminal):
    message = {"t": mti, "7": "1124202200", "11": f"{stan:06d}", "41": terminal}
    if mti == "0800":
        message["70"] = "301"
    else:
        message.update({"2": "4111111111111111", "3": "000000", "4": f"{stan:012d}"})
    raw, _ = iso8583.encode(message, spec)
    return bytes(raw)


def isoClientSession(port, header, index, rounds=4, batch=3):
    """
    One ISO 8583 terminal: C{rounds} times, send C{batch} requests at once
    (an 0800, then 0200s), then read and decode the answers.

    @return: C{(mti, stan, amount)} of every answer, in order.
    """
    terminal = f"TERM{index:04d}"
    seen = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stan = index * 1000
        for _ in range(rounds):
            sent = []
            for n in range(batch):
                stan += 1
                mti = "0800" if n == 0 else "0200"
                sent.append(stan)
                sendFramed(sock, isoRequest(mti, stan, terminal), header)
            for _ in sent:
                answer, _ = iso8583.decode(receiveFramed(sock, header), spec)
                assert answer["41"] == terminal, answer
                seen.append((answer["t"], int(answer["11"]), answer.get("4")))
    return seen


def expectedSession(index, rounds=4, batch=3):
    expected = []
    stan = index * 1000
    for _ in range(rounds):
        for n in range(batch):
            stan += 1
            if n == 0:
                expected.append(("0810", stan, None))
            else:
                expected.append(("0210", stan, f"{stan:012d}"))
    return expected


def closedAfterRequest(port, raw, header):
    """
    Send one request; return what comes back before the connection closes.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sendFramed(sock, raw, header)
        received = b""
        while True:
            chunk = sock.recv(1000)
            if not chunk:
                return received
            received += chunk


def freePort():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def manyTerminals(testCase, protocol, header, clients=6):
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    results = await gatherResults(
        [deferToThread(isoClientSession, port, header, index) for index in range(1, clients + 1)]
    )
    for index, seen in zip(range(1, clients + 1), results):
        testCase.assertEqual(seen, expectedSession(index))
    testCase.assertEqual(host.count("accepted connection"), 1)
    testCase.assertEqual(host.count("refused connection"), 0)
    testCase.assertEqual(host.count("answered"), clients * 12)
    return host, port


async def badClientClosedOthersServed(testCase, protocol, header, badBytes):
    """
    A client sending C{badBytes} is closed; a terminal connected at the
    same time is answered before and after.
    """
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    good = socket.create_connection(("127.0.0.1", port), timeout=10)
    testCase.addCleanup(good.close)

    def ask(stan):
        sendFramed(good, isoRequest("0800", stan, "GOOD0001"), header)
        answer, _ = iso8583.decode(receiveFramed(good, header), spec)
        return answer["t"], answer["11"]

    testCase.assertEqual(await deferToThread(ask, 7), ("0810", "000007"))

    def badClient():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(badBytes)
            return sock.recv(100)

    testCase.assertEqual(await deferToThread(badClient), b"")
    testCase.assertEqual(await deferToThread(ask, 8), ("0810", "000008"))
    testCase.assertEqual(host.count("accepted connection"), 1)


async def exampleClientThrough(testCase, protocol, header):
    host, hostPort = await runExample(
        testCase, "iso8583_server.py", "--port", "0", "--header", header
    )
    port, _ = await startMultiplexer(testCase, protocol, hostPort)
    out, err, code = await getProcessOutputAndValue(
        sys.executable,
        [os.path.join(EXAMPLES, "iso8583_client.py"), "--port", str(port),
         "--header", header, "--count", "2", "--stan", "41"],
        env=childEnvironment(),
        path=ROOT,
    )
    testCase.assertEqual(code, 0, err)
    testCase.assertEqual(
        out.decode().splitlines(),
        [
            "0800 stan=000041 -> 0810 stan=000041 response code 00",
            "0200 stan=000042 -> 0210 stan=000042 response code 00",
            "0200 stan=000043 -> 0210 stan=000043 response code 00",
        ],
    )


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
