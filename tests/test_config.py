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

from tcpmux.config import (
    listenDescription,
    listenEndpoint,
    parseDuration,
    targetEndpoint,
)
from tcpmux.tap import Options, makeService


class DurationTests(SynchronousTestCase):
    def test_spellings(self):
        self.assertEqual(parseDuration("60"), 60.0)
        self.assertEqual(parseDuration("1.5"), 1.5)
        self.assertEqual(parseDuration("500ms"), 0.5)
        self.assertAlmostEqual(parseDuration("100us"), 0.0001)
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

    def assertTargetError(self, text, message):
        error = self.assertRaises(ValueError, targetEndpoint, MemoryReactor(), text, 5)
        self.assertIn(message, str(error))
        self.assertIn(f"bad target {text!r}", str(error))

    def test_errorsInTheUsersTerms(self):
        """
        A bad target is explained in what the user wrote, not in the words
        of the Twisted call that failed.
        """
        self.assertTargetError("localhost:notaport", "port must be a number")
        self.assertTargetError("[::1]:x", "port must be a number")
        self.assertTargetError("host:99999", "port must be 1..65535")
        self.assertTargetError("host:0", "port must be 1..65535")
        self.assertTargetError("inverter.lan", "use host:port")
        self.assertTargetError("tcp:host=x", "tcp: endpoint needs port=")
        self.assertTargetError("tcp:port=502", "tcp: endpoint needs host=")
        self.assertTargetError("tcp:host=x:port=99999", "port must be 1..65535")
        self.assertTargetError("tcp:x:abc", "port must be a number")
        self.assertTargetError("nonsense:foo=bar", "Unknown endpoint type")

    def test_endpointStringPortsAccepted(self):
        for text in ("tcp:host=x:port=502", "tcp:x:502", "tcp:host=x:502"):
            self.assertIsInstance(
                targetEndpoint(MemoryReactor(), text, 5), TCP4ClientEndpoint
            )

    def test_listenPortRange(self):
        """
        A listen port outside 0..65535 is refused when the options are
        checked, as the target's is (not by bind(), with a traceback).
        """
        for text in ("99999", "tcp:99999", "-1", "tcp:interface=127.0.0.1:port=70000"):
            error = self.assertRaises(ValueError, listenEndpoint, MemoryReactor(), text)
            self.assertIn("port must be 0..65535", str(error))
        error = self.assertRaises(ValueError, listenEndpoint, MemoryReactor(), "tcp:abc")
        self.assertIn("port must be a number", str(error))
        for text in ("0", "65535", "tcp:5020:interface=127.0.0.1"):
            listenEndpoint(MemoryReactor(), text)
        listenEndpoint(MemoryReactor(), r"tcp6:5020:interface=\:\:1")


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(list(args))
        return options

    def test_defaults(self):
        options = self.parse("-t", "192.0.2.10:502")
        self.assertEqual(options["protocol"], "echo")
        self.assertEqual(options["listen"], "8000")
        self.assertEqual(options["timeout"], 60.0)
        self.assertEqual(options["delay"], 0.0)
        self.assertEqual(options["retry-delay"], 1.0)
        self.assertEqual(options["max-retry-delay"], 30.0)
        self.assertEqual(options["max-queue"], 32)
        self.assertEqual(options["max-client-buffer"], 4 * 1024 * 1024)
        self.assertEqual(options["client-timeout"], 0.0)

    def test_targetRequired(self):
        """
        There is no default target: without one, a usage error names
        --target.
        """
        error = self.assertRaises(usage.UsageError, self.parse)
        self.assertIn("--target is required", str(error))
        error = self.assertRaises(usage.UsageError, self.parse, "-p", "modbus")
        self.assertIn("--target is required", str(error))

    def assertUsageError(self, message, *args):
        error = self.assertRaises(
            usage.UsageError, self.parse, "-t", "192.0.2.10:502", *args
        )
        self.assertIn(message, str(error))
        return str(error)

    def test_durationsNamed(self):
        """
        A bad duration is a usage error that names its option and says what
        it must be.
        """
        positive = "must be a positive duration"
        self.assertUsageError("--timeout " + positive, "--timeout", "-1")
        self.assertUsageError("--timeout " + positive, "--timeout", "0")
        self.assertUsageError("--retry-delay " + positive, "--retry-delay", "0")
        error = self.assertUsageError(
            "--delay must be 0 or a positive duration", "--delay", "soon"
        )
        self.assertIn("'soon'", error)
        self.assertUsageError(
            "--idle-close must be 0 or a positive duration", "--idle-close", "-5s"
        )
        self.assertEqual(self.parse("-t", "192.0.2.10:502", "--delay", "0")["delay"], 0.0)

    def test_countsAndSizesNamed(self):
        self.assertUsageError(
            "--max-queue must be a whole number of 1 or more", "--max-queue", "0"
        )
        self.assertUsageError(
            "--connections must be a whole number", "--connections", "two"
        )
        self.assertUsageError(
            "--max-client-buffer must be a size", "--max-client-buffer", "lots"
        )

    def test_usageAfterAnErrorIsShort(self):
        """
        After a usage error, twistd prints tcpmux's usage above the error:
        a pointer to --help rather than every option.
        """
        options = Options()
        self.assertIn("--max-queue", options.getUsage())
        self.assertRaises(usage.UsageError, options.parseOptions, [])
        self.assertEqual(
            options.getUsage(), "Run 'twistd tcpmux --help' for tcpmux's options.\n"
        )

    def test_version(self):
        """
        C{--version} prints tcpmux's version and Twisted's, and exits 0.
        """
        import io
        import sys

        import twisted

        from tcpmux import __version__

        out = io.StringIO()
        self.patch(sys, "stdout", out)
        error = self.assertRaises(SystemExit, self.parse, "--version")
        self.assertEqual(error.code, 0)
        self.assertIn(
            f"tcpmux {__version__} (Twisted {twisted.__version__}", out.getvalue()
        )

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
        self.assertUsageError("--timeout must be", "--timeout", "soon")

    def test_badTarget(self):
        error = self.assertRaises(usage.UsageError, self.parse, "-t", "nohostport")
        self.assertIn("bad target", str(error))

    def test_badListen(self):
        self.assertUsageError("bad listen address", "-l", "bogus:1")
        self.assertUsageError("port must be 0..65535", "-l", "99999")

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


class LazyImportTests(SynchronousTestCase):
    """
    What only a feature needs is imported where it is used (issue 15).
    """

    def test_cacheItemsDefault(self):
        """
        C{--cache-items}' default, repeated in L{tcpmux.tap} so that the
        options need not import the cache, is the cache's own.
        """
        from tcpmux import tap
        from tcpmux.gateway.cache import DEFAULT_ITEMS

        self.assertEqual(tap.DEFAULT_CACHE_ITEMS, DEFAULT_ITEMS)
        self.assertEqual(Options()["cache-items"], DEFAULT_ITEMS)

    def test_gatewayDefaultsWithoutTheGateway(self):
        """
        Without a gateway option the options hold what the gateway's
        parsers make of the defaults.
        """
        from tcpmux.gateway import options as gateway

        options = Options()
        options.parseOptions(["-p", "modbus", "-t", "127.0.0.1:502", "--timeout", "3"])
        defaults = Options()
        self.assertEqual(options["read-only"], gateway.parseReadOnly(defaults["read-only"]))
        self.assertEqual(options["retries"], gateway.parseRetries(defaults["retries"]))
        self.assertEqual(options["unit-map"], {})
        self.assertEqual(options["route"], {})
        self.assertEqual(options["attempt-timeout"], 3.0)

    def test_plainRunImportsNoFeature(self):
        """
        A plain C{--protocol modbus} run, options and service, imports
        neither the read cache, the TOML parser, TLS, the Modbus gateway
        (--unit-map, --route, --read-only, --retries) nor the serial
        target.
        """
        import subprocess
        import sys

        code = (
            "import sys\n"
            "from tcpmux.tap import Options, makeService\n"
            "o = Options()\n"
            "o.parseOptions(['-p', 'modbus', '-t', '127.0.0.1:502', '-l', 'tcp:0'])\n"
            "makeService(o)\n"
            "print(' '.join(sorted(m for m in ('tcpmux.gateway.cache', 'tomllib', "
            "'tomli', 'difflib', 'tcpmux.tls', 'tcpmux.gateway.modbus', "
            "'tcpmux.target.serial') if m in sys.modules)))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout
        self.assertEqual(out.strip(), "")
