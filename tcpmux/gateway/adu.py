# -*- test-case-name: tests.test_gateway -*-
"""
The unit id and PDU of a Modbus message, in each of the three framings
tcpmux speaks, so that gateway features are written once.

A PDU is the function code and its data. L{ModbusFrames.build} makes a
message in the same framing as another (a request), with its transaction
id, for a given unit and PDU.
"""

from struct import pack

from tcpmux.protocols.crc import crcBytes, withCRC


class ModbusTCPFrames:
    """
    C{modbus}: MBAP header (transaction id, protocol 0, length, unit id),
    then the PDU.
    """

    def unit(self, message):
        return message[6]

    def pdu(self, message):
        return message[7:]

    def build(self, like, unit, pdu):
        """
        A message with C{like}'s transaction id, for C{unit}, carrying
        C{pdu}.
        """
        return like[:2] + pack(">HHB", 0, len(pdu) + 1, unit) + pdu


class RTUOverTCPFrames(ModbusTCPFrames):
    """
    C{modbus-rtu}: MBAP header, PDU, then a CRC-16 over the unit id and PDU.
    """

    def pdu(self, message):
        return message[7:-2]

    def build(self, like, unit, pdu):
        body = bytes((unit,)) + pdu
        return like[:2] + pack(">HH", 0, len(body) + 2) + body + crcBytes(body)


class SerialFrames:
    """
    C{modbus-serial}: address, PDU, CRC-16; no transaction id.
    """

    def unit(self, message):
        return message[0]

    def pdu(self, message):
        return message[1:-2]

    def build(self, like, unit, pdu):
        return withCRC(bytes((unit,)) + pdu)
