"""
Load: 1,000 concurrent clients over one target connection, and a storm of
10,000 short connections after which tcpmux holds no more file descriptors
and (nearly) no more memory than before. Clients run in this process, on
real TCP sockets of 127.0.0.1.
"""

import gc
import os

from twisted.internet.defer import gatherResults
from twisted.trial.unittest import TestCase

from tests.faults import FaultTarget, answer, ask, connect
from tests.modbus import readRequest, readResponse
from tests.support import runExample, startMultiplexer, until


def openFds():
    return len(os.listdir("/proc/self/fd"))


def rssKiB():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])


class LoadTests(TestCase):
    timeout = 60

    async def test_thousandConcurrentClients(self):
        """
        1,000 clients connected at once each write a register of their own
        and read it back three times; every answer is the client's own, and
        the device saw one connection.
        """
        device, devicePort = await runExample(self, "modbus_device.py", "--port", "0")
        port, multiplexer = await startMultiplexer(self, "modbus", devicePort)
        clients = [await connect(self, port) for _ in range(1000)]
        await until(lambda: len(multiplexer.clients) == 1000)

        async def session(index, client):
            for round_ in range(3):
                value = (index * 7 + round_) & 0xFFFF
                write = bytes.fromhex("%04x0000000601060000" % round_)[:6] + bytes(
                    [1, 6]) + index.to_bytes(2, "big") + value.to_bytes(2, "big")
                self.assertEqual(await ask(client, write), write)
                self.assertEqual(
                    await ask(client, readRequest(round_ + 100, index)),
                    readResponse(round_ + 100, value),
                )

        from twisted.internet.defer import Deferred

        await gatherResults(
            [Deferred.fromCoroutine(session(i, c)) for i, c in enumerate(clients)]
        )
        self.assertEqual(device.count("accepted connection"), 1)
        self.assertEqual(device.count("refused connection"), 0)

    async def test_connectionStorm(self):
        """
        10,000 short connections, 40 at a time (the listen backlog is 50), half of them asking one
        request: afterwards the open file descriptors are back to where they
        started, and RSS within 4 MiB of it.
        """
        target = FaultTarget("modbus", answer)
        port, multiplexer = await startMultiplexer(self, "modbus", target.listen(self))

        async def wave(count, offset):
            async def one(i):
                client = await connect(self, port, cleanup=False)
                if i % 2:
                    self.assertEqual(
                        await ask(client, readRequest(i & 0xFFFF, i % 1000)),
                        readResponse(i & 0xFFFF, i % 1000),
                    )
                client.transport.loseConnection()
                await client.closed

            from twisted.internet.defer import Deferred

            await gatherResults(
                [Deferred.fromCoroutine(one(offset + i)) for i in range(count)]
            )

        # Warm up allocators and caches, then measure.
        for w in range(15):
            await wave(40, w * 40)
        await until(lambda: not multiplexer.clients)
        gc.collect()
        fds, rss = openFds(), rssKiB()
        for w in range(250):
            await wave(40, w * 40)
        await until(lambda: not multiplexer.clients)
        gc.collect()
        self.assertEqual(openFds(), fds)
        self.assertLess(rssKiB() - rss, 4 * 1024)
        self.assertEqual(len(target.requests), 300 + 5000)
        self.assertEqual(target.accepted, 1)
