"""
The Modbus read cache's benchmark: N clients polling the same registers of
a slow device, with and without C{--cache-ttl}, in one run.

    python benchmarks/cache.py                      # 10 clients, 10 registers, 20 ms device
    python benchmarks/cache.py --duration 10 --tcpmux-args '--cache-ttl 500ms'

A fresh device (benchmarks/target.py with --latency and one connection at
most) and a fresh tcpmux serve each variant; closed-loop clients
(benchmarks/load.py --same-read) check every answer byte for byte. It prints
round trips per second for each variant, the ratio, and how many requests
reached the device.
"""

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

from bench import HERE, REPO, freePort, readLine, spawn, stop, waitListening


def measure(options, extra):
    """
    Round trips per second of C{options.clients} clients through tcpmux
    run with C{extra} arguments, and the requests the device answered.
    """
    target = spawn(
        [
            sys.executable,
            str(HERE / "target.py"),
            "-p",
            "modbus",
            "--latency",
            options.latency,
            "--connections-limit",
            "1",
        ],
        None,
    )
    proxy = None
    try:
        targetPort = json.loads(readLine(target, 10, "target"))["listening"]
        port = freePort()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), env.get("PYTHONPATH")) if p
        )
        proxy = spawn(
            [
                options.tcpmux_python,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                "tcpmux",
                "-p",
                "modbus",
                "-t",
                f"127.0.0.1:{targetPort}",
                "-l",
                f"tcp:{port}:interface=127.0.0.1",
                *extra,
            ],
            None,
            env=env,
            quiet=True,
        )
        waitListening(port, proxy)
        time.sleep(0.3)  # its connection to the device is made
        load = subprocess.run(
            [
                sys.executable,
                str(HERE / "load.py"),
                "--standalone",
                "--port",
                str(port),
                "--clients",
                str(options.clients),
                "--same-read",
                str(options.registers),
                "--warmup",
                str(options.warmup),
                "--duration",
                str(options.duration),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        result = json.loads(load.stdout.strip().splitlines()[-1])
        if load.returncode or result["mismatches"] or result["errors"]:
            raise SystemExit(f"load failed: {load.stdout} {load.stderr}")
    finally:
        stop(proxy)
        stop(target)
    answered = json.loads(target.stdout.read().strip().splitlines()[-1])["answered"]
    return result, answered


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--registers", type=int, default=10)
    parser.add_argument("--latency", default="20ms", help="the device's answer time")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--tcpmux-args", default="--cache-ttl 1s", help="the cached variant's arguments")
    parser.add_argument("--tcpmux-python", default=sys.executable)
    options = parser.parse_args(argv)
    rows = []
    for name, extra in (("no cache", []), (options.tcpmux_args, shlex.split(options.tcpmux_args))):
        result, answered = measure(options, extra)
        rows.append((name, result["round_trips_per_s"], result["p50_us"], answered))
    print(
        f"{options.clients} clients polling the same {options.registers} registers "
        f"of a device answering in {options.latency}, {options.duration:g}s:"
    )
    for name, rate, p50, answered in rows:
        print(f"  {name:24} {rate:10.0f} round trips/s  p50 {p50 / 1000:7.2f} ms  device requests {answered}")
    print(f"  ratio: {rows[1][1] / rows[0][1]:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
