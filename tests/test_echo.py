"""
Tests for L{tcpmux.protocols.echo}: line framing, and echo clients through
tcpmux to a one-connection echo server.
"""

import socket

from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux.protocols.echo import LineMessageReceiver, application
from tests.framers import KeepingOpen, feed
from tests.support import runExample, startMultiplexer


def framerWith(*chunks):
    return feed(LineMessageReceiver, *chunks)


class LineFramingTests(SynchronousTestCase):
    def test_byteAtATime(self):
        """
        A line that arrives one byte at a time is one message, its newline
        (and a carriage return before it) kept.
        """
        data = b"hello\r\nworld\n"
        _, recorder = framerWith(*[data[i : i + 1] for i in range(len(data))])
        self.assertEqual(recorder.messages, [b"hello\r\n", b"world\n"])

    def test_merged(self):
        """
        Several lines in one read are several messages; a partial line
        waits for its newline.
        """
        framer, recorder = framerWith(b"a\nb\nc")
        self.assertEqual(recorder.messages, [b"a\n", b"b\n"])
        framer.dataReceived(b"\n")
        self.assertEqual(recorder.messages, [b"a\n", b"b\n", b"c\n"])

    def test_tooLong(self):
        """
        A line longer than 64 KiB is a framing error that closes the
        connection; nothing of it is delivered.
        """
        framer, recorder = framerWith(b"x" * (65536 + 1))
        self.assertEqual(recorder.messages, [])
        self.assertEqual(recorder.errors, ["line longer than 65536 bytes"])
        self.assertTrue(framer.transport.disconnecting)
        self.assertEqual(framer.buffered(), 0)

    def test_nothingAfterTooLong(self):
        """
        After a line too long, nothing more is delivered even while the
        receiver keeps the connection open.
        """
        framer, recorder = feed(
            LineMessageReceiver, b"a\n" + b"x" * 65537 + b"\nb\n", recorder=KeepingOpen()
        )
        framer.dataReceived(b"c\n")
        self.assertEqual(recorder.messages, [b"a\n"])
        self.assertEqual(len(recorder.errors), 1)
        self.assertEqual(framer.buffered(), 0)

    def test_errorResponseClosesClient(self):
        """
        An echo client whose round trip failed is closed: there is no
        in-band way to say so.
        """
        self.assertIsNone(application.errorResponse(b"x\n", Exception()))


def echoClient(port, name, lines=10):
    """
    The original tool's test client: send numbered lines one by one, read
    each echo.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        reader = sock.makefile("rb")
        got = []
        for i in range(lines):
            sock.sendall(f"{name} line {i}\n".encode())
            got.append(reader.readline())
        return got


class EchoThroughMultiplexerTests(TestCase):
    timeout = 30

    async def test_twoClientsTenLines(self):
        """
        The original tool's own test: two echo clients, ten lines each,
        each gets exactly its own lines back, over one target connection.
        """
        server, serverPort = await runExample(self, "echo_server.py", "--port", "0")
        port, _ = await startMultiplexer(self, "echo", serverPort)
        first, second = await gatherResults(
            [deferToThread(echoClient, port, name) for name in ("first", "second")]
        )
        self.assertEqual(first, [f"first line {i}\n".encode() for i in range(10)])
        self.assertEqual(second, [f"second line {i}\n".encode() for i in range(10)])
        self.assertEqual(server.count("accepted connection"), 1)
        self.assertEqual(server.count("refused connection"), 0)

    async def test_pipelinedLinesAnsweredInOrder(self):
        """
        A client that sends many lines without waiting gets them all back,
        in order, while another client is served too.
        """
        server, serverPort = await runExample(self, "echo_server.py", "--port", "0")
        port, _ = await startMultiplexer(self, "echo", serverPort)

        def burst():
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(b"".join(b"burst %d\n" % i for i in range(200)))
                reader = sock.makefile("rb")
                return [reader.readline() for i in range(200)]

        got, other = await gatherResults(
            [deferToThread(burst), deferToThread(echoClient, port, "other")]
        )
        self.assertEqual(got, [b"burst %d\n" % i for i in range(200)])
        self.assertEqual(other, [f"other line {i}\n".encode() for i in range(10)])
