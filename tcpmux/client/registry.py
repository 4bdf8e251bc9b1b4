# -*- test-case-name: tests.test_lifecycle -*-
"""
The clients of one listener.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger

from tcpmux.client.access import describe, isAllowed
from tcpmux.client.session import formatAddress
from tcpmux.logs import RepeatedWarnings


class ClientRegistry:
    """
    Who is connected to one listener: admits at most C{maxClients}, logs
    arrivals and departures, releases the target connections (of
    C{targets}, a list of L{tcpmux.interfaces.ITarget}) when nobody has
    been connected for C{idleClose} seconds (and re-opens them for the next
    client), and closes everyone when tcpmux stops.

    Iterating over it gives the connected L{ClientSession}s.

    @ivar refused: clients refused because C{maxClients} were connected.
    @ivar allow: L{None}, or the networks (C{--allow}) clients must come
        from; a client from elsewhere is refused.
    @ivar refusedNotAllowed: clients refused because they were not from
        C{allow}.
    """

    log = Logger()

    def __init__(self, targets, clock, maxClients=1024, idleClose=None, allow=None):
        self.targets = targets
        self.allow = allow
        self.refusedNotAllowed = 0
        # A scan of the port would otherwise log a line per connection.
        self.warnings = RepeatedWarnings(self.log, clock)
        self.clock = clock
        self.maxClients = maxClients
        self.idleClose = idleClose
        self.stopping = False
        self._clients = set()
        self._idleCall = None
        self._released = False
        self._allGone = []
        self.refused = 0

    def __len__(self):
        return len(self._clients)

    def __iter__(self):
        return iter(list(self._clients))

    def admit(self, address):
        """
        Whether a client from C{address} may connect now.
        """
        if self.allow is not None and not isAllowed(self.allow, address):
            self.refusedNotAllowed += 1
            self.warnings.warn(
                "not-allowed",
                "Refusing client {client}: not from an address --allow "
                "{allow} admits",
                "{count} more clients refused in the last {window}s: not from "
                "an address --allow {allow} admits",
                client=formatAddress(address),
                allow=describe(self.allow),
            )
            return False
        if len(self._clients) < self.maxClients:
            return True
        self.refused += 1
        self.log.warn(
            "Refusing client {client}: {count} clients already connected "
            "(--max-clients)",
            client=formatAddress(address),
            count=len(self._clients),
        )
        return False

    def start(self):
        """
        The target connection was opened: release it if nobody comes.
        """
        if not self._clients:
            self._scheduleIdleClose()

    def add(self, session):
        self._clients.add(session)
        # Clients that connect for every poll would flood the log at info.
        self.log.debug(
            "Client {client} connected ({count} now)",
            client=session.peer,
            count=len(self._clients),
        )
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        if self._released and not self.stopping:
            # --idle-close released it: open it again now.
            self._released = False
            for target in self.targets:
                target.start()

    def remove(self, session):
        self._clients.discard(session)
        incomplete = session.discarded
        if incomplete:
            self.log.warn(
                "Client {client} disconnected ({count} now) in the middle of "
                "a request: {size} bytes discarded",
                client=session.peer,
                count=len(self._clients),
                size=incomplete,
            )
        else:
            self.log.debug(
                "Client {client} disconnected ({count} now)",
                client=session.peer,
                count=len(self._clients),
            )
        if not self._clients:
            self._scheduleIdleClose()
            waiting, self._allGone = self._allGone, []
            for gone in waiting:
                gone.callback(None)

    def _scheduleIdleClose(self):
        if self.idleClose and not self.stopping and self._idleCall is None:
            self._idleCall = self.clock.callLater(self.idleClose, self._idleClosed)

    def _idleClosed(self):
        self._idleCall = None
        self._released = True
        self.log.info(
            "No client for {idle}s: releasing the connection to target "
            "{target} (--idle-close)",
            idle=self.idleClose,
            target=", ".join(target.name for target in self.targets),
        )
        for target in self.targets:
            target.release()

    def closeAll(self, timeout):
        """
        Close every client, and abort those still there after C{timeout}
        seconds.

        @return: a L{Deferred} that fires when every client is gone, so that
            answers and errors already written are flushed before the
            reactor stops (and drops whatever is still buffered).
        """
        self.warnings.flushAll()
        self.stopping = True
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        if not self._clients:
            return succeed(None)
        gone = Deferred()
        self._allGone.append(gone)
        for session in self:
            session.close()

        def abort(failure):
            for session in self:
                session.transport.abortConnection()

        return gone.addTimeout(timeout, self.clock).addErrback(abort)
