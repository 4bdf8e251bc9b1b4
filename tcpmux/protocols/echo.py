# -*- test-case-name: tests.test_echo -*-
"""
C{echo}: newline-terminated lines (RFC 862 echo, one message per line).

Wire: C{<bytes>\\n}, in both directions. A carriage return before the
newline is part of the line and forwarded unchanged.
"""

from twisted.protocols.basic import LineOnlyReceiver

from tcpmux.framing import ApplicationProtocol, MessageReceiver


class LineMessageReceiver(LineOnlyReceiver, MessageReceiver):
    """
    Each newline-terminated line is one message, newline included.

    @cvar MAX_LENGTH: the longest line, newline excluded (64 KiB); a longer
        one is a framing error.
    """

    delimiter = b"\n"
    MAX_LENGTH = 65536
    maxMessageSize = MAX_LENGTH + 1

    def lineReceived(self, line):
        self.messageReceived(line + b"\n")

    def lineLengthExceeded(self, line):
        # Hold on to none of it: the connection is closing.
        self._buffer = b""
        self.framingError(f"line longer than {self.MAX_LENGTH} bytes")


class Echo(ApplicationProtocol):
    name = "echo"
    description = "newline-terminated lines (RFC 862 echo and line services)"
    requestReceiver = LineMessageReceiver
    responseReceiver = LineMessageReceiver


application = Echo()
