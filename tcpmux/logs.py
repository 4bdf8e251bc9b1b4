# -*- test-case-name: tests.test_multiplexer -*-
"""
Warnings that repeat, logged without flooding the log.
"""


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
