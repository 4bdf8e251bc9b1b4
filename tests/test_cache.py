"""
Tests for the Modbus read cache (L{tcpmux.gateway.cache}: C{--cache-ttl},
C{--cache-stale}, C{--cache-items}, C{--cache-warm}).

In memory, the cache drives a fake inner dispatcher that is a register and
coil bank whose answers the test hands out when it likes (in any order, as a
pool or pipeline could), with L{Clock} for time; a hypothesis property test
checks it against a reference model. End to end, real pymodbus clients (and
raw Modbus TCP clients, for a hundred at once) talk through tcpmux to a
device written here that counts the requests it receives.
"""

import struct
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.client import ModbusTcpClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.internet.task import Clock
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from tcpmux import protocols
from tcpmux.errors import TargetTimeout, TargetUnavailable
from tcpmux.gateway.cache import (
    COILS,
    HOLDING_REGISTERS,
    ModbusCache,
    packBits,
    readAnswer,
    readRequest,
    readValues,
    unpackBits,
    writtenItems,
)
from tcpmux.interfaces import IDispatcher, IRoundTrip
from tcpmux.tap import Options
from tests.modbus import adu, splitModbus
from tests.support import buildMultiplexer, startMultiplexer, until

MODBUS = protocols.get("modbus")
MODBUS_RTU = protocols.get("modbus-rtu")
MODBUS_SERIAL = protocols.get("modbus-serial")

SIZE = 64  # registers and coils of the fake devices


# -- PDUs


def readPDU(code, start, quantity):
    return struct.pack(">BHH", code, start, quantity)


def writeRegisterPDU(address, value):
    return struct.pack(">BHH", 6, address, value)


def writeRegistersPDU(start, values):
    return struct.pack(f">BHHB{len(values)}H", 16, start, len(values), 2 * len(values), *values)


def writeCoilPDU(address, on):
    return struct.pack(">BHH", 5, address, 0xFF00 if on else 0)


def writeCoilsPDU(start, values):
    data = packBits(values)
    return struct.pack(">BHHB", 15, start, len(values), len(data)) + data


def maskWritePDU(address, andMask, orMask):
    return struct.pack(">BHHH", 22, address, andMask, orMask)


def readWritePDU(readStart, readQuantity, writeStart, values):
    return struct.pack(
        f">BHHHHB{len(values)}H",
        23,
        readStart,
        readQuantity,
        writeStart,
        len(values),
        2 * len(values),
        *values,
    )


def answerPDU(bank, pdu):
    """
    What a device holding C{bank} answers C{pdu} with (and does to C{bank}).
    """
    code = pdu[0]
    registers, coils = bank["registers"], bank["coils"]
    try:
        if code in (1, 2, 3, 4):
            _, start, quantity = struct.unpack(">BHH", pdu)
            if start + quantity > SIZE:
                return bytes((code | 0x80, 2))
            if code == 1:
                return readAnswer(1, coils[start : start + quantity])
            if code == 2:
                return readAnswer(2, [(a * 7) % 3 == 0 for a in range(start, start + quantity)])
            if code == 3:
                return readAnswer(3, registers[start : start + quantity])
            return readAnswer(4, [(a * 31) & 0xFFFF for a in range(start, start + quantity)])
        if code == 5:
            _, address, value = struct.unpack(">BHH", pdu)
            coils[address] = int(value == 0xFF00)
            return pdu
        if code == 6:
            _, address, value = struct.unpack(">BHH", pdu)
            registers[address] = value
            return pdu
        if code == 15:
            _, start, quantity, size = struct.unpack_from(">BHHB", pdu)
            coils[start : start + quantity] = unpackBits(pdu[6:], quantity)
            return pdu[:5]
        if code == 16:
            _, start, quantity, size = struct.unpack_from(">BHHB", pdu)
            registers[start : start + quantity] = struct.unpack_from(f">{quantity}H", pdu, 6)
            return pdu[:5]
        if code == 22:
            _, address, andMask, orMask = struct.unpack(">BHHH", pdu)
            registers[address] = (registers[address] & andMask) | (orMask & ~andMask & 0xFFFF)
            return pdu
        if code == 23:
            _, rStart, rQuantity, wStart, wQuantity, size = struct.unpack_from(">BHHHHB", pdu)
            registers[wStart : wStart + wQuantity] = struct.unpack_from(f">{wQuantity}H", pdu, 10)
            values = registers[rStart : rStart + rQuantity]
            return struct.pack(f">BB{rQuantity}H", 23, 2 * rQuantity, *values)
    except (struct.error, IndexError):
        return bytes((code | 0x80, 3))
    return bytes((code | 0x80, 1))


def newBank():
    return {"registers": [1000 + a for a in range(SIZE)], "coils": [a % 3 == 0 for a in range(SIZE)]}


# -- a fake inner dispatcher: the device, answering when the test says


@implementer(IRoundTrip)
class FakeTrip:
    sent = False
    executed = False
    answer = None

    def __init__(self, request):
        self.request = request
        self.result = Deferred()

    def withdraw(self):
        if not self.sent:
            # (As the queue does: a withdrawn round trip fires with None.)
            self.result.callback(None)


@implementer(IDispatcher)
class FakeDevice:
    """
    A register and coil bank behind a dispatcher. With C{auto}, each
    request is carried out and answered at once; else it waits in
    C{waiting} until the test calls L{execute} (the device acts on it) and
    L{deliver} (its answer arrives), or L{fail}.
    """

    def __init__(self, application=MODBUS, auto=True):
        self.frames = application.frames
        self.bank = newBank()
        self.auto = auto
        self.requests = []
        self.waiting = []

    def dispatch(self, request, client, partReceived=None):
        self.requests.append(request)
        trip = FakeTrip(request)
        if self.auto:
            self.execute(trip)
            self.deliver(trip)
        else:
            self.waiting.append(trip)
        return trip

    def execute(self, trip):
        trip.sent = trip.executed = True
        frames = self.frames
        trip.answer = frames.build(
            trip.request, frames.unit(trip.request), answerPDU(self.bank, frames.pdu(trip.request))
        )

    def deliver(self, trip):
        if trip in self.waiting:
            self.waiting.remove(trip)
        trip.result.callback(trip.answer)

    def fail(self, trip, error):
        if trip in self.waiting:
            self.waiting.remove(trip)
        trip.sent = True
        trip.result.errback(Failure(error))

    def answerAll(self):
        while self.waiting:
            trip = self.waiting[0]
            if not trip.executed:
                self.execute(trip)
            self.deliver(trip)

    def reads(self):
        return sum(1 for r in self.requests if self.frames.pdu(r)[0] in (1, 2, 3, 4))


def results(trip):
    """
    What C{trip}'s result fired with so far (a list of at most one).
    """
    seen = []
    trip.result.addBoth(seen.append)
    return seen


class Harness:
    """
    A cache in front of a L{FakeDevice}, on a L{Clock}.
    """

    def __init__(self, application=MODBUS, auto=True, ttl=1.0, **kwargs):
        self.application = application
        self.frames = application.frames
        self.clock = Clock()
        self.clock.advance(1000)
        self.device = FakeDevice(application, auto)
        self.cache = ModbusCache(self.frames, self.clock, ttl, **kwargs)(self.device)
        self.events = []
        self.cache.log = Logger(observer=self.events.append)
        self.tid = 0

    def request(self, pdu, unit=1):
        self.tid += 1
        return self.frames.build(adu(self.tid, unit, b"\x00"), unit, pdu)

    def send(self, pdu, unit=1):
        """
        Dispatch C{pdu}; return the request and what its round trip fired
        with so far (a list).
        """
        request = self.request(pdu, unit)
        trip = self.cache.dispatch(request, "client")
        return request, trip, results(trip)

    def ask(self, pdu, unit=1):
        """
        Dispatch C{pdu}, expecting an answer at once: return the answer's
        PDU, after checking it carries the request's transaction id and unit.
        """
        request, trip, seen = self.send(pdu, unit)
        [answer] = seen
        assert isinstance(answer, bytes), answer
        self.checkIds(request, answer)
        return self.frames.pdu(answer)

    def checkIds(self, request, answer):
        if self.application is not MODBUS_SERIAL:
            assert answer[:2] == request[:2], (answer, request)
        assert self.frames.unit(answer) == self.frames.unit(request)
        if self.application is not MODBUS:
            # Whole frames, CRC included: the framer cuts them again.
            framed = []
            framer = self.application.buildResponseFramer(_Collect(framed))
            if self.application is MODBUS_SERIAL:
                framer.expectResponseTo(request)
            framer.dataReceived(answer)
            assert framed == [answer], (framed, answer)


class _Collect:
    def __init__(self, into):
        self.into = into

    def startReceiving(self, framer):
        pass

    def messageReceived(self, message):
        self.into.append(message)

    def framingError(self, reason, reply):
        raise AssertionError(reason)


def registers(pdu):
    return list(struct.unpack_from(f">{pdu[1] // 2}H", pdu, 2))


# -- PDUs


class PDUTests(SynchronousTestCase):
    def test_specExample(self):
        """
        The Modbus specification's example: coils 20-38 answered with bytes
        CD 6B 05; coil 20 is the lowest bit of the first byte.
        """
        bits = unpackBits(b"\xcd\x6b\x05", 19)
        self.assertEqual(bits[:8], [1, 0, 1, 1, 0, 0, 1, 1])
        self.assertEqual(bits[8:16], [1, 1, 0, 1, 0, 1, 1, 0])
        self.assertEqual(bits[16:], [1, 0, 1])
        self.assertEqual(packBits(bits), b"\xcd\x6b\x05")
        self.assertEqual(readValues(b"\x01\x03\xcd\x6b\x05", 1, 19), bits)

    @given(st.lists(st.booleans(), min_size=1, max_size=2000))
    def test_bitsRoundTrip(self, values):
        """
        Packing then unpacking gives the values back; the padding of the
        last byte is zeros.
        """
        packed = packBits(values)
        self.assertEqual(len(packed), (len(values) + 7) // 8)
        self.assertEqual(unpackBits(packed, len(values)), [int(v) for v in values])
        if len(values) % 8:
            self.assertEqual(packed[-1] >> (len(values) % 8), 0)

    def test_readValues(self):
        """
        Only a normal answer of the right size gives values.
        """
        self.assertEqual(readValues(b"\x03\x04\x00\x01\x00\x02", 3, 2), [1, 2])
        self.assertIsNone(readValues(b"\x83\x02", 3, 2))  # exception
        self.assertIsNone(readValues(b"\x03\x02\x00\x01", 3, 2))  # too few
        self.assertIsNone(readValues(b"\x03\x04\x00\x01\x00", 3, 2))  # cut short
        self.assertIsNone(readValues(b"\x04\x04\x00\x01\x00\x02", 3, 2))  # other code
        self.assertIsNone(readValues(b"\x01\x01\x05", 1, 9))  # 9 coils need 2 bytes
        self.assertEqual(readValues(b"\x02\x02\x05\x01", 2, 9), [1, 0, 1, 0, 0, 0, 0, 0, 1])
        self.assertIsNone(readValues(b"", 3, 1))

    def test_readRequest(self):
        self.assertEqual(readRequest(readPDU(3, 10, 125)), (3, 10, 125))
        self.assertEqual(readRequest(readPDU(1, 0, 2000)), (1, 0, 2000))
        self.assertIsNone(readRequest(readPDU(3, 10, 126)))
        self.assertIsNone(readRequest(readPDU(1, 0, 2001)))
        self.assertIsNone(readRequest(readPDU(3, 10, 0)))
        self.assertIsNone(readRequest(readPDU(3, 65535, 2)))
        self.assertEqual(readRequest(readPDU(3, 65535, 1)), (3, 65535, 1))
        self.assertIsNone(readRequest(readPDU(3, 1, 1) + b"\x00"))

    def test_writtenItems(self):
        self.assertEqual(writtenItems(writeCoilPDU(7, True)), (COILS, 7, 8))
        self.assertEqual(writtenItems(writeRegisterPDU(4, 9)), (HOLDING_REGISTERS, 4, 5))
        self.assertEqual(writtenItems(writeCoilsPDU(3, [1] * 10)), (COILS, 3, 13))
        self.assertEqual(writtenItems(writeRegistersPDU(8, [1, 2, 3])), (HOLDING_REGISTERS, 8, 11))
        self.assertEqual(writtenItems(maskWritePDU(9, 0xFF, 0)), (HOLDING_REGISTERS, 9, 10))
        self.assertEqual(
            writtenItems(readWritePDU(0, 10, 20, [1, 2])), (HOLDING_REGISTERS, 20, 22)
        )
        # Too short to say: the whole table.
        self.assertEqual(writtenItems(b"\x10\x00"), (HOLDING_REGISTERS, 0, 0x10000))
        self.assertEqual(writtenItems(b"\x05"), (COILS, 0, 0x10000))


# -- in memory


class CacheTests(SynchronousTestCase):
    def test_interface(self):
        h = Harness()
        verifyObject(IDispatcher, h.cache)
        request, trip, seen = h.send(readPDU(3, 0, 1))
        verifyObject(IRoundTrip, trip)
        h2 = Harness(auto=False)
        request, trip, seen = h2.send(readPDU(3, 0, 1))
        verifyObject(IRoundTrip, trip)

    def test_subRange(self):
        """
        A read of 3-5 right after a read of 0-9 is answered from the cache,
        with the client's own transaction id.
        """
        h = Harness()
        self.assertEqual(registers(h.ask(readPDU(3, 0, 10))), list(range(1000, 1010)))
        self.assertEqual(h.device.reads(), 1)
        self.assertEqual(registers(h.ask(readPDU(3, 3, 3))), [1003, 1004, 1005])
        self.assertEqual(h.device.reads(), 1)
        self.assertEqual((h.cache.hits, h.cache.misses), (1, 1))
        # One item beyond what was read: the device.
        h.ask(readPDU(3, 8, 3))
        self.assertEqual(h.device.reads(), 2)
        # The union of two reads answers a read spanning both.
        h.ask(readPDU(3, 0, 11))
        self.assertEqual(h.device.reads(), 2)

    def test_tablesAndUnitsApart(self):
        """
        Each table and each unit has its own items.
        """
        h = Harness()
        h.ask(readPDU(3, 0, 10))
        h.ask(readPDU(4, 0, 10))
        h.ask(readPDU(3, 0, 10), unit=2)
        h.ask(readPDU(1, 0, 10))
        h.ask(readPDU(2, 0, 10))
        self.assertEqual(h.device.reads(), 5)
        self.assertEqual(registers(h.ask(readPDU(4, 2, 2))), [62, 93])
        self.assertEqual(h.device.reads(), 5)
        self.assertEqual(len(h.cache), 50)

    def test_coils(self):
        """
        Coils and discrete inputs are kept bit by bit: a read of any part of
        what was read is packed again, from its own first bit.
        """
        h = Harness()
        coils = h.device.bank["coils"]
        h.ask(readPDU(1, 0, 40))
        for start, quantity in ((3, 10), (0, 40), (17, 1), (8, 8), (5, 19)):
            pdu = h.ask(readPDU(1, start, quantity))
            self.assertEqual(
                pdu, readAnswer(1, [int(c) for c in coils[start : start + quantity]])
            )
            self.assertEqual(unpackBits(pdu[2:], quantity), coils[start : start + quantity])
        self.assertEqual(h.device.reads(), 1)
        h.ask(readPDU(2, 0, 20))
        pdu = h.ask(readPDU(2, 1, 9))
        self.assertEqual(
            unpackBits(pdu[2:], 9), [int((a * 7) % 3 == 0) for a in range(1, 10)]
        )
        self.assertEqual(h.device.reads(), 2)

    def test_coilWrites(self):
        """
        Writes of one coil (5) and of several (15) forget exactly the coils
        they write.
        """
        h = Harness()
        h.ask(readPDU(1, 0, 40))
        h.ask(writeCoilPDU(12, True))
        h.ask(readPDU(1, 0, 12))
        h.ask(readPDU(1, 13, 27))
        self.assertEqual(h.device.reads(), 1)
        pdu = h.ask(readPDU(1, 10, 5))
        self.assertEqual(h.device.reads(), 2)
        self.assertEqual(unpackBits(pdu[2:], 5)[2], 1)
        h.ask(writeCoilsPDU(20, [True, False, True]))
        h.ask(readPDU(1, 0, 20))
        h.ask(readPDU(1, 23, 17))
        self.assertEqual(h.device.reads(), 2)
        pdu = h.ask(readPDU(1, 19, 5))
        self.assertEqual(unpackBits(pdu[2:], 5)[1:4], [1, 0, 1])
        self.assertEqual(h.device.reads(), 3)
        # Coils are not registers: register 12 is still cached.
        h.ask(readPDU(3, 10, 5))
        h.ask(writeCoilPDU(11, False))
        h.ask(readPDU(3, 10, 5))
        self.assertEqual(h.device.reads(), 4)

    def test_registerWrites(self):
        """
        6, 16, 22 and 23 forget exactly the registers they write; their
        answers are the device's.
        """
        h = Harness()
        h.ask(readPDU(3, 0, 30))
        cases = [
            (writeRegisterPDU(4, 7), [4]),
            (writeRegistersPDU(10, [1, 2, 3]), [10, 11, 12]),
            (maskWritePDU(20, 0x00FF, 0x1200), [20]),
            (readWritePDU(0, 2, 25, [9, 9]), [25, 26]),
        ]
        for pdu, written in cases:
            before = h.device.reads()
            self.assertEqual(h.ask(pdu)[0], pdu[0])
            for address in range(30):
                h.ask(readPDU(3, address, 1))
                went = h.device.reads() - before
                self.assertEqual(
                    went, sum(1 for a in written if a <= address), (pdu, address)
                )
        self.assertEqual(registers(h.ask(readPDU(3, 4, 1))), [7])
        self.assertEqual(registers(h.ask(readPDU(3, 20, 1))), [(1020 & 0xFF) | 0x1200])

    def test_writeAnswerNeverCached(self):
        """
        The same write twice goes to the device twice.
        """
        h = Harness()
        h.ask(writeRegisterPDU(4, 7))
        h.ask(writeRegisterPDU(4, 7))
        self.assertEqual(len(h.device.requests), 2)

    def test_vendorCodes(self):
        """
        Vendor function codes (and 8, 43, ...) are forwarded every time and
        forget nothing.
        """
        h = Harness()
        h.ask(readPDU(3, 0, 10))
        for pdu in (b"\x41\x00\x01", b"\x41\x00\x01", b"\x08\x00\x00\x12\x34", b"\x2b\x0e\x01\x00"):
            self.assertEqual(h.ask(pdu), bytes((pdu[0] | 0x80, 1)))
        self.assertEqual(len(h.device.requests), 5)
        h.ask(readPDU(3, 0, 10))
        self.assertEqual(len(h.device.requests), 5)

    def test_invalidReadsForwarded(self):
        """
        A read the cache cannot understand goes to the device, every time.
        """
        h = Harness()
        for _ in range(2):
            self.assertEqual(h.ask(readPDU(3, 0, 200)), b"\x83\x02")
            self.assertEqual(h.ask(b"\x03\x00"), b"\x83\x03")
        self.assertEqual(len(h.device.requests), 4)
        self.assertEqual(len(h.cache), 0)

    def test_exceptionNotCached(self):
        """
        An exception answer is passed on, and never served again.
        """
        h = Harness()
        for _ in range(3):
            self.assertEqual(h.ask(readPDU(3, SIZE - 1, 2)), b"\x83\x02")
        self.assertEqual(h.device.reads(), 3)
        self.assertEqual(len(h.cache), 0)

    def test_ttl(self):
        """
        Items answer reads for less than the TTL after they were read.
        """
        h = Harness(ttl=2.0)
        h.ask(readPDU(3, 0, 10))
        h.clock.advance(1.999)
        h.ask(readPDU(3, 0, 10))
        self.assertEqual(h.device.reads(), 1)
        h.clock.advance(0.001)
        h.ask(readPDU(3, 0, 10))
        self.assertEqual(h.device.reads(), 2)
        # The oldest item decides.
        h.clock.advance(1)
        h.ask(readPDU(3, 9, 5))
        h.clock.advance(1.5)
        h.ask(readPDU(3, 10, 4))
        self.assertEqual(h.device.reads(), 3)
        h.ask(readPDU(3, 8, 2))
        self.assertEqual(h.device.reads(), 4)

    def test_eviction(self):
        """
        At most C{maxItems} items are kept; the least recently read go first.
        """
        h = Harness(maxItems=20)
        h.ask(readPDU(3, 0, 10))
        h.ask(readPDU(3, 10, 10))
        h.ask(readPDU(3, 0, 10))  # a hit does not renew
        h.ask(readPDU(3, 5, 10))  # renews 10..14; 5..9 were read
        self.assertEqual(h.device.reads(), 2)
        h.ask(readPDU(3, 30, 10))
        self.assertEqual(len(h.cache), 20)
        self.assertEqual(h.cache.evicted, 10)
        h.ask(readPDU(3, 10, 10))
        self.assertEqual(h.device.reads(), 3)
        h.ask(readPDU(3, 0, 1))
        self.assertEqual(h.device.reads(), 4)

    def test_coalescing(self):
        """
        Identical reads on their way share one round trip; each gets the
        answer under its own transaction id. A different read does not.
        """
        h = Harness(auto=False)
        sent = [h.send(readPDU(3, 0, 10)) for _ in range(5)]
        other = h.send(readPDU(3, 0, 9))
        other2 = h.send(readPDU(3, 0, 10), unit=2)
        self.assertEqual(len(h.device.waiting), 3)
        self.assertEqual((h.cache.misses, h.cache.coalesced), (3, 4))
        h.device.answerAll()
        for request, trip, seen in sent:
            [answer] = seen
            h.checkIds(request, answer)
            self.assertEqual(registers(h.frames.pdu(answer)), list(range(1000, 1010)))
        self.assertEqual(len(other[2]), 1)
        self.assertEqual(len(other2[2]), 1)
        # Once answered, no longer shared: the items answer.
        h.send(readPDU(3, 0, 10))
        self.assertEqual(h.device.waiting, [])
        self.assertEqual(h.cache.hits, 1)

    def test_coalescedFailure(self):
        """
        A failure reaches everyone who shared the round trip.
        """
        h = Harness(auto=False)
        sent = [h.send(readPDU(3, 0, 10)) for _ in range(3)]
        h.device.fail(h.device.waiting[0], TargetTimeout("no answer"))
        for request, trip, seen in sent:
            seen[0].trap(TargetTimeout)

    def test_withdraw(self):
        """
        A client that withdraws does not withdraw the others' read; when
        every one has, the read is withdrawn and no longer shared.
        """
        h = Harness(auto=False)
        (_, a, seenA), (_, b, seenB) = h.send(readPDU(3, 0, 10)), h.send(readPDU(3, 0, 10))
        trip = h.device.waiting[0]
        a.withdraw()
        a.withdraw()
        self.assertFalse(trip.result.called)
        b.withdraw()
        self.assertTrue(trip.result.called)
        h.device.waiting.remove(trip)
        _, c, seenC = h.send(readPDU(3, 0, 10))
        self.assertEqual(len(h.device.waiting), 1)
        h.device.answerAll()
        self.assertEqual(len(seenC), 1)

    def test_withdrawAfterSent(self):
        """
        A read already sent when its clients withdraw still refreshes the
        items when its answer comes.
        """
        h = Harness(auto=False)
        _, a, seen = h.send(readPDU(3, 0, 10))
        h.device.execute(h.device.waiting[0])
        a.withdraw()
        h.device.answerAll()
        h.ask(readPDU(3, 0, 10))
        self.assertEqual(h.device.reads(), 1)

    def test_writeWhileReading(self):
        """
        A read on its way while a write of its items is does not refresh
        them, whichever the device carried out first, and a read that
        comes once the write is done does not share it.
        """
        for order in ("read first", "write first"):
            h = Harness(auto=False)
            _, read, readSeen = h.send(readPDU(3, 0, 10))
            _, write, writeSeen = h.send(writeRegisterPDU(4, 7))
            readTrip, writeTrip = h.device.waiting
            if order == "read first":
                h.device.execute(readTrip)
                h.device.execute(writeTrip)
            else:
                h.device.execute(writeTrip)
                h.device.execute(readTrip)
            h.device.deliver(writeTrip)
            # The write is done: a read now must see it.
            _, later, laterSeen = h.send(readPDU(3, 0, 10))
            self.assertEqual(len(h.device.waiting), 2)
            h.device.answerAll()
            self.assertEqual(registers(h.frames.pdu(laterSeen[0]))[4], 7)
            _, again, againSeen = h.send(readPDU(3, 4, 1))
            self.assertEqual(registers(h.frames.pdu(againSeen[0])), [7])

    def test_readDuringPendingWrite(self):
        """
        A read sent while a write of its items is on its way, answered
        before the write is, does not refresh them.
        """
        h = Harness(auto=False)
        _, write, writeSeen = h.send(writeRegisterPDU(4, 7))
        _, read, readSeen = h.send(readPDU(3, 0, 10))
        writeTrip, readTrip = h.device.waiting
        h.device.execute(readTrip)
        h.device.deliver(readTrip)
        self.assertEqual(len(h.cache), 0)
        h.device.execute(writeTrip)
        h.device.deliver(writeTrip)
        h.send(readPDU(3, 4, 1))
        self.assertEqual(len(h.device.waiting), 1)

    def test_otherItemsStillShared(self):
        """
        A write forgets nothing but its items: a read of others on its way
        is still shared and still refreshes them.
        """
        h = Harness(auto=False)
        h.send(readPDU(3, 0, 4))
        h.send(writeRegisterPDU(4, 7))
        h.send(writeRegisterPDU(4, 7), unit=2)
        h.send(readPDU(3, 0, 4))
        self.assertEqual(h.cache.coalesced, 1)
        h.device.answerAll()
        h.send(readPDU(3, 0, 4))
        self.assertEqual(h.cache.hits, 1)

    def test_broadcastWrite(self):
        """
        A write to unit 0 forgets the item in every unit.
        """
        h = Harness()
        h.ask(readPDU(3, 0, 10), unit=1)
        h.ask(readPDU(3, 0, 10), unit=2)
        h.ask(writeRegisterPDU(4, 7), unit=0)
        h.ask(readPDU(3, 0, 4), unit=1)
        h.ask(readPDU(3, 5, 5), unit=2)
        self.assertEqual(h.device.reads(), 2)
        h.ask(readPDU(3, 4, 1), unit=1)
        h.ask(readPDU(3, 4, 1), unit=2)
        self.assertEqual(h.device.reads(), 4)

    def test_answeredInside(self):
        """
        A gateway inside that answers at once (read-only, a refusal): the
        read is not left registered as on its way.
        """
        h = Harness()
        h.ask(readPDU(3, SIZE, 1))
        self.assertEqual(h.cache._fetches, {})
        h.ask(writeRegisterPDU(1, 1))
        self.assertEqual(h.cache._writing, [])

    def test_stale(self):
        """
        With C{stale}, a read that fails is answered from items up to that
        old; older or missing items, or no C{stale}: the failure.
        """
        h = Harness(auto=False, ttl=1.0, stale=10.0)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        h.clock.advance(5)
        request, trip, seen = h.send(readPDU(3, 2, 3))
        h.device.fail(h.device.waiting[0], TargetUnavailable("refused"))
        self.assertEqual(registers(h.frames.pdu(seen[0])), [1002, 1003, 1004])
        h.checkIds(request, seen[0])
        self.assertEqual(h.cache.stale, 1)
        # Items beyond what was read: the failure.
        request, trip, seen = h.send(readPDU(3, 8, 3))
        h.device.fail(h.device.waiting[0], TargetTimeout("no answer"))
        seen[0].trap(TargetTimeout)
        # Too old.
        h.clock.advance(5.001)
        request, trip, seen = h.send(readPDU(3, 2, 3))
        h.device.fail(h.device.waiting[0], TargetTimeout("no answer"))
        seen[0].trap(TargetTimeout)
        self.assertEqual(h.cache.stale, 1)
        # Without stale.
        h = Harness(auto=False, ttl=1.0)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        h.clock.advance(2)
        request, trip, seen = h.send(readPDU(3, 2, 3))
        h.device.fail(h.device.waiting[0], TargetUnavailable("refused"))
        seen[0].trap(TargetUnavailable)

    def test_staleCoalesced(self):
        """
        Everyone who shared a failed read gets the stale answer, under
        their own transaction id; each counts.
        """
        h = Harness(auto=False, ttl=1.0, stale=10.0)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        h.clock.advance(2)
        sent = [h.send(readPDU(3, 0, 10)) for _ in range(3)]
        h.device.fail(h.device.waiting[0], TargetTimeout("no answer"))
        for request, trip, seen in sent:
            h.checkIds(request, seen[0])
        self.assertEqual(h.cache.stale, 3)

    def test_staleNotAfterWrite(self):
        """
        Stale answers never bring back what a write replaced.
        """
        h = Harness(auto=False, ttl=1.0, stale=10.0)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        h.send(writeRegisterPDU(4, 7))
        h.device.answerAll()
        h.clock.advance(2)
        request, trip, seen = h.send(readPDU(3, 3, 3))
        h.device.fail(h.device.waiting[0], TargetUnavailable("refused"))
        seen[0].trap(TargetUnavailable)

    def test_staleLogRateLimited(self):
        """
        Stale answers are logged once per window, with a count of those in
        between.
        """
        h = Harness(auto=False, ttl=1.0, stale=100.0)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        for _ in range(5):
            h.clock.advance(2)
            h.send(readPDU(3, 0, 10))
            h.device.fail(h.device.waiting[0], TargetUnavailable("refused"))
        h.clock.advance(10)
        h.send(readPDU(3, 0, 10))
        h.device.fail(h.device.waiting[0], TargetUnavailable("refused"))
        warned = [e for e in h.events if "stale" in e["log_format"]]
        self.assertEqual(len(warned), 2)
        self.assertEqual(warned[1]["more"], " (4 more since the last such line)")
        self.assertEqual(h.cache.stale, 6)

    def test_counterLog(self):
        """
        The counters are logged at debug level by the first request a
        minute or more after the last time; no timer is set.
        """
        h = Harness()
        h.ask(readPDU(3, 0, 10))
        h.ask(readPDU(3, 0, 10))
        h.clock.advance(59)
        h.ask(readPDU(3, 20, 1))
        self.assertEqual(h.events, [])
        h.clock.advance(1)
        h.ask(readPDU(3, 20, 1))
        [event] = h.events
        # (Counted before the request that logs them.)
        self.assertEqual((event["hits"], event["misses"], event["items"]), (1, 2, 11))
        self.assertEqual(h.clock.getDelayedCalls(), [])
        self.assertEqual(
            h.cache.counters(),
            {"hits": 1, "misses": 3, "coalesced": 0, "stale": 0, "refreshes": 0, "evicted": 0, "items": 11},
        )

    def test_warm(self):
        """
        With C{warm}, a hit on items older than half the TTL also sends the
        read to the device, once; its answer renews the items.
        """
        h = Harness(auto=False, ttl=2.0, warm=True)
        h.send(readPDU(3, 0, 10))
        h.device.answerAll()
        h.clock.advance(0.9)
        h.send(readPDU(3, 0, 10))
        self.assertEqual(h.device.waiting, [])
        h.clock.advance(0.1)
        _, trip, seen = h.send(readPDU(3, 0, 10))
        self.assertEqual(len(seen), 1)  # answered from the cache at once
        _, trip, seen = h.send(readPDU(3, 0, 10))
        self.assertEqual(len(h.device.waiting), 1)
        self.assertEqual(h.cache.refreshes, 1)
        h.device.answerAll()
        h.clock.advance(1.5)  # 2.5s after the first read, 1.5s after the refresh
        h.send(readPDU(3, 0, 10))
        self.assertEqual(h.cache.hits, 4)
        self.assertEqual(h.cache.misses, 1)
        # Older than half the TTL again: another refresh.
        self.assertEqual(len(h.device.waiting), 1)
        self.assertEqual(h.cache.refreshes, 2)

    def test_otherFramings(self):
        """
        modbus-rtu and modbus-serial answers from the cache are whole
        frames with a good CRC, under the client's id.
        """
        for application in (MODBUS_RTU, MODBUS_SERIAL):
            h = Harness(application)
            h.ask(readPDU(3, 0, 10))
            self.assertEqual(registers(h.ask(readPDU(3, 2, 2))), [1002, 1003])
            h.ask(readPDU(1, 0, 20))
            h.ask(readPDU(1, 3, 9))
            self.assertEqual(h.device.reads(), 2)

    def test_coalescedOtherFramings(self):
        for application in (MODBUS_RTU, MODBUS_SERIAL):
            h = Harness(application, auto=False)
            sent = [h.send(readPDU(3, 0, 10)) for _ in range(3)]
            h.device.answerAll()
            for request, trip, seen in sent:
                h.checkIds(request, seen[0])


# -- the property


class Model:
    """
    The reference model of the property: the device applies writes in the
    order it carries them out; each write writes a value no other write
    does. A read sent after a write was done (answered, or failed after the
    device carried it out) must return, for each register, that write's
    value or one the device wrote after it.
    """

    def __init__(self):
        self.history = [[1000 + a] for a in range(SIZE)]  # values, in the device's order
        self.floor = [0] * SIZE  # per register: the lowest allowed index in history

    def applied(self, bank, written):
        for address in written:
            self.history[address].append(bank["registers"][address])

    def done(self, written):
        for address in written:
            self.floor[address] = len(self.history[address]) - 1


REGISTERS = 4  # few, so that reads and writes overlap often


def _weighted(*choices):
    """
    One of C{choices} (C{(weight, strategy)} pairs), the heavier more often.
    """
    return st.one_of(*[strategy for weight, strategy in choices for _ in range(weight)])


# Which of the requests waiting at the device an operation picks (modulo
# how many wait): uniformly, where integers() would favour the first, and
# the device would then mostly answer in order.
INDEX = st.sampled_from(range(8))

operations = st.lists(
    _weighted(
        (3, st.tuples(st.just("read"), st.integers(0, REGISTERS - 1), st.integers(1, 3))),
        (
            2,
            st.tuples(
                st.just("write"),
                st.sampled_from((6, 16, 22, 23)),
                st.integers(0, REGISTERS - 1),
                st.integers(1, 2),
            ),
        ),
        (2, st.tuples(st.just("execute"), INDEX)),
        (3, st.tuples(st.just("deliver"), INDEX)),
        (1, st.tuples(st.just("fail"), INDEX, st.booleans())),
        (1, st.tuples(st.just("withdraw"), INDEX)),
        (1, st.tuples(st.just("tick"), st.sampled_from((0.1, 0.5, 1.0, 3.0)))),
    ),
    min_size=20,
    max_size=60,
)


class PropertyTests(SynchronousTestCase):
    @settings(
        max_examples=600,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(operations, st.booleans(), st.sampled_from((0.0, 2.0, 100.0)))
    def test_neverReplacedValue(self, ops, warm, stale):
        """
        Any interleaving of reads and writes from several clients through
        the cache, carried out and answered by the device in any order (as
        a pool or pipeline may), with failures, withdrawals and time
        passing, never returns a value that a write done before the read
        was sent had replaced.
        """
        self.drive(ops, warm, stale)

    def test_readOvertaken(self):
        """
        The device carries out a read, then a write sent after it; the
        write's answer comes first, then the read's (old) values: a read
        sent after the write is done must not get them.
        """
        self.drive(
            [
                ("read", 0, 1),
                ("write", 6, 0, 1),
                ("execute", 0),
                ("execute", 0),
                ("deliver", 1),
                ("deliver", 0),
                ("read", 0, 1),
            ],
            False,
            0.0,
        )

    def test_joinAfterWrite(self):
        """
        A read sent once a write is done does not share a read that the
        device carried out before the write.
        """
        self.drive(
            [
                ("read", 0, 1),
                ("write", 6, 0, 1),
                ("execute", 0),
                ("execute", 0),
                ("deliver", 1),
                ("read", 0, 1),
                ("deliver", 0),
            ],
            False,
            0.0,
        )

    def test_readDuringWrite(self):
        """
        A read sent while a write is on its way is carried out first, and
        answered before the write is.
        """
        self.drive(
            [
                ("write", 6, 0, 1),
                ("read", 0, 1),
                ("execute", 1),
                ("deliver", 1),
                ("execute", 0),
                ("deliver", 0),
                ("read", 0, 1),
            ],
            False,
            0.0,
        )

    def test_withdrawnReadOvertaken(self):
        """
        A read whose client withdrew after the device carried it out, and
        whose (old) values come after a write is done, does not refresh the
        items: a read sent after the write must not get them.
        """
        # The write on its way when the read is sent (as hypothesis found
        # it), then sent after the read was withdrawn.
        self.drive(
            [
                ("write", 6, 0, 1),
                ("read", 0, 1),
                ("execute", 1),
                ("withdraw", 1),
                ("deliver", 0),
                ("deliver", 0),
                ("read", 0, 1),
            ],
            False,
            0.0,
        )
        self.drive(
            [
                ("read", 0, 1),
                ("execute", 0),
                ("withdraw", 0),
                ("write", 6, 0, 1),
                ("deliver", 1),
                ("deliver", 0),
                ("read", 0, 1),
            ],
            False,
            0.0,
        )

    def drive(self, ops, warm, stale):
        h = Harness(auto=False, ttl=1.0, stale=stale, warm=warm)
        device, model = h.device, Model()
        serial = [0]
        trips = []  # (trip, kind, detail, results)
        writes = {}  # device trip -> registers it writes

        def execute(trip):
            device.execute(trip)
            if trip in writes:
                model.applied(device.bank, writes[trip])

        for op in ops:
            kind = op[0]
            if kind == "read":
                _, start, quantity = op
                quantity = min(quantity, REGISTERS - start)
                request, trip, seen = h.send(readPDU(3, start, quantity))
                trips.append((trip, "read", (start, list(model.floor)), seen))
            elif kind == "write":
                _, code, start, quantity = op
                serial[0] += 1
                value = serial[0]
                if code == 6:
                    pdu, written = writeRegisterPDU(start, value), [start]
                elif code == 22:
                    pdu, written = maskWritePDU(start, 0, value), [start]
                else:
                    quantity = min(quantity, REGISTERS - start)
                    values = [value] * quantity
                    written = list(range(start, start + quantity))
                    if code == 16:
                        pdu = writeRegistersPDU(start, values)
                    else:
                        pdu = readWritePDU(0, 1, start, values)
                before = list(device.waiting)
                request, trip, seen = h.send(pdu)
                for new in device.waiting:
                    if new not in before:
                        writes[new] = written
                trips.append((trip, "write", (written, trip), seen))
            elif kind == "execute":
                pending = [t for t in device.waiting if not t.executed]
                if pending:
                    execute(pending[op[1] % len(pending)])
            elif kind == "deliver":
                if device.waiting:
                    trip = device.waiting[op[1] % len(device.waiting)]
                    if not trip.executed:
                        execute(trip)
                    device.deliver(trip)
            elif kind == "fail":
                if device.waiting:
                    trip = device.waiting[op[1] % len(device.waiting)]
                    if op[2] and not trip.executed:
                        execute(trip)  # carried out, then the answer lost
                    device.fail(trip, TargetTimeout("no answer"))
            elif kind == "withdraw":
                if trips:
                    trips[op[1] % len(trips)][0].withdraw()
                    device.waiting = [t for t in device.waiting if not t.result.called]
            elif kind == "tick":
                h.clock.advance(op[1])
            self._check(h, model, trips, writes)
        while device.waiting:
            trip = device.waiting[0]
            if not trip.executed:
                execute(trip)
            device.deliver(trip)
            self._check(h, model, trips, writes)

    def _check(self, h, model, trips, writes):
        for entry in list(trips):
            trip, kind, detail, seen = entry
            if not seen:
                continue
            trips.remove(entry)
            outcome = seen[0]
            if kind == "write":
                written, _ = detail
                deviceTrip = [t for t, w in writes.items() if w is written]
                if deviceTrip and deviceTrip[0].executed:
                    model.done(written)
                if isinstance(outcome, Failure):
                    outcome.trap(TargetTimeout)
                continue
            if outcome is None:
                continue  # withdrawn before it was sent
            if isinstance(outcome, Failure):
                outcome.trap(TargetTimeout)
                continue
            start, floor = detail
            values = registers(h.frames.pdu(outcome))
            for offset, value in enumerate(values):
                history = model.history[start + offset]
                self.assertIn(value, history)
                self.assertGreaterEqual(
                    history.index(value),
                    floor[start + offset],
                    f"register {start + offset}: {value} was replaced by "
                    f"{history[floor[start + offset]]} before the read",
                )


# -- options


class OptionsTests(SynchronousTestCase):
    def parse(self, *args):
        options = Options()
        options.parseOptions(["--target", "127.0.0.1:502", *args])
        return options

    def test_defaults(self):
        options = self.parse("-p", "modbus")
        self.assertEqual(
            (options["cache-ttl"], options["cache-stale"], options["cache-items"], options["cache-warm"]),
            (0, 0, 100_000, 0),
        )
        self.assertIsNone(buildMultiplexer("-p", "modbus", "-t", "127.0.0.1:502").cache)

    def test_parsed(self):
        options = self.parse(
            "-p", "modbus-rtu", "--cache-ttl", "1s", "--cache-stale", "2m",
            "--cache-items", "500", "--cache-warm",
        )
        self.assertEqual(
            (options["cache-ttl"], options["cache-stale"], options["cache-items"], options["cache-warm"]),
            (1.0, 120.0, 500, 1),
        )

    def test_errors(self):
        for args, text in [
            (("-p", "echo", "--cache-ttl", "1"), "is for Modbus"),
            (("-p", "http", "--cache-stale", "1"), "is for Modbus"),
            (("-p", "modbus", "--cache-stale", "1"), "needs --cache-ttl"),
            (("-p", "modbus", "--cache-warm"), "needs --cache-ttl"),
            (("-p", "modbus", "--cache-items", "5"), "needs --cache-ttl"),
            (("-p", "modbus", "--cache-ttl", "-1"), "--cache-ttl must be"),
            (("-p", "modbus", "--cache-ttl", "1", "--cache-items", "0"), "--cache-items must be"),
        ]:
            with self.assertRaises(usage.UsageError) as caught:
                self.parse(*args)
            self.assertIn(text, str(caught.exception), args)

    def test_outermost(self):
        """
        The cache is the outermost dispatcher: in front of --read-only and
        the routes.
        """
        multiplexer = buildMultiplexer(
            "-p", "modbus", "-t", "127.0.0.1:502", "--cache-ttl", "1",
            "--read-only", "deny", "--route", "2=127.0.0.1:503",
            "--cache-items", "7", "--cache-stale", "3",
        )
        cache = multiplexer.cache
        self.assertIs(multiplexer.dispatcher, cache)
        self.assertEqual((cache.ttl, cache.staleAge, cache.maxItems), (1.0, 3.0, 7))
        self.assertEqual(type(cache.inner).__name__, "ReadOnly")


# -- end to end


class Device(ServerFactory):
    """
    A Modbus TCP device on 127.0.0.1 that counts the requests it receives
    and answers from a register bank; reads of addresses at or beyond
    C{SIZE} get exception 0x02. With C{holding}, requests wait until
    L{release}; with C{silent}, they are never answered.
    """

    noisy = False

    def __init__(self):
        self.bank = newBank()
        self.requests = []
        self.holding = False
        self.silent = False
        self.held = []
        self.connections = []
        self.port = None

    def listen(self, testCase, port=0):
        self.port = reactor.listenTCP(port, self, interface="127.0.0.1")
        testCase.addCleanup(self.down)
        return self.port.getHost().port

    def buildProtocol(self, addr):
        protocol = DeviceProtocol()
        protocol.factory = self
        return protocol

    def received(self, connection, request):
        self.requests.append(request)
        if self.silent:
            return
        if self.holding:
            self.held.append((connection, request))
        else:
            connection.answer(request)

    def release(self):
        self.holding = False
        held, self.held = self.held, []
        for connection, request in held:
            connection.answer(request)

    def reads(self):
        return sum(1 for r in self.requests if r[7] in (1, 2, 3, 4))

    def down(self):
        for connection in list(self.connections):
            connection.transport.abortConnection()
        if self.port is not None:
            port, self.port = self.port, None
            return port.stopListening()


class DeviceProtocol(Protocol):
    def connectionMade(self):
        self.buffer = b""
        self.factory.connections.append(self)

    def dataReceived(self, data):
        messages, self.buffer = splitModbus(self.buffer + data)
        for request in messages:
            self.factory.received(self, request)

    def answer(self, request):
        response = answerPDU(self.factory.bank, request[7:])
        self.transport.write(adu(struct.unpack(">H", request[:2])[0], request[6], response))

    def connectionLost(self, reason):
        if self in self.factory.connections:
            self.factory.connections.remove(self)


class RawClient(Protocol):
    """
    Sends one request, fires C{answered} with the whole answer.
    """

    def __init__(self, request):
        self.request = request
        self.buffer = b""
        self.answered = Deferred()

    def connectionMade(self):
        self.transport.write(self.request)

    def dataReceived(self, data):
        self.buffer += data
        messages, rest = splitModbus(self.buffer)
        if messages:
            self.transport.loseConnection()
            self.answered.callback(messages[0])


async def rawRead(port, request):
    client = RawClient(request)
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
    return await client.answered


def pymodbusSession(port, steps):
    """
    One pymodbus client: C{steps(client)}, in a thread.
    """
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
    assert client.connect(), "cannot connect to tcpmux"
    try:
        return steps(client)
    finally:
        client.close()


class EndToEndTests(TestCase):
    timeout = 30

    async def start(self, *args):
        device = Device()
        devicePort = device.listen(self)
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--retry-delay", "100ms", *args
        )
        await until(lambda: device.connections)
        return device, devicePort, port, multiplexer

    async def test_hundredClientsOneRequest(self):
        """
        100 clients sending the same read at once (10 of them pymodbus
        clients) cause one device request; each gets the answer under its
        own transaction id.
        """
        device, _, port, multiplexer = await self.start("--cache-ttl", "10s")
        device.holding = True

        def poll(client):
            response = client.read_holding_registers(0, count=10, device_id=1)
            assert not response.isError(), response
            return list(response.registers)

        threads = [deferToThread(pymodbusSession, port, poll) for _ in range(10)]
        raws = [
            Deferred.fromCoroutine(
                rawRead(port, adu(100 + i, 1, readPDU(3, 0, 10)))
            )
            for i in range(90)
        ]
        await until(lambda: multiplexer.cache.coalesced == 99)
        self.assertEqual(len(device.requests), 1)
        device.release()
        expected = list(range(1000, 1010))
        self.assertEqual(await gatherResults(threads), [expected] * 10)
        answers = await gatherResults(raws)
        for i, answer in enumerate(answers):
            self.assertEqual(answer, adu(100 + i, 1, readAnswer(3, expected)))
        self.assertEqual(len(device.requests), 1)
        self.assertEqual(
            (multiplexer.cache.misses, multiplexer.cache.coalesced), (1, 99)
        )

    async def test_registers(self):
        """
        A read of 3-5 right after a read of 0-9 causes no device request; a
        write of register 4 makes the next read of 3-5 go to the device,
        and so does the first read after the TTL.
        """
        device, _, port, multiplexer = await self.start("--cache-ttl", "400ms")

        def steps(client):
            counts = []
            first = client.read_holding_registers(0, count=10, device_id=1)
            counts.append(device.reads())
            sub = client.read_holding_registers(3, count=3, device_id=1)
            counts.append(device.reads())
            assert not client.write_register(4, 4444, device_id=1).isError()
            after = client.read_holding_registers(3, count=3, device_id=1)
            counts.append(device.reads())
            again = client.read_holding_registers(3, count=3, device_id=1)
            counts.append(device.reads())
            time.sleep(0.45)
            late = client.read_holding_registers(3, count=3, device_id=1)
            counts.append(device.reads())
            return counts, [
                r.registers for r in (first, sub, after, again, late)
            ]

        counts, values = await deferToThread(pymodbusSession, port, steps)
        self.assertEqual(counts, [1, 1, 2, 2, 3])
        self.assertEqual(values[0], list(range(1000, 1010)))
        self.assertEqual(values[1], [1003, 1004, 1005])
        self.assertEqual(values[2:], [[1003, 4444, 1005]] * 3)
        self.assertEqual(device.bank["registers"][4], 4444)

    async def test_coilsAndInputs(self):
        """
        Coils read by pymodbus from the cache are the device's bits.
        """
        device, _, port, multiplexer = await self.start("--cache-ttl", "10s")

        def steps(client):
            whole = client.read_coils(0, count=30, device_id=1).bits[:30]
            part = client.read_coils(5, count=11, device_id=1).bits[:11]
            client.write_coil(7, not whole[7], device_id=1)
            changed = client.read_coils(5, count=11, device_id=1).bits[:11]
            inputs = client.read_discrete_inputs(0, count=12, device_id=1).bits[:12]
            inputsPart = client.read_discrete_inputs(2, count=3, device_id=1).bits[:3]
            return whole, part, changed, inputs, inputsPart

        whole, part, changed, inputs, inputsPart = await deferToThread(
            pymodbusSession, port, steps
        )
        coils = [a % 3 == 0 for a in range(SIZE)]
        self.assertEqual(whole, coils[:30])
        self.assertEqual(part, coils[5:16])
        self.assertEqual(changed, coils[5:7] + [not coils[7]] + coils[8:16])
        self.assertEqual(inputsPart, inputs[2:5])
        self.assertEqual(device.reads(), 3)

    async def test_exceptionNotServedAgain(self):
        """
        An exception answer reaches the client, and the next identical read
        goes to the device again.
        """
        device, _, port, multiplexer = await self.start("--cache-ttl", "10s")

        def steps(client):
            return [
                client.read_holding_registers(SIZE - 1, count=2, device_id=1).exception_code
                for _ in range(2)
            ]

        self.assertEqual(await deferToThread(pymodbusSession, port, steps), [2, 2])
        self.assertEqual(device.reads(), 2)

    async def deviceDown(self, how, *args):
        """
        Read 0-9, wait past the TTL, take the device down (C{how}: it is
        gone, or it stops answering), read 3-5: what pymodbus got.
        """
        device, devicePort, port, multiplexer = await self.start(
            "--cache-ttl", "200ms", "--timeout", "1", *args
        )

        def read(client):
            response = client.read_holding_registers(3, count=3, device_id=1)
            return response.exception_code if response.isError() else response.registers

        def steps(client):
            client.read_holding_registers(0, count=10, device_id=1)
            time.sleep(0.25)
            return "ready"

        await deferToThread(pymodbusSession, port, steps)
        if how == "gone":
            await device.down()
            await until(lambda: multiplexer.target.connection is None)
        else:
            device.silent = True
        return await deferToThread(pymodbusSession, port, read), multiplexer

    async def test_staleWhenGone(self):
        """
        With --cache-stale, a read while the device is gone gets the last
        values; without it, 0x0A.
        """
        answer, multiplexer = await self.deviceDown("gone", "--cache-stale", "1m")
        self.assertEqual(answer, [1003, 1004, 1005])
        self.assertEqual(multiplexer.cache.stale, 1)

    async def test_gatewayPathUnavailable(self):
        answer, multiplexer = await self.deviceDown("gone")
        self.assertEqual(answer, 0x0A)

    async def test_staleWhenSilent(self):
        """
        With --cache-stale, a read the device does not answer gets the
        last values; without it, 0x0B.
        """
        answer, multiplexer = await self.deviceDown("silent", "--cache-stale", "1m")
        self.assertEqual(answer, [1003, 1004, 1005])

    async def test_gatewayTargetFailed(self):
        answer, multiplexer = await self.deviceDown("silent")
        self.assertEqual(answer, 0x0B)
