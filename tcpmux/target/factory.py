# -*- test-case-name: tests.test_target -*-
"""
The one connection to the target.

L{TargetClientFactory} keeps a single connection open, reconnecting with
L{ReconnectingClientFactory}'s back-off, and carries round trips over it: it
is the L{ITarget} the round-trip queue uses.
"""

from collections import deque

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.errors import TargetTimeout, TargetUnavailable
from tcpmux.interfaces import ITarget
from tcpmux.logs import RepeatedWarnings
from tcpmux.target.connector import EndpointConnector
from tcpmux.target.pipeline import PipelinedTargetSession
from tcpmux.target.session import TargetSession

# The fraction of the timeout a request must still have when its turn to be
# written comes (see TargetClientFactory.roundTrip).
LATE = 0.1

# A connection the target closes within this many seconds of accepting it
# (after --delay), having answered nothing, was a failed attempt: a device
# whose only connection is taken accepts and closes at once.
CLOSED_AT_ONCE = 1.0


@implementer(ITarget)
class TargetClientFactory(ReconnectingClientFactory):
    """
    Keeps one connection to a target and carries round trips over it.

    The connection is opened when L{start} is called and kept while nobody
    uses it. After a drop it is re-opened with an exponential back-off that
    starts at C{retryDelay} and is capped at C{maxRetryDelay}; a request
    that arrives meanwhile triggers an attempt at once, unless the last one
    failed less than C{retryDelay} ago, in which case it fails at once with
    L{TargetUnavailable} rather than waiting.

    @ivar connection: the session ready for requests, or L{None}.
    @ivar session: the connected session, ready or not yet (C{--delay}).
    @ivar timeout: the longest a request may take, from when it is queued;
        a request whose turn comes with less than L{LATE} of it left is not
        written (see L{roundTrip}).
    @ivar concurrency: round trips this connection carries at once: 1, or
        with C{pipeline}, that many.
    @ivar reconnects: connections made after the first (C{--metrics}).
    @ivar droppedResponses: late or surplus answers dropped, and bytes that
        answered no request (C{--metrics}).
    """

    log = Logger()
    noisy = False
    reconnects = 0
    droppedResponses = 0
    _everConnected = False

    def __init__(
        self,
        endpoint,
        application,
        name,
        timeout=60.0,
        delay=0.0,
        retryDelay=1.0,
        maxRetryDelay=30.0,
        clock=None,
        pipeline=1,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        if pipeline > 1 and application.pipelining is None:
            raise ValueError(f"{application.name} cannot be pipelined")
        self.application = application
        self.concurrency = pipeline
        self.name = name
        self.timeout = timeout
        self.readyDelay = delay
        self.initialDelay = self.delay = retryDelay
        self.maxDelay = max(maxRetryDelay, retryDelay)
        self.clock = clock
        self.connector = EndpointConnector(endpoint, self)
        self.warnings = RepeatedWarnings(self.log, clock)
        self.connection = None
        # The connected session, ready or not yet (--delay).
        self.session = None
        self._connecting = False
        self._readyCall = None
        # Set when we closed the connection on purpose: reconnect at once.
        self._renewing = False
        # (clock time, reason, seconds during which a request fails at
        # once rather than make an attempt)
        self._lastFailure = None
        self._connectedAt = None
        # Connections in a row the target closed at once, answering nothing.
        self._closedAtOnce = 0
        self._earlyClose = None
        self._waiting = deque()
        self._stopped = None
        self._released = False

    def buildProtocol(self, addr):
        """
        A response framer for the new connection, delivering to a new
        session.
        """
        pipelining = self.application.pipelining
        if pipelining is not None:
            # Responses name their request: match them by id, always, so a
            # late or repeated answer is recognised whatever the depth.
            session = PipelinedTargetSession(self, pipelining, self.concurrency)
            return pipelining.buildResponseFramer(session)
        return self.application.buildResponseFramer(TargetSession(self))

    # -- ITarget

    def start(self):
        """
        Open the connection now, and keep it open. Does nothing if it is
        already open or being opened.
        """
        self.continueTrying = 1
        self._released = False
        if self.session is None and not self._connecting:
            self.resetDelay()
            self._lastFailure = None
            self._closedAtOnce = 0
            self._connectNow()

    def release(self):
        """
        Close the connection and stop reconnecting until L{start} is called
        again (C{--idle-close}: nobody is using it, and the device may need
        its one connection slot back).
        """
        self.stopTrying()
        self._released = True
        self._failWaiting("the connection to the target was released")
        if self.session is not None:
            self.log.info(
                "Releasing the connection to target {target}: no client",
                target=self.name,
            )
            self.session.transport.loseConnection()

    def stop(self):
        """
        Stop reconnecting and close the connection.

        @return: a L{Deferred} that fires once it is closed.
        """
        self.stopTrying()
        self._failWaiting("tcpmux is stopping")
        self.warnings.flushAll()
        if self.session is None:
            return succeed(None)
        stopped = self._stopped = Deferred()
        if self.session.busy:
            # Nothing to flush that anyone will get an answer to.
            self.session.transport.abortConnection()
        else:
            self.session.transport.loseConnection()
        return stopped

    def roundTrip(self, request, deadline=None, partReceived=None):
        """
        Send C{request} to the target once a connection is ready.

        @param deadline: the clock time at which whoever asks gives up, or
            L{None}. A request with less than L{LATE} of the timeout left
            when its turn to be written comes is failed with
            L{TargetTimeout} instead: its answer would most likely come
            after the deadline, and a late answer costs the connection.
            (Without this, requests queued during an outage would each be
            written on the new connection, expire and renew it again, one
            after the other.)
        """
        connection = self.connection
        if connection is not None:
            transport = connection.transport
            if transport.connected and not transport.disconnecting:
                # (The path of almost every round trip: _sendInTime, in
                # place.)
                if deadline is not None and deadline - self.clock.seconds() < self.timeout * LATE:
                    return self._lateFailure()
                return connection.roundTrip(request, partReceived)
            # Its framer closed it after a response (HTTP's "Connection:
            # close"): carry nothing more on it, and open a new one as soon
            # as it is gone.
            self.connection = None
            self._renewing = True
        tooLate = self._tooLate(deadline)
        if tooLate is not None:
            return tooLate
        return self._whenReady().addCallback(
            self._sendInTime, request, deadline, partReceived
        )

    @property
    def ready(self):
        """
        Whether a connection is ready to carry a request now.
        """
        return self.connection is not None

    def _sendInTime(self, connection, request, deadline, partReceived):
        tooLate = self._tooLate(deadline)
        if tooLate is not None:
            return tooLate
        return connection.roundTrip(request, partReceived)

    def _tooLate(self, deadline):
        """
        A failure if less than L{LATE} of the timeout is left before
        C{deadline}, else L{None}.
        """
        if deadline is not None and deadline - self.clock.seconds() < self.timeout * LATE:
            return self._lateFailure()
        return None

    def _lateFailure(self):
        return fail(
            TargetTimeout(
                f"not sent: less than {self.timeout * LATE:.3g}s of its "
                "time was left when its turn came"
            )
        )

    def _whenReady(self):
        """
        A L{Deferred} that fires with the ready session, or fails with
        L{TargetUnavailable} (also when cancelled: its asker gave up
        waiting for a connection).
        """
        if not self.continueTrying:
            if self._released:
                self.start()
            else:
                return fail(TargetUnavailable("tcpmux is stopping"))
        if not self._connecting and self.session is None:
            if self._lastFailure is not None:
                failedAt, reason, window = self._lastFailure
                if self.clock.seconds() - failedAt < window:
                    return fail(TargetUnavailable(reason))
            connect = True
        else:
            connect = False
        # Wait first: an endpoint may connect before connect() returns.
        waiter = Deferred(canceller=self._giveUpWaiting)
        self._waiting.append(waiter)
        if connect:
            self._connectNow()
        return waiter

    def _giveUpWaiting(self, waiter):
        self._waiting.remove(waiter)
        waiter.errback(Failure(TargetUnavailable("no connection to the target")))

    def renew(self, session, why):
        """
        Drop C{session}'s connection, whose state can no longer be trusted
        (a request was abandoned and may still be answered on it), and open
        a new one at once. C{why} is logged with the target's name.
        """
        self.warnings.warn(
            ("renew", why),
            "Target {target}: {why}; renewing the connection",
            target=self.name,
            why=why,
        )
        if self.connection is session:
            self.connection = None
        self._renewing = True
        session.transport.abortConnection()

    def surplus(self, session, what):
        """
        C{session} dropped C{what}, an answer to no request in flight.
        """
        self.droppedResponses += 1
        self.warnings.warn(
            "surplus",
            "Target {target}: dropped {what}",
            target=self.name,
            what=what,
        )

    # -- the sessions call these

    def targetConnected(self, session):
        if self._everConnected:
            self.reconnects += 1
        self._everConnected = True
        self._connecting = False
        self.session = session
        self._lastFailure = None
        self._connectedAt = self.clock.seconds()
        # The back-off starts over once the connection proves itself (see
        # targetLost), not yet: a device may accept and close at once.
        self.warnings.info(
            "connected", "Connected to target {target}", target=self.name
        )
        if self.readyDelay > 0:
            self._readyCall = self.clock.callLater(self.readyDelay, self._ready, session)
        else:
            self._ready(session)

    def _ready(self, session):
        self._readyCall = None
        self.connection = session
        while self._waiting and self.connection is session:
            self._waiting.popleft().callback(session)

    def targetLost(self, session, reason):
        if session is not self.session:
            return
        self.session = self.connection = None
        if self._readyCall is not None and self._readyCall.active():
            self._readyCall.cancel()
        self._readyCall = None
        if self._stopped is not None:
            stopped, self._stopped = self._stopped, None
            self.log.info("Closed the connection to target {target}", target=self.name)
            stopped.callback(None)
            return
        if self._released:
            self.log.info("Closed the connection to target {target}", target=self.name)
            return
        if (
            not session.answered
            and not self._renewing
            and self.clock.seconds() - self._connectedAt
            < self.readyDelay + CLOSED_AT_ONCE
        ):
            # Closed at once, answering nothing. Once could be a crash;
            # again, most likely a device whose only connection someone
            # else holds.
            self._closedAtOnce += 1
            if self._closedAtOnce > 1:
                self._earlyClose = (
                    f"target {self.name} closed the connection right after "
                    "accepting it"
                )
                self.warnings.warn(
                    "closed at once",
                    "{why}; another client may hold its only connection",
                    why=self._earlyClose,
                )
                self.connector.connectionLost(reason)
                return
        else:
            self._closedAtOnce = 0
        self.warnings.info(
            ("lost", reason.getErrorMessage()),
            "Lost the connection to target {target}: {reason}",
            target=self.name,
            reason=reason.getErrorMessage(),
        )
        self.connector.connectionLost(reason)

    # -- ReconnectingClientFactory, driven by the connector

    def startedConnecting(self, connector):
        self._connecting = True

    def _connectNow(self):
        # stopTrying() is the public way to cancel a scheduled retry; we
        # are not connecting, so it cancels no attempt.
        self.stopTrying()
        self.continueTrying = 1
        self.connector.connect()

    def clientConnectionFailed(self, connector, reason):
        self._connecting = False
        why = "cannot connect to target {}: {}".format(
            self.name, reason.getErrorMessage()
        )
        self._lastFailure = (self.clock.seconds(), why, self.initialDelay)
        if not self.continueTrying:
            return
        self.warnings.warn(("refused", why), "{why}", why=why)
        self._failWaiting(why)
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

    def clientConnectionLost(self, connector, reason):
        earlyClose, self._earlyClose = self._earlyClose, None
        if not self.continueTrying:
            return
        if earlyClose is not None:
            # Closed at once again: a failed attempt. The back-off grows,
            # and until the next attempt requests fail at once rather than
            # make their own, so that clients polling a device whose one
            # connection is taken do not make it accept and close every
            # --retry-delay.
            self._failWaiting(earlyClose)
            ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)
            self._lastFailure = (self.clock.seconds(), earlyClose, self.delay)
            return
        if not self._closedAtOnce:
            # The connection served: the back-off starts over.
            self.resetDelay()
        if self._waiting or self._renewing:
            # Somebody is waiting, or we closed it on purpose: no back-off.
            self._renewing = False
            self._connectNow()
        else:
            ReconnectingClientFactory.clientConnectionLost(self, connector, reason)

    def _failWaiting(self, why):
        while self._waiting:
            self._waiting.popleft().errback(Failure(TargetUnavailable(why)))
