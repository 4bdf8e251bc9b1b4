# -*- test-case-name: tests.test_lifecycle -*-
"""
One listener -> target pair as a Twisted service.
"""

import signal

from twisted.application import strports
from twisted.application.service import MultiService, Service
from twisted.internet.defer import maybeDeferred
from twisted.logger import Logger


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
    """

    log = Logger()

    def __init__(self, listen, multiplexer, clock=None, exitCleanlyOnSIGTERM=False):
        MultiService.__init__(self)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.exitCleanlyOnSIGTERM = exitCleanlyOnSIGTERM
        self.multiplexer = multiplexer
        self.listener = strports.service(listen, multiplexer)
        self.listener.setServiceParent(self)

    def startService(self):
        # Connect to the target first, so the device's one slot is held
        # before the first client arrives.
        self.multiplexer.start()
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
        return stopped
