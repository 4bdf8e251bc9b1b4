# -*- test-case-name: tests.test_modbus_rtu -*-
"""
C{modbus-rtu}: Modbus TCP framing with an RTU check, as some gateways speak
it (and as the original tcp-multiplexer tool called it).

Wire, in both directions::

    | transaction id: 2 | protocol id: 2 = 0 | length: 2 | unit id: 1 | PDU | CRC: 2 |
                                               `----- unit id + PDU + CRC -----'

The MBAP header is big-endian; its length also counts the trailing
CRC-16/MODBUS (low byte first), which is computed over the unit id and the
PDU. The length thus lies in 4..256 and a frame is at most 262 bytes. A
protocol id other than 0, a length outside 4..256 or a CRC that does not
match is a framing error. Transaction ids are rewritten on the target
connection and responses matched by them, as for C{modbus}; a failed round
trip is answered with a gateway exception response in the same format.
"""

from struct import pack

from tcpmux.framing import ApplicationProtocol
from tcpmux.protocols.crc import checkCRC, crcBytes
from tcpmux.protocols.modbus import (
    HEADER_SIZE,
    ModbusTCPReceiver,
    TransactionIds,
    describeADU,
    exceptionResponse,
    gatewayExceptionCode,
)
from tcpmux.gateway.adu import RTUOverTCPFrames

MIN_LENGTH = 4  # unit id + function code + CRC
MAX_LENGTH = 256  # unit id + the largest PDU (253 bytes) + CRC


class ModbusRTUOverTCPReceiver(ModbusTCPReceiver):
    """
    Cuts a byte stream into MBAP + CRC frames, checks each CRC, and calls
    L{frameReceived} with each good frame, header and CRC included.
    """

    wireName = "Modbus RTU-over-TCP"
    minLength = MIN_LENGTH
    maxLength = MAX_LENGTH
    maxMessageSize = HEADER_SIZE + MAX_LENGTH

    def checkFrame(self, frame):
        if checkCRC(frame[HEADER_SIZE:]):
            return None
        return "bad CRC: got {}, computed {}".format(
            frame[-2:].hex(), crcBytes(frame[HEADER_SIZE:-2]).hex()
        )


def exceptionFrame(request, code):
    """
    A Modbus exception response to C{request} in MBAP + CRC form: same
    transaction id and unit id, the function code with its high bit set,
    C{code}, then the CRC.
    """
    body = exceptionResponse(request, code)[HEADER_SIZE:]
    return request[:4] + pack(">H", len(body) + 2) + body + crcBytes(body)


class ModbusRTUOverTCP(ApplicationProtocol):
    name = "modbus-rtu"
    description = "Modbus MBAP header + PDU + CRC-16 (RTU check over TCP)"
    requestFramer = ModbusRTUOverTCPReceiver
    responseFramer = ModbusRTUOverTCPReceiver
    # The CRC covers the unit id and the PDU, not the MBAP header, so ids
    # are rewritten as for Modbus TCP.
    pipelining = TransactionIds(ModbusRTUOverTCPReceiver)

    frames = RTUOverTCPFrames()

    def routingKey(self, request):
        """
        The unit id (C{--route}).
        """
        return self.frames.unit(request)

    def errorResponse(self, request, error):
        return exceptionFrame(request, gatewayExceptionCode(error))

    def describe(self, message):
        return describeADU(message)


application = ModbusRTUOverTCP()
