"""
Listening and target addresses other than TCP: the whole service, as
C{twistd tcpmux} builds it, on UNIX sockets at both ends, with Twisted's own
RFC 862 echo protocol as the target.
"""

import os
import socket

from twisted.internet import reactor
from twisted.internet.endpoints import UNIXServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.threads import deferToThread
from twisted.protocols.wire import Echo
from twisted.trial.unittest import TestCase

from tcpmux.tap import Options, makeService
from tests.support import until


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
