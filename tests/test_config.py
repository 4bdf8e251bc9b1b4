"""
Tests for L{tcpmux.config} and the C{twistd tcpmux} options.
"""

from twisted.internet.endpoints import (
    HostnameEndpoint,
    TCP4ClientEndpoint,
    TCP6ClientEndpoint,
    UNIXClientEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactor
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from tcpmux.config import listenDescription, parseDuration, targetEndpoint
from tcpmux.tap import Options, makeService


class DurationTests(SynchronousTestCase):
    def test_spellings(self):
        self.assertEqual(parseDuration("60"), 60.0)
        self.assertEqual(parseDuration("1.5"), 1.5)
        self.assertEqual(parseDuration("500ms"), 0.5)
        self.assertEqual(parseDuration("2s"), 2.0)
        self.assertEqual(parseDuration("1m"), 60.0)
        self.assertEqual(parseDuration("1h"), 3600.0)
        self.assertEqual(parseDuration(" 0 "), 0.0)

    def test_invalid(self):
        for text in ("", "-1", "1d", "ms", "1.2.3", "fast"):
            self.assertRaises(ValueError, parseDuration, text)


class AddressTests(SynchronousTestCase):
    def test_barePort(self):
        self.assertEqual(listenDescription("5020"), "tcp:5020")
        self.assertEqual(
            listenDescription("tcp:5020:interface=127.0.0.1"),
            "tcp:5020:interface=127.0.0.1",
        )

    def test_hostPort(self):
        endpoint = targetEndpoint(MemoryReactor(), "inverter.lan:502", 5)
        self.assertIsInstance(endpoint, HostnameEndpoint)
        self.assertEqual(endpoint._hostText, "inverter.lan")
        self.assertEqual(endpoint._port, 502)

    def test_addresses(self):
        """
        An IPv4 or IPv6 address needs no resolution: tcpmux connects to it
        with a plain TCP endpoint, which reports a refusal at once.
        """
        for text, host in (("[::1]:502", "::1"), ("192.0.2.7:502", "192.0.2.7")):
            reactor = MemoryReactor()
            endpoint = targetEndpoint(reactor, text, 5)
            self.assertIsInstance(endpoint, (TCP4ClientEndpoint, TCP6ClientEndpoint))
            endpoint.connect(Factory.forProtocol(Protocol))
            self.assertEqual(reactor.tcpClients[0][:2], (host, 502))
            self.assertEqual(reactor.tcpClients[0][3], 5)

    def test_endpointString(self):
        endpoint = targetEndpoint(MemoryReactor(), "unix:path=/run/dev.sock", 5)
        self.assertIsInstance(endpoint, UNIXClientEndpoint)

    def test_invalid(self):
        for text in ("inverter.lan", "host:99999", "nonsense:foo=bar"):
            self.assertRaises(ValueError, targetEndpoint, MemoryReactor(), text, 5)


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self):
        options = self.parse()
        self.assertEqual(options["protocol"], "echo")
        self.assertEqual(options["listen"], "8000")
        self.assertEqual(options["target"], "127.0.0.1:1234")
        self.assertEqual(options["timeout"], 60.0)
        self.assertEqual(options["delay"], 0.0)
        self.assertEqual(options["retry-delay"], 1.0)

    def test_shortOptionsAndDurations(self):
        options = self.parse(
            "-p", "modbus", "-t", "192.0.2.10:502", "-l", "tcp:5020",
            "--timeout", "500ms", "--delay", "2s", "--retry-delay", "1m",
        )
        self.assertEqual(options["protocol"], "modbus")
        self.assertEqual(options["target"], "192.0.2.10:502")
        self.assertEqual(options["listen"], "tcp:5020")
        self.assertEqual(options["timeout"], 0.5)
        self.assertEqual(options["delay"], 2.0)
        self.assertEqual(options["retry-delay"], 60.0)

    def test_originalToolAliases(self):
        """
        The original tool's C{--applicationProtocol} and C{--targetServer}
        work.
        """
        options = self.parse(
            "--applicationProtocol", "modbus", "--targetServer", "10.0.0.5:502"
        )
        self.assertEqual(options["protocol"], "modbus")
        self.assertEqual(options["target"], "10.0.0.5:502")

    def test_unknownProtocol(self):
        error = self.assertRaises(usage.UsageError, self.parse, "-p", "smtp")
        self.assertIn("unknown protocol 'smtp'", str(error))
        self.assertIn("echo", str(error))
        self.assertIn("modbus", str(error))

    def test_badDuration(self):
        self.assertRaises(usage.UsageError, self.parse, "--timeout", "soon")

    def test_badTarget(self):
        error = self.assertRaises(usage.UsageError, self.parse, "-t", "nohostport")
        self.assertIn("bad target", str(error))

    def test_badListen(self):
        error = self.assertRaises(usage.UsageError, self.parse, "-l", "bogus:1")
        self.assertIn("bad listen address", str(error))

    def test_listProtocols(self):
        """
        C{--list-protocols} prints each protocol with its description and
        exits.
        """
        import io
        import sys

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        self.assertRaises(SystemExit, self.parse, "--list-protocols")
        lines = out.getvalue().splitlines()
        self.assertEqual([line.split()[0] for line in lines][:1], ["echo"])
        self.assertIn("modbus", [line.split()[0] for line in lines])

    def test_makeService(self):
        """
        The service listens where told and its target has the options'
        timeouts.
        """
        service = makeService(self.parse("-p", "modbus", "-t", "127.0.0.1:502", "--timeout", "5", "--delay", "1"))
        target = service.multiplexer.target
        self.assertEqual(target.timeout, 5.0)
        self.assertEqual(target.readyDelay, 1.0)
        self.assertEqual(service.multiplexer.application.name, "modbus")
