"""
C{--allow CIDR[,CIDR...]}: clients from other addresses are closed at once,
before a byte is read, logged (rate-limited) and counted.
"""

import ipaddress
import socket

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock, deferLater
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.client.access import isAllowed, parseAllow
from tcpmux.client.registry import ClientRegistry
from tcpmux.protocols.echo import application as echo
from tcpmux.tap import Options
from tests.faults import FaultTarget, answer, ask, captureLogs, connect
from tests.memory import memoryMultiplexer
from tests.support import startMultiplexer


def v4(host):
    return IPv4Address("TCP", host, 40000)


def v6(host):
    return IPv6Address("TCP", host, 40000)


class ParseTests(SynchronousTestCase):
    def test_networksAndAddresses(self):
        self.assertEqual(
            parseAllow("192.168.1.0/24, 10.0.0.5,fd00::/8,::1"),
            (
                ipaddress.ip_network("192.168.1.0/24"),
                ipaddress.ip_network("10.0.0.5/32"),
                ipaddress.ip_network("fd00::/8"),
                ipaddress.ip_network("::1/128"),
            ),
        )

    def test_mistakes(self):
        for text, message in [
            ("192.168.1.0/33", "'192.168.1.0/33' is no IPv4 or IPv6"),
            ("192.168.1.7/24", "has host bits set"),
            ("lan", "'lan' is no IPv4 or IPv6"),
            ("10.0.0.0/8,", "has an empty entry"),
            ("", "has an empty entry"),
        ]:
            with self.assertRaises(ValueError) as caught:
                parseAllow(text)
            self.assertIn(message, str(caught.exception))

    def test_isAllowed(self):
        networks = parseAllow("192.168.1.0/24,fd00::/8")
        self.assertTrue(isAllowed(networks, v4("192.168.1.200")))
        self.assertFalse(isAllowed(networks, v4("192.168.2.1")))
        self.assertTrue(isAllowed(networks, v6("fd00::17")))
        self.assertFalse(isAllowed(networks, v6("fe80::1%eth0")))
        # An IPv4 client of an IPv6 listener.
        self.assertTrue(isAllowed(networks, v6("::ffff:192.168.1.9")))
        self.assertFalse(isAllowed(networks, v6("::ffff:10.1.1.1")))
        self.assertFalse(isAllowed(networks, UNIXAddress(b"/run/x.sock")))

    def test_options(self):
        options = Options()
        options.parseOptions(["-t", "192.0.2.1:7", "--allow", "10.0.0.0/8,::1"])
        self.assertEqual(options["allow"], parseAllow("10.0.0.0/8,::1"))
        for args, message in [
            (["--allow", "10.0.0.0/40"], "--allow: '10.0.0.0/40' is no IPv4 or IPv6"),
            (["--allow", "10.0.0.1", "-l", "unix:/tmp/x.sock"], "--allow is for clients"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(["-t", "192.0.2.1:7", *args])
            self.assertIn(message, str(caught.exception))


class RegistryTests(SynchronousTestCase):
    """
    L{ClientRegistry.admit} with C{allow}.
    """

    def setUp(self):
        self.logs = captureLogs(self)
        self.clock = Clock()
        self.registry = ClientRegistry(
            [], self.clock, allow=parseAllow("192.168.1.0/24,fd00::/8")
        )

    def refusals(self):
        return [line for line in self.logs if "--allow" in line]

    def test_refusedCountedLogged(self):
        """
        A refusal is counted; the first is logged at once, those in the
        next 10 s as one line when the 10 s are over.
        """
        self.assertTrue(self.registry.admit(v4("192.168.1.5")))
        self.assertTrue(self.registry.admit(v6("fd00::5")))
        self.assertEqual(self.registry.refusedNotAllowed, 0)
        for last in range(1, 6):
            self.assertFalse(self.registry.admit(v4(f"203.0.113.{last}")))
        self.assertFalse(self.registry.admit(v6("2001:db8::1")))
        self.assertEqual(self.registry.refusedNotAllowed, 6)
        self.assertEqual(
            self.refusals(),
            [
                "Refusing client 203.0.113.1:40000: not from an address --allow "
                "192.168.1.0/24,fd00::/8 admits"
            ],
        )
        self.clock.advance(10)
        self.assertEqual(len(self.refusals()), 2)
        self.assertIn("5 more clients refused in the last 10.0s", self.refusals()[1])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_flushedOnStop(self):
        """
        Stopping logs what is still counted and leaves no timer behind.
        """
        for _ in range(3):
            self.registry.admit(v4("203.0.113.1"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.registry.closeAll(1.0)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertIn("2 more clients refused", self.refusals()[-1])

    def test_everyoneByDefault(self):
        registry = ClientRegistry([], self.clock)
        self.assertTrue(registry.admit(v4("203.0.113.1")))
        self.assertTrue(registry.admit(UNIXAddress(b"/run/x.sock")))
        self.assertEqual(registry.refusedNotAllowed, 0)

    def test_buildProtocol(self):
        """
        The multiplexer builds no protocol for a client not allowed (the
        reactor closes its connection at once), IPv4 or IPv6.
        """
        multiplexer, target = memoryMultiplexer(echo)
        multiplexer.clients.allow = parseAllow("::1,127.0.0.1")
        self.assertIsNone(multiplexer.buildProtocol(v6("2001:db8::7")))
        self.assertIsNone(multiplexer.buildProtocol(v4("192.0.2.7")))
        self.assertIsNotNone(multiplexer.buildProtocol(v6("::1")))
        self.assertEqual(multiplexer.clients.refusedNotAllowed, 2)
        multiplexer.clients.closeAll(1.0)


class RealClientTests(TestCase):
    """
    A real TCP client of 127.0.0.1, refused or let in.
    """

    timeout = 30

    async def test_refusedBeforeAnyByteIsRead(self):
        """
        A client from an address --allow does not admit is closed at once:
        what it sends at once never reaches the target, and it reads
        nothing but the end of the connection.
        """
        logs = captureLogs(self)
        target = FaultTarget("echo", answer)
        targetPort = target.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "echo", targetPort, "--allow", "192.0.2.0/24,2001:db8::/32"
        )

        def refusedClient():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                try:
                    sock.sendall(b"hello\n")
                    return sock.recv(100)
                except ConnectionError:
                    return b""

        self.assertEqual(await deferToThread(refusedClient), b"")
        await deferLater(reactor, 0.2)
        self.assertEqual(target.requests, [])
        self.assertEqual(multiplexer.clients.refusedNotAllowed, 1)
        self.assertEqual(len(multiplexer.clients), 0)
        [line] = [line for line in logs if "Refusing client 127.0.0.1:" in line]
        self.assertIn("--allow 192.0.2.0/24,2001:db8::/32", line)

    async def test_allowed(self):
        target = FaultTarget("echo", answer)
        targetPort = target.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "echo", targetPort, "--allow", "192.0.2.0/24,127.0.0.0/8"
        )
        client = await connect(self, port, "echo")
        self.assertEqual(await ask(client, b"hello\n"), b"hello\n")
        self.assertEqual(multiplexer.clients.refusedNotAllowed, 0)
