# -*- test-case-name: tests.test_multiplexer -*-
"""
The multiplexer: many clients, one round trip at a time to one target.

A L{Multiplexer} is the server factory of one listener. It joins the
pieces of one listener -> target pair and knows nothing about any
application protocol: each client connection is a request framer (from the
L{IApplicationProtocol}) delivering to a L{ClientSession}; sessions hand
their requests to one L{RoundTripQueue} in front of the L{ITarget}.
"""

from twisted.internet.protocol import ServerFactory

from twisted.internet.defer import gatherResults

from tcpmux.client.busypoll import BusyPoll
from tcpmux.client.dispatch import Routes
from tcpmux.client.queue import RoundTripQueue
from tcpmux.client.registry import ClientRegistry
from tcpmux.client.session import ClientSession


class Multiplexer(ServerFactory):
    """
    Server factory for one listener; carries its clients' requests, one
    round trip at a time (or C{target.concurrency}), to one target.

    @ivar application: the L{tcpmux.interfaces.IApplicationProtocol}.
    @ivar target: the L{tcpmux.interfaces.ITarget}.
    @ivar queue: the L{RoundTripQueue} in front of it.
    @ivar routes: routing key (the application protocol's C{routingKey}:
        a Modbus unit id) -> another L{tcpmux.interfaces.ITarget}, with a
        queue of its own, so a slow target holds up no other.
    @ivar dispatcher: where client requests go: the queues (the default
        queue itself, with no routes), wrapped by each of C{gateways} in
        turn (callables taking the inner L{tcpmux.interfaces.IDispatcher}
        and returning the outer one).
    @ivar clients: the L{ClientRegistry} of connected clients.
    @ivar maxQueue: whole requests one client may have waiting before
        tcpmux stops reading from it.
    @ivar maxClientBuffer: answer bytes tcpmux may hold for one client that
        does not read them; over it, the client is dropped.
    @ivar timeout: seconds a client waits for the answer to a request, from
        the moment the request is its next one to go (waiting for other
        clients' round trips, for a connection, and for the target's answer
        all count); then it gets an error. L{None}: no limit.
    @ivar clientTimeout: close a client that has had nothing in progress
        for this many seconds; L{None}: never.
    """

    noisy = False  # the registry logs client connects, with counts

    def __init__(
        self,
        application,
        target,
        maxQueue=32,
        maxClientBuffer=4 * 1024 * 1024,
        maxClients=1024,
        verbose=False,
        timeout=None,
        clientTimeout=None,
        idleClose=None,
        clock=None,
        routes=None,
        gateways=(),
        busyPoll=0,
    ):
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.application = application
        self.target = target
        self.maxQueue = maxQueue
        self.maxClientBuffer = maxClientBuffer
        self.timeout = timeout
        self.clientTimeout = clientTimeout
        # One for every queue and client: what it polls for is the reactor's.
        self.busyPoll = BusyPoll(clock, busyPoll) if busyPoll else None
        self.routes = dict(routes or {})
        self.queue = self._queueFor(target, verbose)
        self.queues = Routes(
            self.queue,
            {key: self._queueFor(routed, verbose) for key, routed in self.routes.items()},
            application.routingKey,
        )
        # With no routes the default queue is the innermost dispatcher
        # itself: a call fewer for every request.
        self.dispatcher = self.queues if self.routes else self.queue
        for gateway in gateways:
            self.dispatcher = gateway(self.dispatcher)
        self.clients = ClientRegistry(self.targets, clock, maxClients, idleClose)

    def _queueFor(self, target, verbose):
        return RoundTripQueue(
            target,
            self.clock,
            self.timeout,
            verbose,
            self.application.describe,
            busyPoll=self.busyPoll,
        )

    @property
    def targets(self):
        """
        Every target: the default one first, then each routed one.
        """
        return [queue.target for queue in self.queues]

    def buildProtocol(self, addr):
        if not self.clients.admit(addr):
            return None
        session = ClientSession(
            self.application,
            self.dispatcher,
            self.clients,
            self.clock,
            maxQueue=self.maxQueue,
            maxBuffer=self.maxClientBuffer,
            clientTimeout=self.clientTimeout,
            busyPoll=self.busyPoll,
        )
        framer = self.application.buildRequestFramer(session)
        framer.factory = self
        return framer

    def start(self):
        """
        Open the target connections now, eagerly, so that a device's one
        connection slot is held before the first client arrives.
        """
        for target in self.targets:
            target.start()
        self.clients.start()

    def stop(self, timeout=None):
        """
        Finish (or fail, after C{timeout} seconds, by default the request
        timeout) the round trips in flight, fail what is queued, then close
        the target connections and every client.

        @return: a L{Deferred} that fires when all is closed.
        """
        if timeout is None:
            timeout = self.timeout or 60.0
        stopped = gatherResults([queue.stop(timeout) for queue in self.queues])
        # Closing a target fails a round trip still in flight, so its
        # client gets its error before it is closed.
        stopped.addCallback(
            lambda ignored: gatherResults([target.stop() for target in self.targets])
        )
        stopped.addCallback(lambda ignored: self.clients.closeAll(timeout))

        def flush(result):
            for queue in self.queues:
                queue.flushLogs()
            return result

        return stopped.addBoth(flush)
