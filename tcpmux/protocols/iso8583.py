# -*- test-case-name: tests.test_iso8583 -*-
"""
C{iso8583}: ISO 8583 messages behind a 2-byte binary length header.

Wire, in both directions::

    | length: 2, big-endian | message: length bytes |
                              MTI, bitmap(s), fields

The header does not count itself, so a message is at most 65535 bytes and a
framed one at most 65537. The message itself is forwarded untouched: tcpmux
does not need to know the message spec (ASCII or binary bitmaps, field
encodings) to frame it.

A zero length (C{00 00}) carries no message. Some networks send it as a
keep-alive; it can never be a request (nothing would answer it) nor the
answer to one, so it is dropped in both directions and never reaches the
target or another client.

There is no ISO 8583 message tcpmux could answer a failed round trip with
without knowing the host's message spec, so a client whose request times
out or cannot reach the target is closed, as a real host link dropping
would: the terminal's own reversal and retry logic takes over.
"""

from tcpmux.framing import ApplicationProtocol, BadFrame, FrameReceiver

HEADER_SIZE = 2


class ISO8583Receiver(FrameReceiver):
    """
    Each message behind a 2-byte big-endian length is one message, header
    included (as L{twisted.protocols.basic.Int16StringReceiver} frames
    them); empty ones (keep-alives) are dropped.

    @cvar MAX_LENGTH: the longest message, header excluded. The whole
        16-bit range is allowed; a subclass may lower it, and a longer
        message is then a framing error.
    """

    MAX_LENGTH = 0xFFFF
    maxMessageSize = HEADER_SIZE + MAX_LENGTH

    def frameSize(self, data, start, end):
        if end - start < HEADER_SIZE:
            return None
        length = data[start] << 8 | data[start + 1]
        if length > self.MAX_LENGTH:
            raise BadFrame(
                f"ISO 8583 length header is {length}, more than {self.MAX_LENGTH}"
            )
        return HEADER_SIZE + length

    def frameReceived(self, frame):
        if len(frame) > HEADER_SIZE:
            self.receiver.messageReceived(frame)


def describeMessage(message, headerSize):
    """
    C{mti=0800} for verbose logs, when the message starts with an ASCII MTI.
    """
    mti = message[headerSize : headerSize + 4]
    if len(mti) == 4 and mti.isdigit():
        return "mti=" + mti.decode("ascii")
    return ""


class ISO8583(ApplicationProtocol):
    name = "iso8583"
    description = "ISO 8583 with a 2-byte big-endian binary length header"
    requestFramer = ISO8583Receiver
    responseFramer = ISO8583Receiver

    def describe(self, message):
        return describeMessage(message, 2)


application = ISO8583()
