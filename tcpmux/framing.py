# -*- test-case-name: tests.test_multiplexer -*-
"""
The contract between the multiplexer and an application protocol.

An application protocol is one small module in L{tcpmux.protocols} that
provides two framers and one L{ApplicationProtocol} describing them:

  - a I{request receiver}: a L{MessageReceiver} that cuts a client's bytes
    into whole requests;
  - a I{response receiver}: a L{MessageReceiver} that cuts the target's bytes
    into whole responses, told by L{MessageReceiver.expectResponseTo} which
    request it is waiting for.

The multiplexer mixes its own session class into each receiver, so a framer
stays a plain L{Protocol} with no knowledge of queues or targets, and can be
tested on its own with a L{twisted.internet.testing.StringTransport}.
"""

from twisted.internet.protocol import Protocol


class MessageReceiver(Protocol):
    """
    Base class of every framer.

    A subclass implements C{dataReceived}: it buffers bytes and calls
    L{messageReceived} once for each whole message, passing the message's
    bytes exactly as they came on the wire (header included), so that
    forwarding is byte-for-byte. Bytes may arrive one at a time or several
    messages in one read. Input that can never become a valid message is
    reported with L{framingError}, after which the framer delivers nothing
    more.

    @cvar maxMessageSize: the largest message this framer buffers; documented
        per protocol, and never exceeded however the input is chunked.
    """

    maxMessageSize = 65536

    def messageReceived(self, message):
        """
        Override this: C{message} is one whole message, as bytes.
        """
        raise NotImplementedError()

    def interimReceived(self, message):
        """
        Override this to receive interim responses (HTTP 1xx) that precede
        the final response to the same request.
        """
        raise NotImplementedError()

    def framingError(self, reason, reply=None):
        """
        The peer sent bytes that can never form a valid message.

        The default drops the connection after writing C{reply}, if any; the
        multiplexer overrides this to log C{reason} as well.

        @param reason: a short human-readable explanation.
        @param reply: bytes to send to the peer before closing (an HTTP 400,
            say), or L{None}.
        """
        if reply:
            self.transport.write(reply)
        self.transport.loseConnection()

    def expectResponseTo(self, request):
        """
        Called on a response receiver just before C{request} is written to
        the target. Override when framing a response depends on the request
        (HTTP HEAD) or when a response can be checked against it (a Modbus
        transaction id).
        """


class BadFrame(Exception):
    """
    Raised by L{FrameReceiver.frameSize}: these bytes can never start a
    valid frame. Its message is the reason given to L{framingError}.
    """


class FrameReceiver(MessageReceiver):
    """
    Base of framers whose frames announce their own size in their first
    bytes (a length field, a function code): the buffering loop lives here,
    the wire format in three small hooks.

      - L{frameSize}: the size of the frame starting at an offset, as soon
        as enough bytes are there to tell; a header that can never be valid
        is refused at once, not waited on.
      - L{checkFrame}: a whole frame's own check (a CRC), if any.
      - L{frameReceived}: a whole, good frame; passed to L{messageReceived}
        by default.

    After a framing error nothing more is ever delivered, from this read or
    a later one, even if the connection is aborted rather than closed.
    """

    _buffer = b""
    _refused = False

    def dataReceived(self, data):
        if self._refused:
            return
        if self._buffer:
            data = self._buffer + data
        size = len(data)
        start = 0
        while start < size:
            try:
                frameSize = self.frameSize(data, start, size)
            except BadFrame as e:
                self._refuse(str(e))
                return
            if frameSize is None:
                break
            end = start + frameSize
            if end > size:
                break
            # The common case is one whole frame per read: pass it uncopied.
            frame = data if start == 0 and end == size else data[start:end]
            problem = self.checkFrame(frame)
            if problem is not None:
                self._refuse(problem)
                return
            self.frameReceived(frame)
            start = end
            if self.transport is None or self.transport.disconnecting:
                # The hook closed this connection (or it was closed under
                # it): deliver nothing more from what is buffered.
                self._buffer = b""
                return
        self._buffer = data[start:] if start else data

    def _refuse(self, reason):
        self._buffer = b""
        self._refused = True
        self.framingError(reason)

    def frameSize(self, data, start, end):
        """
        Override this: the size of the frame at C{data[start:end]}, or
        L{None} while more bytes are needed to tell.

        @raise BadFrame: if no valid frame can start there.
        """
        raise NotImplementedError()

    def checkFrame(self, frame):
        """
        Override to check a whole frame before it is passed on.

        @return: L{None} if it is good, else the reason it is not.
        """
        return None

    def frameReceived(self, frame):
        """
        One whole, good frame arrived; by default it is passed to
        L{messageReceived}.
        """
        self.messageReceived(frame)


class ApplicationProtocol:
    """
    Describes one application protocol to the multiplexer.

    @cvar name: the name given to C{--protocol}.
    @cvar description: one line for C{--list-protocols}.
    @cvar requestReceiver: the L{MessageReceiver} subclass for client bytes.
    @cvar responseReceiver: the L{MessageReceiver} subclass for target bytes.
    @cvar pipelining: L{None}, or how to keep several requests in flight on
        one connection (see L{tcpmux.pipeline}); only protocols whose
        responses name their request can offer it.
    """

    name = None
    description = None
    requestReceiver = None
    responseReceiver = None
    pipelining = None

    def errorResponse(self, request, error):
        """
        What the client that sent C{request} is told when the round trip
        failed with C{error} (a L{tcpmux.errors.GatewayError}).

        @return: bytes to send to the client, which then stays connected, or
            L{None} to close the client (the default).
        """
        return None

    def closesClient(self, request, response):
        """
        Whether the client must be closed once C{response} to C{request} has
        been delivered (HTTP C{Connection: close}). Default: never.
        """
        return False

    def describe(self, message):
        """
        A short summary of C{message} for verbose logs; the default is none.
        """
        return ""
