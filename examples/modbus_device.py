"""
A simulated Modbus TCP device that, like a real inverter dongle, serves only
ONE connection at a time: a second connection is closed at once while the
first is open (--max-connections raises the limit).

It is pymodbus's own Modbus TCP server with a 1000-register holding block
shared by every function code for any unit id.
It prints one line per accepted or refused connection, so you can see that
tcpmux holds a single connection however many clients it serves:

    python examples/modbus_device.py --port 5502
    listening on 127.0.0.1:5502
    accepted connection 1
    refused connection from 127.0.0.1:40120 (one at a time)

Needs pymodbus (pip install pymodbus).
"""

import argparse
import asyncio
import sys

from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice


class OneConnectionServer(ModbusTcpServer):
    """
    A pymodbus TCP server that closes any connection made while
    C{maxConnections} (by default one) are open.
    """

    accepted = 0
    maxConnections = 1

    def handle_new_connection(self):
        if len(self.active_connections) >= self.maxConnections:
            return _Refuse()
        self.accepted += 1
        return super().handle_new_connection()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport):
        peer = transport.get_extra_info("peername")
        print(f"refused connection from {peer[0]}:{peer[1]} (one at a time)", flush=True)
        transport.close()


def makeDevice(size=1000):
    """
    Registers 0..size-1, shared by every function code, for every unit id.
    """
    return SimDevice(
        id=0,
        simdata=[SimData(address=0, count=size, values=0, datatype=DataType.REGISTERS)],
    )


async def serve(host, port, maxConnections=1):
    def onConnect(connected):
        if connected:
            print(f"accepted connection {server.accepted}", flush=True)
        else:
            print("connection closed", flush=True)

    server = OneConnectionServer(
        makeDevice(), address=(host, port), trace_connect=onConnect
    )
    server.maxConnections = maxConnections
    await server.serve_forever(background=True)
    sockets = server.transport.sockets
    print(f"listening on {host}:{sockets[0].getsockname()[1]}", flush=True)
    await server.serving


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5502, help="0 picks a free port")
    parser.add_argument(
        "--max-connections", type=int, default=1,
        help="connections served at once (default 1, like a dongle)",
    )
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port, args.max_connections))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
