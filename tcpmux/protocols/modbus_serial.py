# -*- test-case-name: tests.test_modbus_serial -*-
"""
C{modbus-serial}: raw Modbus RTU frames over TCP, as serial-to-TCP
converters in "transparent" mode carry them.

Wire, in both directions::

    | address: 1 | function code: 1 | data | CRC: 2, low byte first |

There is no length field and, over TCP, no 3.5-character silence either, so
each frame's length is derived from its function code and, for variable
frames, from the byte count (or object list) it carries. The rules differ
for requests and responses; the request framer reads only requests and
the response framer only responses, so neither guesses::

    function code               request          response
    1, 2, 3, 4 read             8                5 + byte count
    5, 6 write single           8                8
    7 read exception status     4                5
    11 comm event counter       4                8
    12 comm event log           4                5 + byte count
    15, 16 write multiple       9 + byte count   8
    17 report server id         4                5 + byte count
    20, 21 file records         5 + byte count   5 + byte count
    22 mask write register      10               10
    23 read/write registers     13 + byte count  5 + byte count
    24 read FIFO queue          6                6 + 2-byte byte count
    43/14 read device id        7                from its object list
    exception (fc | 0x80)       -                5

A frame is at most 256 bytes. Its CRC-16/MODBUS is checked. A frame with a
bad CRC, a function code not listed (or 43 with another MEI type), a
request to the broadcast address 0 (which no device answers, so it cannot
take part in a round trip), or a length over 256 can never be forwarded
safely: it is a framing error, and the client is closed with the reason
logged.

RTU has no transaction id: a response is passed on only if its address and
function code answer the request in flight; another one is dropped and
logged. A failed round trip is answered with an RTU exception frame: 0x0A
(gateway path unavailable) when the target cannot be reached, 0x0B
(gateway target device failed to respond) otherwise.
"""

from twisted.logger import Logger

from tcpmux.framing import ApplicationProtocol, BadFrame, FrameReceiver
from tcpmux.protocols.crc import checkCRC, crcBytes, withCRC
from tcpmux.protocols.modbus import gatewayExceptionCode
from tcpmux.gateway.adu import SerialFrames

MAX_FRAME = 256
EXCEPTION_FRAME = 5  # address, function code | 0x80, exception code, CRC
READ_DEVICE_ID = 0x2B
MEI_READ_DEVICE_ID = 0x0E


def counted(offset, fixed, width=1):
    """
    The size rule of a frame that carries a byte count of C{width} bytes at
    C{offset}: C{fixed} bytes plus the count.
    """

    def size(data, start, end):
        if end - start < offset + width:
            return None
        count = data[start + offset : start + offset + width]
        return fixed + int.from_bytes(count, "big")

    return size


def deviceIdRequestSize(data, start, end):
    """
    Read device identification (43/14): address, 43, MEI type 14, read
    device id code, object id, CRC.
    """
    if end - start < 3:
        return None
    if data[start + 2] != MEI_READ_DEVICE_ID:
        raise BadFrame(f"MEI type {data[start + 2]} is not supported")
    return 7


def deviceIdResponseSize(data, start, end):
    """
    Read device identification (43/14) response: address, 43, MEI type 14,
    read device id code, conformity level, more follows, next object id,
    number of objects, then each object as id, length and value; then the
    CRC.
    """
    if end - start < 3:
        return None
    if data[start + 2] != MEI_READ_DEVICE_ID:
        raise BadFrame(f"MEI type {data[start + 2]} is not supported")
    if end - start < 8:
        return None
    offset = start + 8
    for _ in range(data[start + 7]):
        if offset + 2 > end:
            return None
        offset += 2 + data[offset + 1]
        if offset + 2 - start > MAX_FRAME:
            break
    return offset + 2 - start


# Function code -> frame size: a number, or a rule called with the buffer,
# the frame's start and the buffer's end, returning None until enough bytes
# are there to know.
REQUEST_SIZES = {
    0x01: 8,
    0x02: 8,
    0x03: 8,
    0x04: 8,
    0x05: 8,
    0x06: 8,
    0x07: 4,
    0x0B: 4,
    0x0C: 4,
    0x0F: counted(6, 9),
    0x10: counted(6, 9),
    0x11: 4,
    0x14: counted(2, 5),
    0x15: counted(2, 5),
    0x16: 10,
    0x17: counted(10, 13),
    0x18: 6,
    READ_DEVICE_ID: deviceIdRequestSize,
}

RESPONSE_SIZES = {
    0x01: counted(2, 5),
    0x02: counted(2, 5),
    0x03: counted(2, 5),
    0x04: counted(2, 5),
    0x05: 8,
    0x06: 8,
    0x07: 5,
    0x0B: 8,
    0x0C: counted(2, 5),
    0x0F: 8,
    0x10: 8,
    0x11: counted(2, 5),
    0x14: counted(2, 5),
    0x15: counted(2, 5),
    0x16: 10,
    0x17: counted(2, 5),
    0x18: counted(2, 6, width=2),
    READ_DEVICE_ID: deviceIdResponseSize,
}
RESPONSE_SIZES.update(
    (code | 0x80, EXCEPTION_FRAME) for code in range(0x80)
)


class RTUReceiver(FrameReceiver):
    """
    Cuts a byte stream into RTU frames using the size rules in L{sizes},
    checks each CRC, and calls L{frameReceived} with each good frame.

    @cvar sizes: function code -> frame size rule.
    """

    maxMessageSize = MAX_FRAME
    sizes = {}

    def frameSize(self, data, start, end):
        if end - start < 2:
            return None
        code = data[start + 1]
        rule = self.sizes.get(code)
        if rule is None:
            raise BadFrame(f"unknown function code {code}")
        size = rule if rule.__class__ is int else rule(data, start, end)
        if size is not None and size > MAX_FRAME:
            raise BadFrame(
                f"function code {code} frame of {size} bytes is longer than "
                f"{MAX_FRAME}"
            )
        return size

    def checkFrame(self, frame):
        if checkCRC(frame):
            return None
        return "bad CRC: got {}, computed {}".format(
            frame[-2:].hex(), crcBytes(frame[:-2]).hex()
        )


class RTURequestReceiver(RTUReceiver):
    """
    Frames a client's requests; a request to the broadcast address 0 is
    refused, since no response would ever come for it.
    """

    sizes = REQUEST_SIZES

    def frameSize(self, data, start, end):
        if not data[start]:
            raise BadFrame(
                "broadcast requests (address 0) get no response and cannot "
                "be multiplexed"
            )
        return RTUReceiver.frameSize(self, data, start, end)


class RTUResponseReceiver(RTUReceiver):
    """
    Frames a target's responses and passes on only one whose address and
    function code (exception bit aside) answer the request in flight.
    """

    log = Logger()
    sizes = RESPONSE_SIZES
    _expected = None

    def expectResponseTo(self, request):
        self._expected = request[:2]

    def frameReceived(self, frame):
        expected = self._expected
        if (
            expected is None
            or frame[0] != expected[0]
            or frame[1] & 0x7F != expected[1]
        ):
            self.log.warn(
                "Dropped a Modbus RTU response from address {address} to "
                "function code {code}: waiting for {expected}",
                address=frame[0],
                code=frame[1] & 0x7F,
                expected=(
                    f"address {expected[0]}, function code {expected[1]}"
                    if expected is not None
                    else "none"
                ),
            )
            return
        self._expected = None
        self.receiver.messageReceived(frame)


def exceptionFrame(request, code):
    """
    An RTU exception response to C{request}: its address, its function code
    with the high bit set, C{code}, then the CRC.
    """
    return withCRC(bytes((request[0], request[1] | 0x80, code)))


class ModbusSerial(ApplicationProtocol):
    name = "modbus-serial"
    description = "raw Modbus RTU frames (address, PDU, CRC-16) over TCP"
    requestFramer = RTURequestReceiver
    responseFramer = RTUResponseReceiver

    frames = SerialFrames()

    def routingKey(self, request):
        """
        The unit id (C{--route}).
        """
        return self.frames.unit(request)

    def errorResponse(self, request, error):
        return exceptionFrame(request, gatewayExceptionCode(error))

    def describe(self, message):
        return f"address={message[0]} fc={message[1]}"


application = ModbusSerial()
