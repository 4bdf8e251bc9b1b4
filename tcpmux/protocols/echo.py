# -*- test-case-name: tests.test_echo -*-
"""
C{echo}: newline-terminated lines (RFC 862 echo, one message per line).

Wire: C{<bytes>\\n}, in both directions. A carriage return before the
newline is part of the line and forwarded unchanged.
"""

from tcpmux.framing import ApplicationProtocol, MessageFramer


class LineMessageReceiver(MessageFramer):
    """
    Each newline-terminated line is one message, newline included.

    The loop is L{twisted.protocols.basic.LineOnlyReceiver}'s, counting as
    it goes how many bytes of the read are not delivered yet (see
    L{buffered}).

    @cvar MAX_LENGTH: the longest line, newline excluded (64 KiB); a longer
        one is a framing error.
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536
    maxMessageSize = MAX_LENGTH + 1
    _refused = False

    def __init__(self, receiver):
        MessageFramer.__init__(self, receiver)
        self._buffer = b""  # an incomplete line
        self._undelivered = 0  # bytes of whole lines of this read not delivered yet

    def dataReceived(self, data):
        if self._refused:
            return
        lines = (self._buffer + data).split(self.delimiter)
        self._buffer = lines.pop()
        self._undelivered = sum(len(line) + 1 for line in lines)
        for line in lines:
            self._undelivered -= len(line) + 1
            if len(line) > self.MAX_LENGTH:
                self._refuse()
                return
            self.receiver.messageReceived(line + self.delimiter)
            if self._refused or self.transport.disconnecting:
                # Closed by the receiver: deliver nothing more.
                self._buffer, self._undelivered = b"", 0
                return
        if len(self._buffer) > self.MAX_LENGTH:
            self._refuse()

    def _refuse(self):
        # Hold on to none of it, and read nothing more, however long the
        # receiver keeps the connection open.
        self._buffer, self._undelivered = b"", 0
        self._refused = True
        self.receiver.framingError(f"line longer than {self.MAX_LENGTH} bytes", None)

    def buffered(self):
        return self._undelivered + len(self._buffer)


class Echo(ApplicationProtocol):
    name = "echo"
    description = "newline-terminated lines (RFC 862 echo and line services)"
    requestFramer = LineMessageReceiver
    responseFramer = LineMessageReceiver


application = Echo()
