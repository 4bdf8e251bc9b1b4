"""
C{twistd tcpmux --config FILE}: many listener -> target pairs from one
TOML file, checked as the command line is, and run by one process.
"""

import io
import os
import sys
import textwrap
from urllib.request import urlopen

from twisted.application.service import IServiceCollection, MultiService
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import configfile
from tcpmux.multiplexer import Multiplexer
from tcpmux.service import MultiplexerService
from tcpmux.tap import Options, makeService
from tests.modbus import clientSession
from tests.support import EXAMPLES, freePort, runExample, runTwistd

TWO_DEVICES = """\
[[mux]]
name = "inverter"
protocol = "modbus"
listen = "tcp:{inverterListen}:interface=127.0.0.1"
target = "127.0.0.1:{inverterPort}"
timeout = "10s"
delay = 0

[[mux]]
name = "meter"
protocol = "modbus"
listen = "tcp:{meterListen}:interface=127.0.0.1"
target = "127.0.0.1:{meterPort}"
timeout = 10
"""


class ConfigFileMixin:
    def write(self, text, name="tcpmux.toml"):
        """
        C{text} (dedented) in a new file; its path.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(textwrap.dedent(text))
        return path


class LoadTests(ConfigFileMixin, SynchronousTestCase):
    """
    L{configfile.load}: tables parsed by L{Options}, mistakes as one line.
    """

    def load(self, text):
        return configfile.load(self.write(text), Options)

    def assertMistake(self, text, *expected):
        """
        Loading C{text} is a L{usage.UsageError} of one line that starts
        with the file's name and contains each of C{expected}.
        """
        path = self.write(text)
        with self.assertRaises(usage.UsageError) as caught:
            configfile.load(path, Options)
        message = str(caught.exception)
        self.assertNotIn("\n", message)
        self.assertTrue(message.startswith(path + ": "), message)
        for part in expected:
            self.assertIn(part, message)
        return message

    def test_twoMuxes(self):
        """
        Each table is parsed as the command line would be: values
        converted, defaults filled in, flags from booleans, a repeatable
        option from a list.
        """
        config = self.load(
            """
            [[mux]]
            name = "inverter"
            protocol = "modbus"
            listen = 5020
            target = "192.0.2.10:502"
            timeout = "10s"
            delay = 1.5
            route = ["3=192.0.2.11:502", "4=192.0.2.12:502"]
            verbose = true

            [[mux]]
            protocol = "modbus"
            listen = "tcp:5021"
            target = "192.0.2.20:502"
            max-clients = 8
            verbose = false
            """
        )
        inverter, meter = config.muxes
        self.assertIsNone(config.metrics)
        self.assertEqual(inverter["name"], "inverter")
        self.assertEqual(inverter["timeout"], 10.0)
        self.assertEqual(inverter["delay"], 1.5)
        self.assertEqual(inverter["route"], {3: "192.0.2.11:502", 4: "192.0.2.12:502"})
        self.assertTrue(inverter["verbose"])
        self.assertEqual(meter["name"], None)
        self.assertEqual(meter["max-clients"], 8)
        self.assertEqual(meter["timeout"], 60.0)
        self.assertFalse(meter["verbose"])

    def test_keysFromTheOptions(self):
        """
        The keys a table may have are the options' long names, whatever
        options the L{Options} class has, including ones added later.
        """

        class More(Options):
            optParameters = Options.optParameters + [["colour", None, "blue", "A colour."]]

        path = self.write(
            """
            [[mux]]
            target = "192.0.2.10:502"
            colour = "green"
            """
        )
        config = configfile.load(path, More)
        self.assertEqual(config.muxes[0]["colour"], "green")
        with self.assertRaises(usage.UsageError):
            configfile.load(path, Options)

    def test_exampleFile(self):
        """
        examples/tcpmux.toml is a valid config file with two devices.
        """
        config = configfile.load(os.path.join(EXAMPLES, "tcpmux.toml"), Options)
        self.assertEqual(len(config.muxes), 2)
        self.assertEqual(
            [mux["name"] for mux in config.muxes], ["inverter", "meter"]
        )
        self.assertIsNotNone(config.metrics)

    def test_unknownKey(self):
        self.assertMistake(
            """
            [[mux]]
            name = "inverter"
            target = "192.0.2.10:502"
            tmeout = "5s"
            """,
            '[[mux]] "inverter"', "tmeout", "unknown key", "did you mean timeout?",
        )

    def test_tableByIndex(self):
        """
        A table without a name is named by its place in the file.
        """
        self.assertMistake(
            """
            [[mux]]
            target = "192.0.2.10:502"
            listen = 5020

            [[mux]]
            target = "192.0.2.10:502"
            listen = 5021
            bogus = 1
            """,
            "[[mux]] #2", "bogus", "unknown key",
        )

    def test_badValue(self):
        self.assertMistake(
            """
            [[mux]]
            name = "meter"
            target = "192.0.2.10:502"
            timeout = "soon"
            """,
            '[[mux]] "meter": timeout: ', "must be a positive duration", "'soon'",
        )

    def test_badValueNamesTheKey(self):
        """
        Mistakes whose message names no option still name the key.
        """
        for table, key, message in [
            ('listen = "tcp:99999"\ntarget = "192.0.2.1:502"', "listen", "port must be 0..65535"),
            ('target = "localhost:notaport"', "target", "port must be a number"),
            ('protocol = "modbusx"\ntarget = "192.0.2.1:502"', "protocol", "unknown protocol"),
        ]:
            self.assertMistake(f'[[mux]]\nname = "x"\n{table}\n', f'"x": {key}: ', message)

    def test_missingTarget(self):
        self.assertMistake(
            """
            [[mux]]
            name = "x"
            protocol = "modbus"
            """,
            '"x": target: ', "--target is required",
        )

    def test_wrongTypes(self):
        """
        A flag takes true or false, an option a string or a number, a list
        only a repeatable option.
        """
        self.assertMistake(
            '[[mux]]\ntarget = "192.0.2.1:502"\nverbose = "yes"\n',
            "verbose: is a flag: true or false",
        )
        self.assertMistake(
            '[[mux]]\ntarget = "192.0.2.1:502"\ntimeout = true\n',
            "timeout: must be a string or a number, not true/false",
        )
        self.assertMistake(
            '[[mux]]\ntarget = "192.0.2.1:502"\ntimeout = ["1s", "2s"]\n',
            "timeout: takes one value, not a list",
        )
        self.assertMistake(
            '[[mux]]\ntarget = "192.0.2.1:502"\n[mux.timeout]\nx = 1\n',
            "timeout: must be a string or a number, not a table",
        )

    def test_duplicateListen(self):
        """
        Two tables may not listen on the same address: the same port
        written differently, or a port on every interface and on one.
        """
        for first, second in [
            ("5020", '"tcp:5020"'),
            ('"tcp:port=5020"', '"tcp:5020:interface=127.0.0.1"'),
            ('"tcp:5020:interface=127.0.0.1"', '"tcp:5020:interface=127.0.0.1"'),
            ('"unix:/run/a.sock"', '"unix:address=/run/a.sock"'),
        ]:
            self.assertMistake(
                f"""
                [[mux]]
                name = "inverter"
                listen = {first}
                target = "192.0.2.10:502"

                [[mux]]
                name = "meter"
                listen = {second}
                target = "192.0.2.11:502"
                """,
                '[[mux]] "meter": listen: ', 'listen address of [[mux]] "inverter"',
            )

    def test_distinctListen(self):
        """
        Different ports, or one port on different interfaces, are fine.
        """
        config = self.load(
            """
            [[mux]]
            listen = "tcp:5020:interface=127.0.0.1"
            target = "192.0.2.10:502"
            [[mux]]
            listen = "tcp:5020:interface=127.0.0.2"
            target = "192.0.2.10:502"
            [[mux]]
            listen = 5021
            target = "192.0.2.10:502"
            """
        )
        self.assertEqual(len(config.muxes), 3)

    def test_duplicateName(self):
        self.assertMistake(
            """
            [[mux]]
            name = "meter"
            listen = 5020
            target = "192.0.2.10:502"
            [[mux]]
            name = "meter"
            listen = 5021
            target = "192.0.2.11:502"
            """,
            "[[mux]] #2: name: ", "'meter' is already the name of [[mux]] #1",
        )

    def test_fileMistakes(self):
        """
        The file as a whole: not TOML, no [[mux]], a [mux] table, a
        top-level key that is no option of the file, a missing file.
        """
        self.assertMistake("[[mux]\n", "not valid TOML", "line 1")
        self.assertMistake('metrics = "tcp:9102"\n', "no [[mux]] table")
        self.assertMistake(
            '[mux]\ntarget = "192.0.2.1:502"\n', "must be an array of tables"
        )
        self.assertMistake(
            'timeout = 5\n[[mux]]\ntarget = "192.0.2.1:502"\n',
            "timeout: unknown top-level key",
        )
        missing = os.path.join(self.mktemp(), "none.toml")
        with self.assertRaises(usage.UsageError) as caught:
            configfile.load(missing, Options)
        self.assertEqual(
            str(caught.exception), f"{missing}: cannot read it: no such file or directory"
        )

    def test_metrics(self):
        """
        The top-level metrics is a listen address of its own; in a table
        it is a mistake.
        """
        config = self.load(
            """
            metrics = "tcp:9102:interface=127.0.0.1"
            [[mux]]
            listen = 5020
            target = "192.0.2.10:502"
            """
        )
        self.assertEqual(config.metrics, "tcp:9102:interface=127.0.0.1")
        self.assertMistake(
            'metrics = "tcp:99999"\n[[mux]]\ntarget = "192.0.2.1:502"\n',
            "metrics: ", "port must be 0..65535",
        )
        self.assertMistake(
            'metrics = "tcp:5020"\n[[mux]]\nlisten = 5020\ntarget = "192.0.2.1:502"\n',
            "metrics: tcp:5020 is already the listen address of [[mux]] #1",
        )
        self.assertMistake(
            '[[mux]]\ntarget = "192.0.2.1:502"\nmetrics = "tcp:9102"\n',
            "metrics: metrics is a top-level key",
        )

    def test_notInTables(self):
        """
        Options that print and exit, and --config itself, are no keys.
        """
        for key, value in [("version", "true"), ("config", '"x.toml"'), ("help", "true")]:
            self.assertMistake(
                f'[[mux]]\ntarget = "192.0.2.1:502"\n{key} = {value}\n',
                f"{key}: unknown key",
            )


class CommandLineTests(ConfigFileMixin, SynchronousTestCase):
    """
    C{--config} on the command line.
    """

    def test_alone(self):
        """
        Any other option next to --config is a usage error, however it is
        spelled.
        """
        path = self.write('[[mux]]\ntarget = "192.0.2.1:502"\n')
        for args in [
            ["--config", path, "--timeout", "5"],
            ["-t", "192.0.2.1:502", "--config", path],
            [f"--config={path}", "-v"],
            ["--conf", path, "--listen=5021"],
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                Options().parseOptions(args)
            message = str(caught.exception)
            self.assertIn("--config takes every option from its file", message)
            self.assertNotIn("\n", message)

    def test_makeService(self):
        """
        One named L{MultiplexerService} per table, in a L{MultiService};
        each multiplexer has its table's name (or its listen address).
        """
        path = self.write(
            """
            [[mux]]
            name = "inverter"
            protocol = "modbus"
            listen = "tcp:5020"
            target = "192.0.2.10:502"
            timeout = "7s"
            [[mux]]
            listen = "tcp:5021"
            target = "192.0.2.11:7"
            """
        )
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options)
        self.assertTrue(IServiceCollection.providedBy(service))
        services = list(service)
        self.assertEqual(len(services), 2)
        for child in services:
            self.assertIsInstance(child, MultiplexerService)
            self.assertIsInstance(child.multiplexer, Multiplexer)
        self.assertEqual([child.name for child in services], ["inverter", "tcp:5021"])
        self.assertEqual(services[0].multiplexer.timeout, 7.0)
        self.assertEqual(services[0].multiplexer.application.name, "modbus")
        self.assertEqual(services[1].multiplexer.application.name, "echo")
        self.assertIs(service.getServiceNamed("inverter"), services[0])

    def test_metricsHandOff(self):
        """
        The file's metrics gives one metrics service for every mux, each
        under its name.
        """
        from tcpmux import metrics

        calls = []

        def fake(endpoint, multiplexers):
            calls.append((endpoint, multiplexers))
            return MultiService()

        self.patch(metrics, "makeMetricsService", fake)
        path = self.write(
            """
            metrics = "tcp:9102"
            [[mux]]
            name = "inverter"
            listen = "tcp:5020"
            target = "192.0.2.10:502"
            [[mux]]
            listen = "tcp:5021"
            target = "192.0.2.11:7"
            """
        )
        options = Options()
        options.parseOptions(["--config", path])
        service = makeService(options)
        [(endpoint, multiplexers)] = calls
        self.assertEqual(endpoint, "tcp:9102")
        muxes = [child for child in service if isinstance(child, MultiplexerService)]
        self.assertEqual(
            multiplexers,
            [("inverter", muxes[0].multiplexer), ("tcp:5021", muxes[1].multiplexer)],
        )


class CheckTests(ConfigFileMixin, SynchronousTestCase):
    """
    C{python -m tcpmux.configfile FILE}: check a file without running it.
    """

    def check(self, *args):
        out, err = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", out)
        self.patch(sys, "stderr", err)
        return configfile.main(list(args)), out.getvalue(), err.getvalue()

    def test_good(self):
        status, out, err = self.check(os.path.join(EXAMPLES, "tcpmux.toml"))
        self.assertEqual(status, 0, err)
        self.assertEqual(
            out.splitlines(),
            [
                "inverter: modbus, listening on tcp:5020, target inverter.lan:502",
                "meter: modbus, listening on tcp:5021, target 192.168.1.31:502",
                "metrics: tcp:9102:interface=127.0.0.1",
            ],
        )

    def test_mistake(self):
        path = self.write('[[mux]]\ntarget = "192.0.2.1:502"\nbogus = 1\n')
        status, out, err = self.check(path)
        self.assertEqual(status, 1)
        self.assertEqual(out, "")
        self.assertEqual(err.count("\n"), 1)
        self.assertIn(f"{path}: [[mux]] #1: bogus: unknown key", err)


class TwistdTests(ConfigFileMixin, TestCase):
    """
    C{twistd tcpmux --config FILE} as a real process.
    """

    timeout = 90

    async def test_twoDevicesOneProcess(self):
        """
        Two devices from one file are served at once by one process: many
        clients of each, every answer the client's own, and each device
        sees one connection. The start-up lines name the muxes.
        """
        inverter, inverterPort = await runExample(self, "modbus_device.py", "--port", "0")
        meter, meterPort = await runExample(self, "modbus_device.py", "--port", "0")
        inverterListen, meterListen = freePort(), freePort()
        path = self.write(
            TWO_DEVICES.format(
                inverterListen=inverterListen,
                inverterPort=inverterPort,
                meterListen=meterListen,
                meterPort=meterPort,
            )
        )
        child = runTwistd(
            self, "-n", "--pidfile=", "--logfile=-", "tcpmux", "--config", path
        )
        for name, listen in (("inverter", inverterListen), ("meter", meterListen)):
            line = await child.waitFor(f"starting mux {name}:", timeout=30)
            self.assertIn(f"listening on tcp:{listen}:interface=127.0.0.1", line)
        await child.waitFor(f"Connected to target 127.0.0.1:{inverterPort}", timeout=30)
        await child.waitFor(f"Connected to target 127.0.0.1:{meterPort}", timeout=30)
        sessions = [
            deferToThread(clientSession, port, index)
            for index in range(4)
            for port in (inverterListen, meterListen)
        ]
        results = await gatherResults(sessions)
        for number, seen in enumerate(results):
            index = number // 2
            self.assertEqual(
                seen, [[index * 100 + round_, round_, index] for round_ in range(5)]
            )
        for device in (inverter, meter):
            self.assertEqual(device.count("accepted connection"), 1, device.lines)
            self.assertEqual(device.count("refused connection"), 0, device.lines)
        child.signal("TERM")
        self.assertEqual(await child.ended, 0, child.lines)

    async def test_metricsForEveryMux(self):
        """
        The file's metrics endpoint serves the numbers of every mux, each
        labelled with its name.
        """
        metricsPort = freePort()
        path = self.write(
            f'metrics = "tcp:{metricsPort}:interface=127.0.0.1"\n'
            + TWO_DEVICES.format(
                inverterListen=freePort(),
                inverterPort=freePort(),
                meterListen=freePort(),
                meterPort=freePort(),
            )
        )
        child = runTwistd(
            self, "-n", "--pidfile=", "--logfile=-", "tcpmux", "--config", path
        )
        await child.waitFor("starting mux meter:", timeout=30)

        def scrape():
            url = f"http://127.0.0.1:{metricsPort}/metrics"
            with urlopen(url, timeout=10) as response:
                return response.read().decode("utf-8")

        text = await deferToThread(scrape)
        self.assertIn('mux="inverter"', text)
        self.assertIn('mux="meter"', text)
        child.signal("TERM")
        self.assertEqual(await child.ended, 0, child.lines)

    async def assertRefused(self, message, *args):
        """
        C{twistd -n tcpmux args} exits 1 having said C{message} on one
        line, with no traceback.
        """
        child = runTwistd(self, "-n", "--pidfile=", "tcpmux", *args)
        status = await child.ended
        lines = [line for line in child.lines if line.strip()]
        self.assertEqual(status, 1, lines)
        self.assertEqual(len([line for line in lines if message in line]), 1, lines)
        self.assertIn(message, lines[-1])
        self.assertFalse([line for line in lines if "Traceback" in line], lines)
        self.assertLessEqual(len(lines), 3, lines)

    async def test_mistakes(self):
        """
        An unknown key, a bad value, a duplicate listen address and options
        next to --config each stop start-up with one line.
        """
        good = '[[mux]]\nname = "inverter"\nlisten = "tcp:5020"\ntarget = "127.0.0.1:502"\n'
        cases = [
            (good + "tmeout = 5\n", '[[mux]] "inverter": tmeout: unknown key'),
            (good + 'timeout = "-1"\n', '[[mux]] "inverter": timeout: --timeout must be'),
            (
                good + '[[mux]]\nlisten = 5020\ntarget = "127.0.0.1:503"\n',
                "[[mux]] #2: listen: tcp:5020 is already the listen address of "
                '[[mux]] "inverter"',
            ),
        ]
        for text, message in cases:
            path = self.write(text)
            await self.assertRefused(f"{path}: {message}", "--config", path)
        path = self.write(good)
        await self.assertRefused(
            "--config takes every option from its file: --timeout given next to it",
            "--config", path, "--timeout", "5",
        )
