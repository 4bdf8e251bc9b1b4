"""
End to end over real TCP: pymodbus clients, through tcpmux, to pymodbus's
own server restricted to one connection at a time (examples/modbus_device.py).
"""

import time

from pymodbus.client import ModbusTcpClient
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from tests.modbus import clientSession
from tests.support import runExample, startMultiplexer


class ModbusThroughMultiplexerTests(TestCase):
    timeout = 60

    async def test_manyClientsOneConnection(self):
        """
        Ten pymodbus clients at once each write and read back their own
        registers; every answer is the client's own, and the device saw
        exactly one connection.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(self, "modbus", devicePort)
        results = await gatherResults(
            [deferToThread(clientSession, port, index) for index in range(10)]
        )
        for index, seen in enumerate(results):
            self.assertEqual(
                seen, [[index * 100 + round_, round_, index] for round_ in range(5)]
            )
        self.assertEqual(device.count("accepted connection"), 1)
        self.assertEqual(device.count("refused connection"), 0)

    async def test_deviceRestarted(self):
        """
        The device goes away and comes back on the same port: while it is
        down a client gets a gateway exception, and afterwards tcpmux uses
        it again without being restarted.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(
            self, "modbus", devicePort, "--retry-delay", "100ms", "--timeout", "5"
        )
        self.assertEqual(await deferToThread(clientSession, port, 1, 1), [[100, 0, 1]])
        device.signal("KILL")
        await device.ended

        def whileDown():
            client = ModbusTcpClient("127.0.0.1", port=port, timeout=10, retries=0)
            client.connect()
            try:
                return client.read_holding_registers(0, count=1, device_id=1)
            finally:
                client.close()

        response = await deferToThread(whileDown)
        self.assertTrue(response.isError())
        self.assertEqual(response.exception_code, 0x0A)

        await runExample(self, "modbus_device.py", "--port", str(devicePort))
        back = time.monotonic()

        def untilAnswered():
            # Refusals within --retry-delay of the last failed attempt are
            # answered at once with 0x0A; keep asking like a poller would.
            while True:
                response = whileDown()
                if not response.isError():
                    return time.monotonic()
                self.assertEqual(response.exception_code, 0x0A)
                time.sleep(0.02)

        answered = await deferToThread(untilAnswered)
        self.assertLess(answered - back, 0.1 + 1)
        self.assertEqual(
            await deferToThread(clientSession, port, 2, 2), [[200, 0, 2], [201, 1, 2]]
        )
