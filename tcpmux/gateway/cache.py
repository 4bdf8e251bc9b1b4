# -*- test-case-name: tests.test_cache -*-
"""
The Modbus read cache (C{--cache-ttl}): values kept per (unit, table,
address), so that a read is answered from whatever reads filled its
items, and a write forgets exactly the items it touches.

Rules, for C{modbus}, C{modbus-rtu} and C{modbus-serial} alike:

  - Reads (function codes 1, 2, 3, 4; each its own table: coils, discrete
    inputs, holding registers, input registers) are answered here, under
    the client's own transaction id, when every item they ask for was read
    from the device less than C{ttl} seconds ago. Otherwise they go to the
    device, and a normal answer refreshes the items. Exception answers are
    never kept.
  - A read identical to one already on its way (same unit, function code,
    start and quantity) shares its round trip (coalescing).
  - Writes (5, 6, 15, 16, 22, 23) forget the items they touch before they
    are forwarded, and again when they complete; a read that was on its way
    while a write touching its items was too does not refresh them (the
    device may have read before or after the write). Their answers, and
    everything else (vendor function codes), are never kept. A write to
    unit 0 (broadcast) forgets the items of every unit.
  - When a read fails (L{GatewayError}: no connection, no answer) and
    C{stale} is set, it is answered from items up to C{stale} seconds old.

Units are cached as the client writes them (the cache is in front of the
routes and of C{--unit-map}): a device that answers under two unit ids is
cached twice, and a write under one does not forget the other's items.

Time is the clock's (a reactor, or L{twisted.internet.task.Clock} in
tests). The cache sets no timer: its once-a-minute debug line is written by
the first request after the minute, so nothing is left to cancel when
tcpmux stops.
"""

from collections import OrderedDict
import struct
from struct import pack, unpack_from

from twisted.internet.defer import succeed
from twisted.logger import Logger
from zope.interface import implementer

from tcpmux.client.dispatch import Answered, SharedAnswer
from tcpmux.errors import GatewayError
from tcpmux.gateway.options import BROADCAST
from tcpmux.interfaces import IDispatcher, IRoundTrip

# The item limit by default: about 23 MB at most (an item costs about 230
# bytes in CPython).
DEFAULT_ITEMS = 100_000

# How often the counters are logged (at debug level), and how often the
# stale answers are (at warning level: the device is failing).
REPORT_INTERVAL = 60.0
STALE_LOG_WINDOW = 10.0

# Tables.
COILS, DISCRETE_INPUTS, HOLDING_REGISTERS, INPUT_REGISTERS = range(4)
TABLE_NAMES = ("coils", "discrete inputs", "holding registers", "input registers")

# Read function code -> (its table, the most items one request may ask for).
READS = {
    1: (COILS, 2000),
    2: (DISCRETE_INPUTS, 2000),
    3: (HOLDING_REGISTERS, 125),
    4: (INPUT_REGISTERS, 125),
}
BIT_READS = frozenset((1, 2))

# Function codes that write coils or registers.
WRITES = frozenset((5, 6, 15, 16, 22, 23))


def itemKey(unit, table, address):
    """
    The key of one item: an int is smaller than a tuple (an item costs about
    230 bytes in all).
    """
    return unit << 18 | table << 16 | address


# -- PDUs


def readRequest(pdu):
    """
    C{(function code, start, quantity)} of a read request's PDU, or L{None}
    if it is no valid read of coils, inputs or registers (the device will
    answer it with an exception; it is forwarded, never cached).
    """
    if len(pdu) != 5 or pdu[0] not in READS:
        return None
    start, quantity = unpack_from(">HH", pdu, 1)
    if not 1 <= quantity <= READS[pdu[0]][1] or start + quantity > 0x10000:
        return None
    return pdu[0], start, quantity


def writtenItems(pdu):
    """
    C{(table, start, end)}: the items a write request's PDU touches (C{end}
    excluded). A write too short to say which is taken to touch its whole
    table.
    """
    code = pdu[0]
    table = COILS if code in (5, 15) else HOLDING_REGISTERS
    try:
        if code in (5, 6, 22):
            (address,) = unpack_from(">H", pdu, 1)
            return table, address, address + 1
        if code in (15, 16):
            start, quantity = unpack_from(">HH", pdu, 1)
        else:  # 23: read start and quantity, then write start and quantity
            start, quantity = unpack_from(">HH", pdu, 5)
    except struct.error:  # too short
        return table, 0, 0x10000
    return table, start, min(start + quantity, 0x10000)


def unpackBits(data, quantity):
    """
    The first C{quantity} bits of C{data}, as 0 and 1: the first item is the
    lowest bit of the first byte (coils and discrete inputs).
    """
    return [(data[i >> 3] >> (i & 7)) & 1 for i in range(quantity)]


def packBits(values):
    """
    C{values} (true or false each) packed as a read of coils answers them:
    eight to a byte, lowest bit first, the last byte padded with zeros.
    """
    packed = bytearray((len(values) + 7) // 8)
    for i, value in enumerate(values):
        if value:
            packed[i >> 3] |= 1 << (i & 7)
    return bytes(packed)


def readValues(pdu, code, quantity):
    """
    The values a normal answer's PDU to a read (C{code}, C{quantity})
    carries, or L{None} if it is not one (an exception, a wrong size).
    """
    if not pdu or pdu[0] != code or len(pdu) < 2:
        return None
    if code in BIT_READS:
        size = (quantity + 7) // 8
        if pdu[1] != size or len(pdu) != 2 + size:
            return None
        return unpackBits(pdu[2:], quantity)
    if pdu[1] != 2 * quantity or len(pdu) != 2 + 2 * quantity:
        return None
    return list(unpack_from(f">{quantity}H", pdu, 2))


def readAnswer(code, values):
    """
    The PDU of a normal answer to a read (C{code}) carrying C{values}.
    """
    if code in BIT_READS:
        data = packBits(values)
    else:
        data = pack(f">{len(values)}H", *values)
    return bytes((code, len(data))) + data


# -- the cache


@implementer(IDispatcher)
class ModbusCache:
    """
    An L{IDispatcher} in front of the queues (so that a hit never waits for
    anyone's round trip), and a gateway for L{tcpmux.multiplexer.Multiplexer}:
    calling it with the inner dispatcher returns itself, wrapped around it.

    @param frames: the application protocol's C{frames}
        (L{tcpmux.gateway.adu}).
    @param ttl: seconds an item answers reads after it was read.
    @param stale: seconds an item may answer a read that failed; 0: never.
    @param maxItems: the most items kept; the least recently read go first.
    @param warm: a hit on items older than half the TTL sends the read to
        the device in the background (refresh-ahead), so that clients that
        poll at least every half TTL never wait for the device.

    @ivar hits: reads answered from the cache.
    @ivar misses: reads sent to the device.
    @ivar coalesced: reads that shared another's round trip.
    @ivar stale: failed reads answered from older items.
    @ivar refreshes: reads sent in the background (C{warm}).
    @ivar evicted: items forgotten for the item limit.
    """

    log = Logger()

    def __init__(
        self, frames, clock, ttl, stale=0.0, maxItems=DEFAULT_ITEMS, warm=False
    ):
        if ttl <= 0:
            raise ValueError("the cache needs a TTL above 0")
        self.frames = frames
        self.clock = clock
        self.ttl = ttl
        self.staleAge = stale
        self.maxItems = maxItems
        self.warm = warm
        self.inner = None
        self.hits = self.misses = self.coalesced = self.stale = 0
        self.refreshes = self.evicted = 0
        # itemKey(unit, table, address) -> (time read, value), least
        # recently read first.
        self._items = OrderedDict()
        # (unit, function code, start, quantity) -> the _Fetch on its way
        # that an identical read may share.
        self._fetches = {}
        # Every _Fetch on its way, shared or not: one its clients all
        # withdrew from is no longer shared, but if it had gone to the
        # device its answer still comes, and a write must still reach it.
        self._reading = set()
        # (unit, table, start, end) of each write on its way.
        self._writing = []
        self._reportedAt = None
        self._staleLoggedAt = None
        self._staleUnlogged = 0

    def __call__(self, inner):
        self.inner = inner
        return self

    def __len__(self):
        """
        How many items it holds.
        """
        return len(self._items)

    def __bool__(self):
        # (An empty cache is still a cache: C{if multiplexer.cache:}.)
        return True

    # IDispatcher

    def dispatch(self, request, client, partReceived=None):
        frames = self.frames
        pdu = frames.pdu(request)
        now = self.clock.seconds()
        self._report(now)
        if pdu:
            code = pdu[0]
            if code in READS:
                read = readRequest(pdu)
                if read is not None:
                    return self._read(request, client, frames.unit(request), read, now)
            elif code in WRITES:
                return self._write(
                    request, client, partReceived, frames.unit(request), pdu
                )
        return self.inner.dispatch(request, client, partReceived)

    # reads

    def _read(self, request, client, unit, read, now):
        code, start, quantity = read
        found = self._lookup(unit, READS[code][0], start, quantity, now, self.ttl)
        if found is not None:
            values, readAt = found
            self.hits += 1
            key = (unit, code, start, quantity)
            if self.warm and now - readAt >= self.ttl / 2 and key not in self._fetches:
                self.refreshes += 1
                self._fetch(request, "the cache (refresh)", key)
            return Answered(succeed(self._answer(request, unit, code, values)))
        key = (unit, code, start, quantity)
        fetch = self._fetches.get(key)
        if fetch is None:
            self.misses += 1
            fetch = self._fetch(request, client, key)
        else:
            self.coalesced += 1
        return fetch.follow(request)

    def _lookup(self, unit, table, start, quantity, now, maxAge, inclusive=False):
        """
        The values of the items asked for and the time the oldest was read,
        if every one is younger than C{maxAge} (or exactly that old, if
        C{inclusive}); else L{None}.
        """
        items = self._items
        base = itemKey(unit, table, 0)
        values = []
        oldest = now
        for address in range(start, start + quantity):
            item = items.get(base + address)
            if item is None:
                return None
            age = now - item[0]
            if age > maxAge or (age == maxAge and not inclusive):
                return None
            if item[0] < oldest:
                oldest = item[0]
            values.append(item[1])
        return values, oldest

    def _answer(self, request, unit, code, values):
        return self.frames.build(request, unit, readAnswer(code, values))

    def _fetch(self, request, client, key):
        fetch = _Fetch(self, key)
        # Registered before it is dispatched: an answer that comes at once
        # (a gateway inside answering) unregisters it.
        self._fetches[key] = fetch
        self._reading.add(fetch)
        fetch.start(self.inner.dispatch(request, client))
        return fetch

    def _fetched(self, response, fetch):
        """
        The device's answer to C{fetch} (or its failure): refresh the items
        unless a write touching them was on its way meanwhile.
        """
        fetch.done = True
        self._reading.discard(fetch)
        if self._fetches.get(fetch.key) is fetch:
            del self._fetches[fetch.key]
        if isinstance(response, bytes) and fetch.clean and not self._written(fetch):
            unit, code, start, quantity = fetch.key
            values = readValues(self.frames.pdu(response), code, quantity)
            if values is not None:
                self._store(unit, READS[code][0], start, values)
        return response

    def _written(self, fetch):
        """
        Whether a write on its way touches an item C{fetch} reads.
        """
        unit, code, start, quantity = fetch.key
        table = READS[code][0]
        for wUnit, wTable, wStart, wEnd in self._writing:
            if (
                wTable == table
                and (wUnit == unit or wUnit == BROADCAST)
                and wStart < start + quantity
                and start < wEnd
            ):
                return True
        return False

    def _store(self, unit, table, start, values):
        items = self._items
        now = self.clock.seconds()
        base = itemKey(unit, table, start)
        for offset, value in enumerate(values):
            key = base + offset
            items[key] = (now, value)
            items.move_to_end(key)
        while len(items) > self.maxItems:
            items.popitem(last=False)
            self.evicted += 1

    def staleAnswer(self, failure, request, key):
        """
        A read failed: answer it from items up to C{staleAge} old, if there
        are all it asks for; else pass the failure on.
        """
        if not self.staleAge or not failure.check(GatewayError):
            return failure
        unit, code, start, quantity = key
        now = self.clock.seconds()
        found = self._lookup(
            unit, READS[code][0], start, quantity, now, self.staleAge, inclusive=True
        )
        if found is None:
            return failure
        values, readAt = found
        self.stale += 1
        self._logStale(now, now - readAt, failure.value)
        return self._answer(request, unit, code, values)

    def _logStale(self, now, age, error):
        if self._staleLoggedAt is not None and now - self._staleLoggedAt < STALE_LOG_WINDOW:
            self._staleUnlogged += 1
            return
        more = ""
        if self._staleUnlogged:
            more = f" ({self._staleUnlogged} more since the last such line)"
        self._staleLoggedAt = now
        self._staleUnlogged = 0
        self.log.warn(
            "Answered a failed read from the cache, with values {age:.1f}s old "
            "(--cache-stale){more}: {error}",
            age=age,
            more=more,
            error=error,
        )

    # writes

    def _write(self, request, client, partReceived, unit, pdu):
        table, start, end = writtenItems(pdu)
        writing = (unit, table, start, end)
        self._forget(writing)
        self._writing.append(writing)
        trip = self.inner.dispatch(request, client, partReceived)
        trip.result.addBoth(self._writeDone, writing)
        return trip

    def _writeDone(self, result, writing):
        self._writing.remove(writing)
        # Reads that were on their way while it was may have read before
        # it: they must not refresh its items, nor be shared from now on.
        self._forget(writing)
        return result

    def _forget(self, writing):
        """
        Forget the items a write touches, and stop sharing (and refreshing
        from) the reads on their way that read any of them.
        """
        unit, table, start, end = writing
        items = self._items
        if unit == BROADCAST or end - start > len(items):
            doomed = [
                key
                for key in items
                if (key >> 16) & 3 == table
                and start <= key & 0xFFFF < end
                and (unit == BROADCAST or key >> 18 == unit)
            ]
            for key in doomed:
                del items[key]
        else:
            base = itemKey(unit, table, 0)
            for address in range(start, end):
                items.pop(base + address, None)
        # Not only the shared ones: see _reading.
        for fetch in self._reading:
            fUnit, code, fStart, quantity = fetch.key
            if (
                READS[code][0] == table
                and (unit == BROADCAST or fUnit == unit)
                and fStart < end
                and start < fStart + quantity
            ):
                fetch.clean = False
                if self._fetches.get(fetch.key) is fetch:
                    del self._fetches[fetch.key]

    # counters

    def counters(self):
        """
        The counters, by name, for metrics and logs.
        """
        return {
            "hits": self.hits,
            "misses": self.misses,
            "coalesced": self.coalesced,
            "stale": self.stale,
            "refreshes": self.refreshes,
            "evicted": self.evicted,
            "items": len(self._items),
        }

    def _report(self, now):
        if self._reportedAt is None:
            self._reportedAt = now
        elif now - self._reportedAt >= REPORT_INTERVAL:
            self._reportedAt = now
            self.log.debug(
                "Cache: {hits} hits, {misses} misses, {coalesced} coalesced, "
                "{stale} stale answers, {refreshes} refreshes, {items} items "
                "({evicted} evicted) so far",
                **self.counters(),
            )


class _Fetch:
    """
    One read on its way to the device, and the clients that wait for it.

    @ivar clean: no write touching its items was dispatched, or completed,
        while it was on its way: its answer may refresh the items, and
        other clients may share it.
    """

    def __init__(self, cache, key):
        self.cache = cache
        self.key = key
        self.clean = True
        self.done = False
        self.askers = 0
        self.trip = None
        self.shared = None

    def start(self, trip):
        self.trip = trip
        self.shared = SharedAnswer(trip.result.addBoth(self.cache._fetched, self))

    def follow(self, request):
        """
        A round trip for one more client that sent C{request}.
        """
        self.askers += 1
        cache = self.cache
        frames = cache.frames
        unit = frames.unit(request)
        following = self.shared.follow(
            lambda answer: frames.build(request, unit, frames.pdu(answer))
        )
        following.result.addErrback(cache.staleAnswer, request, self.key)
        return _Asking(self, following.result)

    def leave(self):
        """
        A client withdrew: when none is left, so is the read, if it has not
        gone to the device yet.
        """
        self.askers -= 1
        if self.askers or self.done:
            return
        # No longer shared, but still in _reading: if it went to the device
        # already, its answer still comes, and may refresh the items only
        # if no write touched them meanwhile.
        fetches = self.cache._fetches
        if fetches.get(self.key) is self:
            del fetches[self.key]
        self.trip.withdraw()


@implementer(IRoundTrip)
class _Asking:
    """
    One client's share of a L{_Fetch}.
    """

    sent = True

    def __init__(self, fetch, result):
        self.fetch = fetch
        self.result = result
        self.withdrawn = False

    def withdraw(self):
        if not self.withdrawn:
            self.withdrawn = True
            self.fetch.leave()
