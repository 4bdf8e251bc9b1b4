# -*- test-case-name: tests.test_lifecycle -*-
"""
One listener -> target pair as a Twisted service.
"""

import signal
from contextlib import contextmanager

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService, Service
from twisted.internet.defer import gatherResults, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.logger import Logger

from tcpmux import versions
from tcpmux.config import listenEndpoint


class CannotListen(Exception):
    """
    The listener could not start: the address is in use, the port needs
    privileges, the socket's directory does not exist, ...
    """


class MultiplexerService(MultiService):
    """
    Listens on C{listen} for clients of C{multiplexer}, and keeps its
    target connection open while running.

    Stopping is orderly: stop accepting clients, let the round trip in
    flight finish (or fail after the target timeout), fail what is queued,
    then close the clients and the target connection.

    @param exitCleanlyOnSIGTERM: once the reactor runs, handle SIGTERM as a
        requested, orderly stop, so that C{twistd} exits with status 0.
        (The stop itself is Twisted's: C{reactor.stop()} runs the shutdown
        sequence, which waits for L{stopService}'s L{Deferred}. Only the
        exit status is ours: twistd re-raises the signal after shutting
        down, so the process would end "killed by SIGTERM", status 143,
        which service managers report as a failure.)
    @param exitOnListenFailure: when the listener cannot start, end the
        process with a one-line message (L{SystemExit}) rather than raise
        L{CannotListen}. For C{twistd -n}, which would print a traceback;
        not when daemonized, where twistd reports an exception to the
        launching process (which then exits 1) but would wait forever
        after a L{SystemExit}.
    @param endpoint: the server endpoint to listen on; by default the one
        L{tcpmux.config.listenEndpoint} makes of C{listen}.
    """

    log = Logger()

    def __init__(
        self,
        listen,
        multiplexer,
        clock=None,
        exitCleanlyOnSIGTERM=False,
        exitOnListenFailure=False,
        endpoint=None,
    ):
        MultiService.__init__(self)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.exitCleanlyOnSIGTERM = exitCleanlyOnSIGTERM
        self.exitOnListenFailure = exitOnListenFailure
        self.multiplexer = multiplexer
        self.listen = listen
        if endpoint is None:
            from twisted.internet import reactor

            endpoint = listenEndpoint(reactor, listen)
        self.listener = StreamServerEndpointService(endpoint, multiplexer)
        # A failure to listen is raised at once, as strports.service's is,
        # for _listening.
        self.listener._raiseSynchronously = True
        self.listener.setServiceParent(self)

    @property
    def muxName(self):
        """
        The name of this listener -> target pair in logs (C{--name}, or a
        config file table's C{name}), by default its listen address.
        """
        return getattr(self.multiplexer, "name", None) or self.listen

    @contextmanager
    def _listening(self):
        """
        Say in one line why the listener could not start.
        """
        try:
            yield
        except CannotListenError as e:
            reason = e.socketError
            if isinstance(reason, OSError) and reason.strerror:
                reason = reason.strerror.lower()
            message = f"cannot listen on {self.listen}: {reason}"
            if self.exitOnListenFailure:
                raise SystemExit(message) from None
            raise CannotListen(message) from None

    def privilegedStartService(self):
        # twistd listens here, before it sheds privileges.
        with self._listening():
            MultiService.privilegedStartService(self)

    def startService(self):
        mux = self.muxName
        self.log.info(
            "{versions} starting{named}: protocol {protocol}, listening on "
            "{listen}, target {target}",
            named="" if mux == self.listen else f" mux {mux}",
            mux=mux,
            versions=versions(),
            protocol=self.multiplexer.application.name,
            listen=self.listen,
            target=self.multiplexer.target.name,
        )
        # Connect to the target first, so the device's one slot is held
        # before the first client arrives.
        self.multiplexer.start()
        with self._listening():
            MultiService.startService(self)
        if self.exitCleanlyOnSIGTERM:
            # After the reactor has installed its own handlers.
            self.clock.callWhenRunning(self._handleSIGTERM)

    def _handleSIGTERM(self):
        reactor = self.clock

        def stop(number, frame):
            self.log.info("Received SIGTERM, shutting down.")
            reactor.callFromThread(reactor.stop)

        signal.signal(signal.SIGTERM, stop)

    def stopService(self):
        Service.stopService(self)
        stopped = maybeDeferred(self.listener.stopService)
        stopped.addCallback(lambda ignored: self.multiplexer.stop())
        # Then any other child (--metrics), which reports until the end.
        stopped.addCallback(
            lambda ignored: gatherResults(
                [
                    maybeDeferred(child.stopService)
                    for child in list(self)
                    if child is not self.listener and child.running
                ]
            )
        )
        return stopped
