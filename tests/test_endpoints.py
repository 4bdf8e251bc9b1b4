"""
Listening and target addresses: the whole service, as C{twistd tcpmux}
builds it, on UNIX sockets at both ends, and its listen backlog, with
Twisted's own RFC 862 echo protocol as the target.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint, UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.protocols.wire import Echo
from twisted.trial.unittest import TestCase

from tcpmux.config import LISTEN_BACKLOG
from tcpmux.tap import Options, makeService
from tests.support import freePort, handshakes, somaxconn, until


class UNIXEndpointTests(TestCase):
    timeout = 30

    async def test_unixListenerAndTarget(self):
        """
        C{--listen unix:PATH} and C{--target unix:path=PATH}: two clients
        share the one UNIX connection to the target, each getting its own
        lines back.
        """
        base = self.mktemp()
        os.makedirs(base)
        targetPath = os.path.join(base, "target.sock")
        listenPath = os.path.join(base, "mux.sock")

        class CountingFactory(Factory):
            protocol = Echo
            connections = 0

            def buildProtocol(self, addr):
                self.connections += 1
                return Factory.buildProtocol(self, addr)

        target = CountingFactory()
        port = await UNIXServerEndpoint(reactor, targetPath).listen(target)
        self.addCleanup(port.stopListening)

        options = Options()
        options.parseOptions(
            ["-p", "echo", "-l", f"unix:{listenPath}", "-t", f"unix:path={targetPath}"]
        )
        service = makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: os.path.exists(listenPath) and target.connections == 1)

        def client(name):
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(10)
                sock.connect(listenPath)
                reader = sock.makefile("rb")
                got = []
                for i in range(5):
                    sock.sendall(f"{name} {i}\n".encode())
                    got.append(reader.readline())
                return got

        first, second = await deferToThread(client, "a"), await deferToThread(client, "b")
        self.assertEqual(first, [f"a {i}\n".encode() for i in range(5)])
        self.assertEqual(second, [f"b {i}\n".encode() for i in range(5)])
        self.assertEqual(target.connections, 1)


class ListenBacklogTests(TestCase):
    """
    A listener waits with room for L{LISTEN_BACKLOG} connections that are
    not accepted yet, unless its address names a backlog; Twisted's own
    default, 50, drops the handshakes of clients beyond it that connect at
    the same instant (as all do when tcpmux restarts), and they retry only a
    second later.
    """

    timeout = 30

    async def startService(self, listen):
        target = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Echo)
        )
        self.addCleanup(target.stopListening)
        options = Options()
        options.parseOptions(
            ["-p", "echo", "-l", listen, "-t", f"127.0.0.1:{target.getHost().port}"]
        )
        service = makeService(options)
        service.startService()
        self.addCleanup(service.stopService)
        await until(lambda: service.multiplexer.target.ready)

    async def test_burstWaitsToBeAccepted(self):
        """
        Without C{backlog=}, 200 clients that connect while tcpmux is busy
        all complete their handshakes (Twisted's default would take 51),
        and each is then answered.
        """
        self.assertGreaterEqual(LISTEN_BACKLOG, 200)
        port = freePort()
        await self.startService(f"tcp:{port}:interface=127.0.0.1")
        clients, connected = handshakes(self, port, 200)
        self.assertEqual(connected, min(200, somaxconn() + 1))

        def exchange():
            for i, client in enumerate(clients):
                client.setblocking(True)
                client.settimeout(10)
                client.sendall(b"ping %d\n" % i)
            return [client.makefile("rb").readline() for client in clients]

        answers = await deferToThread(exchange)
        self.assertEqual(answers, [b"ping %d\n" % i for i in range(200)])

    async def test_backlogGiven(self):
        """
        C{backlog=} in the listen address is the backlog.
        """
        port = freePort()
        await self.startService(f"tcp:{port}:interface=127.0.0.1:backlog=5")
        clients, connected = handshakes(self, port, 20)
        self.assertEqual(connected, 6)
