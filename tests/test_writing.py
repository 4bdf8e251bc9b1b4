"""
Tests for L{tcpmux.writing.writeNow} over real sockets.
"""

import socket

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.writing import noDelay, writeNow


class Connected(Protocol):
    def connectionMade(self):
        self.factory.connected.callback(self)


class WriteNowTests(TestCase):
    async def connectedPair(self):
        """
        A blocking socket server and a Twisted TCP client connected to it.
        """
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        self.addCleanup(listener.close)
        factory = Factory.forProtocol(Connected)
        factory.connected = Deferred()
        await TCP4ClientEndpoint(
            reactor, "127.0.0.1", listener.getsockname()[1]
        ).connect(factory)
        protocol = await factory.connected
        self.addCleanup(protocol.transport.abortConnection)
        peer, _ = listener.accept()
        self.addCleanup(peer.close)
        peer.settimeout(5)
        return protocol.transport, peer

    async def test_sentAtOnce(self):
        """
        With nothing buffered, the bytes reach the peer before the reactor
        runs again.
        """
        transport, peer = await self.connectedPair()
        writeNow(transport, b"hello")
        self.assertEqual(peer.recv(100), b"hello")
        self.assertEqual(transport._tempDataBuffer, [])

    async def test_nothingIsNoSend(self):
        """
        Writing nothing touches neither the socket nor the transport.
        """
        transport, peer = await self.connectedPair()
        calls = []
        real = transport.socket
        self.addCleanup(setattr, transport, "socket", real)
        transport.socket = type("Socket", (), {"send": calls.append})()
        transport.write = calls.append
        writeNow(transport, b"")
        self.assertEqual(calls, [])

    async def test_fallsBackWhenBuffersAreRenamed(self):
        """
        Should a Twisted release rename the private buffer L{writeNow}
        peeks at, it writes through the transport instead: the bytes are
        buffered (and still sent by the reactor), never sent out of order.
        """
        transport, peer = await self.connectedPair()
        del transport._tempDataBuffer  # as if renamed
        writes = []
        transport.write = writes.append
        writeNow(transport, b"hello")
        self.assertEqual(writes, [b"hello"])

    async def test_noDelay(self):
        """
        L{noDelay} turns Nagle's algorithm off on a TCP transport.
        """
        transport, peer = await self.connectedPair()
        self.assertFalse(transport.getTcpNoDelay())
        noDelay(transport)
        self.assertTrue(transport.getTcpNoDelay())

    async def test_orderKeptBehindBufferedBytes(self):
        """
        When the transport already has bytes buffered, new bytes queue
        behind them instead of overtaking them.
        """
        transport, peer = await self.connectedPair()
        transport.write(b"first ")
        writeNow(transport, b"second")
        self.assertEqual(transport._tempDataBuffer, [b"first ", b"second"])
        received = b""
        while len(received) < 12:
            await deferLater(0.01)
            received += peer.recv(100)
        self.assertEqual(received, b"first second")

    async def test_largeWriteRemainderBuffered(self):
        """
        What the socket does not take at once is buffered and sent later,
        complete and in order.
        """
        transport, peer = await self.connectedPair()
        data = bytes(range(256)) * (4 * 4096)  # 4 MiB, more than a socket takes
        writeNow(transport, data)
        self.assertTrue(transport._tempDataBuffer)
        received = bytearray()
        peer.setblocking(False)
        while len(received) < len(data):
            await deferLater(0.001)
            try:
                while True:
                    chunk = peer.recv(1 << 20)
                    if not chunk:
                        break
                    received += chunk
            except BlockingIOError:
                pass
        self.assertEqual(bytes(received), data)


def deferLater(seconds):
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class FallbackTests(SynchronousTestCase):
    def test_otherTransports(self):
        """
        Transports other than plain TCP are written to as usual.
        """
        transport = StringTransport()
        writeNow(transport, b"abc")
        self.assertEqual(transport.value(), b"abc")
