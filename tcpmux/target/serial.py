# -*- test-case-name: tests.test_rtu_gateway -*-
"""
C{serial:} targets: a serial port (an RS-485 USB adapter, say) as a Twisted
client endpoint, so that C{--target} and C{--route} take one like any other
endpoint string::

    serial:/dev/ttyUSB0:baudrate=9600:parity=E:stopbits=1:bytesize=8

The device comes first (a path, or a port name such as C{COM3}; a colon in
it is written C{\\:}, as in every endpoint string), then any of:

    baudrate   bits per second (default 19200, the Modbus serial default)
    parity     N, E, O, M or S (default E, the Modbus serial default)
    bytesize   data bits, 5..8 (default 8)
    stopbits   1, 1.5 or 2 (default 1)
    rtscts     1 for RTS/CTS hardware flow control (default 0)

Connecting opens the port, exclusively, and flushes what it holds; an
attempt fails at once when the device is missing (an unplugged adapter),
so the target's reconnect and back-off work as for TCP. Closing it closes
the port. pyserial is needed (C{pip install 'tcpmux[serial]'}); without
it a C{serial:} target is refused with one line that says so.

The parser is a Twisted plugin (C{twisted/plugins/tcpmux_serial.py} holds
only the parser object); everything else is here.
"""

import os
import re

from twisted.internet import error
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IStreamClientEndpoint,
    IStreamClientEndpointStringParserWithReactor,
)
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

PREFIX = "serial"

NEEDS_PYSERIAL = (
    "serial: targets need pyserial, which is not installed: "
    "pip install 'tcpmux[serial]'"
)

# The Modbus serial line defaults (Modbus over serial line, 2.5.1): 19,200
# bit/s, even parity, one stop bit.
DEFAULTS = {"baudrate": 19200, "parity": "E", "bytesize": 8, "stopbits": 1, "rtscts": False}

PARITIES = ("N", "E", "O", "M", "S")
PARITY_NAMES = {"NONE": "N", "EVEN": "E", "ODD": "O", "MARK": "M", "SPACE": "S"}
BYTESIZES = (5, 6, 7, 8)
STOPBITS = (1, 1.5, 2)

# A Modbus RTU character is 11 bits on the line: start, 8 data, parity or a
# second stop bit, stop (Modbus over serial line, 2.5.1).
RTU_CHARACTER_BITS = 11
# Above 19,200 bit/s the spec fixes the 3.5-character silence at 1.75 ms.
FIXED_SILENCE_ABOVE = 19200
FIXED_SILENCE = 0.00175


class SerialUnavailable(ValueError):
    """
    pyserial is not installed.
    """

    def __init__(self):
        ValueError.__init__(self, NEEDS_PYSERIAL)


def checkAvailable():
    """
    @raise SerialUnavailable: if pyserial is not installed.
    """
    try:
        import serial  # noqa: F401
    except ImportError:
        raise SerialUnavailable() from None


@implementer(IAddress)
class SerialAddress:
    """
    The address of a serial port: its device.
    """

    def __init__(self, device):
        self.device = device

    def __repr__(self):
        return f"SerialAddress({self.device!r})"

    def __str__(self):
        return self.device


def _number(name, text, kind, choices=None):
    try:
        value = kind(str(text).strip())
    except ValueError:
        value = None
    if value is None or (choices is not None and value not in choices) or value <= 0:
        allowed = (
            ", ".join(f"{choice:g}" for choice in choices)
            if choices
            else "a whole number above 0"
        )
        raise ValueError(f"serial: {name} must be {allowed}, not {text!r}")
    return value


def _flag(name, text):
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"serial: {name} must be 0 or 1, not {text!r}")


def parseSerial(reactor, *args, **kwargs):
    """
    A L{SerialClientEndpoint} from the parts of a C{serial:} endpoint
    string: the device (first positional, or C{device=}), then keywords.

    @raise ValueError: saying what is wrong, in the user's terms.
    """
    kwargs = dict(kwargs)
    device = kwargs.pop("device", None)
    if device is None and args:
        device, args = args[0], args[1:]
    if not device:
        raise ValueError(
            "serial: endpoint needs a device: serial:/dev/ttyUSB0:baudrate=9600"
        )
    if args:
        raise ValueError(
            f"serial: unexpected {':'.join(args)!r} after the device: write "
            "the settings as name=value, such as baudrate=9600 (a colon in "
            "the device is written \\:)"
        )
    unknown = sorted(set(kwargs) - set(DEFAULTS))
    if unknown:
        raise ValueError(
            f"serial: unknown setting {unknown[0]!r}: use "
            f"{', '.join(DEFAULTS)}"
        )
    settings = dict(DEFAULTS)
    if "baudrate" in kwargs:
        settings["baudrate"] = _number("baudrate", kwargs["baudrate"], int)
    if "bytesize" in kwargs:
        settings["bytesize"] = _number("bytesize", kwargs["bytesize"], int, BYTESIZES)
    if "stopbits" in kwargs:
        settings["stopbits"] = _number("stopbits", kwargs["stopbits"], float, STOPBITS)
    if "parity" in kwargs:
        parity = str(kwargs["parity"]).strip().upper()
        parity = PARITY_NAMES.get(parity, parity)
        if parity not in PARITIES:
            raise ValueError(
                f"serial: parity must be one of {', '.join(PARITIES)}, "
                f"not {kwargs['parity']!r}"
            )
        settings["parity"] = parity
    if "rtscts" in kwargs:
        settings["rtscts"] = _flag("rtscts", kwargs["rtscts"])
    checkAvailable()
    return SerialClientEndpoint(reactor, device, **settings)


@implementer(IPlugin, IStreamClientEndpointStringParserWithReactor)
class SerialClientParser:
    """
    The C{serial:} client endpoint string parser (a Twisted plugin).
    """

    prefix = PREFIX

    def parseStreamClient(self, reactor, *args, **kwargs):
        return parseSerial(reactor, *args, **kwargs)


@implementer(IStreamClientEndpoint)
class SerialClientEndpoint:
    """
    Opens a serial port as the transport of a protocol.

    @ivar characterTime: seconds one character takes on the line: at least
        L{RTU_CHARACTER_BITS} bits, or the port's own framing if longer.
    @ivar silence: the Modbus RTU inter-frame silence on this line: 3.5
        characters, or 1.75 ms above 19,200 bit/s.
    """

    def __init__(
        self,
        reactor,
        device,
        baudrate=19200,
        parity="E",
        bytesize=8,
        stopbits=1,
        rtscts=False,
    ):
        self.reactor = reactor
        self.device = device
        self.baudrate = baudrate
        self.parity = parity
        self.bytesize = bytesize
        self.stopbits = stopbits
        self.rtscts = rtscts

    def __repr__(self):
        return (
            f"<SerialClientEndpoint {self.device} {self.baudrate} "
            f"{self.bytesize}{self.parity}{self.stopbits:g}>"
        )

    @property
    def characterBits(self):
        bits = 1 + self.bytesize + (self.parity != "N") + self.stopbits
        return max(RTU_CHARACTER_BITS, bits)

    @property
    def characterTime(self):
        return self.characterBits / self.baudrate

    @property
    def silence(self):
        if self.baudrate > FIXED_SILENCE_ABOVE:
            return FIXED_SILENCE
        return 3.5 * self.characterTime

    def connect(self, factory):
        """
        Open the port on the next reactor turn, as a TCP connection would
        be made: never before C{connect} returns (the target's factory
        queues its waiters after asking for a connection).
        """

        def cancel(attempt):
            call.cancel()
            attempt.errback(Failure(error.ConnectingCancelledError(self.device)))

        attempt = Deferred(canceller=cancel)
        call = self.reactor.callLater(0, self._open, factory, attempt)
        return attempt

    def _open(self, factory, attempt):
        try:
            portClass = _serialPortClass()
        except ImportError:
            attempt.errback(Failure(error.ConnectError(string=NEEDS_PYSERIAL)))
            return
        protocol = factory.buildProtocol(SerialAddress(self.device))
        if protocol is None:
            attempt.errback(Failure(error.ConnectError(string="the factory refused the port")))
            return
        try:
            portClass(
                protocol,
                self.device,
                self.reactor,
                baudrate=self.baudrate,
                bytesize=self.bytesize,
                parity=self.parity,
                stopbits=self.stopbits,
                rtscts=self.rtscts,
            )
        except Exception as e:
            attempt.errback(
                Failure(error.ConnectError(string=f"cannot open {self.device}: {_reason(e)}"))
            )
            return
        attempt.callback(protocol)


def _reason(exception):
    """
    Why a port could not be opened, in a few words (pyserial repeats the
    device's name around the operating system's reason).
    """
    text = str(exception)
    if "exclusively lock" in text:
        return "another program has it open"
    match = re.search(r"could not open port .*?\[Errno \d+\] ([^:]+)", text)
    if match is not None:
        return match.group(1)
    return text


_portClass = None


def _serialPortClass():
    """
    Twisted's C{SerialPort}, with what tcpmux needs of a transport added:
    C{abortConnection}, and an exclusive open.

    @raise ImportError: if pyserial is not installed.
    """
    global _portClass
    if _portClass is not None:
        return _portClass
    import serial
    from twisted.internet.serialport import SerialPort

    def exclusive(*args, **kwargs):
        # (Exclusive access is a POSIX lock: a second tcpmux, or another
        # program asking for it, cannot open the port too.)
        if os.name == "posix":
            kwargs["exclusive"] = True
        return serial.Serial(*args, **kwargs)

    class TCPMuxSerialPort(SerialPort):
        """
        A serial port transport that can be aborted: its unsent bytes are
        dropped, and it is closed on the next reactor turn (as a TCP
        connection is), which closes the device.
        """

        _serialFactory = staticmethod(exclusive)
        _aborting = False

        def __init__(self, protocol, device, *args, **kwargs):
            self.device = device
            SerialPort.__init__(self, protocol, device, *args, **kwargs)

        def abortConnection(self):
            if self._aborting or self.disconnected:
                return
            self._aborting = True
            self.stopReading()
            self.stopWriting()
            self.dataBuffer = b""
            self._tempDataBuffer = []
            self._tempDataLen = 0
            self.doRead = lambda: None
            self.doWrite = lambda: None
            self.reactor.callLater(
                0, self.connectionLost, Failure(error.ConnectionAborted())
            )

        def getHost(self):
            return SerialAddress(self.device)

        def getPeer(self):
            return SerialAddress(self.device)

    _portClass = TCPMuxSerialPort
    return _portClass
