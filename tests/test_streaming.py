"""
HTTP responses streamed through tcpmux, end to end over real TCP on
127.0.0.1: a target written here serves 30 MB bodies (with a
Content-Length, and as one 30 MB chunk); a client that reads gets every
byte, clients that never read are dropped (C{--max-client-buffer}) without
holding anyone else up, and what tcpmux holds meanwhile stays bounded.
"""

import functools
import hashlib
import http.client
import io
import random
import socket
import time

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThread
from twisted.protocols.basic import FileSender
from twisted.trial.unittest import TestCase

from tests.support import startMultiplexer, until

KIB = 1024
MIB = 1024 * KIB
SIZE = 30 * 1000 * 1000


@functools.cache
def body():
    """
    The 30 MB every big response carries, and its SHA-256.
    """
    data = random.Random(30).randbytes(SIZE)
    return data, hashlib.sha256(data).hexdigest()


class Sender(FileSender):
    CHUNK_SIZE = 256 * KIB


class BigServer(Protocol):
    """
    An HTTP/1.1 target answering one request at a time: C{/big} with the
    body and a Content-Length, C{/chunked} with the body as one chunk, and
    any other path with the path. Big bodies are written as the socket
    takes them (a pull producer), so the server holds no copies.
    """

    def connectionMade(self):
        self.buffer = b""
        self.sending = False
        self.factory.connections += 1

    def dataReceived(self, data):
        self.buffer += data
        self.answerNext()

    def answerNext(self):
        end = self.buffer.find(b"\r\n\r\n")
        if self.sending or end < 0 or not self.transport.connected:
            return
        method, path, version = self.buffer[: self.buffer.find(b"\r\n")].split(b" ")
        self.buffer = self.buffer[end + 4 :]
        self.factory.seen.append(path)
        data, digest = body()
        if path == b"/big":
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
            self.send(data, b"")
        elif path == b"/chunked":
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % SIZE
            )
            self.send(data, b"\r\n0\r\n\r\n")
        else:
            self.transport.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(path) + path
            )
            self.answerNext()

    def send(self, data, trailer):
        self.sending = True

        def sent(ignored):
            self.transport.write(trailer)
            self.sending = False
            self.answerNext()

        done = Sender().beginFileTransfer(io.BytesIO(data), self.transport)
        # (Cut short when tcpmux closes the connection as the test ends.)
        done.addCallbacks(sent, lambda failure: None)


class Sampler:
    """
    Samples, after each read from the target, how many bytes tcpmux holds:
    what the target connection's response framer buffers, and what each
    client's transport has yet to send.

    @ivar framer: the most the framer held.
    @ivar client: the most one client's transport held.
    @ivar reads: how many reads were sampled.
    """

    def __init__(self, multiplexer):
        self.multiplexer = multiplexer
        self.framer = self.client = self.reads = 0

    def start(self):
        """
        Sample after each read of the target connection's framer.
        """
        framer = self.multiplexer.target.session.framer
        dataReceived = framer.dataReceived

        def sampled(data):
            dataReceived(data)
            self.sample(framer)

        framer.dataReceived = sampled

    def sample(self, framer):
        self.reads += 1
        self.framer = max(self.framer, framer.buffered())
        for client in self.multiplexer.clients:
            transport = client.transport
            # What the transport holds, as twisted.internet.abstract keeps it.
            held = (
                len(transport.dataBuffer) - transport.offset + transport._tempDataLen
            )
            self.client = max(self.client, held)


def connectNonReader(port, path):
    """
    A client that sends a GET for C{path} and never reads; its receive
    buffer is small, so that tcpmux soon has to hold what it does not take.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path)
    return sock


def readUntilClosed(sock):
    """
    Read what a client was sent until tcpmux closes or resets it.

    @return: how many bytes it was sent.
    @raise AssertionError: if it is still open after 5 s.
    """
    sock.settimeout(5)
    received = 0
    try:
        while True:
            data = sock.recv(MIB)
            if not data:
                return received
            received += len(data)
    except ConnectionResetError:
        return received
    except socket.timeout:
        raise AssertionError(
            f"a client that did not read is still connected ({received} bytes read)"
        )
    finally:
        sock.close()


def fetchSmall(port, path):
    """
    GET C{path} with http.client: C{(status, body)}.
    """
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=8)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class StreamingTests(TestCase):
    timeout = 20

    async def setUp(self):
        body()
        self.target = Factory.forProtocol(BigServer)
        self.target.seen = []
        self.target.connections = 0
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            self.target
        )
        self.addCleanup(listening.stopListening)
        self.targetPort = listening.getHost().port

    async def startMultiplexer(self, *args):
        self.port, self.multiplexer = await startMultiplexer(
            self, "http", self.targetPort, *args
        )
        await until(lambda: self.multiplexer.target.session is not None)
        self.sampler = Sampler(self.multiplexer)
        self.sampler.start()

    def assertBounded(self, clientBuffer):
        """
        tcpmux's framer never held a large part of a response, and no
        client's transport held much more than C{clientBuffer}.
        """
        self.assertGreater(self.sampler.reads, SIZE // MIB)
        self.assertLess(self.sampler.framer, MIB)
        self.assertLess(self.sampler.client, clientBuffer + 512 * KIB)

    async def test_readingClient(self):
        """
        A client that reads gets every byte of a 30 MB response with a
        Content-Length, then of one made of a single 30 MB chunk, on one
        keep-alive connection.
        """
        await self.startMultiplexer()

        def fetch():
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=8)
            results = []
            try:
                for path in ("/big", "/chunked"):
                    connection.request("GET", path)
                    response = connection.getresponse()
                    digest = hashlib.sha256()
                    size = 0
                    while data := response.read(MIB):
                        digest.update(data)
                        size += len(data)
                    results.append(
                        (
                            response.status,
                            response.getheader("Transfer-Encoding"),
                            size,
                            digest.hexdigest(),
                        )
                    )
            finally:
                connection.close()
            return results

        started = time.monotonic()
        results = await deferToThread(fetch)
        digest = body()[1]
        self.assertEqual(
            results, [(200, None, SIZE, digest), (200, "chunked", SIZE, digest)]
        )
        self.assertLess(time.monotonic() - started, 10)
        self.assertEqual(self.target.connections, 1)
        # A reading client keeps up: nothing near the whole body was held.
        self.assertBounded(4 * MIB)

    async def test_nonReadersDropped(self):
        """
        Three clients ask for 30 MB each and never read: each is dropped
        once tcpmux holds more than 1 MiB for it, the rest of its answer is
        read from the target and discarded, and a client that asked for
        something small meanwhile is answered once their transfers are
        done, on the same target connection.
        """
        await self.startMultiplexer("--max-client-buffer", "1MiB")
        started = time.monotonic()
        nonReaders = []
        for path in (b"/big", b"/chunked", b"/big"):
            nonReaders.append(await deferToThread(connectNonReader, self.port, path))
            self.addCleanup(nonReaders[-1].close)
        await until(lambda: len(self.target.seen) >= 1)
        status, answer = await deferToThread(fetchSmall, self.port, "/small")
        self.assertEqual((status, answer), (200, b"/small"))
        self.assertLess(time.monotonic() - started, 8)
        self.assertEqual(sorted(self.target.seen), [b"/big", b"/big", b"/chunked", b"/small"])
        for sock in nonReaders:
            received = await deferToThread(readUntilClosed, sock)
            self.assertLess(received, SIZE // 2)
        self.assertEqual(self.target.connections, 1)
        await until(lambda: len(self.multiplexer.clients) == 0)
        self.assertBounded(MIB)

    async def test_boundedWhileStreaming(self):
        """
        While a 30 MB response streams to a client that does not read,
        what tcpmux holds stays small: the framer holds about one read,
        and the client's transport about C{--max-client-buffer} until the
        client is dropped.
        """
        await self.startMultiplexer("--max-client-buffer", "1MiB")
        for path in (b"/chunked", b"/big"):
            self.sampler.framer = self.sampler.client = self.sampler.reads = 0
            sock = await deferToThread(connectNonReader, self.port, path)
            self.addCleanup(sock.close)
            await until(lambda: path in self.target.seen)
            # The next request is answered only once the big one was read
            # whole from the target.
            status, answer = await deferToThread(fetchSmall, self.port, "/after")
            self.assertEqual((status, answer), (200, b"/after"))
            received = await deferToThread(readUntilClosed, sock)
            self.assertLess(received, SIZE // 2)
            self.assertBounded(MIB)
