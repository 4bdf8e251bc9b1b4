# -*- test-case-name: tests.test_multiplexer -*-
"""
Framers: plain protocols that cut bytes into whole messages.

An application protocol is one small module in L{tcpmux.protocols} that
provides two framers and one L{ApplicationProtocol} describing them:

  - a I{request framer} cuts a client's bytes into whole requests;
  - a I{response framer} cuts the target's bytes into whole responses, told
    by L{MessageFramer.expectResponseTo} which request it is waiting for.

Each framer hands whole messages to the L{IMessageReceiver} it is built
with (the client or target session), as AMP's C{BinaryBoxProtocol} hands
boxes to an C{IBoxReceiver}. A framer knows nothing of queues or targets,
and can be tested on its own with a recording receiver and a
L{twisted.internet.testing.StringTransport}.
"""

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol, connectionDone
from zope.interface import implementer

from tcpmux.interfaces import IApplicationProtocol, IResponseFramer


@implementer(IResponseFramer, IHalfCloseableProtocol)
class MessageFramer(Protocol):
    """
    Base class of every framer: a plain L{Protocol} that buffers bytes and
    hands each whole message to the L{IMessageReceiver} it was built with.

    A subclass implements C{dataReceived}: it calls
    C{self.receiver.messageReceived} once for each whole message, passing
    the message's bytes exactly as they came on the wire (header included),
    so that forwarding is byte for byte. Bytes may arrive one at a time or
    several messages in one read. Input that can never become a valid
    message is reported with C{self.receiver.framingError}, after which the
    framer delivers nothing more.

    @ivar receiver: the L{IMessageReceiver}.
    @cvar maxMessageSize: the largest message this framer buffers; documented
        per protocol, and never exceeded however the input is chunked.
    """

    maxMessageSize = 65536

    def __init__(self, receiver):
        self.receiver = receiver
        # What Twisted sets on a connected protocol, set here first: an
        # attribute an instance gains only after others of its class were
        # made takes its values out of the class's shared layout, into a
        # dict of their own (CPython 3.11+: hundreds of bytes per client
        # when many connect before the first one is served).
        self.factory = None
        self.connected = 0
        self.transport = None

    def connectionMade(self):
        self.receiver.startReceiving(self)

    def connectionLost(self, reason=connectionDone):
        self.receiver.stopReceiving(reason)

    def readConnectionLost(self):
        # The peer shut down its sending side (SHUT_WR, "nc -N"): it may
        # still read what it is owed.
        self.receiver.inputEnded()

    def writeConnectionLost(self):
        pass

    def buffered(self):
        """
        How many bytes were received and not yet delivered. While a message
        is being delivered, this counts the bytes that came after it in the
        same read: a target session knows from it that bytes nothing asked
        for followed an answer.
        """
        return 0

    def expectResponseTo(self, request):
        """
        Called on a response framer just before C{request} is written to
        the target. Override when framing a response depends on the request
        (HTTP HEAD) or when a response can be checked against it (a Modbus
        RTU address and function code).
        """


class BadFrame(Exception):
    """
    Raised by L{FrameReceiver.frameSize}: these bytes can never start a
    valid frame. Its message is the reason given to L{framingError}.
    """


class FrameReceiver(MessageFramer):
    """
    Base of framers whose frames announce their own size in their first
    bytes (a length field, a function code): the buffering loop lives here,
    the wire format in three small hooks.

      - L{frameSize}: the size of the frame starting at an offset, as soon
        as enough bytes are there to tell; a header that can never be valid
        is refused at once, not waited on.
      - L{checkFrame}: a whole frame's own check (a CRC), if any.
      - L{frameReceived}: a whole, good frame; passed to the receiver by
        default.

    After a framing error nothing more is ever delivered, from this read or
    a later one, even if the connection is aborted rather than closed.
    """

    _refused = False
    # Whether the subclass checks whole frames, and whether it does more
    # with a frame than pass it on: most do neither, and not calling the
    # defaults saves two calls per message on the path of every round trip.
    _checksFrames = False
    _handlesFrames = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls._checksFrames = cls.checkFrame is not FrameReceiver.checkFrame
        cls._handlesFrames = cls.frameReceived is not FrameReceiver.frameReceived

    def __init__(self, receiver):
        MessageFramer.__init__(self, receiver)
        # Bytes received and not yet delivered start at _start. (Set here,
        # not as class defaults: see MessageFramer.__init__.)
        self._data = b""
        self._start = 0

    def dataReceived(self, data):
        if self._refused:
            return
        if self._data:
            data = self._data + data
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
            if self._checksFrames:
                problem = self.checkFrame(frame)
                if problem is not None:
                    self._refuse(problem)
                    return
            # While the frame is delivered, buffered() counts what follows
            # it in this read.
            self._data, self._start = data, end
            if self._handlesFrames:
                self.frameReceived(frame)
            else:
                self.receiver.messageReceived(frame)
            if end == size or (
                self._refused or self.transport is None or self.transport.disconnecting
            ):
                # The read is all delivered (most often), or the hook closed
                # this connection (or it was closed under it): deliver
                # nothing more from what is buffered.
                self._data, self._start = b"", 0
                return
            start = end
        self._data, self._start = (data[start:] if start else data), 0

    def _refuse(self, reason):
        self._data, self._start = b"", 0
        self._refused = True
        self.receiver.framingError(reason, None)

    def buffered(self):
        """
        Bytes received and not yet delivered; while a frame is being
        delivered, those that came after it.
        """
        return len(self._data) - self._start

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
        One whole, good frame arrived; by default it is passed to the
        receiver.
        """
        self.receiver.messageReceived(frame)


@implementer(IApplicationProtocol)
class ApplicationProtocol:
    """
    Describes one application protocol to the multiplexer.

    @cvar name: the name given to C{--protocol}.
    @cvar description: one line for C{--list-protocols}.
    @cvar requestFramer: the L{MessageFramer} subclass for client bytes.
    @cvar responseFramer: the L{MessageFramer} subclass for target bytes.
    @cvar pipelining: L{None}, or an L{IPipelining}; only protocols whose
        responses name their request can offer it.
    """

    name = None
    description = None
    requestFramer = None
    responseFramer = None
    pipelining = None

    def buildRequestFramer(self, receiver):
        return self.requestFramer(receiver)

    def buildResponseFramer(self, receiver):
        return self.responseFramer(receiver)

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

    def routingKey(self, request):
        """
        What C{--route} routes C{request} by (a Modbus unit id); L{None}
        for protocols that cannot be routed (the default).
        """
        return None
