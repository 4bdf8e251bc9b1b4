# -*- test-case-name: tests.test_http -*-
"""
C{http}: HTTP/1.1 messages (RFC 9112).

Wire, in both directions: a start line, header field lines, an empty line,
then a body whose length the head decides (RFC 9112, section 6)::

    GET /status HTTP/1.1\\r\\n          POST /log HTTP/1.1\\r\\n
    Host: device\\r\\n                   Transfer-Encoding: chunked\\r\\n
    \\r\\n                               \\r\\n
                                       5;ext=1\\r\\nhello\\r\\n
    HTTP/1.1 200 OK\\r\\n                 0\\r\\nTrailer: x\\r\\n\\r\\n
    Content-Length: 2\\r\\n
    \\r\\n
    ok

  - C{Transfer-Encoding} ending in C{chunked}: chunks (with any chunk
    extensions), a zero-size chunk, optional trailer fields, an empty line;
  - otherwise C{Content-Length}: that many bytes;
  - otherwise a request has no body, and a response runs until the target
    closes the connection;
  - responses to C{HEAD}, and C{1xx}, C{204} and C{304} responses, never
    have a body; C{1xx} responses are interim and precede the final one.

Messages are forwarded exactly as received, never rebuilt. Lines must end
in CRLF: a bare CR or LF, obsolete line folding, a control character other
than HTAB in a field value, or a malformed start line, field or chunk size
is refused, because a target that read it differently would fall out of
step with tcpmux on the connection every client shares. (RFC 9112, 2.2
lets a server accept a bare LF; tcpmux, forwarding bytes unchanged, cannot
know that the target does.) A bare CR or LF in a head, chunk-size line or
trailer section is refused as soon as it arrives, not when the head ends:
a head of bare-LF lines never ends in CRLFCRLF, and would otherwise be
waited on for ever. Field values are trimmed of SP and HTAB only (RFC 9110,
5.6.3).
For the same reason a request with both C{Transfer-Encoding} and
C{Content-Length} is refused (RFC 9112, 6.3 lets a server do so; an
intermediary that forwards it must remove C{Content-Length}, which tcpmux,
forwarding bytes unchanged, does not do). CONNECT and C{Upgrade} requests
(WebSocket, h2c) would take the shared connection over, so they are
answered C{501}.

Limits: a head (start line and fields), each chunk-size line and a trailer
section are at most C{maxHeaderSize} bytes (64 KiB); a whole request is at
most C{maxMessageSize} bytes (64 MiB), which is also the most a framer ever
buffers.

Requests are passed on whole: they must be, to wait in a queue. The final
response to a request is streamed: once its head is in, whatever of it has
arrived is passed on at the end of each read (L{IResponseReceiver.
partReceived}), and the last piece completes it, so that the framer holds
about one read of a response of any size.

The common case costs one pattern match per message: an HTTP/1.1 request
without a body or a word about the connection, and its answer whose length
is one C{Content-Length}, each arriving whole in one read, are recognised
by one pattern each and passed on as the very bytes read. Everything else,
and everything those patterns do not match, is parsed.
"""

import re
from types import MappingProxyType

from twisted.internet.protocol import connectionDone
from twisted.logger import Logger

from tcpmux.errors import (
    InvalidResponse,
    TargetLost,
    TargetTimeout,
    TargetUnavailable,
)
from tcpmux.framing import ApplicationProtocol, MessageFramer

# How a body is delimited, besides a byte count.
CHUNKED = "chunked"
UNTIL_CLOSE = "until close"

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_REQUEST_TARGET = rb"[^\x00-\x20\x7f]+"
_REASON = rb"(?: [^\x00-\x08\x0a-\x1f\x7f]*)?"
_REQUEST_LINE = re.compile(
    rb"(" + _TOKEN + rb") (" + _REQUEST_TARGET + rb") HTTP/([0-9])\.([0-9])"
)
_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([1-9][0-9][0-9])" + _REASON)
_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):([^\x00\r\n]*)")
# What a field value may not hold: control characters other than HTAB
# (RFC 9110, 5.5); obs-text, bytes 0x80-0xFF, is allowed.
_CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# A whole valid head after its start line, in one pattern: field lines (a
# token, a colon, a value without control characters), each ending in CRLF,
# then the empty line. A head it matches needs no line-by-line look, which
# is there to say what is wrong with one it does not match.
_FIELD_LINE_CRLF = _TOKEN + rb":[^\x00-\x08\x0a-\x1f\x7f]*\r\n"
_FIELD_LINES = rb"(?:" + _FIELD_LINE_CRLF + rb")*\r\n"
_VALID_REQUEST_HEAD = re.compile(_REQUEST_LINE.pattern + rb"\r\n" + _FIELD_LINES)
_VALID_RESPONSE_HEAD = re.compile(_STATUS_LINE.pattern + rb"\r\n" + _FIELD_LINES)
# The only fields tcpmux reads: those that decide where a message ends and
# whether the connection stays open (and what it refuses).
_FRAMING_FIELD = re.compile(
    rb"\r\n(connection|content-length|expect|transfer-encoding|upgrade):([^\r]*)",
    re.IGNORECASE,
)
# The common case, one pattern each, so that it costs one match instead of
# a parse and its judgements (the framers and closesClient check it first,
# and parse everything it does not match): an HTTP/1.1 request, neither
# CONNECT nor HEAD, without a framing field (so without a body, and the
# connection stays open); and an HTTP/1.1 final response, neither 204 nor
# 304, whose only framing field is one Content-Length of digits (group 1).
# A head either matches is one its parser accepts, and judges the same way.
_NOT_FRAMING = rb"(?!(?i:connection|content-length|expect|transfer-encoding|upgrade):)"
_PLAIN_FIELDS = rb"(?:" + _NOT_FRAMING + _FIELD_LINE_CRLF + rb")*"
_PLAIN_REQUEST = re.compile(
    rb"(?!CONNECT |HEAD )" + _TOKEN + rb" " + _REQUEST_TARGET + rb" HTTP/1\.1\r\n"
    + _PLAIN_FIELDS + rb"\r\n"
)
_PLAIN_RESPONSE = re.compile(
    rb"HTTP/1\.1 (?!204|304)[2-9][0-9][0-9]" + _REASON + rb"\r\n"
    + _PLAIN_FIELDS
    + rb"(?i:content-length):[ \t]*([0-9]{1,18})[ \t]*\r\n"
    + _PLAIN_FIELDS + rb"\r\n"
)
# An HTTP/1.1 request without a Connection field: it leaves the connection
# open, whatever its body.
_KEEP_ALIVE_REQUEST = re.compile(
    _TOKEN + rb" " + _REQUEST_TARGET + rb" HTTP/1\.1\r\n"
    + rb"(?:(?!(?i:connection):)" + _FIELD_LINE_CRLF + rb")*\r\n"
)
# Optional whitespace around a value or a list element (RFC 9110, 5.6.3).
_OWS = b" \t"
# A line end, or a bare CR or LF, in a head or trailer section.
_LINE_END = re.compile(rb"\r\n|[\r\n]")
# chunk-size [ chunk-ext ]: hex digits, then any ;name or ;name=value where
# a value is a token or a quoted string (RFC 9112, 7.1.1).
_QUOTED = rb'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[^\x00-\x08\x0a-\x1f\x7f])*"'
_CHUNK_EXT = (
    rb"[ \t]*;[ \t]*" + _TOKEN + rb"(?:[ \t]*=[ \t]*(?:" + _TOKEN + rb"|" + _QUOTED + rb"))?"
)
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})(?:" + _CHUNK_EXT + rb")*")

_REASONS = MappingProxyType({
    100: "Continue",
    400: "Bad Request",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    502: "Bad Gateway",
    504: "Gateway Timeout",
    505: "HTTP Version Not Supported",
})


class PlainMessage(bytes):
    """
    A whole message of the common case, as a framer read it: a request
    that L{_PLAIN_REQUEST} matched, or a response that L{_PLAIN_RESPONSE}
    did. The framer says so with the type, so that what comes after (the
    response framer told of the request, L{HTTP.closesClient}) need not
    match the same bytes again. Any other message is plain C{bytes}, and
    judged by matching or parsing it.
    """

    __slots__ = ()


class BadMessage(Exception):
    """
    Bytes that can never become a valid HTTP message.

    @ivar status: the status a client is answered with (400, 413, 431, 501
        or 505); ignored for responses from the target.
    @ivar reason: a short explanation, for the log and the reply's body.
    """

    def __init__(self, status, reason):
        Exception.__init__(self, status, reason)
        self.status = status
        self.reason = reason


class Head:
    """
    The start line and header fields of one message.

    @ivar version: C{(major, minor)}.
    @ivar method: the request method (bytes), or L{None} for a response.
    @ivar status: the response status (int), or L{None} for a request.
    @ivar fields: C{[(name, value)]}, names lowercased, in wire order: the
        fields that decide how the message is framed and whether the
        connection stays open (C{Connection}, C{Content-Length}, C{Expect},
        C{Transfer-Encoding}, C{Upgrade}), the only ones tcpmux reads.
    """

    method = None
    status = None

    def __init__(self, version, fields):
        self.version = version
        self.fields = fields

    def has(self, name):
        for field, value in self.fields:
            if field == name:
                return True
        return False

    def elements(self, name):
        """
        The comma-separated elements of every C{name} field, stripped of SP
        and HTAB and lowercased, empty ones left out.
        """
        elements = []
        for field, value in self.fields:
            if field == name:
                for element in value.split(b","):
                    element = element.strip(_OWS)
                    if element:
                        elements.append(element.lower())
        return elements

    def persistent(self):
        """
        Whether the connection stays open after this message (RFC 9112,
        9.3): not with C{Connection: close}, and in HTTP/1.0 only with
        C{Connection: keep-alive}.
        """
        options = self.elements(b"connection")
        if b"close" in options:
            return False
        return self.version >= (1, 1) or b"keep-alive" in options

    def expectsContinue(self):
        """
        Whether this is an HTTP/1.1 request whose client may wait for
        C{100 Continue} before sending the body (HTTP/1.0 expectations are
        ignored, RFC 9110, 10.1.1).
        """
        return self.version >= (1, 1) and b"100-continue" in self.elements(b"expect")

    def contentLength(self):
        """
        The C{Content-Length}, or L{None} without one. Repeated fields or a
        list are accepted when every value is the same (RFC 9112, 6.3).

        @raise BadMessage: for anything else.
        """
        values = self.elements(b"content-length")
        if not values:
            return None
        if len(values) == 1 and values[0].isdigit() and len(values[0]) <= 18:
            # The common case, one plain number.
            return int(values[0])
        if not all(value.isdigit() for value in values):
            raise BadMessage(400, "invalid Content-Length")
        numbers = {value.lstrip(b"0") or b"0" for value in values}
        if len(numbers) != 1:
            raise BadMessage(400, "invalid Content-Length")
        digits = numbers.pop()
        if len(digits) > 18:
            raise BadMessage(413, "Content-Length too large")
        return int(digits)

    def chunked(self):
        """
        Whether C{Transfer-Encoding} ends in C{chunked}, applied once.
        """
        codings = [
            c.split(b";", 1)[0].strip(_OWS) for c in self.elements(b"transfer-encoding")
        ]
        return bool(codings) and codings[-1] == b"chunked" and codings.count(b"chunked") == 1


def _checkFields(lines):
    """
    Refuse the first malformed field line of C{lines}.

    @raise BadMessage: 400, saying what is wrong with it.
    """
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise BadMessage(400, "obsolete line folding in a header field")
        match = _FIELD_LINE.fullmatch(line)
        if match is None:
            raise BadMessage(400, "malformed header field line")
        if _CONTROL.search(match.group(2)) is not None:
            raise BadMessage(400, "control character in a header field value")


def _splitHead(message):
    """
    The lines of the head of C{message} (whole, or just its head), without
    the empty line that ends it.
    """
    end = message.find(b"\r\n\r\n")
    if end < 0:
        raise BadMessage(400, "no empty line after the header fields")
    lines = message[:end].split(b"\r\n")
    for line in lines:
        if b"\r" in line or b"\n" in line:
            raise BadMessage(400, "bare CR or LF in the head")
    return lines


def _parseHead(message, valid, startLine, malformed):
    """
    Parse the head at the start of C{message} (whole, or just its head).

    A valid head is matched by one pattern, C{valid}; only a head it does
    not match is looked at line by line, to say what is wrong with it.

    @return: the match of the start line, and the framing fields
        (C{[(name, value)]}, names lowercased, values trimmed).
    @raise BadMessage: C{malformed} (status, reason) for a bad start line, a
        400 for a bad field line.
    """
    match = valid.match(message)
    if match is not None:
        end = match.end()
    else:
        lines = _splitHead(message)
        match = startLine.fullmatch(lines[0])
        if match is None:
            raise BadMessage(*malformed)
        _checkFields(lines[1:])
        end = message.find(b"\r\n\r\n") + 4
    fields = _FRAMING_FIELD.findall(message, 0, end)
    if fields:
        fields = [(name.lower(), value.strip(_OWS)) for name, value in fields]
    return match, fields


def parseRequestHead(message):
    """
    The L{Head} of a request.

    @raise BadMessage: if the request line or a field is malformed (400) or
        the version is not HTTP/1.x (505).
    """
    match, fields = _parseHead(
        message, _VALID_REQUEST_HEAD, _REQUEST_LINE, (400, "malformed request line")
    )
    method, target, major, minor = match.groups()
    if major != b"1":
        raise BadMessage(505, "only HTTP/1.x is spoken here")
    head = Head((1, int(minor)), fields)
    head.method = method
    return head


def parseResponseHead(message):
    """
    The L{Head} of a response.

    @raise BadMessage: if the status line or a field is malformed, or the
        version is not HTTP/1.x.
    """
    match, fields = _parseHead(
        message, _VALID_RESPONSE_HEAD, _STATUS_LINE, (502, "malformed status line")
    )
    major, minor, status = match.groups()
    if major != b"1":
        raise BadMessage(502, "not an HTTP/1.x response")
    head = Head((1, int(minor)), fields)
    head.status = int(status)
    return head


def requestFraming(head):
    """
    How the body of the request with C{head} ends: a byte count (0 for
    none) or L{CHUNKED}.

    @raise BadMessage: for a request tcpmux cannot carry.
    """
    if head.method == b"CONNECT":
        raise BadMessage(501, "CONNECT tunnels cannot share the target connection")
    if head.has(b"upgrade"):
        raise BadMessage(
            501, "protocol upgrades (Upgrade: {}) cannot share the target connection".format(
                b", ".join(head.elements(b"upgrade")).decode("ascii", "replace")
            )
        )
    if head.has(b"transfer-encoding"):
        if head.version < (1, 1):
            raise BadMessage(400, "Transfer-Encoding in an HTTP/1.0 request")
        if head.has(b"content-length"):
            raise BadMessage(400, "both Transfer-Encoding and Content-Length")
        if not head.chunked():
            raise BadMessage(400, "Transfer-Encoding does not end in one chunked")
        return CHUNKED
    return head.contentLength() or 0


def responseFraming(request, head):
    """
    How the body of the response with C{head} to C{request} (a L{Head}, or
    L{None} if unknown) ends: a byte count (0 for none), L{CHUNKED} or
    L{UNTIL_CLOSE}.

    @raise BadMessage: for a response tcpmux cannot carry.
    """
    if head.status == 101:
        raise BadMessage(502, "the target switched protocols (101)")
    if (
        head.status < 200
        or head.status in (204, 304)
        or (request is not None and request.method == b"HEAD")
    ):
        return 0
    if head.has(b"transfer-encoding"):
        return CHUNKED if head.chunked() else UNTIL_CLOSE
    length = head.contentLength()
    return UNTIL_CLOSE if length is None else length


def connectionEnds(request, response):
    """
    Whether the connection that carried C{request} and C{response} (L{Head}s;
    C{request} may be L{None}) must close after C{response}: either said so,
    or the response runs to the close, or its framing is one that RFC 9112
    (6.1, 6.3) says to close after (Transfer-Encoding with Content-Length,
    or in HTTP/1.0).
    """
    if request is not None and not request.persistent():
        return True
    if not response.persistent():
        return True
    if responseFraming(request, response) is UNTIL_CLOSE:
        return True
    return response.has(b"transfer-encoding") and (
        response.has(b"content-length") or response.version < (1, 1)
    )


def closesAfter(request, response):
    """
    Whether the connection that carried C{request} (bytes) must close after
    C{response} (bytes: any interim responses, then the final one's head
    at least), judged on both heads parsed; L{True} when there is no whole
    final head, or a head is malformed.
    """
    start = 0
    try:
        while True:
            end = response.find(b"\r\n\r\n", start)
            if end < 0:
                return True
            head = parseResponseHead(response[start : end + 4])
            if head.status >= 200:
                return connectionEnds(parseRequestHead(request), head)
            start = end + 4
    except BadMessage:
        return True


def errorReply(status, explanation, bodyless=False):
    """
    A complete C{HTTP/1.1} response that closes the connection, with a
    plain-text body saying C{explanation} (left out when C{bodyless}, for
    HEAD requests; Content-Length still says how long it would be).
    """
    body = f"{status} {_REASONS[status]}: {explanation}\n".encode("utf-8", "replace")
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    ).encode("ascii")
    return head if bodyless else head + body


class HTTPMessageReceiver(MessageFramer):
    """
    Cuts a byte stream into whole HTTP/1.1 messages.

    Bytes are kept in one C{bytearray}; the framer remembers where the
    message being read starts, where parsing stands, how far a search for a
    line end has got and how far the line ends of a head or trailer section
    have been checked, so each byte is looked at a bounded number of times
    however the input is split.

    The parsing state is the function that reads the next part (the head,
    a chunk-size line, ...), kept unbound: a bound method would make the
    framer a reference cycle, which only the cyclic garbage collector
    frees.

    Subclasses parse heads (L{headReceived}), deliver messages
    (L{messageFramed}) and refuse bad input (L{refuse}).

    @cvar maxHeaderSize: the largest head, chunk-size line or trailer
        section.
    @cvar maxMessageSize: the largest whole message that is buffered (not
        streamed); bytes of an incomplete message beyond it are refused.
    """

    maxHeaderSize = 65536
    maxMessageSize = 64 * 1024 * 1024
    skipsEmptyLines = False

    def __init__(self, receiver):
        MessageFramer.__init__(self, receiver)
        self._buffer = bytearray()
        self._start = 0  # where the message being read starts
        self._pos = 0  # where its unparsed part starts
        self._scan = 0  # where to resume looking for a line end
        self._checked = 0  # where to resume checking for a bare CR or LF
        self._remaining = 0  # bytes of body or chunk data to wait for
        self._head = None
        self._state = HTTPMessageReceiver._readHead
        self._awaited = False
        self._stopped = False
        # Whether the message being read is passed on as it arrives.
        self._streaming = False

    def dataReceived(self, data):
        if self._stopped:
            return
        if (
            self._state is HTTPMessageReceiver._readHead
            and not self._buffer
            and self.plainMessageReceived(data)
        ):
            return
        if self._streaming and not self._buffer and self._passThrough(data):
            return
        self._buffer += data
        try:
            while not self._stopped and self._state(self):
                pass
            if self._streaming and not self._stopped:
                self._passOn()
            if not self._stopped:
                if len(self._buffer) - self._start > self.maxMessageSize:
                    raise BadMessage(
                        413, f"message larger than {self.maxMessageSize} bytes"
                    )
                if self._state is not HTTPMessageReceiver._readHead and not self._awaited:
                    self._awaited = True
                    self.bodyAwaited(self._head)
        except BadMessage as error:
            self._stop()
            self.refuse(error)
            return
        if self._start:
            del self._buffer[: self._start]
            self._pos -= self._start
            self._scan -= self._start
            self._checked = (
                self._checked - self._start if self._checked > self._start else 0
            )
            self._start = 0

    def _passThrough(self, data):
        """
        Nothing is buffered and C{data} is all body or chunk data of the
        message being streamed: pass it on as it is, uncopied.

        @return: whether it was.
        """
        state = self._state
        if state is HTTPMessageReceiver._readUntilClose:
            pass
        elif (
            state is HTTPMessageReceiver._readBody
            or state is HTTPMessageReceiver._readChunkData
        ) and len(data) < self._remaining:
            self._remaining -= len(data)
        else:
            return False
        self._deliverPart(data)
        return True

    def _passOn(self):
        """
        Pass on the bytes of the message being streamed that are held and
        known to belong to it, and let go of them.
        """
        state = self._state
        if state is HTTPMessageReceiver._readUntilClose:
            end = self._pos = len(self._buffer)
        elif state is HTTPMessageReceiver._readTrailers:
            # Keep the CRLF that may begin the end of an empty trailer
            # section.
            end = self._pos - 2
        else:
            end = self._pos
        if end > self._start:
            with memoryview(self._buffer) as view:
                part = bytes(view[self._start : end])
            # While the part is delivered, buffered() counts what follows.
            self._start = end
            self._deliverPart(part)

    def _deliverPart(self, part):
        self.partFramed(part)
        self._stopIfClosed()

    def _stopIfClosed(self):
        # After a delivery: if the connection was closed by whoever it went
        # to, or under it, deliver nothing more.
        if self.transport is None or self.transport.disconnecting:
            self._stop()

    def connectionLost(self, reason=connectionDone):
        # Let go of the bytes of an incomplete message now, whatever still
        # refers to this framer (its session does).
        self._stop()
        MessageFramer.connectionLost(self, reason)

    def _stop(self):
        self._stopped = True
        self._streaming = False
        self._buffer = bytearray()
        self._start = self._pos = self._scan = self._checked = 0

    def buffered(self):
        """
        How many bytes of an incomplete message are held; while a message
        is being delivered, how many came after it in the same read.
        """
        return len(self._buffer) - self._start

    def _checkLineEnds(self, end, section):
        """
        Refuse a bare CR or LF in C{self._buffer[self._checked:end]}, part of
        a head or trailer section; a CR that ends the buffer waits for the
        next byte. Each line end is looked at once.

        @raise BadMessage: for a bare CR or LF.
        """
        buffer = self._buffer
        for match in _LINE_END.finditer(buffer, self._checked, end):
            if match.end() - match.start() == 1:
                if match.start() == len(buffer) - 1 and buffer[-1] == 0x0D:
                    self._checked = match.start()
                    return
                raise BadMessage(400, f"bare CR or LF in the {section}")
        self._checked = max(self._checked, end)

    # Each state returns whether it moved on; if not, it waits for bytes.
    # The state is kept as the plain function (HTTPMessageReceiver._readHead)
    # and called with the framer.

    def _readHead(self):
        buffer = self._buffer
        if self._start == len(buffer):
            # Nothing after the last message: wait.
            return False
        if self.skipsEmptyLines:
            # RFC 9112, 2.2: empty lines before a request line are ignored.
            while buffer.startswith(b"\r\n", self._start):
                self._start += 2
            self._scan = max(self._scan, self._start)
        if self._checked < self._start:
            self._checked = self._start
        end = buffer.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._checkLineEnds(len(buffer), "head")
            if len(buffer) - self._start > self.maxHeaderSize:
                raise BadMessage(431, f"head larger than {self.maxHeaderSize} bytes")
            self._scan = max(self._start, len(buffer) - 3)
            return False
        end += 4
        # (A bare CR or LF in a whole head is refused by its parser.)
        if end - self._start > self.maxHeaderSize:
            raise BadMessage(431, f"head larger than {self.maxHeaderSize} bytes")
        self._head, framing = self.headReceived(bytes(buffer[self._start : end]))
        self._pos = self._scan = self._checked = end
        self._streaming = self.streams(self._head)
        if framing is CHUNKED:
            self._state = HTTPMessageReceiver._readChunkSize
        elif framing is UNTIL_CLOSE:
            self._state = HTTPMessageReceiver._readUntilClose
        else:
            if (
                not self._streaming
                and end - self._start + framing > self.maxMessageSize
            ):
                raise BadMessage(
                    413, f"message larger than {self.maxMessageSize} bytes"
                )
            self._remaining = framing
            self._state = HTTPMessageReceiver._readBody
        return True

    def _readBody(self):
        end = self._pos + self._remaining
        if len(self._buffer) < end:
            # What is here is body: read, though not yet passed on.
            self._remaining = end - len(self._buffer)
            self._pos = self._scan = len(self._buffer)
            return False
        self._complete(end)
        return True

    def _readChunkSize(self):
        buffer = self._buffer
        end = buffer.find(b"\r\n", self._scan)
        if end < 0:
            # No CRLF yet: an LF, or a CR before the last byte, is bare.
            if (
                buffer.find(b"\n", self._scan) >= 0
                or buffer.find(b"\r", self._scan, len(buffer) - 1) >= 0
            ):
                raise BadMessage(400, "invalid chunk-size line")
            if len(buffer) - self._pos > self.maxHeaderSize:
                raise BadMessage(400, "chunk-size line too long")
            self._scan = max(self._pos, len(buffer) - 1)
            return False
        match = _CHUNK_SIZE.fullmatch(buffer, self._pos, end)
        if match is None:
            raise BadMessage(400, "invalid chunk-size line")
        size = int(match.group(1), 16)
        self._pos = end + 2
        if size == 0:
            # The CRLF just read may be the first half of the one that ends
            # an empty trailer section.
            self._scan = end
            self._checked = self._pos
            self._state = HTTPMessageReceiver._readTrailers
            return True
        if (
            not self._streaming
            and self._pos + size + 2 - self._start > self.maxMessageSize
        ):
            raise BadMessage(413, f"message larger than {self.maxMessageSize} bytes")
        self._remaining = size
        self._state = HTTPMessageReceiver._readChunkData
        return True

    def _readChunkData(self):
        # The chunk's data is read as it comes, so that a streamed chunk of
        # any size is passed on piece by piece; then its CRLF.
        if self._remaining:
            have = min(len(self._buffer) - self._pos, self._remaining)
            self._pos = self._scan = self._pos + have
            self._remaining -= have
            if self._remaining:
                return False
        after = self._buffer[self._pos : self._pos + 2]
        if not b"\r\n".startswith(after):
            raise BadMessage(400, "chunk data not followed by CRLF")
        if len(after) < 2:
            return False
        self._pos = self._scan = self._pos + 2
        self._state = HTTPMessageReceiver._readChunkSize
        return True

    def _readTrailers(self):
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", self._scan)
        if end < 0:
            self._checkLineEnds(len(buffer), "trailer section")
            if len(buffer) - self._pos > self.maxHeaderSize:
                raise BadMessage(431, f"trailer section larger than {self.maxHeaderSize} bytes")
            self._scan = max(self._pos - 2, len(buffer) - 3)
            return False
        self._checkLineEnds(end + 4, "trailer section")
        if end >= self._pos:
            lines = bytes(buffer[self._pos : end]).split(b"\r\n")
            for line in lines:
                if b"\r" in line or b"\n" in line:
                    raise BadMessage(400, "bare CR or LF in the trailer section")
            _checkFields(lines)
        self._complete(end + 4)
        return True

    def _readUntilClose(self):
        return False

    def _complete(self, end):
        message = bytes(self._buffer[self._start : end])
        head = self._head
        # While the message is delivered, buffered() counts what follows it.
        self._start = self._pos = self._scan = self._checked = end
        self._head = None
        self._state = HTTPMessageReceiver._readHead
        self._awaited = False
        self._streaming = False
        self.messageFramed(head, message)
        self._stopIfClosed()

    def _deliverPlain(self, message):
        self.receiver.messageReceived(PlainMessage(message))
        self._stopIfClosed()

    # For subclasses.

    def plainMessageReceived(self, data):
        """
        C{data} arrived with nothing held before it: if it is one whole
        message of the common kind, deliver it as it is, without buffering
        or parsing it.

        @return: whether it was delivered; if not, C{data} is framed the
            usual way. By default, it is not.
        """
        return False

    def headReceived(self, head):
        """
        C{head} (bytes, start line to empty line) has arrived.

        @return: C{(parsed head, framing)}; the framing is a byte count,
            L{CHUNKED} or L{UNTIL_CLOSE}.
        @raise BadMessage: if the message cannot be carried.
        """
        raise NotImplementedError()

    def streams(self, head):
        """
        Whether the message whose head (a L{Head}) was just parsed is
        passed on as it arrives (L{partFramed}, then L{messageFramed} with
        the rest) rather than whole; if it is, C{maxMessageSize} does not
        limit it. By default, no.
        """
        return False

    def bodyAwaited(self, head):
        """
        The head is here and at least part of the body is not.
        """

    def partFramed(self, part):
        """
        C{part} (bytes, not empty) continues the message being streamed,
        head first; L{messageFramed} brings the rest.
        """
        self.receiver.partReceived(part)

    def messageFramed(self, head, message):
        """
        C{message} (bytes) is whole, or, if it was streamed, its last piece
        (which may be empty); C{head} is its parsed L{Head}.
        """
        raise NotImplementedError()

    def refuse(self, error):
        """
        The input can never be framed (a L{BadMessage}); nothing more is
        delivered.
        """
        self.receiver.framingError(error.reason, None)


class HTTPRequestReceiver(HTTPMessageReceiver):
    """
    Frames a client's requests.

    A client whose request says C{Expect: 100-continue} may wait for
    C{100 Continue} before sending the body; as only whole requests go to
    the target, tcpmux answers C{100 Continue} itself as soon as the head
    is in and the body is not. Bad input is a framing error whose reply
    is a 400, 413, 431, 501 or 505 with C{Connection: close}, for the
    receiver to send before it closes the client.
    """

    skipsEmptyLines = True

    def plainMessageReceived(self, data):
        # An HTTP/1.1 request without a body that says nothing about the
        # connection: most requests.
        match = _PLAIN_REQUEST.match(data)
        if match is None or match.end() != len(data) or len(data) > self.maxHeaderSize:
            return False
        self._deliverPlain(data)
        return True

    def headReceived(self, head):
        parsed = parseRequestHead(head)
        return parsed, requestFraming(parsed)

    def bodyAwaited(self, head):
        if head.expectsContinue():
            self.receiver.replyInOrder(CONTINUE)

    def messageFramed(self, head, message):
        self.receiver.messageReceived(message)

    def refuse(self, error):
        self.receiver.framingError(
            error.reason, errorReply(error.status, error.reason)
        )


class HTTPResponseReceiver(HTTPMessageReceiver):
    """
    Frames the target's responses to the request in flight.

    Interim (1xx) responses are passed to the receiver's C{partReceived},
    whole, one part each, except a C{100 Continue} to a request that said
    C{Expect: 100-continue}: tcpmux has answered that one itself, and the
    target got the whole request at once.

    The final response is streamed: from its head on, at the end of each
    read, what has arrived of it is passed to C{partReceived}, and the last
    piece (maybe empty) to C{messageReceived}. A response that answers no
    request is not streamed: it is buffered whole, up to
    C{maxMessageSize}, for the receiver to refuse.

    When the final response means the connection closes, the connection is
    taken out of service before its last piece is delivered, so that no
    further request is written to it.
    """

    log = Logger()
    _request = None
    # What a request that _PLAIN_REQUEST matches is parsed to, as far as
    # its response is concerned: HTTP/1.1, no framing field, not HEAD.
    _plainRequest = Head((1, 1), ())

    def expectResponseTo(self, request):
        if type(request) is PlainMessage or _PLAIN_REQUEST.match(request) is not None:
            self._request = self._plainRequest
        else:
            self._request = parseRequestHead(request)

    def plainMessageReceived(self, data):
        # A plain request's answer: a final response whose length is one
        # Content-Length, and that leaves the connection open.
        if self._request is not self._plainRequest:
            return False
        match = _PLAIN_RESPONSE.match(data)
        if (
            match is None
            or match.end() + int(match.group(1)) != len(data)
            or match.end() > self.maxHeaderSize
        ):
            return False
        self._request = None
        self._deliverPlain(data)
        return True

    def headReceived(self, head):
        parsed = parseResponseHead(head)
        return parsed, responseFraming(self._request, parsed)

    def streams(self, head):
        return head.status >= 200 and self._request is not None

    def messageFramed(self, head, message):
        request = self._request
        if head.status < 200:
            if request is None:
                self.log.warn(
                    "Dropped an interim {status} response that answers no request",
                    status=head.status,
                )
            elif not (head.status == 100 and request.expectsContinue()):
                self.receiver.partReceived(message)
            return
        self._request = None
        if connectionEnds(request, head):
            self._retire()
        self.receiver.messageReceived(message)

    def _retire(self):
        """
        Carry no more requests on this connection: close it. The target
        connection factory offers no further request to a connection that
        is closing, and opens a new one.
        """
        self._stop()
        self.transport.loseConnection()

    def connectionLost(self, reason=connectionDone):
        if not self._stopped and self._state is HTTPMessageReceiver._readUntilClose:
            # The close ends a response that has no length.
            self._complete(len(self._buffer))
        HTTPMessageReceiver.connectionLost(self, reason)


class HTTP(ApplicationProtocol):
    name = "http"
    description = "HTTP/1.1 requests and responses (RFC 9112 framing)"
    requestFramer = HTTPRequestReceiver
    responseFramer = HTTPResponseReceiver

    def errorResponse(self, request, error):
        """
        502 when there is no connection to the target or it sent something
        that is not a valid response, 504 when it did not answer in time or
        closed mid-response. Both say C{Connection: close}
        and the client is closed: requests it pipelined behind the failed
        one can no longer be answered in a way it could trust.
        """
        if isinstance(error, TargetUnavailable):
            status, explanation = 502, "the target cannot be reached"
        elif isinstance(error, InvalidResponse):
            status, explanation = 502, "the target sent an invalid response"
        elif isinstance(error, (TargetTimeout, TargetLost)):
            status, explanation = 504, "the target did not send a whole response"
        else:
            status, explanation = 502, "the request could not be carried"
        try:
            bodyless = parseRequestHead(request).method == b"HEAD"
        except BadMessage:
            bodyless = False
        return errorReply(status, explanation, bodyless)

    def closesClient(self, request, response):
        """
        When the request or the final response says the connection closes,
        the response runs to the close, or the response is one tcpmux
        answered itself (502, 504).

        @param response: the answer, or its start: any interim (1xx)
            responses, then the final one. Without a whole final head in
            it, the client is closed, to be safe.
        """
        if (
            type(request) is PlainMessage or _KEEP_ALIVE_REQUEST.match(request) is not None
        ) and (
            type(response) is PlainMessage or _PLAIN_RESPONSE.match(response) is not None
        ):
            # Asked of every answer: the common case, which the framers
            # marked (a plain request keeps the connection open), else two
            # matches instead of parsing two heads the framers parsed.
            return False
        return closesAfter(request, response)

    def describe(self, message):
        """
        The start line, for verbose logs.
        """
        end = message.find(b"\r\n")
        if not 0 <= end <= 200:
            end = 200
        return message[:end].decode("latin-1")


application = HTTP()
