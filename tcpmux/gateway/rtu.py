# -*- test-case-name: tests.test_rtu_gateway -*-
"""
Modbus RTU targets: devices on a serial line (C{serial:} targets), and
RS-485-to-Ethernet converters in "transparent" mode that pass raw RTU
frames over TCP (C{--target-framing rtu}), for clients that speak Modbus
TCP (or C{modbus-rtu}).

Where each piece sits, from the queue inwards::

    ... -> UnitMap -> RetriedReads -> SpacedTarget (--request-gap)
        -> RTUTarget: client frame -> RTU frame, and the answer back
        -> SilentLine: the RTU silence between frames
        -> RTUConnection: one serial port or TCP connection

L{RTUTarget} sends the client's unit id and PDU as an RTU frame (address,
PDU, CRC-16) and rebuilds the device's answer in the client's framing with
the client's own transaction id. The connection frames an answer by its
length, read from its function code (and byte count), not by waiting for
a silence, and refuses one whose CRC, address or function code does not
answer the request: the client gets exception 0x0B and the connection is
renewed (for a serial port: closed, opened again and its input flushed),
so that nothing of it reaches the next request. C{--retries} retries such
a read.

Broadcast: on a serial line unit 0 is every device, and none answers. A
request to unit 0 that writes (function codes 5, 6, 15, 16, 21, 22, or any
other that is not a read) is sent as a broadcast and its client gets no
answer at all, as a serial master would, as mbusd does and as pymodbus
clients expect with C{no_response_expected=True}; the line is then left
quiet for L{BROADCAST_TURNAROUND} so that the devices can act on it. A
read sent to unit 0 could never be answered: it is not sent, and its client
gets exception 0x0A at once.

A function code whose answer tcpmux cannot frame by its length (vendors'
codes, 8 diagnostics) is not sent to an RTU target: exception 0x01.

C{--protocol modbus-serial} clients already speak RTU: their frames pass
as they are (no L{RTUTarget}), over the same connection and silence.
"""

from twisted.internet.defer import succeed
from twisted.internet.endpoints import clientFromString
from twisted.logger import Logger

from tcpmux.config import isSerial
from tcpmux.gateway.modbus import ILLEGAL_FUNCTION, exceptionAnswer
from tcpmux.gateway.options import BROADCAST, parseRoute, parseUnitMap
from tcpmux.logs import RepeatedWarnings
from tcpmux.protocols import isModbus, modbus_serial
from tcpmux.protocols.crc import withCRC
from tcpmux.protocols.modbus import GATEWAY_PATH_UNAVAILABLE
from tcpmux.protocols.modbus_serial import RESPONSE_SIZES, RTUResponseReceiver
from tcpmux.target.factory import TargetClientFactory
from tcpmux.target.serial import SerialClientEndpoint, checkAvailable
from tcpmux.target.session import TargetSession
from tcpmux.target.wrapper import SpacedTarget, TargetWrapper
from tcpmux.writing import writeNow

# The application whose framers read the target's RTU frames.
RTU = modbus_serial.application

# --target-framing values: the target speaks what the clients speak, or RTU.
FRAMINGS = ("same", "rtu")

# How long the line is left quiet after a broadcast, for the devices to act
# on it (the Modbus serial spec's "turnaround delay", typically 100 to
# 200 ms), besides the time the frame itself takes on the line.
BROADCAST_TURNAROUND = 0.1

# Function codes that only read: a broadcast of one is never answered, so
# it is not sent (1-4 reads, 7 exception status, 11 and 12 event counter
# and log, 17 server id, 20 file record, 23 read/write, 24 FIFO, 43 device
# identification).
ANSWER_ONLY = frozenset((1, 2, 3, 4, 7, 11, 12, 17, 20, 23, 24, 43))

# Function codes whose answers the RTU response framer can size.
FRAMEABLE = frozenset(code for code in RESPONSE_SIZES if code < 0x80)


# -- options


def checkOptions(application, options):
    """
    Check the options that concern RTU targets before any endpoint is made
    (so that a missing pyserial is one clear line): C{--target-framing}
    (normalized to C{"same"}, C{"rtu"} or L{None}), each C{serial:} target,
    and what an RTU target cannot do.

    @param options: the L{tcpmux.tap.Options}, C{route} still the list of
        C{UNIT=TARGET} strings given.
    @raise ValueError: saying what is wrong, in the user's terms.
    """
    framing = options.get("target-framing")
    if framing is not None:
        framing = str(framing).strip().lower()
        if framing not in FRAMINGS:
            raise ValueError(
                f"--target-framing must be same or rtu, not {options['target-framing']!r}"
            )
        options["target-framing"] = framing
    modbus = isModbus(application)
    if framing == "rtu" and not modbus:
        raise ValueError(
            f"--target-framing rtu is for Modbus clients (--protocol modbus, "
            f"modbus-rtu or modbus-serial), not {application.name}"
        )
    addresses = [options["target"]]
    for text in options.get("route") or ():
        try:
            addresses.append(parseRoute(text)[1])
        except ValueError:
            pass  # (--route's own check says what is wrong)
    serial = [address for address in addresses if isSerial(address)]
    if serial:
        checkAvailable()
        # Each serial: description is checked here, in its own words.
        for address in serial:
            try:
                clientFromString(None, address.strip())
            except ValueError as e:
                raise ValueError(f"bad target {address!r}: {e}") from None
        if options["connections"] > 1:
            raise ValueError(
                "--connections: a serial port is opened once; it carries one "
                "round trip at a time"
            )
    if framing == "same" and serial and application.name != RTU.name:
        raise ValueError(
            f"--target-framing same: {serial[0]} is a serial line, which "
            f"carries Modbus RTU, not {application.name} (leave "
            f"--target-framing out: serial: targets are RTU)"
        )
    rtu = modbus and (framing == "rtu" or serial)
    if not rtu:
        return
    if options["pipeline"] > 1:
        raise ValueError(
            "--pipeline: Modbus RTU has no transaction id, so an RTU target "
            "answers one request at a time"
        )
    unitMap = options.get("unit-map")
    if unitMap:
        try:
            mapping = parseUnitMap(unitMap) if isinstance(unitMap, str) else unitMap
        except ValueError:
            return  # (--unit-map's own check says what is wrong)
        if BROADCAST in mapping.values():
            raise ValueError(
                "--unit-map: on a Modbus RTU target unit 0 is the broadcast "
                "address, which no device answers"
            )


def isRTU(application, options, address):
    """
    Whether the target at C{address} speaks Modbus RTU: a C{serial:} port,
    or any target with C{--target-framing rtu}, for Modbus clients.
    """
    if not isModbus(application):
        return False
    return isSerial(address) or options.get("target-framing") == "rtu"


def silentBroadcast(application, options):
    """
    Whether a client's request for unit 0 is an RTU broadcast, which no
    device answers: the clients speak RTU themselves, or unit 0 (not mapped
    to another unit by C{--unit-map}) goes to an RTU target.

    @param options: checked L{tcpmux.tap.Options}: C{route} and C{unit-map}
        converted.
    """
    if not isModbus(application):
        return False
    if application.name == RTU.name:
        return True
    if (options.get("unit-map") or {}).get(BROADCAST, BROADCAST) != BROADCAST:
        return False
    routes = options.get("route") or {}
    return isRTU(application, options, routes.get(BROADCAST, options["target"]))


def wrapTarget(target, application, endpoint, clock):
    """
    The RTU target whose connection(s) are C{target}: the line's silence
    (computed from C{endpoint}'s baud rate and framing for a serial port),
    and, unless the clients speak RTU themselves, the conversion from and to
    their framing.
    """
    if isinstance(endpoint, SerialClientEndpoint):
        target = SilentLine(target, clock, endpoint.silence, endpoint.characterTime)
    else:
        # A converter keeps its own line's timing; a broadcast still needs
        # the devices' turnaround.
        target = SilentLine(target, clock)
    if application.name == RTU.name:
        return target
    return RTUTarget(target, application.frames, clock)


# -- the connection


class StrictRTUResponseReceiver(RTUResponseReceiver):
    """
    Frames RTU responses by length and CRC, and refuses one whose address or
    function code does not answer the request in flight (or that comes when
    none is): the session renews the connection and the client gets 0x0B.
    """

    def frameReceived(self, frame):
        expected = self._expected
        if expected is not None and frame[0] == expected[0] and frame[1] & 0x7F == expected[1]:
            self._expected = None
            self.receiver.messageReceived(frame)
            return
        answers = f"unit {frame[0]}, function code {frame[1] & 0x7F}"
        if expected is None:
            self._refuse(f"an RTU frame ({answers}) when no request was sent")
        else:
            self._refuse(
                f"the RTU response answers {answers}, not the request's unit "
                f"{expected[0]}, function code {expected[1]}"
            )


class RTUSession(TargetSession):
    """
    A target session whose broadcasts (RTU address 0) are written and
    answered at once with C{b""}: no device answers them.
    """

    def roundTrip(self, request, partReceived=None):
        if request[0] == BROADCAST:
            writeNow(self.transport, request)
            return succeed(b"")
        return TargetSession.roundTrip(self, request, partReceived)


class RTUConnection(TargetClientFactory):
    """
    The connection to an RTU target (a serial port, or a TCP connection to
    a transparent converter): RTU frames both ways, checked strictly.
    """

    def __init__(self, endpoint, application, name, **kwargs):
        # (Whatever the clients speak, the target's bytes are RTU frames.)
        TargetClientFactory.__init__(self, endpoint, RTU, name, **kwargs)

    def buildProtocol(self, addr):
        return StrictRTUResponseReceiver(RTUSession(self))


# -- on the way


class SilentLine(SpacedTarget):
    """
    Leaves the line quiet between frames: C{silence} seconds after each
    answer (or failure) before the next frame is written; after a broadcast,
    which gets no answer, the time its frame takes on the line
    (C{characterTime} a byte) plus C{silence} plus C{turnaround}.

    It sits behind the queue and sees RTU frames; the wait counts against
    each request's deadline.
    """

    waitingFor = "the line's silence"

    def __init__(
        self, target, clock, silence=0.0, characterTime=0.0, turnaround=BROADCAST_TURNAROUND
    ):
        SpacedTarget.__init__(self, target, silence, clock)
        self.characterTime = characterTime
        self.turnaround = turnaround

    def quietAfter(self, request):
        if request[0] == BROADCAST:
            return len(request) * self.characterTime + self.gap + self.turnaround
        return self.gap


class RTUTarget(TargetWrapper):
    """
    Converts each client request (in the framing of C{frames}: Modbus TCP,
    or C{modbus-rtu}) into an RTU frame for the target, and the target's RTU
    answer back into the client's framing, with the client's transaction
    id. See the module's docstring for broadcasts and for function codes
    that are not sent.
    """

    log = Logger()

    def __init__(self, target, frames, clock=None):
        TargetWrapper.__init__(self, target)
        if clock is None:
            from twisted.internet import reactor as clock
        self.frames = frames
        self.warnings = RepeatedWarnings(self.log, clock)

    def stop(self):
        self.warnings.flushAll()
        return self.target.stop()

    def roundTrip(self, request, deadline=None, partReceived=None):
        frames = self.frames
        unit = frames.unit(request)
        pdu = bytes(frames.pdu(request))
        code = pdu[0]
        if code not in FRAMEABLE:
            self.warnings.warn(
                ("unframeable", code),
                "Target {target}: function code {code} is not sent to an RTU "
                "target, whose answer to it cannot be framed (exception 0x01)",
                target=self.name,
                code=code,
            )
            return succeed(exceptionAnswer(frames, request, ILLEGAL_FUNCTION))
        frame = withCRC(bytes((unit,)) + pdu)
        if unit == BROADCAST:
            if code in ANSWER_ONLY:
                self.warnings.warn(
                    ("broadcast read", code),
                    "Target {target}: a read (function code {code}) for unit 0, "
                    "the RTU broadcast address, which no device answers: not "
                    "sent (exception 0x0A)",
                    target=self.name,
                    code=code,
                )
                return succeed(exceptionAnswer(frames, request, GATEWAY_PATH_UNAVAILABLE))
            return self.target.roundTrip(frame, deadline).addCallback(lambda ignored: b"")
        return self.target.roundTrip(frame, deadline).addCallback(
            self._answer, request
        )

    def _answer(self, response, request):
        return self.frames.build(request, response[0], response[1:-2])
