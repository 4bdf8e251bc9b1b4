# -*- test-case-name: tests.test_gateway -*-
"""
The Modbus gateway: what tcpmux does to Modbus requests on their way to a
device, for C{modbus}, C{modbus-rtu} and C{modbus-serial} alike (each
protocol's C{frames} gives the unit id and PDU of its messages).

Where each piece sits, from the client inwards::

    client -> ReadOnly (a dispatcher: answers writes itself)
           -> Routes (by the client's unit id) -> the target's queue
           -> UnitMap -> RetriedReads -> SpacedTarget -> the connection(s)

The unit map is an L{tcpmux.interfaces.ITarget} wrapper behind the queue,
not a dispatcher in front of it, so that everything in front of the queue
(routing, the read-only rules, a cache) sees the unit id the client wrote,
and only the device sees the one it wants. Retries sit inside the unit map
(a retry is the device's request again) and outside the request gap (each
attempt waits its gap).

Function codes outside the public ones (vendors', such as Huawei's 0x41)
are forwarded untouched: never answered here, never retried.
"""

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from tcpmux.client.dispatch import Answered
from tcpmux.errors import GatewayError, InvalidResponse, TargetLost
from tcpmux.gateway.options import BROADCAST
from tcpmux.interfaces import IDispatcher
from tcpmux.logs import RepeatedWarnings
from tcpmux.target.wrapper import TargetWrapper

# Function codes (Modbus application protocol, 6).
READS = frozenset((1, 2, 3, 4))
# Writes whose normal response tcpmux can give itself (C{--read-only
# ignore}): 5 and 6 echo the request's PDU, 15 and 16 its start address and
# quantity.
ECHOED_WRITES = frozenset((5, 6))
COUNTED_WRITES = frozenset((15, 16))
# Every public function code that writes: 21 write file record, 22 mask
# write register, 23 read/write multiple registers, besides the above.
WRITES = ECHOED_WRITES | COUNTED_WRITES | frozenset((21, 22, 23))

# Exception codes.
ILLEGAL_FUNCTION = 0x01
DEVICE_BUSY = 0x06


def functionCode(frames, message):
    """
    The function code of C{message}, or L{None} if it carries no PDU.
    """
    pdu = frames.pdu(message)
    return pdu[0] if pdu else None


def exceptionCode(frames, response):
    """
    The exception code of C{response}, or L{None} if it is no exception
    response.
    """
    pdu = frames.pdu(response)
    if len(pdu) == 2 and pdu[0] & 0x80:
        return pdu[1]
    return None


def exceptionAnswer(frames, request, code):
    """
    An exception response to C{request} in its own framing: its unit, its
    function code with the high bit set, then C{code}.
    """
    return frames.build(
        request, frames.unit(request), bytes((functionCode(frames, request) | 0x80, code))
    )


# -- --read-only


@implementer(IDispatcher)
class ReadOnly:
    """
    Answers writes itself, so that none reaches the device (C{--read-only}).

    C{deny}: every write (function codes 5, 6, 15, 16, 21, 22, 23) is
    answered with exception 0x01, illegal function. C{ignore}: 5, 6, 15 and
    16 are answered with the normal response the device would have given
    (5 and 6 echo the request's PDU; 15 and 16 its start address and
    quantity); 21, 22 and 23, whose answers tcpmux cannot make up (23 reads
    too), are denied.

    A write to unit 0 when unit 0 is an RTU broadcast (C{silentBroadcast}:
    its target speaks RTU, or the clients do) gets no answer at all, in
    either mode, as the broadcast itself would have: its client expects
    none, and an answer would be taken for the next request's.

    @param units: the unit ids (as the client writes them) the rule is for,
        or L{None} for every unit.
    @param silentBroadcast: whether unit 0 is an RTU broadcast.
    """

    log = Logger()

    def __init__(self, dispatcher, frames, mode, units=None, silentBroadcast=False):
        if mode not in ("deny", "ignore"):
            raise ValueError(f"unknown read-only mode {mode!r}")
        self.dispatcher = dispatcher
        self.frames = frames
        self.mode = mode
        self.units = units
        self.silentBroadcast = silentBroadcast

    def dispatch(self, request, client, partReceived=None):
        code = functionCode(self.frames, request)
        if code in WRITES and (self.units is None or self.frames.unit(request) in self.units):
            return Answered(succeed(self.answer(request, code, client)))
        return self.dispatcher.dispatch(request, client, partReceived)

    def answer(self, request, code, client):
        """
        What the client is told instead of the device's answer.
        """
        unit = self.frames.unit(request)
        if self.silentBroadcast and unit == BROADCAST:
            what = "left unanswered (a broadcast)"
            answer = b""
        elif self.mode == "ignore" and code in ECHOED_WRITES | COUNTED_WRITES:
            what = "answered as done"
            pdu = self.frames.pdu(request)
            answer = self.frames.build(
                request, unit, pdu if code in ECHOED_WRITES else pdu[:5]
            )
        else:
            what = "denied"
            answer = exceptionAnswer(self.frames, request, ILLEGAL_FUNCTION)
        # (At debug level: a client that keeps writing would flood the
        # log, and whoever set --read-only expects it.)
        self.log.debug(
            "Read-only: {what} a write (function code {code}, unit {unit}) "
            "from {client}, not sent",
            what=what,
            code=code,
            unit=unit,
            client=client,
        )
        return answer


# -- --unit-map


class UnitMap(TargetWrapper):
    """
    A request for unit C{client} goes to the device as unit C{mapping[client]},
    and its response comes back as C{client} (C{--unit-map}); a unit not in
    C{mapping} passes unchanged.

    It wraps a target, behind the queue: routing, read-only rules and a
    cache see the client's unit id; only the device sees its own.
    """

    def __init__(self, target, frames, mapping):
        TargetWrapper.__init__(self, target)
        self.frames = frames
        self.mapping = dict(mapping)

    def roundTrip(self, request, deadline=None, partReceived=None):
        frames = self.frames
        unit = frames.unit(request)
        device = self.mapping.get(unit)
        if device is None or device == unit:
            return self.target.roundTrip(request, deadline, partReceived)
        request = frames.build(request, device, frames.pdu(request))
        return self.target.roundTrip(request, deadline, partReceived).addCallback(
            lambda response: frames.build(response, unit, frames.pdu(response))
        )


# -- --retries


class RetriedReads(TargetWrapper):
    """
    A read (function codes 1-4) whose attempt fails is sent again, up to
    C{retries} times, while its deadline allows (C{--retries}). An attempt
    fails when no answer comes within C{attemptTimeout} seconds (it is then
    cancelled, which renews the connection, so that its late answer reaches
    no one), when the connection is lost, when the answer cannot be framed
    (a bad CRC, a bad header: L{InvalidResponse}), or when the device
    answers exception 0x06, device busy. The last attempt's outcome is the
    client's.

    Writes and every other function code (vendors' included) go through
    once: a write that timed out may have been carried out.

    An attempt's time counts from when it is handed to the target: a
    request gap, or a reconnect, is part of it.
    """

    log = Logger()

    def __init__(self, target, frames, retries, attemptTimeout=None, clock=None):
        TargetWrapper.__init__(self, target)
        if clock is None:
            from twisted.internet import reactor as clock
        self.frames = frames
        self.retries = retries
        self.attemptTimeout = attemptTimeout
        self.clock = clock
        self.warnings = RepeatedWarnings(self.log, clock)

    def roundTrip(self, request, deadline=None, partReceived=None):
        if self.retries < 1 or functionCode(self.frames, request) not in READS:
            return self.target.roundTrip(request, deadline, partReceived)
        return _Attempts(self, request, deadline, partReceived).result

    def stop(self):
        self.warnings.flushAll()
        return self.target.stop()

    def retrying(self, why, attempt):
        self.warnings.info(
            ("retry", why),
            "Target {target}: {why}; sending the read again (retry {attempt} "
            "of {retries})",
            summary="Target {target}: {count} more reads sent again in the "
            "last {window}s after: {why}",
            target=self.name,
            why=why,
            attempt=attempt,
            retries=self.retries,
        )


class _Attempts:
    """
    The attempts of one read; L{result} fires with the outcome of the last.
    """

    def __init__(self, wrapper, request, deadline, partReceived):
        self.wrapper = wrapper
        self.request = request
        self.deadline = deadline
        self.partReceived = partReceived
        self.made = 0
        self.current = None
        self.timer = None
        self.timedOut = False
        self.cancelled = False
        self.result = Deferred(canceller=self._cancel)
        self._attempt()

    def _attempt(self):
        wrapper = self.wrapper
        self.made += 1
        self.timedOut = False
        limit = wrapper.attemptTimeout
        if limit is not None and (
            self.deadline is None or wrapper.clock.seconds() + limit < self.deadline
        ):
            # (An attempt with the whole deadline is the queue's to end.)
            self.timer = wrapper.clock.callLater(limit, self._expire)
        self.current = wrapper.target.roundTrip(
            self.request, self.deadline, self.partReceived
        )
        self.current.addBoth(self._done)

    def _expire(self):
        self.timer = None
        self.timedOut = True
        self.current.cancel()

    def _done(self, outcome):
        self.current = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.result.called:
            return None
        why = None if self.cancelled else self._why(outcome)
        timeLeft = self.deadline is None or self.wrapper.clock.seconds() < self.deadline
        if why is not None and self.made <= self.wrapper.retries and timeLeft:
            self.wrapper.retrying(why, self.made)
            self._attempt()
            return None
        if isinstance(outcome, Failure):
            self.result.errback(outcome)
        else:
            self.result.callback(outcome)
        return None

    def _why(self, outcome):
        """
        Why C{outcome} calls for another attempt, or L{None}.
        """
        if isinstance(outcome, Failure):
            if self.timedOut and outcome.check(GatewayError):
                # (Waiting for a connection, the cancelled attempt fails
                # with TargetUnavailable.)
                return f"no answer within {self.wrapper.attemptTimeout:g}s"
            if outcome.check(TargetLost, InvalidResponse):
                return outcome.getErrorMessage()
            return None
        if exceptionCode(self.wrapper.frames, outcome) == DEVICE_BUSY:
            return "device busy (exception 0x06)"
        return None

    def _cancel(self, result):
        # The queue gave up (the request's deadline): end the attempt in
        # flight; its failure is the outcome.
        self.cancelled = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.current is not None:
            self.current.cancel()
