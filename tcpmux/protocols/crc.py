# -*- test-case-name: tests.test_modbus_serial -*-
"""
CRC-16/MODBUS, the check that ends every Modbus RTU frame.

Polynomial 0x8005 reflected (0xA001), initial value 0xFFFF, no final XOR;
on the wire the low byte comes first. Table-driven: one lookup per byte.
"""

from struct import pack


def _table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc16(data):
    """
    The CRC-16/MODBUS of C{data}, as an integer.
    """
    crc = 0xFFFF
    table = _TABLE
    for byte in data:
        crc = (crc >> 8) ^ table[(crc ^ byte) & 0xFF]
    return crc


def crcBytes(data):
    """
    The two CRC bytes that follow C{data} on the wire, low byte first.
    """
    return pack("<H", crc16(data))


def withCRC(data):
    """
    C{data} followed by its CRC.
    """
    return data + crcBytes(data)


def checkCRC(frame):
    """
    Whether the last two bytes of C{frame} are the CRC of the rest.
    """
    return len(frame) >= 2 and crc16(frame[:-2]) == (frame[-2] | frame[-1] << 8)
