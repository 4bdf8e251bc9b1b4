# -*- test-case-name: tests.test_target -*-
"""
The one connection to the target.

L{TargetClientFactory} keeps a single connection open, reconnecting with
L{ReconnectingClientFactory}'s back-off, and offers L{roundTrip
<TargetClientFactory.roundTrip>}: write one request, fire with its whole
response. It is the seam between the multiplexer's queue and the transport:
the multiplexer only ever calls C{roundTrip}, C{start} and C{stop}.
"""

from collections import deque

from twisted.internet import error
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.protocol import ReconnectingClientFactory
from twisted.logger import Logger
from twisted.python.failure import Failure

from tcpmux.errors import (
    TargetLost,
    TargetProtocolError,
    TargetTimeout,
    TargetUnavailable,
)
from tcpmux.pipeline import PipelinedTargetSession
from tcpmux.writing import noDelay, writeNow


class EndpointConnector:
    """
    The connector interface L{ReconnectingClientFactory} drives
    (C{connect}, C{stopConnecting}, C{disconnect}), over any client endpoint:
    TCP, TLS, UNIX, or whatever an endpoint string names.

    @ivar timeout: seconds a connection attempt may take before it fails.
    """

    def __init__(self, endpoint, factory, timeout, clock):
        self.endpoint = endpoint
        self.factory = factory
        self.timeout = timeout
        self.clock = clock
        self._attempt = None
        self._protocol = None

    def connect(self):
        self.factory.startedConnecting(self)
        attempt = self._attempt = self.endpoint.connect(self.factory)
        attempt.addTimeout(self.timeout, self.clock)
        attempt.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol):
        self._attempt = None
        self._protocol = protocol

    def _failed(self, reason):
        self._attempt = None
        self.factory.clientConnectionFailed(self, reason)

    def stopConnecting(self):
        if self._attempt is None:
            raise error.NotConnectingError()
        self._attempt.cancel()

    def disconnect(self):
        if self._attempt is not None:
            self._attempt.cancel()
        elif self._protocol is not None and self._protocol.transport is not None:
            self._protocol.transport.loseConnection()

    def connectionLost(self, reason):
        self._protocol = None
        self.factory.clientConnectionLost(self, reason)

    def getDestination(self):
        return self.endpoint


class TargetSession:
    """
    Mixed into an application protocol's response receiver: the protocol of
    the connection to the target. At most one round trip is in flight.
    """

    log = Logger()
    pending = None
    _interim = None
    _timer = None

    def connectionMade(self):
        noDelay(self.transport)
        self.factory.targetConnected(self)

    def roundTrip(self, request, interim=None):
        """
        Write C{request}; the result fires with the whole response, or fails
        with L{TargetTimeout} or L{TargetLost}.

        Cancelling the result abandons the request: the connection is
        renewed, since its answer may still come and must reach no one.

        @param interim: called with each interim response (HTTP 1xx).
        """
        self.pending = response = Deferred(canceller=self._abandon)
        self._interim = interim
        self.expectResponseTo(request)
        if self.factory.responseTimeout:
            self._timer = self.factory.clock.callLater(
                self.factory.responseTimeout, self._timedOut
            )
        writeNow(self.transport, request)
        return response

    def messageReceived(self, response):
        pending = self.pending
        if pending is None:
            self.log.warn(
                "Dropped {size} bytes from the target that answer no request",
                size=len(response),
            )
            return
        self.pending = self._interim = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        pending.callback(response)

    def interimReceived(self, message):
        if self._interim is not None:
            self._interim(message)

    def framingError(self, reason, reply=None):
        why = f"unframeable response: {reason}"
        self._giveUp(TargetProtocolError(why), why)

    def _timedOut(self):
        self._timer = None
        why = f"no response within {self.factory.responseTimeout}s"
        self._giveUp(TargetTimeout(why), why)

    def _giveUp(self, exception, why):
        # Take the request off this connection, then stop offering the
        # connection, and only then fail the request: its failure lets the
        # next request go, which must find no connection but a new one.
        pending = self._takePending()
        self.factory.renew(self, why)
        if pending is not None:
            pending.errback(Failure(exception))

    def _abandon(self, pending):
        if self.pending is pending:
            self._takePending()
            self.factory.renew(self, "gave up waiting for the response")

    def _takePending(self):
        pending, self.pending, self._interim = self.pending, None, None
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        return pending

    def connectionLost(self, reason):
        # The receiver may still complete a response that runs to the end
        # of the connection (HTTP without a length) before we fail it.
        super().connectionLost(reason)
        pending = self._takePending()
        if pending is not None:
            pending.errback(Failure(TargetLost("the connection to the target closed")))
        self.factory.targetLost(self, reason)


SAME_AS_TIMEOUT = object()

# The fraction of the timeout a request must still have when its turn to be
# written comes (see TargetClientFactory.roundTrip).
LATE = 0.1


class TargetClientFactory(ReconnectingClientFactory):
    """
    Keeps one connection to a target and carries round trips over it.

    The connection is opened when L{start} is called and kept while nobody
    uses it. After a drop it is re-opened with an exponential back-off that
    starts at C{retryDelay} and is capped at C{maxRetryDelay}; a request
    that arrives meanwhile triggers an attempt at once, unless the last one
    failed less than C{retryDelay} ago, in which case it fails at once with
    L{TargetUnavailable} rather than waiting.

    @ivar connection: the ready session, or L{None}.
    @ivar timeout: seconds a connection attempt, or waiting for one, may take.
    @ivar responseTimeout: seconds to wait for each response before giving
        up and renewing the connection; L{None} when whoever asks enforces
        its own deadline by cancelling the round trip (the multiplexer does).
    @ivar concurrency: round trips this connection carries at once: 1, or
        with C{pipeline}, that many (for protocols that offer pipelining).
    """

    log = Logger()
    noisy = False

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
        responseTimeout=SAME_AS_TIMEOUT,
        pipeline=1,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.application = application
        if pipeline > 1:
            if application.pipelining is None:
                raise ValueError(f"{application.name} cannot be pipelined")
            self.protocol = type(
                "PipelinedTargetConnection",
                (PipelinedTargetSession, application.pipelining.responseReceiver),
                {},
            )
        else:
            self.protocol = type(
                "TargetConnection", (TargetSession, application.responseReceiver), {}
            )
        self.concurrency = pipeline
        self.name = name
        self.timeout = timeout
        if responseTimeout is SAME_AS_TIMEOUT:
            responseTimeout = timeout
        self.responseTimeout = responseTimeout
        self.readyDelay = delay
        self.initialDelay = self.delay = retryDelay
        self.maxDelay = max(maxRetryDelay, retryDelay)
        self.clock = clock
        self.connector = EndpointConnector(endpoint, self, timeout, clock)
        self.connection = None
        self._session = None
        self._connecting = False
        self._readyCall = None
        self._renewing = False
        self._lastFailure = None
        self._lastReason = None
        self._waiting = deque()
        self._stopped = None
        self._released = False

    # -- what the multiplexer uses

    def start(self):
        """
        Open the connection now, and keep it open. Does nothing if it is
        already open or being opened.
        """
        self.continueTrying = 1
        self._released = False
        if self._session is None and not self._connecting:
            self.resetDelay()
            self._lastFailure = None
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
        if self._session is not None:
            self.log.info(
                "Releasing the connection to target {target}: no client",
                target=self.name,
            )
            self._session.transport.loseConnection()

    def stop(self):
        """
        Stop reconnecting and close the connection.

        @return: a L{Deferred} that fires once it is closed.
        """
        self.stopTrying()
        self._failWaiting("tcpmux is stopping")
        if self._session is None:
            return succeed(None)
        stopped = self._stopped = Deferred()
        if self._session.pending is not None:
            # Nothing to flush that anyone will get an answer to.
            self._session.transport.abortConnection()
        else:
            self._session.transport.loseConnection()
        return stopped

    def roundTrip(self, request, interim=None, deadline=None):
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
        @return: a L{Deferred} that fires with the whole response, or fails
            with a L{tcpmux.errors.GatewayError}.
        """
        connection = self.connection
        if connection is not None and (
            connection.transport.disconnecting or not connection.transport.connected
        ):
            # Its receiver closed it after a response (HTTP's "Connection:
            # close"): carry nothing more on it, and open a new one as soon
            # as it is gone.
            self.connection = None
            self._renewing = True
            connection = None
        if connection is not None:
            if deadline is None:
                return connection.roundTrip(request, interim)
            return self._sendInTime(connection, request, interim, deadline)
        return self.whenReady().addCallback(
            self._sendInTime, request, interim, deadline
        )

    def _sendInTime(self, connection, request, interim, deadline):
        if deadline is not None:
            left = deadline - self.clock.seconds()
            if left < self.timeout * LATE:
                return fail(
                    TargetTimeout(
                        f"not sent: less than {self.timeout * LATE:.3g}s of its "
                        "time was left when its turn came"
                    )
                )
        return connection.roundTrip(request, interim)

    def whenReady(self):
        """
        A L{Deferred} that fires with the ready L{TargetSession}, or fails
        with L{TargetUnavailable}.
        """
        if self.connection is not None:
            return succeed(self.connection)
        if not self.continueTrying:
            if self._released:
                self.start()
            else:
                return fail(TargetUnavailable("tcpmux is stopping"))
        if not self._connecting and self._session is None:
            if (
                self._lastFailure is not None
                and self.clock.seconds() - self._lastFailure < self.initialDelay
            ):
                return fail(TargetUnavailable(self._lastReason))
            self._connectNow()
        waiter = Deferred(canceller=self._waiting.remove)
        self._waiting.append(waiter)
        return waiter.addTimeout(
            self.timeout,
            self.clock,
            onTimeoutCancel=lambda result, timeout: Failure(
                TargetUnavailable(f"no connection to the target within {timeout}s")
            ),
        )

    def renew(self, session, why=None):
        """
        Drop C{session}'s connection, whose state can no longer be trusted
        (a timed-out request may still be answered on it), and open a new
        one at once.

        @param why: logged with the target's name, when given.
        """
        if why is not None:
            self.log.warn(
                "Target {target}: {why}; renewing the connection",
                target=self.name,
                why=why,
            )
        if self.connection is session:
            self.connection = None
        self._renewing = True
        session.transport.abortConnection()

    # -- ReconnectingClientFactory and the sessions call these

    def buildProtocol(self, addr):
        session = self.protocol()
        session.factory = self
        return session

    def startedConnecting(self, connector):
        self._connecting = True

    def _connectNow(self):
        if self._callID is not None and self._callID.active():
            self._callID.cancel()
        self._callID = None
        self.connector.connect()

    def targetConnected(self, session):
        self._connecting = False
        self._session = session
        self._lastFailure = None
        self.resetDelay()
        self.log.info(
            "Connected to target {target}", target=self.name
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
        if session is not self._session:
            return
        self._session = self.connection = None
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
        self.log.info(
            "Lost the connection to target {target}: {reason}",
            target=self.name,
            reason=reason.getErrorMessage(),
        )
        self.connector.connectionLost(reason)

    def clientConnectionFailed(self, connector, reason):
        self._connecting = False
        self._lastFailure = self.clock.seconds()
        self._lastReason = "cannot connect to target {}: {}".format(
            self.name, reason.getErrorMessage()
        )
        if not self.continueTrying:
            return
        self.log.warn("{why}", why=self._lastReason)
        self._failWaiting(self._lastReason)
        ReconnectingClientFactory.clientConnectionFailed(self, connector, reason)

    def clientConnectionLost(self, connector, reason):
        if not self.continueTrying:
            return
        if self._waiting or self._renewing:
            # Somebody is waiting, or we closed it on purpose: no back-off.
            self._renewing = False
            self._connectNow()
        else:
            ReconnectingClientFactory.clientConnectionLost(self, connector, reason)

    def _failWaiting(self, why):
        while self._waiting:
            self._waiting.popleft().errback(Failure(TargetUnavailable(why)))
