"""
Tests for L{tcpmux.protocols.http}: RFC 9112 framing of requests and
responses, what clients are told on bad input and target errors, and real
HTTP clients and servers through tcpmux.
"""

import gc
import hashlib
import http.client
import http.server
import os
import socket
import threading
import time
import weakref

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.internet.threads import deferToThread
from twisted.internet.utils import getProcessOutputAndValue
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from tcpmux import protocols
from tcpmux.errors import (
    GatewayError,
    InvalidResponse,
    TargetLost,
    TargetTimeout,
    TargetUnavailable,
)
from tcpmux.protocols.http import (
    _PLAIN_REQUEST,
    _PLAIN_RESPONSE,
    closesAfter,
    connectionEnds,
    BadMessage,
    Head,
    HTTPRequestReceiver,
    HTTPResponseReceiver,
    PlainMessage,
    application,
    parseRequestHead,
    parseResponseHead,
    requestFraming,
    responseFraming,
)
from tests import framers
from tests.framers import KeepingOpen, Recording
from tests.support import (
    freePort,
    receiveExactly,
    runExample,
    startMultiplexer,
    until,
)


class Answers(Recording):
    """
    Records what a response framer delivers as whole answers: C{parts} holds
    the interim (1xx) responses, each passed on whole, and C{messages} each
    final response, its streamed pieces joined with its last one.

    @ivar pieces: each streamed piece of the final responses, in order.
    @ivar lasts: the piece each C{messageReceived} brought.
    @ivar events: C{("part", bytes)} and C{("message", bytes)} in order.
    """

    def __init__(self):
        Recording.__init__(self)
        self.pieces = []
        self.lasts = []
        self.events = []
        self._streamed = []

    def partReceived(self, part):
        self.events.append(("part", part))
        if not self._streamed and part.startswith(b"HTTP/1.") and part[9:10] == b"1":
            # Nothing of the final response yet: an interim response.
            self.parts.append(part)
        else:
            self._streamed.append(part)
            self.pieces.append(part)

    def messageReceived(self, message):
        self.events.append(("message", message))
        self.lasts.append(message)
        self.messages.append(b"".join(self._streamed) + message)
        self._streamed = []


class ExpectingPosts(Answers):
    """
    Expects a response to a POST again after each final response, as the
    target session does before each request.
    """

    def messageReceived(self, message):
        Answers.messageReceived(self, message)
        self.framer.expectResponseTo(POST)


class SmallRequests(HTTPRequestReceiver):
    maxHeaderSize = 64
    maxMessageSize = 256


class SmallResponses(HTTPResponseReceiver):
    maxHeaderSize = 64
    maxMessageSize = 256


class RenewingFactory:
    """
    Records when a response framer closes its connection (which takes it
    out of service: L{tcpmux.target.factory.TargetClientFactory} offers no
    request to a closing connection), and what had been delivered by then.
    """

    def __init__(self):
        self.renewed = []


class ClosingRecordedTransport(StringTransport):
    def __init__(self, factory, recorder):
        super().__init__()
        self.factory = factory
        self.recorder = recorder

    def loseConnection(self):
        if not self.disconnecting:
            self.factory.renewed.append(list(self.recorder.messages))
        super().loseConnection()


def connect(framerClass, factory=None, recorder=None):
    """
    A new C{framerClass} delivering to C{recorder} (a new L{Answers} by
    default), on a transport that tells C{factory}, if given, when it is
    closed.

    @return: C{(framer, recorder)}.
    """
    if recorder is None:
        recorder = Answers()
    transport = None
    if factory is not None:
        transport = ClosingRecordedTransport(factory, recorder)
    return framers.connect(framerClass, recorder, transport)


def feed(framerClass, *chunks, request=None, factory=None, recorder=None):
    framer, recorder = connect(framerClass, factory, recorder)
    if request is not None:
        framer.expectResponseTo(request)
    for chunk in chunks:
        framer.dataReceived(chunk)
    return framer, recorder


def byteAtATime(data):
    return [data[i : i + 1] for i in range(len(data))]


GET = b"GET /a?b=c HTTP/1.1\r\nHost: device\r\nX-Odd:  spaced \t\r\n\r\n"
POST = b"POST /form HTTP/1.1\r\nhost: device\r\nContent-Length: 5\r\n\r\nhello"
CHUNKED_POST = (
    b"POST /log HTTP/1.1\r\nHost: device\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n"
    b"5;name=value;quoted=\"a \\\" b\"\r\nhello\r\n"
    b"A\r\n0123456789\r\n"
    b"0;last\r\nTrailer-One: 1\r\nTrailer-Two: 2\r\n\r\n"
)
HEAD = b"HEAD /file HTTP/1.1\r\nHost: device\r\n\r\n"

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED_OK = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"3;x=y\r\nabc\r\n0\r\nExpires: never\r\n\r\n"
)


def assertRefused(testCase, framerClass, data, status, *, chunks=None):
    """
    C{data} makes C{framerClass} answer C{status} and close the client,
    delivering nothing more.

    @return: the L{Recording}.
    """
    framer, recorder = feed(framerClass, *(chunks or [data]))
    transport = framer.transport
    testCase.assertEqual(len(recorder.errors), 1, recorder.errors)
    reply = transport.value()
    testCase.assertTrue(
        reply.startswith(b"HTTP/1.1 %d " % status), f"{status} expected, got {reply!r}"
    )
    testCase.assertIn(b"\r\nConnection: close\r\n", reply)
    head, body = reply.split(b"\r\n\r\n", 1)
    testCase.assertIn(b"\r\nContent-Length: %d\r\n" % len(body), head + b"\r\n")
    testCase.assertTrue(transport.disconnecting)
    framer.dataReceived(GET)
    testCase.assertNotIn(GET, recorder.messages)
    testCase.assertEqual(framer.buffered(), 0)
    return recorder


class RequestFramingTests(SynchronousTestCase):
    def test_byteAtATime(self):
        """
        Requests arriving a byte at a time are each delivered once, whole
        and unchanged: header order, case and spacing as sent.
        """
        data = GET + POST + CHUNKED_POST + HEAD
        framer, recorder = feed(HTTPRequestReceiver, *byteAtATime(data))
        self.assertEqual(recorder.messages, [GET, POST, CHUNKED_POST, HEAD])
        self.assertEqual(framer.transport.value(), b"")
        self.assertFalse(framer.transport.disconnecting)

    def test_merged(self):
        """
        Several requests in one read are delivered in order, and the start
        of the next one waits for the rest.
        """
        framer, recorder = feed(HTTPRequestReceiver, GET + CHUNKED_POST + POST[:30])
        self.assertEqual(recorder.messages, [GET, CHUNKED_POST])
        framer.dataReceived(POST[30:])
        self.assertEqual(recorder.messages, [GET, CHUNKED_POST, POST])
        self.assertEqual(framer.buffered(), 0)

    def test_noBodyWithoutLength(self):
        """
        A request with neither Content-Length nor Transfer-Encoding has no
        body: the bytes after it are the next request.
        """
        delete = b"DELETE /x HTTP/1.1\r\n\r\n"
        _, recorder = feed(HTTPRequestReceiver, delete + GET)
        self.assertEqual(recorder.messages, [delete, GET])

    def test_chunkedExtensionsAndTrailers(self):
        """
        A chunked body ends after the zero chunk and its trailer fields,
        chunk extensions notwithstanding; the chunk sizes are hexadecimal.
        """
        for split in range(1, len(CHUNKED_POST)):
            _, recorder = feed(
                HTTPRequestReceiver, CHUNKED_POST[:split], CHUNKED_POST[split:] + GET
            )
            self.assertEqual(recorder.messages, [CHUNKED_POST, GET], split)

    def test_chunkedNoTrailers(self):
        body = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n"
        _, recorder = feed(HTTPRequestReceiver, *byteAtATime(body + body))
        self.assertEqual(recorder.messages, [body, body])

    def test_sameContentLengthTwice(self):
        """
        Repeated Content-Length values that agree are one length.
        """
        request = b"PUT / HTTP/1.1\r\nContent-Length: 3, 3\r\nContent-Length: 003\r\n\r\nabc"
        _, recorder = feed(HTTPRequestReceiver, request + GET)
        self.assertEqual(recorder.messages, [request, GET])

    def test_emptyLinesBeforeRequest(self):
        """
        Empty lines before a request line are ignored (RFC 9112, 2.2), not
        forwarded.
        """
        _, recorder = feed(HTTPRequestReceiver, b"\r\n\r\n" + GET + b"\r\n", b"\r", b"\n" + POST)
        self.assertEqual(recorder.messages, [GET, POST])

    def test_largeBody(self):
        """
        A 2 MiB body is one message.
        """
        body = os.urandom(2 * 1024 * 1024)
        request = b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        chunks = [request[i : i + 65536] for i in range(0, len(request), 65536)]
        _, recorder = feed(HTTPRequestReceiver, *chunks)
        self.assertEqual(recorder.messages, [request])

    def test_expectContinue(self):
        """
        When a request with C{Expect: 100-continue} has its head here and
        not its body, tcpmux answers C{100 Continue} itself, once.
        """
        head = b"PUT /f HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n"
        framer, recorder = feed(HTTPRequestReceiver, head)
        self.assertEqual(framer.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        framer.dataReceived(b"da")
        framer.dataReceived(b"ta")
        self.assertEqual(framer.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(recorder.messages, [head + b"data"])

    def test_expectContinueChunked(self):
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
        framer, recorder = feed(HTTPRequestReceiver, head, b"0\r\n\r\n")
        self.assertEqual(framer.transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(recorder.messages, [head + b"0\r\n\r\n"])

    def test_expectContinueBodyAlreadyHere(self):
        """
        No C{100 Continue} is sent when the body came with the head, nor for
        a request without a body, nor in HTTP/1.0.
        """
        for request in [
            b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
            b"GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            b"PUT / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
        ]:
            framer, recorder = feed(HTTPRequestReceiver, request)
            self.assertEqual(framer.transport.value(), b"", request)

    def test_connect(self):
        """
        CONNECT is answered 501 and the client closed.
        """
        recorder = assertRefused(
            self,
            HTTPRequestReceiver,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com\r\n\r\n",
            501,
        )
        self.assertEqual(recorder.errors, ["CONNECT tunnels cannot share the target connection"])

    def test_upgrade(self):
        """
        WebSocket and h2c upgrades are answered 501 and the client closed.
        """
        recorder = assertRefused(
            self,
            HTTPRequestReceiver,
            b"GET /chat HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            501,
        )
        self.assertEqual(
            recorder.errors,
            ["protocol upgrades (Upgrade: websocket) cannot share the target connection"],
        )
        assertRefused(
            self,
            HTTPRequestReceiver,
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
            501,
        )

    def test_badRequestLines(self):
        for line in [
            b"GET /\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1 \r\n\r\n",
            b"GET / http/1.1\r\n\r\n",
            b"G(T / HTTP/1.1\r\n\r\n",
            b"GET /a b HTTP/1.1\r\n\r\n",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
        ]:
            recorder = assertRefused(self, HTTPRequestReceiver, line, 400)
            self.assertEqual(recorder.errors, ["malformed request line"], line)

    def test_otherVersion(self):
        """
        The HTTP/2 connection preface and other major versions get 505.
        """
        assertRefused(self, HTTPRequestReceiver, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505)
        assertRefused(self, HTTPRequestReceiver, b"GET / HTTP/3.0\r\n\r\n", 505)

    def test_badFields(self):
        for head, reason in [
            (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", "malformed header field line"),
            (b"GET / HTTP/1.1\r\nHost\r\n\r\n", "malformed header field line"),
            (b"GET / HTTP/1.1\r\n: x\r\n\r\n", "malformed header field line"),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", "malformed header field line"),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", "obsolete line folding in a header field"),
            (b"GET / HTTP/1.1\nHost: x\r\n\r\n", "bare CR or LF in the head"),
            (b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", "bare CR or LF in the head"),
        ]:
            recorder = assertRefused(self, HTTPRequestReceiver, head, 400)
            self.assertEqual(recorder.errors, [reason], head)

    def test_badLengths(self):
        for head, reason in [
            (b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", "invalid Content-Length"),
            (b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n", "invalid Content-Length"),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                "Transfer-Encoding does not end in one chunked",
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                "Transfer-Encoding does not end in one chunked",
            ),
            (
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                "Transfer-Encoding in an HTTP/1.0 request",
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n",
                "both Transfer-Encoding and Content-Length",
            ),
        ]:
            recorder = assertRefused(self, HTTPRequestReceiver, head, 400)
            self.assertEqual(recorder.errors, [reason], head)

    def test_badChunks(self):
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body, reason in [
            (b"zz\r\n", "invalid chunk-size line"),
            (b"-1\r\n", "invalid chunk-size line"),
            (b" 1\r\n", "invalid chunk-size line"),
            (b"1;\r\n", "invalid chunk-size line"),
            (b"1 x\r\n", "invalid chunk-size line"),
            (b"1\n\r\n", "invalid chunk-size line"),
            (b"11111111111111111\r\n", "invalid chunk-size line"),
            (b"1\r\nxy", "chunk data not followed by CRLF"),
            (b"0\r\nTrailer\r\n\r\n", "malformed header field line"),
            (b"0\r\nA: b\nc\r\n\r\n", "bare CR or LF in the trailer section"),
        ]:
            recorder = assertRefused(self, HTTPRequestReceiver, head + body, 400)
            self.assertEqual(recorder.errors, [reason], body)
            self.assertEqual(recorder.messages, [])

    def test_chunkSizeLineTooLong(self):
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        recorder = assertRefused(
            self, HTTPRequestReceiver, None, 400, chunks=[head + b"1;a=" + b"b" * 65536]
        )
        self.assertEqual(recorder.errors, ["chunk-size line too long"])

    def test_headTooLarge(self):
        """
        A head over 64 KiB is answered 431, whether or not its end has
        arrived.
        """
        big = b"GET / HTTP/1.1\r\nX: " + b"a" * 65536
        assertRefused(
            self,
            HTTPRequestReceiver,
            None,
            431,
            chunks=byteAtATime(big[:-65000]) + [big[-65000:]],
        )
        assertRefused(self, HTTPRequestReceiver, big + b"\r\n\r\n", 431)
        fits = b"GET / HTTP/1.1\r\nX: " + b"a" * (65536 - 23) + b"\r\n\r\n"
        self.assertEqual(len(fits), 65536)
        _, recorder = feed(HTTPRequestReceiver, fits)
        self.assertEqual(recorder.messages, [fits])

    def test_trailersTooLarge(self):
        recorder = assertRefused(
            self, SmallRequests, None, 431,
            chunks=[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nA: " + b"b" * 70],
        )
        self.assertEqual(recorder.errors, ["trailer section larger than 64 bytes"])

    def test_bodyTooLarge(self):
        """
        A Content-Length over the maximum is answered 413 before the body
        arrives; so is a chunked body that grows past it.
        """
        assertRefused(
            self,
            HTTPRequestReceiver,
            b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (64 * 1024 * 1024),
            413,
        )
        assertRefused(
            self,
            HTTPRequestReceiver,
            b"POST / HTTP/1.1\r\nContent-Length: 1%s\r\n\r\n" % (b"0" * 30),
            413,
        )
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        recorder = assertRefused(
            self, SmallRequests, None, 413, chunks=[head] + [b"10\r\n" + b"x" * 16 + b"\r\n"] * 10
        )
        self.assertEqual(recorder.errors, ["message larger than 256 bytes"])
        fits = b"PUT / HTTP/1.1\r\nContent-Length: 217\r\n\r\n" + b"x" * 217
        self.assertEqual(len(fits), 256)
        _, recorder = feed(SmallRequests, *byteAtATime(fits))
        self.assertEqual(recorder.messages, [fits])

    def test_nothingAfterError(self):
        """
        Requests before a bad one are delivered; none after it.
        """
        framer, recorder = feed(HTTPRequestReceiver, GET + b"BAD\r\n\r\n" + POST)
        self.assertEqual(recorder.messages, [GET])
        self.assertEqual(recorder.errors, ["malformed request line"])
        self.assertTrue(framer.transport.disconnecting)

    def test_nothingAfterErrorWhileOpen(self):
        """
        After a bad request nothing more is delivered, and nothing kept,
        even while the receiver keeps the connection open; the reply is the
        receiver's to send.
        """
        framer, recorder = feed(
            HTTPRequestReceiver, GET + b"BAD\r\n\r\n" + POST, GET, recorder=KeepingOpen()
        )
        self.assertEqual(recorder.messages, [GET])
        self.assertEqual(recorder.errors, ["malformed request line"])
        self.assertEqual(framer.transport.value(), b"")
        self.assertFalse(framer.transport.disconnecting)
        self.assertEqual(framer.buffered(), 0)


class ResponseFramingTests(SynchronousTestCase):
    def test_byteAtATime(self):
        """
        Responses arriving a byte at a time are delivered once each, whole.
        """
        framer, recorder = feed(HTTPResponseReceiver, *byteAtATime(OK), request=GET)
        self.assertEqual(recorder.messages, [OK])
        framer.expectResponseTo(GET)
        for byte in byteAtATime(CHUNKED_OK):
            framer.dataReceived(byte)
        self.assertEqual(recorder.messages, [OK, CHUNKED_OK])

    def test_merged(self):
        framer, recorder = feed(HTTPResponseReceiver, OK + CHUNKED_OK + OK, request=GET)
        self.assertEqual(recorder.messages, [OK, CHUNKED_OK, OK])
        self.assertFalse(framer.transport.disconnecting)

    def test_chunkedWinsOverContentLength(self):
        """
        Transfer-Encoding chunked overrides Content-Length (RFC 9112, 6.3);
        such a response is forwarded unchanged, and then the connection is
        retired as the RFC requires.
        """
        response = (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nhi\r\n0\r\n\r\n"
        )
        factory = RenewingFactory()
        _, recorder = feed(HTTPResponseReceiver, response + OK, request=GET, factory=factory)
        self.assertEqual(recorder.messages, [response])
        self.assertEqual(factory.renewed, [[]])
        self.assertTrue(application.closesClient(GET, response))

    def test_notChunkedRunsToClose(self):
        """
        A response whose transfer coding is not chunked runs to the close.
        """
        response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nabc"
        framer, recorder = feed(HTTPResponseReceiver, response, request=GET)
        self.assertEqual(recorder.messages, [])
        framer.connectionLost(Failure(ConnectionError()))
        self.assertEqual(recorder.messages, [response])

    def test_headHasNoBody(self):
        """
        A response to HEAD has no body, whatever its Content-Length or
        Transfer-Encoding say.
        """
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
        chunkedHead = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        framer, recorder = feed(HTTPResponseReceiver, head, request=HEAD)
        framer.expectResponseTo(HEAD)
        framer.dataReceived(chunkedHead)
        framer.expectResponseTo(GET)
        framer.dataReceived(OK)
        self.assertEqual(recorder.messages, [head, chunkedHead, OK])

    def test_noBodyStatuses(self):
        """
        204 and 304 responses have no body, even with a Content-Length.
        """
        noContent = b"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n"
        notModified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\nETag: \"x\"\r\n\r\n"
        framer, recorder = feed(HTTPResponseReceiver, noContent, request=GET)
        framer.expectResponseTo(GET)
        framer.dataReceived(notModified)
        framer.expectResponseTo(GET)
        framer.dataReceived(OK)
        self.assertEqual(recorder.messages, [noContent, notModified, OK])

    def test_interim(self):
        """
        1xx responses are interim: passed on as such, before the final one.
        """
        early = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        processing = b"HTTP/1.1 102 Processing\r\n\r\n"
        _, recorder = feed(
            HTTPResponseReceiver, *byteAtATime(processing + early + OK), request=POST
        )
        self.assertEqual(recorder.parts, [processing, early])
        self.assertEqual(recorder.messages, [OK])

    def test_continueForwarded(self):
        """
        A 100 Continue to a request that did not ask for one is passed on.
        """
        continue_ = b"HTTP/1.1 100 Continue\r\n\r\n"
        _, recorder = feed(HTTPResponseReceiver, continue_ + OK, request=POST)
        self.assertEqual(recorder.parts, [continue_])
        self.assertEqual(recorder.messages, [OK])

    def test_continueDropped(self):
        """
        The target's 100 Continue to a request with Expect: 100-continue is
        dropped: tcpmux answered that one itself. Other interims still pass.
        """
        request = b"PUT / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx"
        continue_ = b"HTTP/1.1 100 Continue\r\n\r\n"
        early = b"HTTP/1.1 103 Early Hints\r\n\r\n"
        _, recorder = feed(HTTPResponseReceiver, continue_ + early + OK, request=request)
        self.assertEqual(recorder.parts, [early])
        self.assertEqual(recorder.messages, [OK])

    def test_unsolicitedInterimDropped(self):
        framer, recorder = feed(HTTPResponseReceiver, OK, request=GET)
        framer.dataReceived(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(recorder.parts, [])
        self.assertEqual(len(self.flushLoggedErrors()), 0)

    def test_switchingProtocols(self):
        framer, recorder = feed(
            HTTPResponseReceiver, b"HTTP/1.1 101 Switching Protocols\r\n\r\n", request=GET
        )
        self.assertEqual(recorder.errors, ["the target switched protocols (101)"])
        self.assertEqual(framer.transport.value(), b"")
        self.assertTrue(framer.transport.disconnecting)

    def test_runsToClose(self):
        """
        A response with neither length header ends when the connection
        closes; the connection is retired before the response is passed on.
        """
        response = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of "
        factory = RenewingFactory()
        framer, recorder = feed(
            HTTPResponseReceiver, response, b"it", request=GET, factory=factory
        )
        self.assertEqual(recorder.messages, [])
        framer.connectionLost(Failure(ConnectionError()))
        self.assertEqual(recorder.messages, [response + b"it"])
        self.assertEqual(factory.renewed, [[]])
        self.assertTrue(application.closesClient(GET, response + b"it"))

    def test_runsToCloseEmpty(self):
        response = b"HTTP/1.0 200 OK\r\n\r\n"
        framer, recorder = feed(HTTPResponseReceiver, response, request=GET)
        framer.connectionLost(Failure(ConnectionError()))
        self.assertEqual(recorder.messages, [response])

    def test_incompleteAtClose(self):
        """
        A response cut short by the close is not delivered (the target
        session then fails the round trip).
        """
        for partial in [OK[:-1], CHUNKED_OK[:-2], b"HTTP/1.1 200 OK\r\n"]:
            framer, recorder = feed(HTTPResponseReceiver, partial, request=GET)
            framer.connectionLost(Failure(ConnectionError()))
            self.assertEqual(recorder.messages, [])

    def test_connectionClose(self):
        """
        After a response saying Connection: close, or an HTTP/1.0 response
        without keep-alive, the connection is retired before the response is
        passed on, and bytes after it are not framed.
        """
        for response in [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
        ]:
            factory = RenewingFactory()
            framer, recorder = feed(
                HTTPResponseReceiver, response + OK, request=GET, factory=factory
            )
            self.assertEqual(factory.renewed, [[]])
            self.assertEqual(recorder.messages, [response])
            self.assertTrue(framer.transport.disconnecting)
            self.assertTrue(application.closesClient(GET, response))

    def test_keepAlive(self):
        """
        An HTTP/1.0 response with Connection: keep-alive keeps the
        connection; an HTTP/1.0 request without it ends the connection.
        """
        response = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"
        factory = RenewingFactory()
        feed(HTTPResponseReceiver, response, request=GET, factory=factory)
        self.assertEqual(factory.renewed, [])
        self.assertFalse(application.closesClient(GET, response))
        old = b"GET / HTTP/1.0\r\n\r\n"
        feed(HTTPResponseReceiver, OK, request=old, factory=factory)
        self.assertEqual(factory.renewed, [[]])
        self.assertTrue(application.closesClient(old, OK))

    def test_withoutFactory(self):
        """
        A bare response framer closes its transport instead.
        """
        response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        framer, recorder = feed(HTTPResponseReceiver, response + OK, request=GET)
        self.assertTrue(framer.transport.disconnecting)
        self.assertEqual(recorder.messages, [response])

    def test_badResponses(self):
        for data, reason in [
            (b"HTTP/1.1 OK\r\n\r\n", "malformed status line"),
            (b"HTTP/1.1 2000 OK\r\n\r\n", "malformed status line"),
            (b"HTTP/1.1 200 O\x01K\r\n\r\n", "malformed status line"),
            (b"ICY 200 OK\r\n\r\n", "malformed status line"),
            (b"HTTP/2.0 200 OK\r\n\r\n", "not an HTTP/1.x response"),
            (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", "invalid Content-Length"),
            (b"HTTP/1.1 200 OK\r\nA: b\r\n c\r\n\r\n", "obsolete line folding in a header field"),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nq\r\n", "invalid chunk-size line"),
        ]:
            framer, recorder = feed(HTTPResponseReceiver, data, request=GET)
            self.assertEqual(recorder.errors, [reason], data)
            self.assertEqual(framer.transport.value(), b"")
            self.assertTrue(framer.transport.disconnecting)

    def test_tooLarge(self):
        """
        A head is limited; so is a response that answers no request, which
        is buffered. The response to a request is streamed, whatever its
        size.
        """
        _, recorder = feed(SmallResponses, b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 300)
        self.assertEqual(recorder.errors, ["message larger than 256 bytes"])
        _, recorder = feed(SmallResponses, b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n")
        self.assertEqual(recorder.errors, ["message larger than 256 bytes"])
        _, recorder = feed(SmallResponses, b"HTTP/1.1 200 OK\r\nX: " + b"x" * 100, request=GET)
        self.assertEqual(recorder.errors, ["head larger than 64 bytes"])
        _, recorder = feed(
            SmallResponses, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1" + b"0" * 64,
            request=GET,
        )
        self.assertEqual(recorder.errors, ["chunk-size line too long"])
        for response in [
            b"HTTP/1.1 200 OK\r\nContent-Length: 300\r\n\r\n" + b"x" * 300,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n12c\r\n"
            + b"x" * 300 + b"\r\n0\r\n\r\n",
        ]:
            framer, recorder = feed(SmallResponses, response, request=GET)
            self.assertEqual((recorder.errors, recorder.messages), ([], [response]))
        framer, recorder = feed(
            SmallResponses, b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 300, request=GET
        )
        framer.connectionLost(Failure(ConnectionError()))
        self.assertEqual(recorder.errors, [])
        self.assertEqual(recorder.messages, [b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * 300])

    def test_statusLineVariants(self):
        """
        A status line may have an empty reason phrase, or none at all.
        """
        for line in [b"HTTP/1.1 200 \r\n", b"HTTP/1.1 200\r\n", b"HTTP/1.1 599 Whatever\tyou say\r\n"]:
            response = line + b"Content-Length: 0\r\n\r\n"
            _, recorder = feed(HTTPResponseReceiver, response, request=GET)
            self.assertEqual(recorder.messages, [response])


class StreamingTests(SynchronousTestCase):
    """
    The final response to a request is passed on as it arrives: at the end
    of each read, what has come of it goes to C{partReceived}, and its last
    piece to C{messageReceived}; the framer holds about one read of it.
    """

    def stream(self, response, size=64 * 1024, bound=None):
        """
        Feed C{response} to a GET in reads of C{size} bytes, checking that
        what is buffered after each read and while each piece is delivered
        is at most C{bound} (C{size} by default).

        @return: the L{Buffering} recorder.
        """
        bound = size if bound is None else bound
        framer, recorder = connect(HTTPResponseReceiver, recorder=Buffering())
        framer.expectResponseTo(GET)
        for start in range(0, len(response), size):
            framer.dataReceived(response[start : start + size])
            self.assertLessEqual(framer.buffered(), bound)
        self.assertEqual(framer.buffered(), 0)
        self.assertLessEqual(max(recorder.pieceBuffered + recorder.buffered), bound)
        self.assertEqual(recorder.errors, [])
        self.assertEqual(b"".join(recorder.pieces) + b"".join(recorder.lasts), response)
        self.assertEqual(recorder.messages, [response])
        return recorder

    def test_contentLength(self):
        """
        A 1 MB body fed in 64 KiB reads is passed on read by read, never
        buffered whole.
        """
        body = blob(MIB, "streamed")
        response = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        recorder = self.stream(response)
        self.assertEqual(len(recorder.pieces), len(response) // (64 * 1024))
        self.assertTrue(all(len(piece) <= 64 * 1024 for piece in recorder.pieces))

    def test_chunkedOneBigChunk(self):
        """
        A single 1 MB chunk is passed on as it arrives, not held until its
        end.
        """
        body = blob(MIB, "one chunk")
        response = (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % len(body) + body + b"\r\n0\r\nTrailer: t\r\n\r\n"
        )
        recorder = self.stream(response)
        self.assertGreaterEqual(len(recorder.pieces), 16)
        self.assertTrue(all(len(piece) <= 64 * 1024 for piece in recorder.pieces))

    def test_anySplit(self):
        """
        Whatever the reads, the pieces make up the response.
        """
        for response in [OK, CHUNKED_OK, CHUNKED_OK.replace(b"3;x=y\r\nabc", b"1\r\na\r\n2\r\nbc")]:
            for size in (1, 2, 3, 7, len(response) - 1):
                # (A head or a chunk-size line is held until it is whole.)
                self.stream(response, size, bound=len(response))

    def test_largerThanMaxMessageSize(self):
        """
        maxMessageSize bounds what is buffered, not a streamed response.
        """
        self.patch(HTTPResponseReceiver, "maxMessageSize", 1024)
        body = blob(100 * 1024, "large")
        self.stream(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body, 1000)
        self.stream(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n" % len(body)
            + body + b"\r\n0\r\n\r\n",
            1000,
        )

    def test_interimThenFinalInParts(self):
        """
        Interim responses are one part each; then the final response, in
        pieces as it arrives.
        """
        early = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"
        head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
        _, recorder = feed(
            HTTPResponseReceiver, early + head + b"o", b"k", request=GET
        )
        self.assertEqual(
            recorder.events,
            [("part", early), ("part", head + b"o"), ("message", b"k")],
        )
        self.assertEqual(recorder.parts, [early])
        self.assertEqual(recorder.messages, [head + b"ok"])

    def test_headWaitsForItsEnd(self):
        """
        Nothing is passed on before the final response's head is whole.
        """
        _, recorder = feed(HTTPResponseReceiver, *byteAtATime(OK[:-3]), request=GET)
        self.assertEqual(recorder.events, [])
        _, recorder = feed(HTTPResponseReceiver, OK[:-2], request=GET)
        self.assertEqual(recorder.events, [("part", OK[:-2])])

    def test_untilClose(self):
        """
        A response that runs to the close is passed on as it comes; the
        close brings an empty last piece, after the connection is retired.
        """
        head = b"HTTP/1.1 200 OK\r\n\r\n"
        factory = RenewingFactory()
        framer, recorder = feed(
            HTTPResponseReceiver, head + b"a", b"bc", request=GET, factory=factory
        )
        self.assertEqual(recorder.events, [("part", head + b"a"), ("part", b"bc")])
        framer.connectionLost(Failure(ConnectionError()))
        self.assertEqual(recorder.events[2:], [("message", b"")])
        self.assertEqual(factory.renewed, [[]])

    def test_connectionCloseRetiresBeforeLastPiece(self):
        """
        A streamed response that ends the connection: its pieces go on as
        they come, and the connection is closed before its last piece.
        """
        response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbody"
        factory = RenewingFactory()
        framer, recorder = feed(
            HTTPResponseReceiver, response[:-2], response[-2:] + OK, request=GET, factory=factory
        )
        self.assertEqual(recorder.events, [("part", response[:-2]), ("message", b"dy")])
        self.assertEqual(factory.renewed, [[]])
        self.assertTrue(framer.transport.disconnecting)
        self.assertEqual(recorder.messages, [response])

    def test_closedByReceiver(self):
        """
        If the connection is closed while a piece is delivered, nothing
        more is.
        """

        class Closing(Answers):
            def partReceived(self, part):
                Answers.partReceived(self, part)
                self.framer.transport.loseConnection()

        recorder = Closing()
        framer, _ = connect(HTTPResponseReceiver, recorder=recorder)
        framer.expectResponseTo(GET)
        framer.dataReceived(OK[:-1])
        framer.dataReceived(OK[-1:] + OK)
        self.assertEqual(recorder.events, [("part", OK[:-1])])
        self.assertEqual(framer.buffered(), 0)

    def test_badChunkAfterPieces(self):
        """
        A chunk not followed by CRLF is refused after its data streamed.
        """
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        framer, recorder = feed(
            HTTPResponseReceiver, head + b"5\r\nab", b"cde", b"xx", request=GET
        )
        self.assertEqual(recorder.pieces, [head + b"5\r\nab", b"cde"])
        self.assertEqual(recorder.errors, ["chunk data not followed by CRLF"])
        self.assertEqual(recorder.messages, [])
        self.assertTrue(framer.transport.disconnecting)

    def test_closesClientAfterInterim(self):
        """
        closesClient judges the answer's start by its final head, behind
        any interim responses; without a whole final head, it closes.
        """
        early = b"HTTP/1.1 103 Early Hints\r\n\r\n"
        processing = b"HTTP/1.1 102 Processing\r\n\r\n"
        closing = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
        self.assertFalse(application.closesClient(GET, early + OK))
        self.assertFalse(application.closesClient(GET, processing + early + CHUNKED_OK[:50]))
        self.assertTrue(application.closesClient(GET, early + closing))
        self.assertTrue(application.closesClient(GET, processing + early))
        self.assertTrue(application.closesClient(GET, early + OK[:20]))
        self.assertTrue(application.closesClient(GET, early + b"garbage\r\n\r\n" + OK))
        self.assertTrue(application.closesClient(GET, b""))
        self.assertFalse(application.closesClient(GET, OK[:-1]))


class BareLineEndTests(SynchronousTestCase):
    """
    Lines must end in CRLF. A bare LF or CR is refused as soon as it
    arrives, not waited on: a head that never holds CRLFCRLF would otherwise
    keep its client waiting, unanswered, forever.
    """

    def test_requestBareLF(self):
        """
        A request whose lines all end in a bare LF gets 400 at once.
        """
        recorder = assertRefused(
            self, HTTPRequestReceiver, b"GET / HTTP/1.1\nHost: x\n\n", 400
        )
        self.assertEqual(recorder.errors, ["bare CR or LF in the head"])
        self.assertEqual(recorder.messages, [])

    def test_requestBareLFBeforeHeadEnds(self):
        """
        The bare LF is refused when it arrives, the rest of the head unseen,
        however the head is split; whole requests before it are delivered.
        """
        for chunks in [
            [b"GET / HTTP/1.1\n"],
            byteAtATime(b"GET / HTTP/1.1\n"),
            [GET + b"GET / HTTP/1.1\r\nHost: x\n"],
            [b"\n"],
            [b"GET / HTTP/1.1\r\nHost: x\r", b"\n\n"],
        ]:
            framer, recorder = feed(HTTPRequestReceiver, *chunks)
            self.assertEqual(recorder.errors, ["bare CR or LF in the head"], chunks)
            self.assertTrue(
                framer.transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n"), chunks
            )
            self.assertTrue(framer.transport.disconnecting)
            self.assertEqual(recorder.messages, [GET] if chunks[0].startswith(GET) else [])

    def test_requestBareCR(self):
        """
        A CR followed by anything but LF is refused at once; a CR that ends
        a read waits for the next byte.
        """
        for chunks in [[b"GET / HTTP/1.1\rHost: x\r\r"], [b"GET / HTTP/1.1\r", b"H"]]:
            _, recorder = feed(HTTPRequestReceiver, *chunks)
            self.assertEqual(recorder.errors, ["bare CR or LF in the head"], chunks)
        cr = GET.index(b"\r")
        framer, recorder = feed(HTTPRequestReceiver, GET[: cr + 1], GET[cr + 1 :])
        self.assertEqual(recorder.messages, [GET])
        self.assertEqual(recorder.errors, [])
        _, recorder = feed(HTTPRequestReceiver, *byteAtATime(GET + CHUNKED_POST))
        self.assertEqual(recorder.messages, [GET, CHUNKED_POST])
        self.assertEqual(recorder.errors, [])

    def test_bareLFInBodyIsData(self):
        """
        A body is bytes, not lines: an LF in it is not a line end.
        """
        request = b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\na\nb\r"
        _, recorder = feed(HTTPRequestReceiver, *byteAtATime(request + GET))
        self.assertEqual(recorder.messages, [request, GET])
        self.assertEqual(recorder.errors, [])

    def test_chunkSizeLineBareLF(self):
        """
        A chunk-size line ended by a bare LF is refused at once.
        """
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body in [b"5\nhello\n", b"5\n", b"5\r5"]:
            _, recorder = feed(HTTPRequestReceiver, head, *byteAtATime(body))
            self.assertEqual(recorder.errors, ["invalid chunk-size line"], body)

    def test_trailersBareLF(self):
        """
        A trailer section with bare LFs is refused at once.
        """
        head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        for body in [b"0\r\nA: b\n", b"0\r\n\n", b"0\r\nA: b\r\r"]:
            _, recorder = feed(HTTPRequestReceiver, head, *byteAtATime(body))
            self.assertEqual(recorder.errors, ["bare CR or LF in the trailer section"], body)

    def test_responseBareLF(self):
        """
        A response with bare LF line ends is a framing error at once (the
        round trip fails with InvalidResponse, and the client gets 502),
        not a wait for the timeout.
        """
        for data in [
            b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
            b"HTTP/1.1 200 OK\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok",
        ]:
            framer, recorder = feed(HTTPResponseReceiver, data, request=GET)
            self.assertEqual(recorder.errors, ["bare CR or LF in the head"], data)
            self.assertEqual(recorder.messages, [])
            self.assertEqual(framer.transport.value(), b"")
            self.assertTrue(framer.transport.disconnecting)


class FieldValueTests(SynchronousTestCase):
    """
    Field values are trimmed of SP and HTAB only (RFC 9110, 5.6.3), and may
    not hold control characters other than HTAB; obs-text (0x80-0xFF) is
    allowed.
    """

    def test_controlCharactersRefused(self):
        """
        VT or FF around or inside a value is not whitespace: the request is
        refused, rather than C{\\x0bchunked} being read as chunked.
        """
        for field in [
            b"Transfer-Encoding: \x0bchunked",
            b"Transfer-Encoding: chunked\x0c",
            b"Content-Length: \x0b3",
            b"X: a\x01b",
            b"X: a\x1bb",
            b"X: \x7f",
        ]:
            request = b"POST / HTTP/1.1\r\n" + field + b"\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            recorder = assertRefused(self, HTTPRequestReceiver, request, 400)
            self.assertEqual(
                recorder.errors, ["control character in a header field value"], field
            )
            self.assertEqual(recorder.messages, [])

    def test_trailerControlCharactersRefused(self):
        request = (
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: \x0bx\r\n\r\n"
        )
        recorder = assertRefused(self, HTTPRequestReceiver, request, 400)
        self.assertEqual(recorder.errors, ["control character in a header field value"])

    def test_responseControlCharactersRefused(self):
        response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n"
        framer, recorder = feed(HTTPResponseReceiver, response, request=GET)
        self.assertEqual(recorder.errors, ["control character in a header field value"])
        self.assertEqual(recorder.messages, [])
        self.assertTrue(framer.transport.disconnecting)

    def test_tabsAndObsTextAllowed(self):
        """
        HTAB inside or around a value, and bytes 0x80-0xFF, are allowed.
        """
        request = (
            b"GET / HTTP/1.1\r\nX-Name:\tcaf\xc3\xa9 \x80\xff\t\r\n"
            b"X-Tab: a\tb\r\nContent-Length:\t 2 \t\r\n\r\nhi"
        )
        _, recorder = feed(HTTPRequestReceiver, request + GET)
        self.assertEqual(recorder.messages, [request, GET])

    def test_elementsTrimSpaceAndTabOnly(self):
        """
        L{Head.elements} and L{Head.chunked} trim SP and HTAB from each
        element, nothing else.
        """
        head = Head((1, 1), [(b"connection", b" Close\t,\x0bkeep-alive ,\t")])
        self.assertEqual(head.elements(b"connection"), [b"close", b"\x0bkeep-alive"])
        self.assertFalse(head.persistent())
        self.assertFalse(Head((1, 1), [(b"transfer-encoding", b"\x0cchunked")]).chunked())
        self.assertTrue(Head((1, 1), [(b"transfer-encoding", b"gzip ,\tchunked ")]).chunked())
        self.assertFalse(Head((1, 0), [(b"connection", b"\x0bkeep-alive")]).persistent())


class Buffering(Answers):
    """
    Records, with each message and interim part, what the framer says is
    buffered while it is delivered; and with each streamed piece, in
    C{pieceBuffered}.
    """

    def __init__(self):
        Answers.__init__(self)
        self.buffered = []
        self.pieceBuffered = []

    def messageReceived(self, message):
        Answers.messageReceived(self, message)
        self.buffered.append(self.framer.buffered())

    def partReceived(self, part):
        pieces = len(self.pieces)
        Answers.partReceived(self, part)
        if len(self.pieces) > pieces:
            self.pieceBuffered.append(self.framer.buffered())
        else:
            self.buffered.append(self.framer.buffered())


class BufferedContractTests(SynchronousTestCase):
    """
    While a message is delivered, C{buffered()} counts the bytes that came
    after it in the same read (the target session renews a connection that
    sent bytes nothing asked for).
    """

    def test_responses(self):
        for chunks, expected in [
            ([OK], [0]),
            ([OK + OK], [len(OK), 0]),
            ([OK + OK[:5]], [5]),
            ([CHUNKED_OK + b"x"], [1]),
            ([OK[:-1], OK[-1:] + b"HTTP/1.1"], [8]),
            (byteAtATime(CHUNKED_OK), [0]),
            ([b"HTTP/1.1 103 Early\r\n\r\n" + OK], [len(OK), 0]),
        ]:
            framer, recorder = connect(HTTPResponseReceiver, recorder=Buffering())
            for chunk in chunks:
                framer.expectResponseTo(GET)
                framer.dataReceived(chunk)
            self.assertEqual(recorder.buffered, expected, chunks)

    def test_streamedPieces(self):
        """
        While a piece of a streamed response is delivered, C{buffered()}
        counts what is held after it: the start of a chunk-size line, or
        the CRLF that may end the chunked body.
        """
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        for chunks, pieces, held in [
            ([OK[:-1]], [OK[:-1]], [0]),
            ([head + b"3\r\nabc\r\n1"], [head + b"3\r\nabc\r\n"], [1]),
            ([head + b"3\r\nab", b"c\r\n0\r\n"], [head + b"3\r\nab", b"c\r\n0"], [0, 2]),
        ]:
            framer, recorder = connect(HTTPResponseReceiver, recorder=Buffering())
            framer.expectResponseTo(GET)
            for chunk in chunks:
                framer.dataReceived(chunk)
            self.assertEqual(recorder.pieces, pieces, chunks)
            self.assertEqual(recorder.pieceBuffered, held, chunks)
            self.assertEqual(recorder.messages, [])

    def test_requests(self):
        for chunks, expected in [
            ([GET + POST], [len(POST), 0]),
            ([POST[:-2], POST[-2:] + GET[:4]], [4]),
            ([GET + b"\r\n"], [2]),
            (byteAtATime(CHUNKED_POST), [0]),
        ]:
            framer, recorder = feed(HTTPRequestReceiver, *chunks, recorder=Buffering())
            self.assertEqual(recorder.buffered, expected, chunks)


class PlainReceiver:
    """
    A receiver that keeps no reference to its framer.
    """

    def startReceiving(self, framer):
        pass

    def messageReceived(self, message):
        pass

    def partReceived(self, part):
        pass

    def framingError(self, reason, reply):
        pass

    def stopReceiving(self, reason):
        pass


class ReferenceTests(SynchronousTestCase):
    """
    A framer is no reference cycle of its own, so that a departed client's
    framer, and the bytes it holds, are freed at once rather than by the
    cyclic garbage collector.
    """

    def setUp(self):
        if gc.isenabled():
            gc.disable()
            self.addCleanup(gc.enable)

    def test_freedWithoutCollector(self):
        for framerClass, request, chunk in [
            (HTTPRequestReceiver, None, GET[:10]),
            (HTTPRequestReceiver, None, POST[:-2]),
            (HTTPRequestReceiver, None, CHUNKED_POST[:-10]),
            (HTTPResponseReceiver, GET, OK[:10]),
            (HTTPResponseReceiver, GET, CHUNKED_OK[:-10]),
            # A response that answers no request is buffered, not streamed.
            (HTTPResponseReceiver, None, OK[:-1]),
            (HTTPResponseReceiver, None, b"HTTP/1.1 200 OK\r\n\r\nuntil close"),
        ]:
            framer = framerClass(PlainReceiver())
            framer.makeConnection(StringTransport())
            if request is not None:
                framer.expectResponseTo(request)
            framer.dataReceived(chunk)
            self.assertTrue(framer.buffered())
            ref = weakref.ref(framer)
            del framer
            self.assertIsNone(ref(), (framerClass, chunk))

    def test_bufferReleasedOnClose(self):
        """
        Whatever still refers to a framer once its connection is lost (its
        session does), the bytes of an incomplete message are let go.
        """
        for framerClass, request, data in [
            (HTTPRequestReceiver, None, POST[:-1]),
            (HTTPResponseReceiver, GET, OK[:10]),
            (HTTPResponseReceiver, GET, CHUNKED_OK[:-10]),
            (HTTPResponseReceiver, None, OK[:-1]),
        ]:
            framer, recorder = feed(framerClass, data, request=request)
            self.assertTrue(framer.buffered())
            framer.connectionLost(Failure(ConnectionError()))
            self.assertEqual(framer.buffered(), 0, framerClass)
            self.assertEqual(recorder.messages, [])


class ApplicationTests(SynchronousTestCase):
    def test_registered(self):
        self.assertIs(protocols.get("http"), application)
        self.assertEqual(application.name, "http")

    def assertErrorResponse(self, error, status, request=GET):
        reply = application.errorResponse(request, error)
        head, body = reply.split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 %d " % status), head)
        self.assertIn(b"\r\nConnection: close", head)
        self.assertTrue(application.closesClient(request, reply))
        return head, body

    def test_errorResponses(self):
        """
        502 when the target is unavailable, 504 when it timed out or the
        connection was lost; each has a Content-Length and closes the
        client.
        """
        for error, status in [
            (TargetUnavailable("refused"), 502),
            (TargetTimeout("slow"), 504),
            (TargetLost("gone"), 504),
            (InvalidResponse("garbage"), 502),
            (GatewayError("?"), 502),
        ]:
            head, body = self.assertErrorResponse(error, status)
            self.assertIn(b"\r\nContent-Length: %d" % len(body), head)
            self.assertTrue(body.startswith(b"%d " % status))

    def test_errorResponseToHead(self):
        head, body = self.assertErrorResponse(TargetTimeout("slow"), 504, request=HEAD)
        self.assertEqual(body, b"")
        self.assertIn(b"Content-Length: ", head)

    def test_closesClient(self):
        self.assertFalse(application.closesClient(GET, OK))
        self.assertFalse(application.closesClient(POST, CHUNKED_OK))
        self.assertTrue(
            application.closesClient(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", OK)
        )
        self.assertFalse(
            application.closesClient(
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            )
        )
        # A response to HEAD without a length does not run to the close.
        self.assertFalse(application.closesClient(HEAD, b"HTTP/1.1 200 OK\r\n\r\n"))
        self.assertTrue(application.closesClient(GET, b"HTTP/1.1 200 OK\r\n\r\n"))

    def test_describe(self):
        self.assertEqual(application.describe(GET), "GET /a?b=c HTTP/1.1")
        self.assertEqual(application.describe(OK), "HTTP/1.1 200 OK")
        self.assertEqual(len(application.describe(b"x" * 1000)), 200)


# -- property-based tests

_tokens = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_", min_size=1, max_size=12)
_values = st.binary(max_size=30).map(
    # Field values hold no control characters but HTAB (RFC 9110, 5.5).
    lambda b: bytes(c for c in b if c == 9 or 32 <= c != 127).strip(b" \t")
)
_bodies = st.binary(max_size=200)


@st.composite
def _fields(draw):
    names = draw(st.lists(_tokens, max_size=4))
    return b"".join(
        name.encode() + b":" + draw(st.sampled_from([b"", b" ", b"\t "])) + draw(_values) + b"\r\n"
        for name in names
        if name.lower() not in ("content-length", "transfer-encoding", "upgrade", "connection")
    )


@st.composite
def _chunkedBody(draw):
    body = draw(_bodies)
    cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
    out = []
    for start, end in zip([0] + cuts, cuts + [len(body)]):
        if end > start:
            ext = draw(st.sampled_from([b"", b";a", b";a=b", b' ; q="x y"']))
            out.append(b"%x%s\r\n%s\r\n" % (end - start, ext, body[start:end]))
    out.append(b"0" + draw(st.sampled_from([b"", b";end"])) + b"\r\n")
    return b"".join(out) + draw(_fields()) + b"\r\n"


@st.composite
def requestMessages(draw):
    method = draw(st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"OPTIONS"]))
    path = b"/" + draw(_tokens).encode()
    head = b"%s %s HTTP/1.%d\r\n" % (method, path, draw(st.integers(0, 1))) + draw(_fields())
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    if kind == "none":
        return head + b"\r\n"
    if kind == "length" or head.startswith(b"HTTP/1.0", len(method) + len(path) + 2):
        body = draw(_bodies)
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + draw(_chunkedBody())


@st.composite
def responseMessages(draw):
    status = draw(st.sampled_from([100, 103, 200, 201, 204, 304, 404, 500]))
    head = b"HTTP/1.1 %d Reason\r\n" % status + draw(_fields())
    if status < 200 or status in (204, 304):
        return head + b"\r\n"
    if draw(st.booleans()):
        body = draw(_bodies)
        return head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    return head + b"Transfer-Encoding: chunked\r\n\r\n" + draw(_chunkedBody())


@st.composite
def splitting(draw, data):
    cuts = sorted(set(draw(st.lists(st.integers(0, len(data)), max_size=20))))
    return [data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])]


class PropertyTests(SynchronousTestCase):
    @settings(max_examples=150, deadline=None)
    @given(st.lists(requestMessages(), min_size=1, max_size=5), st.data())
    def test_requestsAnySplit(self, messages, data):
        """
        However a stream of valid requests is split into reads, the same
        requests come out, unchanged.
        """
        stream = b"".join(messages)
        _, recorder = feed(HTTPRequestReceiver, *data.draw(splitting(stream)))
        self.assertEqual(recorder.messages, messages)
        self.assertEqual(recorder.errors, [])

    @settings(max_examples=150, deadline=None)
    @given(st.lists(responseMessages(), min_size=1, max_size=5), st.data())
    def test_responsesAnySplit(self, messages, data):
        stream = b"".join(messages)
        _, recorder = feed(
            HTTPResponseReceiver,
            *data.draw(splitting(stream)),
            request=POST,
            recorder=ExpectingPosts(),
        )
        self.assertEqual(recorder.parts, [m for m in messages if m[9:10] == b"1"])
        self.assertEqual(recorder.messages, [m for m in messages if m[9:10] != b"1"])
        self.assertEqual(recorder.errors, [])

    @settings(max_examples=300, deadline=None)
    @given(st.data())
    def test_arbitraryBytes(self, data):
        """
        Arbitrary bytes, or valid messages with bytes changed, never raise:
        at most one framing error, after which nothing is delivered, and an
        incomplete message never holds more than the maximum.
        """
        framerClass = data.draw(st.sampled_from([SmallRequests, SmallResponses]))
        messages = requestMessages() if framerClass is SmallRequests else responseMessages()
        stream = data.draw(st.one_of(st.binary(max_size=600), messages.map(bytes)))
        stream = bytearray(stream)
        for position, value in data.draw(
            st.lists(st.tuples(st.integers(0, 600), st.integers(0, 255)), max_size=3)
        ):
            if stream:
                stream[position % len(stream)] = value
        framer, recorder = connect(framerClass)
        framer.expectResponseTo(GET)
        delivered = None
        for chunk in data.draw(splitting(bytes(stream))):
            framer.dataReceived(chunk)
            self.assertLessEqual(framer.buffered(), framerClass.maxMessageSize)
            if recorder.errors and delivered is None:
                delivered = len(recorder.messages) + len(recorder.parts)
        framer.connectionLost(Failure(ConnectionError()))
        self.assertLessEqual(len(recorder.errors), 1)
        if recorder.errors:
            self.assertEqual(len(recorder.messages) + len(recorder.parts), delivered)
            self.assertTrue(framer.transport.disconnecting)
        if framerClass is SmallRequests:
            # (A response to a request is streamed, whatever its size: only
            # what is buffered is bounded, as checked above.)
            for message in recorder.messages:
                self.assertLessEqual(len(message), framerClass.maxMessageSize)


# -- end to end, over real TCP

KIB = 1024
MIB = 1024 * KIB


def blob(size, seed):
    return hashlib.sha256(seed.encode()).digest() * (size // 32) + b"x" * (size % 32)


class CountingHandler(http.server.SimpleHTTPRequestHandler):
    """
    The standard library's file server in HTTP/1.1 mode, serving the test's
    directory, plus a POST that answers with the body's length and hash, and
    C{/noclen/...} that answers its path with no length (so it runs to the
    close).
    """

    protocol_version = "HTTP/1.1"

    def __init__(self, request, clientAddress, server):
        super().__init__(request, clientAddress, server, directory=server.root)

    def setup(self):
        super().setup()
        with self.server.lock:
            self.server.accepted += 1
            self.server.open += 1
            self.server.mostOpen = max(self.server.mostOpen, self.server.open)

    def finish(self):
        super().finish()
        with self.server.lock:
            self.server.open -= 1

    def do_GET(self):
        if self.path.startswith("/noclen/"):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(self.path.encode())
            self.close_connection = True
            return
        super().do_GET()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = b"%d %s %s" % (len(body), hashlib.sha256(body).hexdigest().encode(), self.path.encode())
        self.send_response(200)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format, *args):
        pass


def startFileServer(testCase):
    """
    Python's C{http.server} in a thread, serving a directory of files named
    after their number; returns the server.
    """
    root = testCase.mktemp()
    os.makedirs(root)
    for index in range(8):
        with open(os.path.join(root, f"file{index}.txt"), "wb") as f:
            f.write(b"file %d\n" % index)
    with open(os.path.join(root, "big.bin"), "wb") as f:
        f.write(blob(MIB, "big"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    server.daemon_threads = True
    server.root = root
    server.lock = threading.Lock()
    server.accepted = server.open = server.mostOpen = 0
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()
        thread.join()

    testCase.addCleanup(deferToThread, stop)
    return server


def readResponses(sock, count, method="GET"):
    """
    Parse C{count} responses arriving one after another on C{sock} with
    http.client, returning C{(status, headers, body)} for each.
    """

    class OneFile:
        """
        The socket as http.client sees it: every response reads from the
        same buffered file, which reading one response does not close.
        """

        def __init__(self):
            self.file = sock.makefile("rb")

        def makefile(self, mode):
            return self

        def __getattr__(self, name):
            return getattr(self.file, name)

        def close(self):
            pass

    source = OneFile()
    results = []
    for _ in range(count):
        response = http.client.HTTPResponse(source, method=method)
        response.begin()
        results.append((response.status, response.headers, response.read()))
    return results


def rawExchange(port, data, count, method="GET"):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        return readResponses(sock, count, method)


def readAll(sock):
    chunks = []
    while True:
        data = sock.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


class TwistedWebTests(TestCase):
    """
    http.client and curl through tcpmux to twisted.web serving one
    connection at a time (examples/http_server.py).
    """

    timeout = 30

    async def setUp(self):
        self.server, serverPort = await runExample(self, "http_server.py", "--port", "0")
        self.port, self.multiplexer = await startMultiplexer(self, "http", serverPort)

    def session(self, index):
        """
        One keep-alive http.client connection: chunked GETs of its own
        path, a 204, a 1 MiB upload and a 1 MiB chunked download.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for round_ in range(3):
                path = f"/echo/client{index}/round{round_}"
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.status == 200, response.status
                assert response.getheader("Transfer-Encoding") == "chunked"
                body = response.read()
                assert body == b"path: " + path.encode() + b"\n", body
            connection.request("GET", "/empty")
            response = connection.getresponse()
            assert (response.status, response.read()) == (204, b"")
            upload = blob(MIB + index, f"client{index}")
            connection.request("POST", "/upload", body=upload)
            response = connection.getresponse()
            expected = b"%d %s\n" % (len(upload), hashlib.sha256(upload).hexdigest().encode())
            assert response.read() == expected
            connection.request("GET", f"/big?size={MIB + index}")
            response = connection.getresponse()
            body = response.read()
            assert len(body) == MIB + index and body[:512] == bytes(range(256)) * 2
            return index
        finally:
            connection.close()

    async def test_manyClientsOneConnection(self):
        """
        Six http.client keep-alive clients at once each get their own
        answers, and twisted.web sees one connection.
        """
        results = await gatherResults([deferToThread(self.session, i) for i in range(6)])
        self.assertEqual(results, list(range(6)))
        self.assertEqual(self.server.count("accepted connection"), 1)
        self.assertEqual(self.server.count("refused connection"), 0)

    async def test_pipelined(self):
        """
        Three requests sent at once are answered in order.
        """
        data = b"".join(
            b"GET /echo/p%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(3)
        )
        results = await deferToThread(rawExchange, self.port, data, 3)
        self.assertEqual(
            [(status, body) for status, headers, body in results],
            [(200, b"path: /echo/p%d\n" % i) for i in range(3)],
        )

    async def test_curlExpectContinue(self):
        """
        curl, sending a 1 MiB POST with Expect: 100-continue, gets exactly
        one 100 Continue at once (tcpmux's; twisted.web's own is dropped)
        and then its answer.
        """
        path = self.mktemp()
        upload = blob(MIB, "curl")
        with open(path, "wb") as f:
            f.write(upload)
        started = time.monotonic()
        out, err, code = await getProcessOutputAndValue(
            "curl",
            [
                "-sS", "-i", "--expect100-timeout", "5",
                "-H", "Expect: 100-continue",
                "--data-binary", "@" + path,
                f"http://127.0.0.1:{self.port}/upload",
            ],
            env=os.environ,
        )
        self.assertEqual(code, 0, err)
        self.assertLess(time.monotonic() - started, 4)
        self.assertEqual(out.count(b"100 Continue"), 1, out)
        self.assertTrue(out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), out)
        self.assertTrue(
            out.endswith(b"\r\n\r\n%d %s\n" % (MIB, hashlib.sha256(upload).hexdigest().encode()))
        )

    async def test_connectAndUpgradeRefused(self):
        """
        CONNECT and WebSocket upgrades get 501 and are closed; the target
        never sees them.
        """

        def refused(request):
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(request)
                return readAll(sock)

        for request in [
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"GET /echo/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ]:
            answer = await deferToThread(refused, request)
            self.assertTrue(answer.startswith(b"HTTP/1.1 501 Not Implemented\r\n"), answer)
            self.assertIn(b"\r\nConnection: close\r\n", answer)
        results = await deferToThread(
            rawExchange, self.port, b"GET /echo/after HTTP/1.1\r\nHost: x\r\n\r\n", 1
        )
        self.assertEqual(results[0][2], b"path: /echo/after\n")
        self.assertEqual(self.server.count("accepted connection"), 1)


class FileServerTests(TestCase):
    """
    http.client through tcpmux to Python's http.server in HTTP/1.1 mode.
    """

    timeout = 30

    async def setUp(self):
        self.server = startFileServer(self)
        self.port, self.multiplexer = await startMultiplexer(
            self, "http", self.server.server_address[1]
        )

    def session(self, index):
        """
        One keep-alive connection: GET and HEAD of its own file, a 304 on
        If-Modified-Since, a 1 MiB download and a 1 MiB upload.
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            path = f"/file{index}.txt"
            for round_ in range(3):
                connection.request("GET", path)
                response = connection.getresponse()
                assert response.read() == b"file %d\n" % index
            lastModified = response.getheader("Last-Modified")
            connection.request("HEAD", path)
            response = connection.getresponse()
            assert response.status == 200
            assert response.getheader("Content-Length") == str(len(b"file %d\n" % index))
            assert response.read() == b""
            connection.request("GET", path, headers={"If-Modified-Since": lastModified})
            response = connection.getresponse()
            assert (response.status, response.read()) == (304, b""), response.status
            connection.request("GET", "/big.bin")
            response = connection.getresponse()
            assert response.read() == blob(MIB, "big")
            upload = blob(MIB, f"up{index}")
            connection.request("POST", f"/upload/{index}", body=upload)
            response = connection.getresponse()
            assert response.read() == b"%d %s /upload/%d" % (
                MIB, hashlib.sha256(upload).hexdigest().encode(), index
            )
            return index
        finally:
            connection.close()

    async def test_manyClientsOneConnection(self):
        """
        Six clients at once each get their own answers over the one
        connection http.server sees.
        """
        results = await gatherResults([deferToThread(self.session, i) for i in range(6)])
        self.assertEqual(results, list(range(6)))
        self.assertEqual(self.server.accepted, 1)

    async def test_closingResponses(self):
        """
        A 404 (http.server says Connection: close) and responses without a
        length (running to the close) reach the right clients; after each,
        that client is closed and tcpmux opens a new target connection,
        never two at once. http.client reconnects by itself.
        """

        def session(index):
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            seen = []
            try:
                for round_ in range(3):
                    connection.request("GET", f"/missing/{index}/{round_}")
                    response = connection.getresponse()
                    seen.append((response.status, response.getheader("Connection")))
                    response.read()
                    connection.request("GET", f"/noclen/{index}/{round_}")
                    response = connection.getresponse()
                    seen.append((response.status, response.read()))
                    connection.request("GET", f"/file{index}.txt")
                    response = connection.getresponse()
                    seen.append((response.status, response.read()))
            finally:
                connection.close()
            return seen

        results = await gatherResults([deferToThread(session, i) for i in range(5)])
        for index, seen in enumerate(results):
            expected = []
            for round_ in range(3):
                expected += [
                    (404, "close"),
                    (200, b"/noclen/%d/%d" % (index, round_)),
                    (200, b"file %d\n" % index),
                ]
            self.assertEqual(seen, expected)
        closes = 5 * 3 * 2
        self.assertIn(self.server.accepted, (closes, closes + 1))

    async def test_pipelined(self):
        data = b"".join(
            b"GET /file%d.txt HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in (2, 0, 1)
        )
        results = await deferToThread(rawExchange, self.port, data, 3)
        self.assertEqual([body for _, _, body in results], [b"file 2\n", b"file 0\n", b"file 1\n"])

    async def test_expectContinueRaw(self):
        """
        A client that waits for 100 Continue before its body gets one from
        tcpmux; http.server's own 100 Continue is not passed on, so exactly
        one arrives before the final response.
        """

        def exchange():
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(
                    b"POST /upload/e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n"
                )
                interim = b""
                while not interim.endswith(b"\r\n\r\n"):
                    interim += sock.recv(1)
                sock.sendall(b"body")
                return interim, readResponses(sock, 1, "POST")[0]

        interim, (status, headers, body) = await deferToThread(exchange)
        self.assertEqual(interim, b"HTTP/1.1 100 Continue\r\n\r\n")
        self.assertEqual(status, 200)
        self.assertEqual(body, b"4 %s /upload/e" % hashlib.sha256(b"body").hexdigest().encode())

    async def test_badRequest(self):
        """
        A malformed request gets 400 and is closed; another client is
        unaffected.
        """

        def bad():
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                sock.sendall(b"GET /file0.txt HTTP/1.1\r\nHost : x\r\n\r\n")
                return readAll(sock)

        answer = await deferToThread(bad)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        results = await deferToThread(
            rawExchange, self.port, b"GET /file3.txt HTTP/1.1\r\nHost: x\r\n\r\n", 1
        )
        self.assertEqual(results[0][2], b"file 3\n")


class Silent(Protocol):
    """
    Reads requests and never answers.
    """

    def dataReceived(self, data):
        pass


class GatewayErrorTests(TestCase):
    timeout = 30

    async def test_targetUnavailable(self):
        """
        With nothing listening at the target, a client gets 502 and is
        closed.
        """
        muxPort, _ = await startMultiplexer(
            self, "http", freePort(), "--retry-delay", "10"
        )
        results = await deferToThread(rawExchange, muxPort, GET, 1)
        status, headers, body = results[0]
        self.assertEqual(status, 502)
        self.assertEqual(headers["Connection"], "close")
        self.assertEqual(int(headers["Content-Length"]), len(body))

    async def test_targetTimeout(self):
        """
        A target that never answers: the client gets 504 and is closed.
        """
        listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(Silent)
        )
        self.addCleanup(listening.stopListening)
        muxPort, _ = await startMultiplexer(
            self, "http", listening.getHost().port, "--timeout", "200ms"
        )

        def exchange():
            with socket.create_connection(("127.0.0.1", muxPort), timeout=10) as sock:
                sock.sendall(HEAD)
                answer = readAll(sock)
            return answer

        answer = await deferToThread(exchange)
        self.assertTrue(answer.startswith(b"HTTP/1.1 504 Gateway Timeout\r\n"), answer)
        self.assertTrue(answer.endswith(b"\r\nConnection: close\r\n\r\n"), answer)


class NaiveServer(Protocol):
    """
    A deliberately naive HTTP/1.1 target: it reads request heads one after
    another and answers each with C{path: <request target>}, honouring
    C{Content-Length} except on a GET, whose body it reads as more requests
    (as servers that ignore a GET's body do). Every response to one read is
    written in one write, after the longest of the factory's C{delays} for
    the paths in it; with the factory's C{lineEnd} set to C{b"\\n"}, its
    responses' lines end in a bare LF.
    """

    def connectionMade(self):
        self.factory.connections += 1
        self.buffer = b""
        self.calls = []

    def dataReceived(self, data):
        self.buffer += data
        responses, paths = [], []
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                break
            lines = self.buffer[:end].split(b"\r\n")
            method, path, version = lines[0].split(b" ")
            length = 0
            if method != b"GET":
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.lower() == b"content-length":
                        length = int(value)
            if len(self.buffer) < end + 4 + length:
                break
            self.buffer = self.buffer[end + 4 + length :]
            self.factory.seen.append(path)
            paths.append(path)
            responses.append(naiveResponse(path, self.factory.lineEnd))
        if responses:
            delay = max(self.factory.delays.get(path, 0) for path in paths)
            self.calls.append(
                reactor.callLater(delay, self.transport.write, b"".join(responses))
            )

    def connectionLost(self, reason):
        for call in self.calls:
            if call.active():
                call.cancel()


def naiveResponse(path, lineEnd=b"\r\n"):
    """
    What L{NaiveServer} answers to a request for C{path}.
    """
    body = b"path: " + path
    return (
        b"HTTP/1.1 200 OK" + lineEnd + b"Content-Length: %d" % len(body) + lineEnd + lineEnd + body
    )


async def startNaiveServer(testCase, delays=None, lineEnd=b"\r\n"):
    """
    Run a L{NaiveServer} on 127.0.0.1 until the test ends.

    @return: C{(factory, port)}; the factory records the C{seen} request
        targets and how many C{connections} were made.
    """
    factory = Factory.forProtocol(NaiveServer)
    factory.delays = delays or {}
    factory.lineEnd = lineEnd
    factory.seen = []
    factory.connections = 0
    listening = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
    testCase.addCleanup(listening.stopListening)
    return factory, listening.getHost().port


def readMessage(sock):
    """
    One response from C{sock}: its head, read up to the empty line, and as
    many body bytes as its Content-Length says (none without one).
    """
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {head!r}")
        head += byte
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head + receiveExactly(sock, length)


class BareLineEndEndToEndTests(TestCase):
    """
    Bare LF line ends, over real TCP: answered at once, never waited on.
    """

    timeout = 30

    async def test_bareLFRequest(self):
        """
        A request whose lines end in a bare LF gets 400 at once and is
        closed; the target never sees it.
        """
        factory, targetPort = await startNaiveServer(self)
        muxPort, _ = await startMultiplexer(self, "http", targetPort)

        def exchange():
            with socket.create_connection(("127.0.0.1", muxPort), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\nHost: x\n\n")
                return readAll(sock)

        started = time.monotonic()
        answer = await deferToThread(exchange)
        self.assertLess(time.monotonic() - started, 2)
        self.assertTrue(answer.startswith(b"HTTP/1.1 400 Bad Request\r\n"), answer)
        self.assertIn(b"\r\nConnection: close\r\n", answer)
        self.assertEqual(factory.seen, [])

    async def test_bareLFResponse(self):
        """
        A target answering with bare LF line ends: the client gets 502 at
        once, not a 504 when the timeout expires.
        """
        factory, targetPort = await startNaiveServer(self, lineEnd=b"\n")
        muxPort, _ = await startMultiplexer(self, "http", targetPort, "--timeout", "5s")
        started = time.monotonic()
        answer = await deferToThread(rawExchange, muxPort, GET, 1)
        self.assertLess(time.monotonic() - started, 3)
        status, headers, body = answer[0]
        self.assertEqual(status, 502)
        self.assertEqual(headers["Connection"], "close")
        self.assertEqual(factory.seen, [b"/a?b=c"])


class ContinueOrderTests(TestCase):
    """
    Responses reach a client in the order of its requests, tcpmux's own
    C{100 Continue} included.
    """

    timeout = 30

    async def test_continueAfterEarlierResponses(self):
        """
        A client pipelines a request the target answers slowly, then the
        head of a PUT with C{Expect: 100-continue}: it gets the first
        response, then C{100 Continue}, and once it has sent the body, the
        PUT's response.
        """
        factory, targetPort = await startNaiveServer(self, delays={b"/slow": 0.5})
        muxPort, _ = await startMultiplexer(self, "http", targetPort)

        def exchange():
            with socket.create_connection(("127.0.0.1", muxPort), timeout=10) as sock:
                sock.sendall(
                    b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
                    b"PUT /put HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                    b"Expect: 100-continue\r\n\r\n"
                )
                received = [readMessage(sock), readMessage(sock)]
                sock.sendall(b"body")
                received.append(readMessage(sock))
                return received

        received = await deferToThread(exchange)
        self.assertEqual(
            received,
            [naiveResponse(b"/slow"), b"HTTP/1.1 100 Continue\r\n\r\n", naiveResponse(b"/put")],
        )
        self.assertEqual(factory.seen, [b"/slow", b"/put"])


class SurplusResponseTests(TestCase):
    """
    A target that answers one request twice.
    """

    timeout = 30

    async def test_secondResponseReachesNoOne(self):
        """
        Client A's GET has a body that is itself a request; the target
        ignores a GET's body and answers it too, both responses in one
        write. A gets its first response only; B, whose request waited
        behind A's, gets its own (or a 502): never the surplus one.
        """
        factory, targetPort = await startNaiveServer(self, delays={b"/a": 0.3})
        muxPort, _ = await startMultiplexer(self, "http", targetPort)
        smuggled = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
        requestA = (
            b"GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
            + smuggled
        )
        requestB = b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"

        def exchange(request):
            with socket.create_connection(("127.0.0.1", muxPort), timeout=10) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                return readAll(sock)

        answeredA = deferToThread(exchange, requestA)
        await until(lambda: b"/a" in factory.seen)
        answeredB = deferToThread(exchange, requestB)
        answerA, answerB = await gatherResults([answeredA, answeredB])
        self.assertEqual(factory.seen[:2], [b"/a", b"/smuggled"])
        self.assertEqual(answerA, naiveResponse(b"/a"))
        if not answerB.startswith(b"HTTP/1.1 502 "):
            self.assertEqual(answerB, naiveResponse(b"/b"))


# What a reference parser of heads, written from RFC 9110/9112 and kept
# plain (no patterns), accepts: a head is parsed in one pattern by tcpmux,
# and must agree with it on every head, valid or not.
_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_FRAMING_NAMES = {b"connection", b"content-length", b"expect", b"transfer-encoding", b"upgrade"}


def referenceHead(message, request):
    """
    The (start line parts, framing fields) of the head of C{message}, or
    L{None} if it is not a valid HTTP/1.x head.
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = message[:end].split(b"\r\n")
    if any(b"\r" in line or b"\n" in line for line in lines):
        return None
    words = lines[0].split(b" ", 2)
    if request:
        if len(words) != 3 or not words[0] or not set(words[0]) <= _TCHAR:
            return None
        if not words[1] or any(b <= 0x20 or b == 0x7F for b in words[1]):
            return None
        version = words[2]
    else:
        version = words[0]
        if len(words) < 2 or len(words[1]) != 3 or not words[1].isdigit() or words[1][:1] == b"0":
            return None
        if len(words) == 3 and any((b < 0x20 and b != 9) or b == 0x7F for b in words[2]):
            return None
    if len(version) != 8 or not version.startswith(b"HTTP/") or version[6:7] != b".":
        return None
    if version[5:6] != b"1" or not version[7:8].isdigit():
        # (A version tcpmux does not speak is refused too.)
        return None
    fields = []
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TCHAR:
            return None
        if any((b < 0x20 and b != 9) or b == 0x7F for b in value):
            return None
        if name.lower() in _FRAMING_NAMES:
            fields.append((name.lower(), value.strip(b" \t")))
    return words, fields


_HEAD_PIECES = st.sampled_from(
    [b"a", b"Z", b"0", b" ", b"\t", b":", b",", b"-", b"\x0b", b"\x00", b"\x7f",
     b"\x80", b"\xff", b"\r", b"\n", b"\r\n", b"\r\n", b"(", b"\"", b"/"]
    + [name for name in _FRAMING_NAMES]
    + [b"Content-Length", b"CONNECTION", b"Transfer-Encoding: chunked", b"close"]
)

# A line of a head: pieces at random, or most often a name, a colon and a
# value, so that nearly valid field lines are common.
_FIELD_LINE_LIKE = st.one_of(
    st.lists(_HEAD_PIECES, max_size=8).map(b"".join),
    st.builds(
        lambda name, value: name + b":" + value,
        st.sampled_from(sorted(_FRAMING_NAMES) + [b"Host", b"X-a", b"CONTENT-length", b"a b", b""]),
        st.lists(_HEAD_PIECES, max_size=6).map(b"".join),
    ),
    st.builds(
        lambda name, value: name + b":" + value,
        st.sampled_from(sorted(_FRAMING_NAMES) + [b"Host"]),
        st.lists(st.sampled_from([b" ", b"\t", b"1", b"close", b",", b"\x0b", b"\x80"]), max_size=5).map(b"".join),
    ),
)


class ClosesClientTests(SynchronousTestCase):
    """
    L{HTTP.closesClient} decides the plain keep-alive case without parsing
    either head; whatever the heads, it says what parsing both says
    (L{closesAfter}).
    """

    @settings(max_examples=3000, deadline=None)
    @given(
        st.sampled_from(
            [b"GET / HTTP/1.1", b"HEAD /x HTTP/1.1", b"POST / HTTP/1.0", b"GET /HTTP/1.1 HTTP/1.0"]
        ),
        st.lists(
            st.sampled_from(
                [b"Host: x", b"Connection: close", b"connection:keep-alive",
                 b"CONNECTION: Close, Upgrade", b"X-Connection: close", b"Content-Length: 0",
                 b"Transfer-Encoding: chunked", b"Accept: */*"]
            ),
            max_size=3,
        ),
        st.lists(
            st.sampled_from(
                [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </s>\r\n\r\n"]
            ),
            max_size=1,
        ),
        st.sampled_from(
            [b"HTTP/1.1 200 OK", b"HTTP/1.1 204 No Content", b"HTTP/1.1 304 Not Modified",
             b"HTTP/1.1 101 Switching Protocols", b"HTTP/1.0 200 OK", b"HTTP/1.1 502 Bad Gateway",
             b"HTTP/1.1 200 HTTP/1.1 "]
        ),
        st.lists(
            st.sampled_from(
                [b"Content-Length: 2", b"content-length:\t2 ", b"Content-Length: 2, 2",
                 b"Content-Length: x", b"Transfer-Encoding: chunked", b"Connection: close",
                 b"Connection: keep-alive", b"X-Content-Length: 2", b"Content-Type: text/plain",
                 b"Transfer-Encoding: 2"]
            ),
            max_size=3,
        ),
        st.sampled_from([b"\r\n\r\nok", b"\r\n\r\n", b"\r\n"]),
    )
    def test_sameAsParsing(self, requestLine, requestFields, interim, statusLine, fields, end):
        """
        Requests and responses of either version, with and without
        Connection, Content-Length (plain, padded, listed, bad) and
        Transfer-Encoding, behind interim responses or none.
        """
        request = b"\r\n".join([requestLine] + requestFields) + b"\r\n\r\n"
        response = b"".join(interim) + b"\r\n".join([statusLine] + fields) + end
        self.assertEqual(
            application.closesClient(request, response),
            closesAfter(request, response),
            (request, response),
        )

    def test_plainKeepAlive(self):
        """
        The common case stays open; a close in either head, a response that
        runs to the close, or a version of 1.0 closes.
        """
        ok = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
        self.assertFalse(application.closesClient(GET, ok))
        self.assertTrue(
            application.closesClient(GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), ok)
        )
        self.assertTrue(application.closesClient(GET, ok.replace(b"OK\r\n", b"OK\r\nConnection: close\r\n")))
        self.assertTrue(application.closesClient(GET, b"HTTP/1.1 200 OK\r\n\r\nok"))
        self.assertTrue(application.closesClient(GET, ok.replace(b"HTTP/1.1", b"HTTP/1.0")))


class OnePatternHeadTests(SynchronousTestCase):
    """
    A head is checked in one pattern, and looked at line by line only to
    say what is wrong with one that fails it; whatever the bytes, it
    accepts exactly the heads that a plain reference parser accepts, and
    reads the same framing fields from them.
    """

    def check(self, message, request):
        parse = parseRequestHead if request else parseResponseHead
        expected = referenceHead(message, request)
        if expected is None:
            self.assertRaises(BadMessage, parse, message)
            return
        head = parse(message)
        self.assertEqual(head.fields, expected[1], message)
        if request:
            self.assertEqual(head.method, expected[0][0], message)

    @settings(max_examples=6000, deadline=None)
    @given(
        st.sampled_from(
            [(True, line) for line in
             [b"GET / HTTP/1.1", b"POST /x?y HTTP/1.0", b"GET  / HTTP/1.1", b"G\x00T / HTTP/1.1"]]
            + [(False, line) for line in
               [b"HTTP/1.1 200 OK", b"HTTP/1.0 204", b"HTTP/1.1 099 x", b"HTTP/1.1 200 \x01"]]
        ),
        st.lists(_FIELD_LINE_LIKE, max_size=5),
        st.sampled_from([b"\r\n\r\n", b"\r\n\r\nbody", b"\n\r\n", b"\r\n"]),
    )
    def test_heads(self, start, lines, end):
        """
        Requests and responses, from a valid or a malformed start line, with
        field lines made of tokens, framing field names, separators,
        whitespace, control characters, obs-text and line ends.
        """
        request, startLine = start
        self.check(b"\r\n".join([startLine] + lines) + end, request)

    def test_framingFieldsOnly(self):
        """
        Of a valid head, only the fields that decide framing and the
        connection's persistence are kept, in wire order, names lowercased
        and values trimmed of SP and HTAB.
        """
        head = parseRequestHead(
            b"POST / HTTP/1.1\r\nHost: x\r\nCONTENT-length:\t 3 \r\n"
            b"X-Connection: close\r\nConnection: keep-alive, Upgrade-Insecure\r\n\r\nabc"
        )
        self.assertEqual(
            head.fields,
            [(b"content-length", b"3"), (b"connection", b"keep-alive, Upgrade-Insecure")],
        )
        self.assertEqual(head.contentLength(), 3)


_REQUEST_LINES = st.sampled_from(
    [b"GET / HTTP/1.1", b"POST /x?y HTTP/1.1", b"HEAD /x HTTP/1.1", b"CONNECT h:1 HTTP/1.1",
     b"GET / HTTP/1.0", b"OPTIONS * HTTP/1.1", b"get / HTTP/1.1", b"GET  / HTTP/1.1"]
)
_STATUS_LINES = st.sampled_from(
    [b"HTTP/1.1 200 OK", b"HTTP/1.1 200", b"HTTP/1.1 404 Not Found", b"HTTP/1.1 204 No Content",
     b"HTTP/1.1 304 Not Modified", b"HTTP/1.1 100 Continue", b"HTTP/1.1 101 Switching",
     b"HTTP/1.0 200 OK", b"HTTP/1.1 2000 OK", b"HTTP/1.1 200 \x01"]
)
_PLAIN_ENOUGH_FIELDS = st.lists(
    st.one_of(
        _FIELD_LINE_LIKE,
        st.sampled_from(
            [b"Host: x", b"Content-Length: 2", b"content-length:\t2 ", b"Content-Length: 02",
             b"Content-Length: 2, 2", b"Content-Length: 1234567890123456789",
             b"Connection: close", b"Connection: keep-alive", b"X-Content-Length: 9",
             b"Transfer-Encoding: chunked", b"Expect: 100-continue", b"Upgrade: h2c",
             b"Connection-X: close"]
        ),
    ),
    max_size=4,
)


class PlainMessageTests(SynchronousTestCase):
    """
    The common case, a plain HTTP/1.1 request without a body and its
    answer with a Content-Length, is recognised in one pattern each and
    delivered as it came, without buffering or parsing it; whatever the
    bytes, what is delivered, refused and closed is what parsing them
    gives.
    """

    def test_deliveredAsTheyCame(self):
        """
        A plain request, and its answer, that arrive whole in one read are
        delivered as the bytes read, marked as L{PlainMessage}s, and the
        target connection stays open.
        """
        request = b"GET /a HTTP/1.1\r\nHost: device\r\n\r\n"
        _, requests = feed(HTTPRequestReceiver, request)
        self.assertEqual(requests.lasts, [request])
        self.assertIs(type(requests.lasts[0]), PlainMessage)
        factory = RenewingFactory()
        framer, answers = feed(HTTPResponseReceiver, OK, request=request, factory=factory)
        self.assertEqual(answers.lasts, [OK])
        self.assertIs(type(answers.lasts[0]), PlainMessage)
        self.assertEqual(factory.renewed, [])
        self.assertEqual(framer.buffered(), 0)
        # The next answer, to a request that is not plain, is parsed.
        framer.expectResponseTo(HEAD)
        framer.dataReceived(OK)
        self.assertEqual(answers.messages, [OK, OK[: OK.index(b"ok")]])
        self.assertEqual(framer.buffered(), 2)

    def test_notPlain(self):
        """
        A request or answer that is not plain, or not alone in its read, or
        an answer that answers no request, goes the usual way.
        """
        for request in [POST, HEAD, GET.replace(b"1.1", b"1.0"), GET + GET]:
            _, requests = feed(HTTPRequestReceiver, request)
            self.assertEqual(b"".join(requests.messages), request)
            self.assertEqual([type(m) for m in requests.lasts],
                             [bytes] * len(requests.lasts))
        _, answers = feed(HTTPResponseReceiver, OK + OK, request=GET)
        self.assertEqual(answers.lasts, [OK, OK])
        self.assertEqual([type(m) for m in answers.lasts], [bytes, bytes])
        # (One that answers no request is delivered whole, for the target
        # session to drop.)
        _, answers = feed(HTTPResponseReceiver, OK)
        self.assertEqual(answers.messages, [OK])
        self.assertIs(type(answers.lasts[0]), bytes)
        # A plain request that came in two reads is not marked, and its
        # answer, matched instead, is.
        _, requests = feed(HTTPRequestReceiver, GET[:5], GET[5:])
        self.assertEqual([type(m) for m in requests.lasts], [bytes])
        _, answers = feed(HTTPResponseReceiver, OK, request=requests.lasts[0])
        self.assertIs(type(answers.lasts[0]), PlainMessage)

    def test_markedNeedNoMatch(self):
        """
        What the framers marked is judged by its mark: a marked request
        gets the plain path for its answer, and a marked request and answer
        keep the client, as their bytes do.
        """
        _, requests = feed(HTTPRequestReceiver, GET)
        [request] = requests.lasts
        _, answers = feed(HTTPResponseReceiver, OK, request=request)
        [answer] = answers.lasts
        self.assertEqual((type(request), type(answer)), (PlainMessage, PlainMessage))
        self.assertFalse(application.closesClient(request, answer))
        self.assertFalse(closesAfter(bytes(request), bytes(answer)))

    def test_tooLargeHeadRefused(self):
        """
        A plain request or answer whose head is larger than
        C{maxHeaderSize} is refused, in one read as in many.
        """
        request = b"GET / HTTP/1.1\r\nX-Pad: " + b"p" * 64 + b"\r\n\r\n"
        assertRefused(self, SmallRequests, request, 431)
        answer = OK.replace(b"OK\r\n", b"OK\r\nX-Pad: " + b"p" * 64 + b"\r\n")
        for chunks in ([answer], byteAtATime(answer)):
            _, answers = feed(SmallResponses, *chunks, request=GET)
            self.assertEqual(answers.messages, [])
            self.assertEqual(len(answers.errors), 1)
            self.assertIn("head larger than 64 bytes", answers.errors[0])

    @settings(max_examples=3000, deadline=None)
    @given(_REQUEST_LINES, _PLAIN_ENOUGH_FIELDS)
    def test_plainRequestPattern(self, requestLine, fields):
        """
        A request head the pattern matches is one its parser accepts: an
        HTTP/1.1 request, neither CONNECT nor HEAD, without a body, that
        does not expect 100-continue and leaves the connection open.
        """
        head = b"\r\n".join([requestLine] + fields) + b"\r\n\r\n"
        if _PLAIN_REQUEST.match(head) is None:
            return
        parsed = parseRequestHead(head)
        self.assertEqual(parsed.version, (1, 1))
        self.assertNotIn(parsed.method, (b"HEAD", b"CONNECT"))
        self.assertEqual(requestFraming(parsed), 0)
        self.assertTrue(parsed.persistent())
        self.assertFalse(parsed.expectsContinue())
        self.assertEqual(parsed.fields, [])

    @settings(max_examples=3000, deadline=None)
    @given(_STATUS_LINES, _PLAIN_ENOUGH_FIELDS)
    def test_plainResponsePattern(self, statusLine, fields):
        """
        A response head the pattern matches is one its parser accepts: a
        final response whose body, after a plain request, is as long as its
        one Content-Length, and after which the connection stays open.
        """
        head = b"\r\n".join([statusLine] + fields) + b"\r\n\r\n"
        match = _PLAIN_RESPONSE.match(head)
        if match is None:
            return
        parsed = parseResponseHead(head)
        request = parseRequestHead(GET)
        self.assertEqual(responseFraming(request, parsed), int(match.group(1)))
        self.assertFalse(connectionEnds(request, parsed))
        self.assertEqual(match.end(), head.index(b"\r\n\r\n") + 4)

    @settings(max_examples=2000, deadline=None)
    @given(
        _REQUEST_LINES,
        _PLAIN_ENOUGH_FIELDS,
        st.sampled_from([b"", b"ok", b"\r\n"]),
    )
    def test_requestsSameAsParsed(self, requestLine, fields, body):
        """
        A request read whole in one read is delivered or refused exactly
        as the same bytes read in two, its first byte alone, which parses
        them.
        """
        request = b"\r\n".join([requestLine] + fields) + b"\r\n\r\n" + body
        whole, wholeRecorder = feed(HTTPRequestReceiver, request)
        split, splitRecorder = feed(HTTPRequestReceiver, request[:1], request[1:])
        self.assertEqual(wholeRecorder.messages, splitRecorder.messages)
        self.assertEqual(wholeRecorder.errors, splitRecorder.errors)
        self.assertEqual(whole.transport.value(), split.transport.value())
        self.assertEqual(whole.transport.disconnecting, split.transport.disconnecting)
        self.assertEqual(whole.buffered(), split.buffered())

    @settings(max_examples=3000, deadline=None)
    @given(
        st.sampled_from(
            [GET, HEAD, POST, GET.replace(b"1.1", b"1.0"),
             GET.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
             GET.replace(b"\r\n\r\n", b"\r\nExpect: 100-continue\r\n\r\n")]
        ),
        _STATUS_LINES,
        _PLAIN_ENOUGH_FIELDS,
        st.sampled_from([b"", b"ok", b"o", b"ok!"]),
    )
    def test_responsesSameAsParsed(self, request, statusLine, fields, body):
        """
        An answer read whole in one read is delivered, refused, and closes
        the target connection or not, exactly as the same bytes read one at
        a time, which parses them.
        """
        response = b"\r\n".join([statusLine] + fields) + b"\r\n\r\n" + body
        # The request as the client's framer delivers it (marked when it is
        # plain), then as bytes.
        _, requests = feed(HTTPRequestReceiver, request)
        [framed] = requests.lasts
        results = []
        for asked, chunks in (
            (framed, [response]), (request, [response]), (request, byteAtATime(response))
        ):
            factory = RenewingFactory()
            framer, recorder = feed(
                HTTPResponseReceiver, *chunks, request=asked, factory=factory
            )
            results.append(
                (recorder.messages, recorder.parts, recorder.errors, factory.renewed,
                 framer.buffered())
            )
        self.assertEqual(results[0], results[1], response)
        self.assertEqual(results[1], results[2], response)
