"""
Benchmark tcpmux against the direct connection and modbus-proxy.

    python benchmarks/bench.py                 # default suite, a few minutes
    python benchmarks/bench.py --quick         # about a minute
    python benchmarks/bench.py --protocols modbus --clients 10 --duration 5 \\
        --variant tcpmux= --variant pool4='--connections 4' --target-latency 2ms

For each protocol (echo, modbus) and each number of concurrent clients it
starts a fresh fast target (benchmarks/target.py), a fresh proxy and
closed-loop load processes (benchmarks/load.py), and measures round trips
per second and p50/p99 latency over a fixed window after a warm-up:

  - direct: one connection straight to the target, one round trip at a
    time: the physical limit of serialized round trips. Measured twice:
    with the load on the target's core, and with the load on the proxy's
    core (so that, like a proxied round trip, it crosses both cores);
  - tcpmux (each --variant: extra twistd tcpmux arguments);
  - modbus-proxy, the PyPI peer (modbus only), installed into its own
    virtualenv (benchmarks/.venv-modbus-proxy) on first use.

The cells run interleaved (direct, tcpmux, modbus-proxy for each client
count in turn, --rounds times), so that drift affects all alike. With two
or more cores the proxy is pinned to the first core, the target and the
load to the second (the load to the third and later ones if there are).

Every answer is verified byte-for-byte by the load generator against the
answer to its own request; a mismatch, a lost request, a failed connection
or a starved client (no answer in the window) fails the cell, and the
benchmark exits with status 1. --check-verifier runs a target that corrupts
answers and exits 1 unless the load generator catches it.

The load generator is shown not to be the bottleneck by re-running the
10-client cells with 2 and 4 load processes (--load-check): the proxy's
figure must not move. The CPU share of every process in each cell is
reported too: the proxy's core is saturated, the load's is not.

Peak (VmHWM) and current (VmRSS) resident memory of the proxy come from
/proc/PID/status, under load and with 100 and 1,000 connected idle clients.
The same idle clients are also measured on echo against tcpmux and against
its floor, C{twistd-floor}: twistd running a bare Twisted echo server as a
plugin (benchmarks/floor), through the same plugin scan and with no tcpmux
code, which says what Twisted and twistd alone take. For modbus, two
yardsticks run beside tcpmux, from the same plugin directory: twisted-floor,
the barest proxy Twisted can be (requests in order over one connection,
written at once, polling while an answer is due, and nothing else), and
twisted-deferred, the same on the skeleton of tcpmux's design (a
DeferredLock turn and a Deferred answer per round trip). They say what the
reactor, the kernel and the rig allow, and what the design's skeleton costs
(--no-floor: none of the floors).

Results are printed as tables with ratios and the issue's targets, and
written as JSON with --json FILE. Targets are reported, not enforced, unless
--strict.
"""

import argparse
import json
import os
import select
import shlex
import signal
import socket
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MODBUS_PROXY_VENV = HERE / ".venv-modbus-proxy"
TCPMUX_VENV = HERE / ".venv-tcpmux"

sys.path.insert(0, str(HERE))
from target import loopNames  # noqa: E402
DIRECT = "direct"
DIRECT_CROSS = "direct@proxy-core"
MODBUS_PROXY = "modbus-proxy"
HAPROXY = "haproxy"
FLOOR = "twistd-floor"
FLOOR_PROXY = "twisted-floor"
FLOOR_DEFERRED = "twisted-deferred"
FLOOR_PROXIES = {FLOOR_PROXY: [], FLOOR_DEFERRED: ["--deferred"]}
HAPROXY_CONFIG = """\
global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 10s
    timeout client 60s
    timeout server 60s
frontend bench
    bind 127.0.0.1:{port}
    default_backend target
backend target
    http-reuse always
    server target 127.0.0.1:{targetPort} maxconn 1
"""
CLK_TCK = os.sysconf("SC_CLK_TCK")


class CellFailed(Exception):
    pass


# -- processes


def freePort():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def readLine(proc, timeout, what):
    """
    One line of C{proc}'s stdout, or L{CellFailed} after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise CellFailed(f"{what}: no answer within {timeout:.0f}s")
        ready, _, _ = select.select([proc.stdout], [], [], left)
        if ready:
            line = proc.stdout.readline()
            if not line:
                raise CellFailed(f"{what} exited (status {proc.poll()})")
            return line


def spawn(argv, cpus, log=None, env=None, stdin=None, quiet=False, cwd=None, nice=0):
    """
    Start C{argv} pinned to C{cpus}, at C{nice}. Its stdout is a pipe to
    read from, unless C{quiet}: then it goes to C{log} with stderr (a
    proxy's log must never fill an unread pipe and block it).
    """

    def pin():
        if cpus:
            os.sched_setaffinity(0, cpus)
        if nice:
            os.nice(nice)

    return subprocess.Popen(
        argv,
        cwd=cwd,
        stdin=stdin,
        stdout=(log or subprocess.DEVNULL) if quiet else subprocess.PIPE,
        stderr=log if log is not None else subprocess.DEVNULL,
        preexec_fn=pin,
        env=env,
        text=True,
        bufsize=1,
    )


def stop(proc, timeout=10.0):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def cpuSeconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except OSError:
        return None


def memory(pid):
    """
    VmHWM (peak) and VmRSS (current) of C{pid}, in MiB.
    """
    result = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in ("VmHWM", "VmRSS"):
                    result[key] = int(value.split()[0]) / 1024
    except OSError:
        pass
    return result


def waitListening(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CellFailed(f"proxy exited (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise CellFailed(f"proxy not listening on {port} within {timeout:.0f}s")


def ensureModbusProxy(options):
    """
    The modbus-proxy executable, installed into its own virtualenv from
    requirements.txt on first use; L{None} if that is impossible.
    """
    if options.modbus_proxy:
        return options.modbus_proxy
    exe = MODBUS_PROXY_VENV / "bin" / "modbus-proxy"
    if exe.exists():
        return str(exe)
    print(f"Installing modbus-proxy into {MODBUS_PROXY_VENV.name} ...", flush=True)
    try:
        subprocess.run(
            [sys.executable, "-m", "venv", str(MODBUS_PROXY_VENV)], check=True
        )
        subprocess.run(
            [
                str(MODBUS_PROXY_VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "-r",
                str(HERE / "requirements.txt"),
            ],
            check=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"WARNING: cannot install modbus-proxy ({e}); skipping it", flush=True)
        return None
    return str(exe) if exe.exists() else None


def ensurePlainTcpmux(options):
    """
    The Python that runs tcpmux: C{--tcpmux-python}, or else a virtualenv
    (benchmarks/.venv-tcpmux, made on first use) holding only what
    C{pip install tcpmux} installs, so that memory is measured as users get
    it (a test or tls extra's pyOpenSSL, which Twisted's reactor imports
    when it is there, costs about 12 MB). The code itself comes from the
    checkout, through C{PYTHONPATH}.
    """
    if options.tcpmux_python:
        return options.tcpmux_python
    python = TCPMUX_VENV / "bin" / "python"
    if python.exists():
        return str(python)
    import configparser

    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg")
    requirements = [
        line.strip()
        for line in setup["options"]["install_requires"].splitlines()
        if line.strip()
    ]
    print(f"Installing tcpmux's dependencies into {TCPMUX_VENV.name} ...", flush=True)
    try:
        subprocess.run([sys.executable, "-m", "venv", str(TCPMUX_VENV)], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", *requirements],
            check=True,
        )
    except (subprocess.CalledProcessError, OSError) as e:
        print(
            f"WARNING: cannot make {TCPMUX_VENV.name} ({e}); tcpmux runs on "
            f"{sys.executable}, whose extras may add to its memory",
            flush=True,
        )
        return sys.executable
    return str(python)


def findHAProxy(options):
    """
    The haproxy executable (the http peer), or L{None}, saying so: the
    benchmark installs nothing for it.
    """
    exe = options.haproxy or shutil.which("haproxy")
    if exe is None:
        print(
            "WARNING: haproxy not found (Debian: apt-get install haproxy, or "
            "--haproxy PATH); skipping the HAProxy cells",
            flush=True,
        )
    return exe


# -- one cell


class Bench:
    def __init__(self, options):
        self.options = options
        self.tmp = Path(tempfile.mkdtemp(prefix="tcpmux-bench-"))
        cpus = sorted(os.sched_getaffinity(0))
        if options.cpus:
            cpus = [int(c) for c in options.cpus.split(",")]
        self.pinned = len(cpus) >= 2 and not options.no_pin
        if self.pinned:
            self.proxyCpus = {cpus[0]}
            self.targetCpus = {cpus[1]}
            self.loadCpus = set(cpus[2:]) or {cpus[1]}
        else:
            self.proxyCpus = self.targetCpus = self.loadCpus = None
        self.modbusProxy = None
        self.haproxy = None
        self.serial = 0
        self.tcpmuxPython = ensurePlainTcpmux(options)
        self.checkouts = dict(options.checkouts)
        self.interpreters = dict(options.interpreters)

    def log(self, name):
        self.serial += 1
        return open(self.tmp / f"{self.serial:03d}-{name}.log", "w")

    def startTarget(self, protocol, corruptEvery=0):
        o = self.options
        argv = [sys.executable, str(HERE / "target.py"), "-p", protocol, "--loop", o.rig_loop]
        if o.target_latency:
            argv += ["--latency", o.target_latency]
        if o.target_connections_limit:
            argv += ["--connections-limit", str(o.target_connections_limit)]
        if corruptEvery:
            argv += ["--corrupt-every", str(corruptEvery)]
        proc = spawn(argv, self.targetCpus, log=self.log("target"), nice=o.target_nice)
        port = json.loads(readLine(proc, 10, "target"))["listening"]
        return proc, port

    def startProxy(self, system, protocol, targetPort, profile=None):
        port = freePort()
        o = self.options
        if system == MODBUS_PROXY:
            argv = [
                self.modbusProxy,
                "-b",
                f"tcp://127.0.0.1:{port}",
                "--modbus",
                f"tcp://127.0.0.1:{targetPort}",
                "--timeout",
                "10",
            ]
            env = None
        elif system == HAPROXY:
            config = self.tmp / f"haproxy-{port}.cfg"
            config.write_text(HAPROXY_CONFIG.format(port=port, targetPort=targetPort))
            argv = [self.haproxy, "-db", "-f", str(config)]
            env = None
        elif system == FLOOR or system in FLOOR_PROXIES:
            # Run as tcpmux is run, by the same Python, through twistd's
            # plugin scan: only the plugin differs (benchmarks/floor).
            if system == FLOOR:
                plugin = ["floor", "--port", str(port)]
            else:
                plugin = ["floor-proxy", "--port", str(port), "--target", str(targetPort)]
                plugin += FLOOR_PROXIES[system]
            argv = [
                self.tcpmuxPython,
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
                *plugin,
            ]
            env = dict(os.environ)
            env["PYTHONPATH"] = str(HERE / "floor")
        else:
            twistd = [
                self.interpreters.get(system, self.tcpmuxPython),
                "-c",
                "from twisted.scripts.twistd import run; run()",
                "-n",
                "--pidfile=",
            ]
            if profile:
                twistd += [f"--profile={profile}", "--profiler=cprofile", "--savestats"]
            argv = twistd + [
                "tcpmux",
                "-p",
                protocol,
                "-t",
                f"127.0.0.1:{targetPort}",
                "-l",
                f"tcp:{port}:interface=127.0.0.1",
                "--max-clients",
                str(max(1024, max(o.clients + o.idle_clients) + 16)),
                *shlex.split(self.variants[system]),
            ]
            # Another checkout (--checkout) runs its own code: first on the
            # path, and the current directory (which "-c" puts first).
            repo = self.checkouts.get(system, REPO)
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(repo), env.get("PYTHONPATH")) if p
            )
        cwd = str(self.checkouts.get(system, REPO))
        proc = spawn(
            argv, self.proxyCpus, log=self.log(system), env=env, quiet=True, cwd=cwd
        )
        waitListening(port, proc)
        return proc, port

    def startLoads(self, protocol, port, clients, procs, cpus, idle=False):
        loads = []
        per, extra = divmod(clients, procs)
        first = 0
        for i in range(procs):
            n = per + (1 if i < extra else 0)
            if not n:
                continue
            latFile = self.tmp / f"lat-{self.serial}-{i}.bin"
            argv = [
                sys.executable,
                str(HERE / "load.py"),
                "-p",
                protocol,
                "--loop",
                self.options.rig_loop,
                "--port",
                str(port),
                "--clients",
                str(n),
                "--first-id",
                str(first),
                "--latency-file",
                str(latFile),
            ]
            if idle:
                argv.append("--idle")
            argv += shlex.split(getattr(self.options, "load_args", "") or "")
            first += n
            proc = spawn(argv, cpus, log=self.log("load"), stdin=subprocess.PIPE)
            loads.append((proc, latFile))
        for proc, _ in loads:
            ready = json.loads(readLine(proc, 120, "load generator"))
            if ready["failed"]:
                raise CellFailed(f"{ready['failed']} clients could not connect")
        return loads

    def runCell(self, protocol, system, clients, procs=1, profile=None):
        """
        One measurement: fresh target, proxy and load processes.
        """
        o = self.options
        cell = {
            "protocol": protocol,
            "system": system,
            "clients": clients,
            "load_procs": procs,
        }
        target = proxy = None
        loads = []
        try:
            target, targetPort = self.startTarget(protocol)
            if system in (DIRECT, DIRECT_CROSS):
                port = targetPort
                loadCpus = self.proxyCpus if system == DIRECT_CROSS else self.loadCpus
            else:
                proxy, port = self.startProxy(system, protocol, targetPort, profile)
                cell["rss_start_mb"] = memory(proxy.pid).get("VmRSS")
                loadCpus = self.loadCpus
            loads = self.startLoads(protocol, port, clients, procs, loadCpus)
            start = time.time() + 0.2
            t1 = start + o.warmup
            t2 = t1 + o.duration
            for proc, _ in loads:
                proc.stdin.write(f"GO {start!r} {t1!r} {t2!r}\n")
                proc.stdin.flush()
            pids = {"target": [target.pid], "load": [p.pid for p, _ in loads]}
            if proxy is not None:
                pids["proxy"] = [proxy.pid]
            time.sleep(max(0.0, t1 - time.time()))
            before = {k: [cpuSeconds(p) for p in v] for k, v in pids.items()}
            time.sleep(max(0.0, t2 - time.time()))
            after = {k: [cpuSeconds(p) for p in v] for k, v in pids.items()}
            for key in pids:
                used = sum(
                    (a - b) for a, b in zip(after[key], before[key]) if a is not None and b is not None
                )
                cell[f"cpu_{key}_pct"] = round(100 * used / o.duration, 1)
            if proxy is not None:
                mem = memory(proxy.pid)
                cell["rss_peak_mb"] = mem.get("VmHWM")
                cell["rss_mb"] = mem.get("VmRSS")
            results = [
                json.loads(readLine(p, o.duration + 30, "load generator"))
                for p, _ in loads
            ]
            latencies = array("d")
            for _, latFile in loads:
                with open(latFile, "rb") as f:
                    latencies.frombytes(f.read())
                os.unlink(latFile)
            self.summarize(cell, results, latencies)
        except CellFailed as e:
            cell["failure"] = str(e)
        finally:
            for proc, _ in loads:
                if proc.poll() is None:
                    proc.stdin.close()
                stop(proc, 5)
            stop(proxy)
            if target is not None:
                stop(target)
                try:
                    stats = target.stdout.read()
                    cell["target"] = json.loads(stats.strip().splitlines()[-1])
                except (ValueError, IndexError, OSError):
                    pass
        self.checkCell(cell)
        return cell

    def summarize(self, cell, results, latencies):
        completed = sum(r["completed"] for r in results)
        cell["round_trips"] = completed
        cell["rps"] = completed / self.options.duration
        lat = sorted(latencies)
        if lat:
            pick = lambda q: 1e6 * lat[min(len(lat) - 1, int(q * len(lat)))]
            cell["p50_us"] = round(pick(0.50), 1)
            cell["p99_us"] = round(pick(0.99), 1)
            cell["max_us"] = round(1e6 * lat[-1], 1)
        for key in ("mismatches", "errors", "unanswered", "starved", "connect_failed"):
            cell[key] = sum(r[key] for r in results)
        cell["per_client_min"] = min(r["per_client_min"] for r in results)
        cell["per_client_max"] = max(r["per_client_max"] for r in results)
        firsts = [r["first_mismatch"] for r in results if r["first_mismatch"]]
        if firsts:
            cell["first_mismatch"] = firsts[0]

    def checkCell(self, cell):
        problems = []
        if "failure" in cell:
            problems.append(cell["failure"])
        for key in ("mismatches", "errors", "starved", "connect_failed"):
            if cell.get(key):
                problems.append(f"{cell[key]} {key}")
        if "failure" not in cell and not cell.get("round_trips"):
            problems.append("no round trips")
        cell["verified"] = not problems
        if problems:
            cell["problems"] = problems

    def runIdle(self, protocol, system, clients):
        """
        Resident memory of the proxy with C{clients} connected clients that
        each made one round trip and then stay idle.
        """
        cell = {"protocol": protocol, "system": system, "clients": clients, "idle": True}
        target = proxy = None
        loads = []
        try:
            target, targetPort = self.startTarget(protocol)
            proxy, port = self.startProxy(system, protocol, targetPort)
            time.sleep(0.3)
            cell["rss_start_mb"] = memory(proxy.pid).get("VmRSS")
            loads = self.startLoads(protocol, port, clients, 1, self.loadCpus, idle=True)
            start = time.time() + 0.1
            for proc, _ in loads:
                proc.stdin.write(f"GO {start!r} {start!r} {start + 3600!r}\n")
                proc.stdin.flush()
            for proc, _ in loads:
                readLine(proc, 60, "idle load")
            time.sleep(0.5)
            mem = memory(proxy.pid)
            cell["rss_mb"] = mem.get("VmRSS")
            cell["rss_peak_mb"] = mem.get("VmHWM")
            for proc, _ in loads:
                proc.stdin.close()
            results = [json.loads(readLine(p, 30, "idle load")) for p, _ in loads]
            for key in ("mismatches", "errors", "connect_failed"):
                cell[key] = sum(r[key] for r in results)
            cell["round_trips"] = sum(r["completed"] for r in results)
            if cell["round_trips"] < clients:
                cell["failure"] = f"only {cell['round_trips']} of {clients} answered"
        except CellFailed as e:
            cell["failure"] = str(e)
        finally:
            for proc, _ in loads:
                stop(proc, 5)
            stop(proxy)
            stop(target)
        self.checkCell(cell)
        return cell

    # -- the suite

    def plan(self):
        o = self.options
        plan = []
        proxies = list(self.variants)
        for _ in range(o.rounds):
            for protocol in o.protocols:
                others = proxies + self.peers(protocol)
                plan.append(("cell", protocol, DIRECT, 1, 1))
                plan.append(("cell", protocol, DIRECT_CROSS, 1, 1))
                for clients in o.clients:
                    for system in others:
                        plan.append(("cell", protocol, system, clients, o.load_procs))
                    if clients == 10:
                        for procs in o.load_check:
                            for system in others:
                                plan.append(("cell", protocol, system, clients, procs))
        for protocol in o.protocols[:1]:
            for clients in o.idle_clients:
                # (Another interpreter's memory differs: measured too.)
                others = [p for p in proxies[1:] if p in self.interpreters]
                for system in proxies[:1] + others + self.peers(protocol):
                    plan.append(("idle", protocol, system, clients, 1))
        if not o.no_floor:
            for clients in o.idle_clients:
                if o.protocols[0] != "echo":
                    plan.append(("idle", "echo", proxies[0], clients, 1))
                plan.append(("idle", "echo", FLOOR, clients, 1))
        return plan

    def peers(self, protocol):
        """
        The other proxies benchmarked for C{protocol}.
        """
        if protocol == "modbus":
            peers = [MODBUS_PROXY] if self.modbusProxy else []
            if not self.options.no_floor:
                peers += list(FLOOR_PROXIES)
            return peers
        if protocol == "http" and self.haproxy:
            return [HAPROXY]
        return []

    def run(self):
        o = self.options
        self.variants = dict(o.variants)
        self.checkouts = dict(o.checkouts)
        if "modbus" in o.protocols and not o.no_modbus_proxy:
            self.modbusProxy = ensureModbusProxy(o)
        if "http" in o.protocols and not o.no_haproxy:
            self.haproxy = findHAProxy(o)
        plan = self.plan()
        cells = []
        started = time.monotonic()
        print(
            f"{len(plan)} cells, {o.duration:g}s each after {o.warmup:g}s warm-up; "
            + (
                f"proxy on CPU {sorted(self.proxyCpus)}, target on {sorted(self.targetCpus)}, "
                f"load on {sorted(self.loadCpus)}"
                if self.pinned
                else "not pinned"
            )
            + f"; target and load on {o.rig_loop}'s event loop"
            + (f"; target at nice {o.target_nice}" if o.target_nice else ""),
            flush=True,
        )
        if o.rig_loop == "asyncio":
            print(
                "NOTE: uvloop is not installed (pip install -r "
                "benchmarks/rig-requirements.txt): on asyncio's own loop the "
                "target and the load can be what sets the pace",
                flush=True,
            )
        for i, (kind, protocol, system, clients, procs) in enumerate(plan, 1):
            if kind == "idle":
                cell = self.runIdle(protocol, system, clients)
            else:
                cell = self.runCell(protocol, system, clients, procs)
            cells.append(cell)
            print(f"[{i}/{len(plan)}] {describe(cell)}", flush=True)
        return cells, time.monotonic() - started


# -- reporting


def describe(cell):
    what = f"{cell['protocol']:6} {cell['system']:18} {cell['clients']:5} clients"
    if cell.get("idle"):
        text = f"{what} idle: RSS {fmt(cell.get('rss_mb'))} MB, peak {fmt(cell.get('rss_peak_mb'))} MB"
    else:
        text = (
            f"{what} x{cell['load_procs']} load: {fmt(cell.get('rps'), 0)} rt/s, "
            f"p50 {fmt(cell.get('p50_us'), 0)} us, p99 {fmt(cell.get('p99_us'), 0)} us"
        )
    if not cell["verified"]:
        text += "  FAILED: " + "; ".join(cell["problems"])
    return text


def fmt(value, digits=1):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def aggregate(cells):
    """
    Median over rounds of each (protocol, system, clients, load processes).
    """
    groups = {}
    for cell in cells:
        if cell.get("idle"):
            continue
        key = (cell["protocol"], cell["system"], cell["clients"], cell["load_procs"])
        groups.setdefault(key, []).append(cell)
    table = {}
    for key, group in groups.items():
        row = {"runs": len(group), "verified": all(c["verified"] for c in group)}
        for field in (
            "rps",
            "p50_us",
            "p99_us",
            "cpu_proxy_pct",
            "cpu_target_pct",
            "cpu_load_pct",
            "rss_peak_mb",
        ):
            row[field] = median([c.get(field) for c in group])
        table[key] = row
    return table


def ratio(a, b):
    if a is None or not b:
        return None
    return a / b


def evaluate(table, cells, options, variants):
    """
    The issue's targets, and the load-generator check, as rows of
    (description, value, goal text, met).
    """
    rows = []
    first = next(iter(variants))
    base = options.load_procs

    def get(protocol, system, clients, field, procs=base):
        row = table.get((protocol, system, clients, procs))
        return None if row is None else row.get(field)

    for protocol in options.protocols:
        if 10 in options.clients:
            r = ratio(get(protocol, first, 10, "rps"), get(protocol, MODBUS_PROXY, 10, "rps"))
            if r is not None:
                rows.append((f"{protocol}: {first} / modbus-proxy, round trips/s, 10 clients", r, ">= 1.75", r >= 1.75))
            for system in FLOOR_PROXIES:
                r = ratio(get(protocol, first, 10, "rps"), get(protocol, system, 10, "rps"))
                if r is not None:
                    rows.append((f"{protocol}: {first} / {system}, round trips/s, 10 clients", r, "(info)", None))
                r = ratio(get(protocol, system, 10, "rps"), get(protocol, MODBUS_PROXY, 10, "rps"))
                if r is not None:
                    rows.append((f"{protocol}: {system} / modbus-proxy, round trips/s, 10 clients", r, "(info)", None))
            r = ratio(get(protocol, first, 10, "rps"), get(protocol, DIRECT_CROSS, 1, "rps", 1))
            if r is not None:
                rows.append((f"{protocol}: {first} / direct (load on proxy core), 10 clients", r, ">= 0.75", r >= 0.75))
            r = ratio(get(protocol, first, 10, "rps"), get(protocol, DIRECT, 1, "rps", 1))
            if r is not None:
                rows.append((f"{protocol}: {first} / direct (load on target core), 10 clients", r, "(info)", None))
            r = ratio(get(protocol, first, 10, "rps"), get(protocol, HAPROXY, 10, "rps"))
            if r is not None:
                rows.append((f"{protocol}: {first} / haproxy, round trips/s, 10 clients", r, ">= 0.75", r >= 0.75))
        if 1 in options.clients:
            p50, direct = get(protocol, first, 1, "p50_us"), get(protocol, DIRECT, 1, "p50_us", 1)
            if p50 is not None and direct is not None:
                # The bound: 1.1 x the direct connection's p50 + 100 us.
                limit = 1.1 * direct + 100
                rows.append((f"{protocol}: {first} p50 us, 1 client (direct: {direct:.0f} us)", p50, f"<= {limit:.0f}", p50 <= limit))
            r = ratio(get(protocol, first, 1, "p50_us"), get(protocol, MODBUS_PROXY, 1, "p50_us"))
            if r is not None:
                rows.append((f"{protocol}: {first} p50 / modbus-proxy p50, 1 client", r, "< 1", r < 1))
        for clients in options.clients:
            if clients <= 10 or 10 not in options.clients:
                continue
            for system in list(variants) + [MODBUS_PROXY, HAPROXY]:
                r = ratio(get(protocol, system, clients, "rps"), get(protocol, system, 10, "rps"))
                if r is None:
                    continue
                goal = system == first
                rows.append((f"{protocol}: {system} round trips/s {clients} / 10 clients", r, ">= 0.9" if goal else "(info)", r >= 0.9 if goal else None))
                r = ratio(get(protocol, system, clients, "p99_us"), get(protocol, system, 10, "p99_us"))
                limit = clients / 10
                rows.append((f"{protocol}: {system} p99 {clients} / 10 clients", r, f"<= {limit:g}" if goal else "(info)", r <= limit if goal else None))
        for system in list(variants)[1:]:
            for clients in options.clients:
                r = ratio(get(protocol, system, clients, "rps"), get(protocol, first, clients, "rps"))
                if r is not None:
                    rows.append((f"{protocol}: {system} / {first}, round trips/s, {clients} clients", r, "(info)", None))
        for procs in options.load_check:
            for system in list(variants) + [MODBUS_PROXY, HAPROXY]:
                r = ratio(get(protocol, system, 10, "rps", procs), get(protocol, system, 10, "rps"))
                if r is not None:
                    rows.append((f"{protocol}: {system} 10 clients, {procs} / {base} load processes", r, "0.9..1.1", 0.9 <= r <= 1.1))
    for cell in cells:
        if cell.get("idle") and cell["clients"] == 1000 and cell["system"] in (first, FLOOR):
            rss = cell.get("rss_mb")
            if rss is None:
                continue
            what = f"{cell['system']} RSS (VmRSS), 1,000 connected idle {cell['protocol']} clients, MB"
            if cell["system"] == FLOOR:
                # Not a goal: what twistd and Twisted take without tcpmux.
                rows.append((what, rss, "(floor)", None))
            else:
                rows.append((what, rss, "<= 35", rss <= 35))
    return rows


def report(cells, options, variants, elapsed, bench):
    table = aggregate(cells)
    print()
    print(
        "Round trips per second and latency (median of %d round%s; CPU %% of one core in the window)"
        % (options.rounds, "s" if options.rounds > 1 else "")
    )
    header = f"{'protocol':8} {'clients':>7} {'system':18} {'load':>4} {'rt/s':>9} {'p50 us':>8} {'p99 us':>8} {'proxy%':>6} {'target%':>7} {'load%':>6} {'peak MB':>7}  ok"
    print(header)
    print("-" * len(header))
    for key, row in table.items():
        protocol, system, clients, procs = key
        print(
            f"{protocol:8} {clients:>7} {system:18} {procs:>4} {fmt(row['rps'], 0):>9} "
            f"{fmt(row['p50_us'], 0):>8} {fmt(row['p99_us'], 0):>8} {fmt(row['cpu_proxy_pct'], 0):>6} "
            f"{fmt(row['cpu_target_pct'], 0):>7} {fmt(row['cpu_load_pct'], 0):>6} "
            f"{fmt(row['rss_peak_mb']):>7}  {'yes' if row['verified'] else 'NO'}"
        )
    idle = [c for c in cells if c.get("idle")]
    if idle:
        print()
        print("Resident memory of the proxy with connected idle clients (MB)")
        print(f"{'protocol':8} {'system':18} {'clients':>7} {'at start':>8} {'VmRSS':>7} {'VmHWM':>7}  ok")
        for c in idle:
            print(
                f"{c['protocol']:8} {c['system']:18} {c['clients']:>7} {fmt(c.get('rss_start_mb')):>8} "
                f"{fmt(c.get('rss_mb')):>7} {fmt(c.get('rss_peak_mb')):>7}  {'yes' if c['verified'] else 'NO'}"
            )
    rows = evaluate(table, cells, options, variants)
    if rows:
        print()
        print("Ratios and targets")
        width = max(len(r[0]) for r in rows)
        for what, value, goal, met in rows:
            verdict = "" if met is None else ("met" if met else "MISSED")
            print(f"  {what:{width}}  {value:7.2f}  {goal:>9}  {verdict}")
    failed = [c for c in cells if not c["verified"]]
    print()
    if failed:
        print(f"VERIFICATION FAILED in {len(failed)} cell(s):")
        for c in failed:
            print("  " + describe(c))
            if c.get("first_mismatch"):
                print("    first mismatch:", json.dumps(c["first_mismatch"]))
    else:
        print(f"Every answer verified ({sum(c.get('round_trips', 0) for c in cells):,} round trips).")
    print(f"{len(cells)} cells in {elapsed:.0f}s; logs in {bench.tmp}")
    missed = [r for r in rows if r[3] is False]
    if options.json:
        with open(options.json, "w") as f:
            json.dump(
                {
                    "config": {
                        "protocols": options.protocols,
                        "clients": options.clients,
                        "duration": options.duration,
                        "warmup": options.warmup,
                        "rounds": options.rounds,
                        "load_procs": options.load_procs,
                        "load_check": options.load_check,
                        "variants": variants,
                        "target_latency": options.target_latency,
                        "target_nice": options.target_nice,
                        "rig_loop": options.rig_loop,
                        "tcpmux_python": bench.tcpmuxPython,
                        "cpus": {
                            "proxy": sorted(bench.proxyCpus) if bench.pinned else None,
                            "target": sorted(bench.targetCpus) if bench.pinned else None,
                            "load": sorted(bench.loadCpus) if bench.pinned else None,
                        },
                        "cpu_count": os.cpu_count(),
                        "python": sys.version.split()[0],
                    },
                    "cells": cells,
                    "summary": [
                        dict(zip(("protocol", "system", "clients", "load_procs"), k), **v)
                        for k, v in table.items()
                    ],
                    "targets": [
                        {"what": w, "value": v, "goal": g, "met": m} for w, v, g, m in rows
                    ],
                },
                f,
                indent=1,
            )
        print(f"Results written to {options.json}")
    if failed:
        return 1
    if options.strict and missed:
        return 3
    return 0


def checkVerifier(bench):
    """
    Run the load generator against a target that corrupts every 500th
    answer: the benchmark must notice.
    """
    print("Checking the checker: a target that corrupts every 500th answer ...")
    ok = True
    for clients in (1, 10):
        target, port = bench.startTarget("modbus", corruptEvery=500)
        loads = []
        try:
            loads = bench.startLoads("modbus", port, clients, 1, bench.loadCpus)
            start = time.time() + 0.1
            for proc, _ in loads:
                proc.stdin.write(f"GO {start!r} {start!r} {start + 1!r}\n")
                proc.stdin.flush()
            result = json.loads(readLine(loads[0][0], 30, "load"))
        finally:
            for proc, _ in loads:
                stop(proc, 5)
            stop(target)
        caught = result["mismatches"] > 0
        ok &= caught
        print(f"  {clients} clients: {result['mismatches']} mismatches caught, first: {json.dumps(result['first_mismatch'])}")
    print("  the checker works" if ok else "  THE CHECKER MISSED CORRUPTED ANSWERS")
    return 0 if ok else 1


def parseArgs(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    ints = lambda text: [int(x) for x in text.split(",") if x]
    parser.add_argument("--protocols", default="modbus,echo", type=lambda t: t.split(","), help="comma-separated: modbus,echo,http")
    parser.add_argument("--clients", default="1,10,100,1000", type=ints, help="comma-separated client counts")
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before measuring")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the interleaved suite; medians are reported")
    parser.add_argument("--quick", action="store_true", help="1s cells, 1/10/100 clients, one load check")
    parser.add_argument("--load-procs", type=int, default=1, help="load generator processes per cell")
    parser.add_argument("--load-check", default="2,4", type=ints, help="also run 10 clients with these numbers of load processes (0: none)")
    parser.add_argument("--idle-clients", default="100,1000", type=ints, help="measure RSS with this many connected idle clients (0: none)")
    parser.add_argument(
        "--variant",
        action="append",
        dest="variant_specs",
        metavar="NAME=ARGS",
        help="a tcpmux configuration: NAME=extra twistd tcpmux arguments "
        "(repeatable; the first is the reference); default: tcpmux=",
    )
    parser.add_argument(
        "--checkout",
        action="append",
        default=[],
        dest="checkout_specs",
        metavar="NAME=DIR",
        help="also run tcpmux from another checkout (an earlier release, "
        "say) in the same run, as variant NAME (repeatable)",
    )
    parser.add_argument(
        "--interpreter",
        action="append",
        default=[],
        dest="interpreter_specs",
        metavar="NAME=PYTHON",
        help="also run tcpmux from this checkout under another Python (PyPy, "
        "say; it needs Twisted installed) in the same run, as variant NAME "
        "(repeatable)",
    )
    parser.add_argument("--tcpmux-args", default="", help="extra arguments for the default tcpmux variant, e.g. '--connections 4'")
    parser.add_argument(
        "--tcpmux-python",
        help="Python with Twisted, to run tcpmux (default: a virtualenv with "
        "only tcpmux's dependencies, benchmarks/.venv-tcpmux, made on first use)",
    )
    parser.add_argument(
        "--rig-loop",
        choices=loopNames(),
        default=loopNames()[0],
        help="the event loop of the target and the load (default: uvloop "
        "when installed: pip install -r benchmarks/rig-requirements.txt)",
    )
    parser.add_argument("--target-latency", default="", help="the target answers after this delay (2ms)")
    parser.add_argument("--target-connections-limit", type=int, default=0)
    parser.add_argument(
        "--target-nice",
        type=int,
        default=0,
        help="run the target at this nice value (a negative one needs root): "
        "-10 puts its answers ahead of the load's work on the core they share",
    )
    parser.add_argument("--no-modbus-proxy", action="store_true")
    parser.add_argument("--no-haproxy", action="store_true")
    parser.add_argument(
        "--no-floor",
        action="store_true",
        help="run none of the floors: twistd-floor's memory, and the bare Twisted Modbus proxies",
    )
    parser.add_argument("--haproxy", help="the haproxy executable (default: haproxy on PATH; Debian: apt-get install haproxy)")
    parser.add_argument("--modbus-proxy", help="a modbus-proxy executable to use instead of installing one")
    parser.add_argument("--cpus", help="CPUs to use, comma-separated: proxy, target, load...")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--json", help="write all results to this file")
    parser.add_argument("--strict", action="store_true", help="exit 3 when a target is missed")
    parser.add_argument("--check-verifier", action="store_true", help="only check that corrupted answers are caught")
    parser.add_argument("--profile", metavar="FILE", help="run one tcpmux cell (first protocol, 10 clients) under cProfile, stats to FILE")
    options = parser.parse_args(argv)
    options.load_check = [procs for procs in options.load_check if procs > 0]
    # (0: no idle clients, no memory cells, as --load-check 0 is no check.)
    options.idle_clients = [clients for clients in options.idle_clients if clients > 0]
    if options.quick:
        options.duration = min(options.duration, 1.0)
        options.warmup = min(options.warmup, 0.5)
        if options.clients == [1, 10, 100, 1000]:
            options.clients = [1, 10, 100]
        options.load_check = options.load_check[:1]
        options.idle_clients = [1000]
    specs = options.variant_specs or [f"tcpmux={options.tcpmux_args}"]
    options.variants = []
    for spec in specs:
        name, sep, args = spec.partition("=")
        if not sep or not name or name in (DIRECT, DIRECT_CROSS, MODBUS_PROXY, HAPROXY):
            parser.error(f"--variant {spec!r}: NAME=ARGS, NAME not a reserved name")
        options.variants.append((name, args))
    options.checkouts = {}
    for spec in options.checkout_specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not os.path.isdir(path):
            parser.error(f"--checkout {spec!r}: NAME=DIR, DIR a checkout of tcpmux")
        options.checkouts[name] = Path(path).resolve()
        options.variants.append((name, ""))
    options.interpreters = {}
    for spec in options.interpreter_specs:
        name, sep, python = spec.partition("=")
        if not sep or not name or shutil.which(python) is None:
            parser.error(f"--interpreter {spec!r}: NAME=PYTHON, PYTHON an interpreter with Twisted")
        options.interpreters[name] = python
        options.variants.append((name, ""))
    for protocol in options.protocols:
        if protocol not in ("modbus", "echo", "http"):
            parser.error(f"unknown protocol {protocol!r}")
    return options


def main(argv=None):
    options = parseArgs(argv)
    bench = Bench(options)
    bench.variants = dict(options.variants)
    if options.check_verifier:
        return checkVerifier(bench)
    if options.profile:
        clients = 10 if 10 in options.clients else options.clients[0]
        cell = bench.runCell(options.protocols[0], options.variants[0][0], clients, options.load_procs, profile=options.profile)
        print(describe(cell))
        print(f"cProfile stats in {options.profile} (python -m pstats {options.profile})")
        return 0 if cell["verified"] else 1
    cells, elapsed = bench.run()
    return report(cells, options, dict(options.variants), elapsed, bench)


if __name__ == "__main__":
    sys.exit(main())
