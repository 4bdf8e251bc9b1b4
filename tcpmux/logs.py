# -*- test-case-name: tests.test_multiplexer -*-
"""
Warnings that repeat, logged without flooding the log; mux names for log
events; JSON log lines (C{twistd --logger tcpmux.logs.json}).
"""

import sys
import time
from datetime import datetime, timezone
from json import dumps
from weakref import WeakKeyDictionary

from twisted.logger import ILogObserver, eventAsText
from zope.interface import implementer


class RepeatedWarnings:
    """
    The first warning of a kind is logged at once; the same kind again
    within C{window} seconds is only counted, and the count logged once when
    the window ends. (A device that is down, polled by fifty clients, or a
    target that pushes unrequested bytes all day, would otherwise write
    thousands of identical lines a second.)
    """

    def __init__(self, log, clock, window=10.0):
        self.log = log
        self.clock = clock
        self.window = window
        self._windows = {}

    def warn(self, key, format, summary=None, **fields):
        """
        Log C{format} with C{fields}, unless a warning with the same C{key}
        was logged less than C{window} seconds ago.

        @param summary: the format of the line that counts the repeats;
            it gets C{count} and C{window} besides C{fields}.
        """
        self._emit(self.log.warn, key, format, summary, fields)

    def info(self, key, format, summary=None, **fields):
        """
        Like L{warn}, for routine events that can repeat fast (a target
        that closes after every response).
        """
        self._emit(self.log.info, key, format, summary, fields)

    def _emit(self, emit, key, format, summary, fields):
        window = self._windows.get(key)
        if window is not None:
            window[1] += 1
            return
        emit(format, **fields)
        if summary is None:
            summary = "{count} more times in the last {window}s: " + format
        call = self.clock.callLater(self.window, self._flush, key)
        self._windows[key] = [call, 0, emit, summary, fields]

    def _flush(self, key):
        call, count, emit, summary, fields = self._windows.pop(key)
        if count:
            emit(summary, count=count, window=self.window, **fields)

    def flushAll(self):
        """
        Log what is still counted, now (tcpmux is stopping).
        """
        for key in list(self._windows):
            call = self._windows[key][0]
            if call.active():
                call.cancel()
            self._flush(key)


# Which mux (the name of a listener -> target pair) each of its parts
# belongs to, for log observers; see L{nameMux} and L{muxOf}.
_muxes = WeakKeyDictionary()

# Attributes that lead from a part of a multiplexer to its other parts, and
# from an object that logs (a client or target session, a framer) to the
# part that owns it.
_PARTS = ("clients", "dispatcher", "queues", "target", "targets", "factories")
_OWNERS = ("registry", "factory")


def nameMux(name, multiplexer):
    """
    Say that C{multiplexer} (a L{tcpmux.multiplexer.Multiplexer}) and its
    parts (its client registry, dispatchers, queues and targets, wrapped or
    pooled) log as the mux C{name}: L{muxOf} finds it from their events'
    C{log_source}, for L{json}'s C{mux} field.
    """
    seen = set()

    def tag(part, depth):
        if depth > 8 or id(part) in seen:
            return
        seen.add(id(part))
        if isinstance(part, (list, tuple, dict)):
            for item in part.values() if isinstance(part, dict) else part:
                tag(item, depth + 1)
            return
        if not type(part).__module__.startswith("tcpmux."):
            return
        try:
            _muxes[part] = name
        except TypeError:
            pass
        for attribute in _PARTS:
            inner = getattr(part, attribute, None)
            if inner is not None:
                tag(list(inner) if attribute == "queues" else inner, depth + 1)

    tag(multiplexer, 0)


def muxOf(source):
    """
    The name of the mux that C{source} (an event's C{log_source}) belongs
    to, or L{None}: found from the parts L{nameMux} tagged, directly or
    through the client registry or factory that owns C{source}.
    """
    for _ in range(4):
        if source is None:
            return None
        try:
            name = _muxes.get(source)
        except TypeError:
            return None
        if name is not None:
            return name
        owners = (getattr(source, attribute, None) for attribute in _OWNERS)
        source = next((owner for owner in owners if owner is not None), None)
    return None


# The event fields that L{json} copies, when an event has them.
JSON_FIELDS = ("mux", "client", "target")


def jsonEvent(event):
    """
    One log event as a dict for L{json}: C{time} (ISO 8601, UTC), C{level},
    C{text} (the formatted message, and a failure's traceback), and C{mux},
    C{client} and C{target} when the event has them (C{mux} also from the
    event's source, see L{muxOf}).
    """
    when = event.get("log_time")
    if when is None:
        when = time.time()
    level = event.get("log_level")
    record = {
        "time": datetime.fromtimestamp(when, timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        "level": level.name if level is not None else "info",
        "text": eventAsText(event, includeTimestamp=False, includeSystem=False),
    }
    for name in JSON_FIELDS:
        value = event.get(name)
        if value is None and name == "mux":
            value = muxOf(event.get("log_source"))
        if value is not None:
            record[name] = value if isinstance(value, (str, int, float)) else str(value)
    return record


@implementer(ILogObserver)
class JSONLinesObserver:
    """
    Writes each log event to C{stream} as one line of JSON (L{jsonEvent}).
    """

    def __init__(self, stream):
        self.stream = stream

    def __call__(self, event):
        try:
            line = dumps(jsonEvent(event), ensure_ascii=False)
        except Exception as e:  # a log line is never worth a crash
            line = dumps({"level": "error", "text": f"unloggable event: {e!r}"})
        self.stream.write(line + "\n")
        self.stream.flush()


def json():
    """
    The log observer for C{twistd --logger tcpmux.logs.json}: one JSON
    object per line on standard output (for journald and containers).
    """
    # twistd calls this before it redirects sys.stdout into the log.
    return JSONLinesObserver(sys.stdout)
