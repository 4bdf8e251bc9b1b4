"""
Property-based tests (hypothesis) for the C{echo} and C{modbus} framers:
any chunking of a valid stream yields the same messages; arbitrary bytes
never raise anything but a framing error; nothing buffers more than the
framer's documented maximum. (The other framers' properties live with their
own tests.)
"""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from tcpmux.protocols.echo import LineMessageReceiver
from tcpmux.protocols.modbus import ModbusTCPReceiver
from tests.framers import chunked, feed, feedLikeAReactor
from tests.modbus import adu


def feedAll(framerClass, chunks):
    framer, recorder = feed(framerClass)
    feedLikeAReactor(framer, chunks)
    return recorder, framer.transport


adus = st.builds(
    adu,
    st.integers(0, 0xFFFF),
    st.integers(0, 255),
    st.binary(min_size=1, max_size=253),
)
lines = st.binary(max_size=200).map(lambda b: b.replace(b"\n", b"") + b"\n")
cutPoints = st.lists(st.integers(min_value=0), max_size=30)


def referenceModbus(data):
    """
    A plain reading of the MBAP rules: the ADUs a correct framer delivers
    from C{data}, and whether it must report an error.
    """
    messages, start = [], 0
    while len(data) - start >= 4:
        if data[start + 2 : start + 4] != b"\x00\x00":
            return messages, True
        if len(data) - start < 6:
            break
        length = struct.unpack(">H", data[start + 4 : start + 6])[0]
        if not 2 <= length <= 254:
            return messages, True
        if len(data) - start < 6 + length:
            break
        messages.append(data[start : start + 6 + length])
        start += 6 + length
    return messages, False


class ModbusProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(adus, max_size=10), cutPoints)
    def test_anyChunking(self, messages, cuts):
        recorder, transport = feedAll(ModbusTCPReceiver, chunked(b"".join(messages), cuts))
        self.assertEqual(recorder.messages, messages)
        self.assertEqual(recorder.errors, [])
        self.assertFalse(transport.disconnecting)

    @settings(max_examples=500, deadline=None)
    @given(
        st.lists(st.one_of(adus, st.binary(max_size=12)), max_size=8).map(b"".join),
        cutPoints,
    )
    def test_arbitraryBytes(self, data, cuts):
        """
        Arbitrary bytes (often valid ADUs with noise between them) deliver
        exactly what the reference reading finds, report a framing error
        exactly when it does, and raise nothing.
        """
        recorder, transport = feedAll(ModbusTCPReceiver, chunked(data, cuts))
        messages, error = referenceModbus(data)
        self.assertEqual(recorder.messages, messages)
        self.assertEqual(len(recorder.errors), int(error))
        self.assertEqual(transport.disconnecting, error)


class LineProperties(SynchronousTestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(lines, max_size=10), cutPoints)
    def test_anyChunking(self, messages, cuts):
        recorder, transport = feedAll(LineMessageReceiver, chunked(b"".join(messages), cuts))
        self.assertEqual(recorder.messages, messages)
        self.assertFalse(transport.disconnecting)

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=70000), cutPoints)
    def test_arbitraryBytes(self, data, cuts):
        """
        Any bytes deliver the newline-terminated lines up to the first one
        too long, and a framing error for that one, and raise nothing.
        """
        recorder, transport = feedAll(LineMessageReceiver, chunked(data, cuts))
        expected, error = [], False
        for line in data.split(b"\n")[:-1]:
            if len(line) > LineMessageReceiver.MAX_LENGTH:
                error = True
                break
            expected.append(line + b"\n")
        if not error and len(data.split(b"\n")[-1]) > LineMessageReceiver.MAX_LENGTH:
            error = True
        self.assertEqual(recorder.messages[: len(expected)], expected)
        if error:
            self.assertEqual(len(recorder.errors), 1)
            self.assertTrue(transport.disconnecting)
        else:
            self.assertEqual(recorder.messages, expected)
            self.assertEqual(recorder.errors, [])
