"""
What serving metrics costs: tcpmux's throughput with 1,000 Modbus clients
and 3 devices, with and without --metrics, the metrics scraped every second
during the run (Prometheus's /metrics and the status page's /status.json,
as a scraper and an open status page would).

    python benchmarks/metrics_cost.py                 # about 1.5 minutes
    python benchmarks/metrics_cost.py --duration 20 --rounds 2

One twistd tcpmux process serves the three devices (benchmarks/target.py,
Modbus): unit 1 goes to the first (--target), units 2 and 3 to the second
and third (--route), each over its own connection and queue. The load
(benchmarks/load.py --units 3) is 1,000 closed-loop clients, a third of them
on each unit, every answer verified byte-for-byte.

The cells run in the order without, with, with, without (per round), each
with fresh devices, proxy and load, so that drift affects both alike; the
figure is the ratio of the round trips completed with --metrics to those
without, over all cells. The run fails (exit 1) if a cell fails its
verification, if a scrape fails, or, with --strict, if metrics cost 5% or
more.

It reuses bench.py's processes (and with --pin its pinning), and its options
where they apply. Besides throughput it reports round trips per second of
the proxy's CPU, with and without: on a machine others share, the steadier
of the two.
"""

import argparse
import json
import re
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402

WITHOUT = "without --metrics"
WITH = "with --metrics"
DEVICES = 3


class Scraper(threading.Thread):
    """
    GETs C{paths} from C{base} every C{interval} seconds until stopped;
    counts the answers, and keeps the last /metrics text.
    """

    def __init__(self, base, paths=("/metrics", "/status.json"), interval=1.0):
        super().__init__(daemon=True)
        self.base = base
        self.paths = paths
        self.interval = interval
        self.stopped = threading.Event()
        self.ok = 0
        self.failures = []
        self.seconds = []
        self.last = ""

    def run(self):
        while not self.stopped.is_set():
            started = time.monotonic()
            for path in self.paths:
                try:
                    with urllib.request.urlopen(self.base + path, timeout=5) as answer:
                        body = answer.read()
                    self.ok += 1
                    if path == "/metrics":
                        self.last = body.decode()
                except OSError as e:
                    self.failures.append(f"{path}: {e}")
            self.seconds.append(time.monotonic() - started)
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self):
        self.stopped.set()
        self.join(10)


class MetricsBench(bench.Bench):
    """
    bench.py's cell, with three devices behind one tcpmux, and a scraper
    while --metrics is on.
    """

    def startTarget(self, protocol, corruptEvery=0):
        started = [bench.Bench.startTarget(self, protocol) for _ in range(DEVICES)]
        self.devices = started
        return started[0]

    def startProxy(self, system, protocol, targetPort, profile=None):
        ports = [port for _, port in self.devices]
        # Unit 1 to the first device (--target), 2 and 3 to the others.
        routes = " ".join(
            f"--route {unit}=127.0.0.1:{ports[unit - 1]}" for unit in range(2, DEVICES + 1)
        )
        self.scraper = None
        metricsPort = bench.freePort()
        extra = ""
        if system == WITH:
            extra = f" --metrics tcp:{metricsPort}:interface=127.0.0.1"
        self.variants[system] = f"{routes}{extra} {self.options.tcpmux_args}"
        proxy, port = bench.Bench.startProxy(self, system, protocol, targetPort, profile)
        if system == WITH:
            bench.waitListening(metricsPort, proxy)
            self.scraper = Scraper(f"http://127.0.0.1:{metricsPort}")
            self.scraper.start()
        return proxy, port

    def summarize(self, cell, results, latencies):
        # The window is over and the proxy still runs: stop scraping now.
        if self.scraper is not None:
            self.scraper.stop()
        bench.Bench.summarize(self, cell, results, latencies)

    def runCell(self, protocol, system, clients, procs=1, profile=None):
        self.devices = []
        self.scraper = None
        try:
            cell = bench.Bench.runCell(self, protocol, system, clients, procs, profile)
        finally:
            for proc, _ in self.devices[1:]:
                bench.stop(proc)
        # bench's runCell read the first device's statistics.
        answered = [cell.get("target", {}).get("answered")]
        for proc, _ in self.devices[1:]:
            try:
                stats = proc.stdout.read().strip().splitlines()[-1]
                answered.append(json.loads(stats)["answered"])
            except (ValueError, IndexError, OSError, KeyError):
                answered.append(None)
        cell["device_answered"] = answered
        scraper = self.scraper
        if scraper is not None:
            scraper.stop()
            cell["scrapes_ok"] = scraper.ok
            cell["scrape_failures"] = len(scraper.failures)
            cell["scrape_ms_max"] = round(1000 * max(scraper.seconds or [0]), 1)
            okTotal = sum(
                float(value)
                for value in re.findall(
                    r'^tcpmux_round_trips_total\{[^}]*outcome="ok"[^}]*\} (\S+)$',
                    scraper.last,
                    re.M,
                )
            )
            cell["scraped_ok_round_trips"] = int(okTotal)
            if scraper.failures:
                cell.setdefault("problems", []).append(scraper.failures[0])
                cell["verified"] = False
            if not okTotal:
                cell.setdefault("problems", []).append("no round trip in /metrics")
                cell["verified"] = False
        if any(not n for n in answered):
            cell.setdefault("problems", []).append(f"a device answered nothing: {answered}")
            cell["verified"] = False
        return cell


def parseArgs(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=1, help="each round: without, with, with, without")
    parser.add_argument("--load-procs", type=int, default=2)
    parser.add_argument("--tcpmux-args", default="", help="more twistd tcpmux arguments for both")
    parser.add_argument("--tcpmux-python", default=sys.executable)
    parser.add_argument("--cpus", help="CPUs to use, comma-separated: proxy, devices and load...")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the proxy to the first CPU, devices and load to the others (on two "
        "cores, the five processes on the second then starve: not by default)",
    )
    parser.add_argument("--json", help="write the cells to this file")
    parser.add_argument("--strict", action="store_true", help="exit 3 if metrics cost 5%% or more")
    options = parser.parse_args(argv)
    # What bench.Bench reads.
    options.target_latency = ""
    options.target_connections_limit = 0
    options.idle_clients = []
    options.load_args = f"--units {DEVICES}"
    options.no_pin = not options.pin
    options.count, options.clients = options.clients, [options.clients]
    return options


def main(argv=None):
    options = parseArgs(argv)
    runner = MetricsBench(options)
    runner.variants = {}
    print(
        f"{options.count} clients, {DEVICES} devices, {options.duration:g}s cells "
        f"after {options.warmup:g}s warm-up; "
        + (
            f"proxy on CPU {sorted(runner.proxyCpus)}, devices on "
            f"{sorted(runner.targetCpus)}, load on {sorted(runner.loadCpus)}"
            if runner.pinned
            else "not pinned"
        ),
        flush=True,
    )
    cells = []
    for _ in range(options.rounds):
        for system in (WITHOUT, WITH, WITH, WITHOUT):
            cell = runner.runCell("modbus", system, options.count, options.load_procs)
            cells.append(cell)
            print(
                f"  {system:18} {cell.get('rps', 0):9.0f} round trips/s  "
                f"p50 {cell.get('p50_us', 0) / 1000:6.2f} ms  p99 {cell.get('p99_us', 0) / 1000:6.2f} ms  "
                f"proxy CPU {cell.get('cpu_proxy_pct', 0):5.1f}%  "
                f"devices {cell.get('device_answered')}"
                + (
                    f"  scrapes {cell['scrapes_ok']} (slowest {cell['scrape_ms_max']} ms)"
                    if "scrapes_ok" in cell
                    else ""
                )
                + ("" if cell.get("verified") else f"  FAILED: {cell.get('problems')}"),
                flush=True,
            )
    if options.json:
        with open(options.json, "w") as f:
            json.dump(cells, f, indent=1)
    failed = [c for c in cells if not c.get("verified")]
    total = {
        system: sum(c.get("round_trips", 0) for c in cells if c["system"] == system)
        for system in (WITHOUT, WITH)
    }
    ratio = total[WITH] / total[WITHOUT] if total[WITHOUT] else 0.0
    cost = 100 * (1 - ratio)
    # Round trips per second of the proxy's CPU: the cost where the proxy
    # is not the only bottleneck (a shared machine).
    cpu = {
        system: sum(
            c.get("cpu_proxy_pct", 0) / 100 * options.duration
            for c in cells
            if c["system"] == system
        )
        for system in (WITHOUT, WITH)
    }
    efficiency = (
        (total[WITH] / cpu[WITH]) / (total[WITHOUT] / cpu[WITHOUT])
        if cpu[WITH] and cpu[WITHOUT] and total[WITHOUT]
        else 0.0
    )
    print(
        f"with/without --metrics: {ratio:.3f} of the throughput "
        f"(metrics cost {cost:.1f}%; target: under 5%); "
        f"{efficiency:.3f} of the round trips per proxy CPU-second"
    )
    if failed:
        print(f"{len(failed)} cells failed")
        return 1
    if options.strict and cost >= 5:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
