# -*- test-case-name: tests.test_modbus -*-
"""
C{modbus}: Modbus TCP application data units.

Wire, in both directions::

    | transaction id: 2 | protocol id: 2 = 0 | length: 2 | unit id: 1 | PDU |
                                               `-- unit id + PDU --'

all big-endian. The length counts the unit id and the PDU (function code and
data), so it lies in 2..254 and an ADU is at most 260 bytes. A protocol id
other than 0, or a length outside 2..254, can never become a valid ADU: it is
a framing error, not a reason to wait for more bytes.
"""

from struct import Struct, pack

from zope.interface import implementer

from tcpmux.errors import TargetUnavailable
from tcpmux.framing import ApplicationProtocol, BadFrame, FrameReceiver
from tcpmux.interfaces import IPipelining
from tcpmux.gateway.adu import ModbusTCPFrames

HEADER_SIZE = 6  # transaction id, protocol id, length; the unit id is counted in length
MIN_LENGTH = 2  # unit id + function code
MAX_LENGTH = 254  # unit id + the largest PDU (253 bytes)
_PROTOCOL_ID_AND_LENGTH = Struct(">HH")

# Exception codes a gateway answers with (Modbus application protocol, 7).
GATEWAY_PATH_UNAVAILABLE = 0x0A
GATEWAY_TARGET_FAILED_TO_RESPOND = 0x0B


class ModbusTCPReceiver(FrameReceiver):
    """
    Cuts a byte stream into Modbus TCP ADUs (MBAP header + PDU) and calls
    L{frameReceived} with each, header included; by default each is passed
    to the receiver.

    @cvar wireName: what framing errors call this format.
    @cvar minLength: the smallest valid length field.
    @cvar maxLength: the largest valid length field.
    """

    wireName = "Modbus TCP"
    minLength = MIN_LENGTH
    maxLength = MAX_LENGTH
    maxMessageSize = HEADER_SIZE + MAX_LENGTH

    def frameSize(self, data, start, end):
        if end - start >= HEADER_SIZE:
            # A whole header, the common case: one unpack checks it.
            protocolId, length = _PROTOCOL_ID_AND_LENGTH.unpack_from(data, start + 2)
            if not protocolId and self.minLength <= length <= self.maxLength:
                return HEADER_SIZE + length
        # Each header field is checked as soon as its bytes are here, and a
        # bad one named.
        if end - start < 4:
            return None
        if data[start + 2] or data[start + 3]:
            raise BadFrame(
                "{} protocol id is {}, not 0".format(
                    self.wireName, data[start + 2] << 8 | data[start + 3]
                )
            )
        if end - start < HEADER_SIZE:
            return None
        length = data[start + 4] << 8 | data[start + 5]
        if not self.minLength <= length <= self.maxLength:
            raise BadFrame(
                f"{self.wireName} length field is {length}, "
                f"not {self.minLength}..{self.maxLength}"
            )
        return HEADER_SIZE + length


@implementer(IPipelining)
class TransactionIds:
    """
    Modbus TCP's transaction id names the request a response answers: on the
    target connection every request carries an id unique on it, and each
    response is matched by its id and given back its client's own. So a
    late or repeated answer is recognised and dropped, clients that chose
    the same ids (pymodbus clients all start at 1) are told apart, and
    several requests can be in flight at once (C{--pipeline}).

    @param framer: the response framer class, which passes every response on.
    """

    def __init__(self, framer):
        self.framer = framer

    def buildResponseFramer(self, receiver):
        return self.framer(receiver)

    def requestWithId(self, request, wireId):
        return wireId.to_bytes(2, "big") + request[2:]

    def responseId(self, response):
        return response[0] << 8 | response[1]

    def responseFor(self, response, request):
        return request[:2] + response[2:]


def exceptionResponse(request, code):
    """
    A Modbus exception response to C{request}: same transaction id and unit
    id, the function code with its high bit set, then C{code}.
    """
    return request[:4] + pack(">HBBB", 3, request[6], request[7] | 0x80, code)


def gatewayExceptionCode(error):
    """
    The exception code a gateway answers a failed round trip with: 0x0A
    when there is no connection to the target, 0x0B when it did not answer.
    """
    if isinstance(error, TargetUnavailable):
        return GATEWAY_PATH_UNAVAILABLE
    return GATEWAY_TARGET_FAILED_TO_RESPOND


def describeADU(adu):
    """
    C{tid=0001 unit=1 fc=3} for verbose logs.
    """
    if len(adu) < 8:
        # No answer at all (a broadcast write), or too short to say more.
        return f"{len(adu)} bytes"
    return f"tid={adu[:2].hex()} unit={adu[6]} fc={adu[7]}"


class Modbus(ApplicationProtocol):
    name = "modbus"
    description = "Modbus TCP: MBAP header (transaction id, protocol 0, length) + PDU"
    requestFramer = ModbusTCPReceiver
    responseFramer = ModbusTCPReceiver
    pipelining = TransactionIds(ModbusTCPReceiver)

    frames = ModbusTCPFrames()

    def routingKey(self, request):
        """
        The unit id (C{--route}).
        """
        return self.frames.unit(request)

    def errorResponse(self, request, error):
        return exceptionResponse(request, gatewayExceptionCode(error))

    def describe(self, message):
        return describeADU(message)


application = Modbus()
