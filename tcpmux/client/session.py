# -*- test-case-name: tests.test_multiplexer -*-
"""
One connected client.
"""

from collections import deque

from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import TargetUnavailable
from tcpmux.interfaces import IRequestReceiver
from tcpmux.writing import noDelay, writeNow


def formatAddress(address):
    """
    C{host:port} for an IP address, the path for a UNIX one.
    """
    host = getattr(address, "host", None)
    if host is None:
        return getattr(address, "name", None) or str(address)
    if ":" in host:
        return f"[{host}]:{address.port}"
    return f"{host}:{address.port}"


# How much of an answer's start the application protocol may need to judge
# it (an HTTP head, behind any interim responses).
ANSWER_START = 128 * 1024


class _Reply:
    """
    Bytes to send a client in turn among its answers (L{replyInOrder}).
    """

    def __init__(self, data):
        self.data = data


@implementer(IRequestReceiver, IPushProducer)
class ClientSession(TimeoutMixin):
    """
    The receiver of one client's request framer.

    Whole requests wait in C{requests}; at most one of them is in the
    round-trip queue at a time, so that a client's requests are answered in
    order and clients take turns. The session is the producer for its own
    transport: a client that does not read its answers stops having its
    requests sent, and then stops being read.

    With C{clientTimeout}, a client that has nothing in progress for that
    long is closed (L{TimeoutMixin}): waiting for an answer is not
    idleness, but sending part of a request is.

    A client that shuts down its sending side (a TCP half-close) gets the
    answers to the whole requests it sent, then is closed.

    @ivar dispatcher: the L{tcpmux.interfaces.IDispatcher} its requests go
        to.
    @ivar trip: the L{tcpmux.interfaces.IRoundTrip} of this client's request
        now queued or in flight, or L{None}.
    """

    log = Logger()
    lastWords = None
    writePaused = False
    readPaused = False
    inputDone = False
    gone = False
    # Bytes of an unfinished request it left with (for the registry's log).
    discarded = None
    # How many bytes were written since the transport asked us to pause.
    _heldWhilePaused = 0
    _dropped = False

    def __init__(
        self,
        application,
        dispatcher,
        registry,
        clock,
        maxQueue=32,
        maxBuffer=4 * 1024 * 1024,
        clientTimeout=None,
        busyPoll=None,
    ):
        self.application = application
        self.dispatcher = dispatcher
        self.registry = registry
        self.maxQueue = maxQueue
        self.maxBuffer = maxBuffer
        self.clientTimeout = clientTimeout
        self.busyPoll = busyPoll
        self.clock = clock
        # What every connected client sets (startReceiving, the first round
        # trip) is set here first, in one order: an attribute an instance
        # gains only after others of its class were made moves its values
        # out of the class's shared layout into a dict of their own (CPython
        # 3.11+), 0.8 KB more for each of many clients that connect before
        # the first is answered. What few clients ever set (a queue of
        # requests, paused flow) stays a class default.
        self.framer = self.transport = self.peer = None
        self.timeOut = None
        self.trip = None
        # The first bytes of an answer that comes in parts.
        self._answerStart = b""
        # With a busy poll: when its last answer was written, and how long
        # it then took to send its next request (see BusyPoll.replied).
        self._repliedAt = self._thinkTime = None

    # Requests (and replies) waiting behind the one in flight: none until a
    # client sends one while another is on its way (most never do), so
    # that an idle client costs no queue.
    requests = ()

    def callLater(self, seconds, f):
        # (TimeoutMixin's timer, on our clock.)
        return self.clock.callLater(seconds, f)

    def _waiting(self):
        """
        The queue of waiting requests, made on first use.
        """
        if not self.requests:
            self.requests = deque()
        return self.requests

    @property
    def busy(self):
        """
        Whether one of this client's requests is queued or in flight.
        """
        return self.trip is not None

    # IMessageReceiver

    def startReceiving(self, framer):
        self.framer = framer
        self.transport = framer.transport
        self.peer = formatAddress(self.transport.getPeer())
        noDelay(self.transport)
        self.transport.registerProducer(self, True)
        self.registry.add(self)
        self.setTimeout(self.clientTimeout)

    def messageReceived(self, request):
        if self.busyPoll is not None:
            now = self.busyPoll.requestReceived()
            if self._repliedAt is not None:
                self._thinkTime = now - self._repliedAt
                self._repliedAt = None
        if self.trip is None and not self.requests and not (
            self.writePaused or self.gone
        ):
            # Nothing in its way: off it goes.
            self._dispatch(request)
            return
        self._waiting().append(request)
        self._sendNext()
        if len(self.requests) >= self.maxQueue and not self.readPaused:
            self.readPaused = True
            self.transport.pauseProducing()

    def replyInOrder(self, data):
        if self.busy or self.requests:
            self._waiting().append(_Reply(data))
        else:
            self.transport.write(data)

    def framingError(self, reason, reply):
        self.log.warn(
            "Closing client {client}: {reason}", client=self.peer, reason=reason
        )
        if self.busy or self.requests:
            # Whole requests that came before the bad bytes are answered
            # first, in order; then the reply (an HTTP 400, say) and close.
            self.lastWords = reply or b""
            self.transport.pauseProducing()
            return
        if reply:
            self.transport.write(reply)
        self.transport.loseConnection()

    def inputEnded(self):
        self.inputDone = True
        self.discarded = self.framer.buffered()
        if not self.busy and not self.requests:
            self.transport.loseConnection()
        elif self.discarded:
            self.log.warn(
                "Client {client} stopped sending in the middle of a request: "
                "{size} bytes discarded",
                client=self.peer,
                size=self.discarded,
            )
            self.discarded = 0

    def stopReceiving(self, reason):
        if self.discarded is None and not self.transport.disconnecting:
            # Gone without our closing it: what it had begun is lost.
            self.discarded = self.framer.buffered()
        self.gone = True
        self.requests = ()
        self.setTimeout(None)
        if self.trip is not None:
            self.trip.withdraw()
        self.registry.remove(self)
        # The framer refers to us: let reference counting free us both, and
        # whatever the framer buffered, as soon as the connection is gone.
        self.framer = None

    # the round trip

    def _sendNext(self):
        if self.trip is not None or self.writePaused or self.gone:
            return
        while self.requests and isinstance(self.requests[0], _Reply):
            self.transport.write(self.requests.popleft().data)
        if not self.requests:
            return
        request = self.requests.popleft()
        if self.readPaused and len(self.requests) < self.maxQueue:
            self.readPaused = False
            self.transport.resumeProducing()
        self._dispatch(request)

    def _dispatch(self, request):
        # (Waiting for an answer is not idleness: a --client-timeout timer
        # that fires meanwhile looks again later, timeoutConnection.)
        self.trip = trip = self.dispatcher.dispatch(
            request, self.peer, self._partReceived
        )
        trip.result.addBoth(self._answered, request)

    def _partReceived(self, part):
        if self.gone or self._dropped:
            return
        if len(self._answerStart) < ANSWER_START:
            self._answerStart += part[: ANSWER_START - len(self._answerStart)]
        self._write(part)

    def _write(self, data):
        """
        Write part of an answer; drop the client if it holds more than
        C{maxBuffer} bytes of answers it does not read.
        """
        writeNow(self.transport, data)
        if self.writePaused:
            self._heldWhilePaused += len(data)
            if self._heldWhilePaused > self.maxBuffer and not self._dropped:
                self._dropped = True
                self.log.warn(
                    "Dropping client {client}: more than {size} bytes of "
                    "answers wait for it to read (--max-client-buffer)",
                    client=self.peer,
                    size=self.maxBuffer,
                )
                # Its round trip goes on, so that the rest of the answer is
                # read from the target and discarded, and the next client's
                # request finds the connection in step.
                self.transport.abortConnection()

    def _answered(self, response, request):
        self.trip = None
        if self.gone or self._dropped:
            return
        answerStart, self._answerStart = self._answerStart, b""
        if isinstance(response, Failure):
            reply = None
            if not answerStart:
                # (After part of an answer, an error reply would only
                # corrupt it: the client is closed instead.)
                reply = self.application.errorResponse(request, response.value)
            if reply is None:
                self.transport.loseConnection()
                return
            response = reply
        self._write(response)
        if self.busyPoll is not None:
            self._repliedAt = now = self.busyPoll.timer()
            self.busyPoll.replied(self._thinkTime, now)
        if answerStart:
            # The answer came in parts: the protocol judges it by its start.
            response = answerStart + response[: ANSWER_START - len(answerStart)]
        if self.application.closesClient(request, response):
            self.requests = ()
            self.transport.loseConnection()
            return
        if self.requests:
            self._sendNext()
        if self.trip is not None or self.requests:
            # More to answer (once it reads again, if it is not reading).
            return
        if self.lastWords is not None:
            self.transport.write(self.lastWords)
            self.transport.loseConnection()
        elif self.inputDone:
            # Half-closed: it has every answer it asked for.
            self.transport.loseConnection()
        elif self.clientTimeout:
            # Idle from now: the one timer is moved on, not cancelled and
            # set again (the reactor would keep a cancelled call per round
            # trip in its heap, which every timer then sorts through).
            self.resetTimeout()

    def timeoutConnection(self):
        if self.busy or self.requests:
            # Waiting for an answer (or to be able to take one) is not
            # idleness: look again later.
            self.setTimeout(self.clientTimeout)
            return
        if self.framer.buffered():
            # A request begun and not finished (a slow drip holding a slot).
            why = "request incomplete after {idle}s (--client-timeout)"
        else:
            why = "idle for {idle}s (--client-timeout)"
        self.log.warn(
            "Closing client {client}: " + why, client=self.peer, idle=self.clientTimeout
        )
        self.transport.loseConnection()

    def close(self):
        """
        tcpmux is stopping: every request still waiting here is answered
        with its protocol's gateway error (Modbus 0x0A, HTTP 502), in order,
        then the client is closed.
        """
        error = TargetUnavailable("tcpmux is stopping")
        while self.requests:
            request = self.requests.popleft()
            if isinstance(request, _Reply):
                reply = request.data
            else:
                reply = self.application.errorResponse(request, error)
            if reply is None:
                break
            self.transport.write(reply)
        self.requests = ()
        self.transport.loseConnection()

    # IPushProducer, for our own transport's write buffer.

    def pauseProducing(self):
        # The transport calls this on every write while its buffer is full:
        # count from the first.
        if not self.writePaused:
            self.writePaused = True
            self._heldWhilePaused = 0

    def resumeProducing(self):
        self.writePaused = False
        self._sendNext()

    def stopProducing(self):
        pass
