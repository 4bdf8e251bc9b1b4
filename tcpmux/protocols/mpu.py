# -*- test-case-name: tests.test_mpu -*-
"""
C{mpu}: ISO 8583 messages behind a 4-character ASCII decimal length header
(as on MPU and other card networks' host links).

Wire, in both directions::

    | length: 4 ASCII digits, "0000".."9999" | message: length bytes |

The header does not count itself, so a message is at most 9999 bytes and a
framed one at most 10003. A header byte that is not an ASCII digit can never
start a valid message: it is a framing error as soon as it arrives, not a
reason to wait for more bytes.

As with L{tcpmux.protocols.iso8583}, a zero length (C{"0000"}) is a
keep-alive that is dropped in both directions, and a client whose round
trip fails is closed.
"""

from tcpmux.framing import ApplicationProtocol, BadFrame, FrameReceiver
from tcpmux.protocols.iso8583 import describeMessage

HEADER_SIZE = 4
MAX_LENGTH = 9999
_DIGITS = b"0123456789"


class ASCIILengthReceiver(FrameReceiver):
    """
    Cuts a byte stream into messages that each start with a 4-digit ASCII
    decimal length, and passes each on header included; empty ones
    (keep-alives) are dropped.
    """

    maxMessageSize = HEADER_SIZE + MAX_LENGTH

    def frameSize(self, data, start, end):
        header = data[start : start + HEADER_SIZE]
        if header.isdigit():
            return HEADER_SIZE + int(header)
        # isdigit() is ASCII-only on bytes: a sign, a space or any other
        # byte is refused; a partial header waits if what is here so far is
        # digits.
        bad = header.lstrip(_DIGITS)
        if bad:
            raise BadFrame(f"length header byte {bad[:1]!r} is not an ASCII digit")
        return None

    def frameReceived(self, frame):
        if len(frame) > HEADER_SIZE:
            self.receiver.messageReceived(frame)


class MPU(ApplicationProtocol):
    name = "mpu"
    description = "ISO 8583 with a 4-digit ASCII decimal length header (MPU)"
    requestFramer = ASCIILengthReceiver
    responseFramer = ASCIILengthReceiver

    def describe(self, message):
        return describeMessage(message, HEADER_SIZE)


application = MPU()
