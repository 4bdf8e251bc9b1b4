"""
Modbus helpers shared by the tests: Modbus TCP messages built and split by
hand, the CRC by its definition, and pymodbus clients over real TCP.

They are deliberately independent of tcpmux's own framers, so that what the
tests check is what crosses the wire.
"""

import struct

from pymodbus.client import ModbusTcpClient


# -- Modbus TCP messages


def adu(tid, unit, pdu, protocol=0):
    """
    An MBAP header for C{pdu}, then C{pdu}.
    """
    return struct.pack(">HHHB", tid, protocol, len(pdu) + 1, unit) + pdu


def readRequest(tid, address, unit=1):
    """
    Read one holding register (function 3) at C{address}.
    """
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, 3, address, 1)


def readResponse(tid, value, unit=1):
    """
    The answer to L{readRequest}: one register holding C{value}.
    """
    return struct.pack(">HHHBBBH", tid, 0, 5, unit, 3, 2, value)


def exceptionResponse(tid, code, function=3, unit=1):
    """
    A Modbus exception answer with exception code C{code}.
    """
    return struct.pack(">HHHBBB", tid, 0, 3, unit, function | 0x80, code)


def splitModbus(buffer):
    """
    Whole ADUs at the start of C{buffer}, and what is left.
    """
    messages = []
    while len(buffer) >= 6:
        end = 6 + struct.unpack(">H", buffer[4:6])[0]
        if len(buffer) < end:
            break
        messages.append(buffer[:end])
        buffer = buffer[end:]
    return messages, buffer


def referenceCRC(data):
    """
    CRC-16/MODBUS bit by bit, straight from the definition.
    """
    crc = 0xFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            if crc & 1:
                crc = (crc >> 1) ^ 0xA001
            else:
                crc >>= 1
    return crc


# -- pymodbus clients


def clientSession(port, index, rounds=5):
    """
    One pymodbus client: write its own registers, read them back, several
    times; return what it read.
    """
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
    assert client.connect(), "cannot connect to tcpmux"
    seen = []
    try:
        base = index * 10
        for round_ in range(rounds):
            values = [index * 100 + round_, round_, index]
            written = client.write_registers(base, values, device_id=1)
            assert not written.isError(), written
            read = client.read_holding_registers(base, count=3, device_id=1)
            assert not read.isError(), read
            seen.append(list(read.registers))
    finally:
        client.close()
    return seen
