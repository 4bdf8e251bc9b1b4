"""
The tcpmux demo: a Modbus device that accepts ONE connection at a time,
tcpmux in front of it, and several pymodbus clients using it at once.

    python3 examples/demo.py

Run from a checkout. If pymodbus and twisted are not importable, it first
creates a virtualenv in .venv, installs tcpmux and its test extras there,
and runs itself again inside it.
"""

import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VENV = os.path.join(ROOT, ".venv")
CLIENTS = 5


def ensureEnvironment():
    try:
        import pymodbus  # noqa: F401
        import twisted  # noqa: F401
    except ImportError:
        python = os.path.join(VENV, "bin", "python")
        if os.path.abspath(sys.executable) == os.path.abspath(python):
            raise
        if not os.path.exists(python):
            print(f"Creating a virtualenv in {os.path.relpath(VENV)} ...", flush=True)
            subprocess.check_call([sys.executable, "-m", "venv", VENV])
        subprocess.check_call(
            [python, "-m", "pip", "install", "-q", f"{ROOT}[test]"]
        )
        os.execv(python, [python, *sys.argv])


def start(args, ready):
    """
    Start a child process and wait for a line of its output containing
    C{ready}; return the process and that line.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=ROOT)
    process = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    for line in process.stdout:
        lines.append(line)
        if ready in line:
            return process, line, lines
    raise SystemExit("".join(lines) or f"{args[1]} exited")


def freePort():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(port, index, report):
    from pymodbus.client import ModbusTcpClient

    modbus = ModbusTcpClient("127.0.0.1", port=port, timeout=10)
    modbus.connect()
    values = [index * 100 + i for i in range(3)]
    modbus.write_registers(index * 10, values, device_id=1)
    read = modbus.read_holding_registers(index * 10, count=3, device_id=1)
    modbus.close()
    report[index] = (values, read.registers if not read.isError() else read)


def main():
    ensureEnvironment()
    python = sys.executable
    device, line, deviceLines = start(
        [python, os.path.join(ROOT, "examples", "modbus_device.py"), "--port", "0"],
        "listening on",
    )
    devicePort = int(line.rsplit(":", 1)[1])
    print(f"device: Modbus TCP on 127.0.0.1:{devicePort}, one connection at a time")

    # Record the device's output from now on.
    threading.Thread(target=lambda: deviceLines.extend(device.stdout), daemon=True).start()

    muxPort = freePort()
    twistd = [python, "-c", "from twisted.scripts.twistd import run; run()"]
    mux, _, _ = start(
        twistd + ["-n", "--pidfile=", "tcpmux", "--protocol", "modbus",
                  "--target", f"127.0.0.1:{devicePort}",
                  "--listen", f"tcp:{muxPort}:interface=127.0.0.1"],
        "Connected to target",
    )
    print(f"tcpmux: listening on 127.0.0.1:{muxPort}, holding the device's connection")
    try:
        report = {}
        threads = [
            threading.Thread(target=client, args=(muxPort, index, report))
            for index in range(1, CLIENTS + 1)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for index in sorted(report):
            wrote, read = report[index]
            verdict = "ok" if wrote == read else "WRONG"
            print(f"client {index}: wrote {wrote} to registers {index * 10}.., read back {read}: {verdict}")
        time.sleep(0.2)
        accepted = sum("accepted connection" in line for line in deviceLines)
        refused = sum("refused connection" in line for line in deviceLines)
        print(f"device saw {accepted} connection(s) accepted, {refused} refused, "
              f"for {CLIENTS} clients at once")
        return 0 if all(w == r for w, r in report.values()) and accepted == 1 else 1
    finally:
        mux.terminate()
        device.terminate()
        mux.wait()
        device.wait()


if __name__ == "__main__":
    sys.exit(main())
