"""
Tests for L{tcpmux.protocols.mpu}: 4-digit ASCII length framing, and ISO
8583 clients (pyiso8583) sharing one host link through tcpmux.
"""

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import TargetLost, TargetTimeout, TargetUnavailable
from tcpmux.protocols.mpu import ASCIILengthReceiver, application
from tests import framers
from tests import iso
from tests.framers import Recording, bytewise, chunked, feedLikeAReactor
from tests.support import freePort, startMultiplexer


def framed(payload):
    return b"%04d" % len(payload) + payload


ECHO = framed(b"0800822000000000000004000000000000001124202200000001301")
PURCHASE = framed(b"0200" + b"x" * 300)
KEEPALIVE = b"0000"


def feed(*chunks, recorder=None):
    return framers.feed(ASCIILengthReceiver, *chunks, recorder=recorder)


class FramingTests(SynchronousTestCase):
    def test_whole(self):
        """
        A message is delivered with its length header, as on the wire.
        """
        framer, recorder = feed(ECHO)
        self.assertEqual(recorder.messages, [ECHO])
        self.assertFalse(framer.transport.disconnecting)

    def test_byteAtATime(self):
        _, recorder = feed(*bytewise(ECHO + PURCHASE))
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])

    def test_merged(self):
        framer, recorder = feed(ECHO + PURCHASE + ECHO[:3])
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])
        framer.dataReceived(ECHO[3:])
        self.assertEqual(recorder.messages, [ECHO, PURCHASE, ECHO])

    def test_keepAliveDropped(self):
        """
        C{"0000"} is a keep-alive, not a message.
        """
        framer, recorder = feed(KEEPALIVE + ECHO + KEEPALIVE[:2], KEEPALIVE[2:] + PURCHASE)
        self.assertEqual(recorder.messages, [ECHO, PURCHASE])
        self.assertFalse(framer.transport.disconnecting)

    def test_largest(self):
        """
        A 9999-byte message is delivered.
        """
        big = framed(b"0200" + b"9" * 9995)
        self.assertEqual(len(big), ASCIILengthReceiver.maxMessageSize)
        framer, recorder = feed(big[:5000], big[5000:])
        self.assertEqual(recorder.messages, [big])
        self.assertFalse(framer.transport.disconnecting)

    def assertRefused(self, framer, recorder, byte):
        self.assertEqual(
            recorder.errors, [f"length header byte {byte!r} is not an ASCII digit"]
        )
        self.assertTrue(framer.transport.disconnecting)

    def test_nonDigitAtOnce(self):
        """
        A non-digit is refused as soon as it arrives, without waiting for
        the rest of the header.
        """
        framer, recorder = feed(b"01", b"x")
        self.assertRefused(framer, recorder, b"x")
        self.assertEqual(recorder.messages, [])

    def test_signAndSpaceRefused(self):
        """
        Only the digits 0-9 make a length: a sign or a space that C{int()}
        would accept is refused.
        """
        for header in b"+123", b" 123", b"-001", b"12\n3", b"\xd9\xa1\xd9\xa2":
            framer, recorder = feed(header)
            self.assertEqual(len(recorder.errors), 1, header)
            self.assertTrue(framer.transport.disconnecting)

    def test_nothingAfterError(self):
        """
        After a bad header, the messages in the same read and later reads
        are not delivered, and nothing is kept.
        """
        framer, recorder = feed(ECHO + b"00a1" + ECHO)
        framer.dataReceived(ECHO)
        self.assertEqual(recorder.messages, [ECHO])
        self.assertRefused(framer, recorder, b"a")
        self.assertEqual(framer.buffered(), 0)

    def test_nothingAfterClose(self):
        class Closing(Recording):
            def messageReceived(self, message):
                Recording.messageReceived(self, message)
                self.framer.transport.loseConnection()

        _, recorder = feed(ECHO + PURCHASE, recorder=Closing())
        self.assertEqual(recorder.messages, [ECHO])


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("mpu"), application)
        self.assertIs(application.requestFramer, ASCIILengthReceiver)
        self.assertIs(application.responseFramer, ASCIILengthReceiver)

    def test_errorsCloseTheClient(self):
        for error in TargetUnavailable("x"), TargetTimeout("x"), TargetLost("x"):
            self.assertIsNone(application.errorResponse(ECHO, error))

    def test_describe(self):
        self.assertEqual(application.describe(PURCHASE), "mti=0200")


def referenceParse(data):
    """
    The messages a correct framer delivers from C{data}, and whether it
    must report a framing error.
    """
    messages = []
    start = 0
    while start < len(data):
        header = data[start : start + 4]
        for byte in header:
            if byte not in b"0123456789":
                return messages, True
        if len(header) < 4:
            break
        end = start + 4 + int(header)
        if end > len(data):
            break
        if end > start + 4:
            messages.append(data[start:end])
        start = end
    return messages, False


# Mostly digits, so that headers are often valid and messages come out.
streams = st.lists(
    st.one_of(
        st.binary(max_size=30),
        st.integers(0, 40).map(lambda n: framed(b"m" * n)),
        st.sampled_from([b"0", b"00", b"9999", b"0000"]),
    ),
    max_size=12,
).map(b"".join)


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=200, deadline=None)
    @given(st.lists(st.binary(max_size=300), max_size=8), st.lists(st.integers(min_value=0), max_size=20))
    def test_anyChunking(self, messages, cuts):
        data = b"".join(framed(m) for m in messages)
        framer, recorder = feed()
        feedLikeAReactor(framer, chunked(data, cuts))
        self.assertEqual(recorder.messages, [framed(m) for m in messages if m])
        self.assertFalse(framer.transport.disconnecting)

    @settings(max_examples=400, deadline=None)
    @given(streams, st.lists(st.integers(min_value=0), max_size=20))
    def test_arbitraryBytes(self, data, cuts):
        """
        Arbitrary bytes deliver exactly what a reference parser finds,
        report a framing error exactly when it does, and raise nothing.
        """
        framer, recorder = feed()
        feedLikeAReactor(framer, chunked(data, cuts))
        messages, error = referenceParse(data)
        self.assertEqual(recorder.messages, messages)
        self.assertEqual(len(recorder.errors), int(error))
        self.assertEqual(framer.transport.disconnecting, error)


class EndToEndTests(TestCase):
    timeout = 60

    async def test_manyTerminalsOneHostLink(self):
        """
        Six terminals at once, each pipelining 0800 and 0200 requests with
        4-digit ASCII headers, all get their own answers (STAN checked)
        over the host's single connection.
        """
        await iso.manyTerminals(self, "mpu", "ascii")

    async def test_badHeaderClosesOnlyThatClient(self):
        """
        A client whose length header is not digits is closed; a terminal
        connected at the same time is answered before and after, on the
        same host connection.
        """
        await iso.badClientClosedOthersServed(self, "mpu", "ascii", b"12a4" + b"x" * 20)

    async def test_targetUnavailableClosesClient(self):
        port, _ = await startMultiplexer(self, "mpu", freePort())
        self.assertEqual(
            await deferToThread(
                iso.closedAfterRequest, port, iso.isoRequest("0800", 1, "TERM0001"), "ascii"
            ),
            b"",
        )

    async def test_exampleClient(self):
        await iso.exampleClientThrough(self, "mpu", "ascii")
