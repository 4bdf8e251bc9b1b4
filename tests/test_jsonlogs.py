"""
JSON logs: C{twistd --logger tcpmux.logs.json} writes one JSON object per
line to standard output (time, level, text, and mux, client and target
when an event has them).
"""

import io
import json
import os
from datetime import datetime

from twisted.logger import ILogObserver, LogLevel, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import logs
from tcpmux.protocols.echo import application as echo
from tests.faults import FaultTarget, answer, ask, connect
from tests.memory import memoryMultiplexer
from tests.support import freePort, runTwistd


class Source:
    pass


class EventTests(SynchronousTestCase):
    def emit(self, source, level, format, **fields):
        events = []
        Logger(observer=events.append, source=source).emit(level, format, **fields)
        return logs.jsonEvent(events[0])

    def test_fields(self):
        """
        Time (ISO 8601, UTC), level, the formatted text; mux, client and
        target when the event has them, and no other field.
        """
        record = self.emit(
            Source(), LogLevel.warn, "Closing client {client}: {reason}",
            client="192.0.2.7:40000", reason="bad frame", target="192.0.2.1:502",
            mux="inverter", other="not copied",
        )
        self.assertEqual(
            set(record), {"time", "level", "text", "mux", "client", "target"}
        )
        self.assertEqual(record["level"], "warn")
        self.assertEqual(record["text"], "Closing client 192.0.2.7:40000: bad frame")
        self.assertEqual(record["mux"], "inverter")
        self.assertTrue(record["time"].endswith("Z"))
        datetime.fromisoformat(record["time"].replace("Z", "+00:00"))

    def test_minimal(self):
        record = self.emit(Source(), LogLevel.info, "Hello")
        self.assertEqual(set(record), {"time", "level", "text"})

    def test_failure(self):
        """
        A failure's traceback is in the text.
        """
        try:
            1 / 0
        except ZeroDivisionError:
            failure = Failure()
        events = []
        log = Logger(observer=events.append)
        log.failure("Round trip failed", failure)
        record = logs.jsonEvent(events[0])
        self.assertEqual(record["level"], "critical")
        self.assertIn("Round trip failed", record["text"])
        self.assertIn("ZeroDivisionError", record["text"])

    def test_muxFromSource(self):
        """
        An event of a multiplexer's part (its registry, a client session,
        a target) has the mux named by L{logs.nameMux}.
        """
        multiplexer, target = memoryMultiplexer(echo)
        logs.nameMux("meter", multiplexer)
        self.assertEqual(logs.muxOf(multiplexer.clients), "meter")
        self.assertEqual(logs.muxOf(multiplexer.queue), "meter")
        self.assertEqual(logs.muxOf(multiplexer.target), "meter")

        class Session:
            registry = multiplexer.clients

        self.assertEqual(logs.muxOf(Session()), "meter")
        self.assertIsNone(logs.muxOf(Source()))
        self.assertIsNone(logs.muxOf(None))

    def test_observer(self):
        """
        The observer writes one line of JSON per event, even for an event
        whose fields are no JSON.
        """
        stream = io.StringIO()
        observer = logs.JSONLinesObserver(stream)
        self.assertTrue(ILogObserver.providedBy(observer))
        log = Logger(observer=observer)
        log.info("first {client}", client=object())
        log.info("second")
        lines = stream.getvalue().splitlines()
        self.assertEqual(len(lines), 2)
        self.assertTrue(json.loads(lines[0])["client"].startswith("<object"))
        self.assertEqual(json.loads(lines[1])["text"], "second")


class TwistdTests(TestCase):
    """
    C{twistd --logger tcpmux.logs.json} as a real process.
    """

    timeout = 60

    async def test_jsonLines(self):
        target = FaultTarget("echo", answer)
        targetPort = target.listen(self)
        listen = freePort()
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "tcpmux.toml")
        with open(path, "w") as f:
            f.write(
                f'[[mux]]\nname = "lights"\nlisten = "tcp:{listen}:interface=127.0.0.1"\n'
                f'target = "127.0.0.1:{targetPort}"\n'
            )
        child = runTwistd(
            self, "-n", "--pidfile=", "--logger", "tcpmux.logs.json",
            "tcpmux", "--config", path,
        )
        await child.waitFor("Connected to target", timeout=30)
        client = await connect(self, listen, "echo", cleanup=False)
        self.assertEqual(await ask(client, b"hi\n"), b"hi\n")
        peer = f"127.0.0.1:{client.localPort}"
        client.transport.loseConnection()
        await client.closed
        await child.waitFor(f"Client {peer} disconnected")
        child.signal("TERM")
        self.assertEqual(await child.ended, 0, child.lines)

        records = [json.loads(line) for line in child.lines if line.strip()]
        for record in records:
            self.assertLessEqual({"time", "level", "text"}, set(record), record)
        [start] = [r for r in records if "starting mux lights" in r["text"]]
        self.assertEqual(start["mux"], "lights")
        self.assertEqual(start["level"], "info")
        connected = [r for r in records if r["text"].startswith(f"Client {peer} connected")]
        self.assertEqual(connected[0]["client"], peer)
        self.assertEqual(connected[0]["mux"], "lights")
        targets = [r for r in records if r["text"].startswith("Connected to target")]
        self.assertEqual(targets[0]["target"], f"127.0.0.1:{targetPort}")
        self.assertEqual(targets[0]["mux"], "lights")
