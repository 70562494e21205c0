#!/usr/bin/env python3
"""Transport benchmark: `sam6d serve --bench-noop` against the Python servers it replaces.

    python3 benches/transport/run.py [--seconds S] [--sam6d target/release/sam6d] [--json FILE]

Starts each server in turn on 127.0.0.1 (port 0) -- `sam6d serve --bench-noop`, the legacy
threaded Python socket server (legacy_server.py) and the FastAPI/uvicorn service
(fastapi_server.py) -- runs the same client scenarios (client.py) against each, and prints
requests/s and median latency side by side with the ratios sam6d/legacy and sam6d/FastAPI.
All three servers answer inference with an empty pose list without decoding the images, so
what is measured is the transport: framing, (de)serialisation, connection handling.
Servers' stdout/stderr go to log files in a temporary directory (printed at the end).
"""

import argparse
import importlib.util
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import client as bench_client  # noqa: E402  (client.py beside this file)

READY_RE = re.compile(r"ready on (\S+):(\d+)")

# key, label, client options
SCENARIOS = [
    ("ping_1conn", "ping, 1 connection", {"mode": "ping", "procs": 1}),
    ("ping_8procs", "ping, 8 processes", {"mode": "ping", "procs": 8}),
    ("infer_1conn", "inference, 1 connection", {"mode": "infer", "procs": 1}),
    ("infer_4procs", "inference, 4 processes", {"mode": "infer", "procs": 4}),
    ("infer_reconnect", "inference, connection per request",
     {"mode": "infer", "procs": 1, "reconnect": True}),
]

SERVER_LABELS = {"sam6d": "sam6d", "legacy": "legacy Python", "fastapi": "FastAPI (HTTP)"}


class BenchError(Exception):
    pass


# ---------------------------------------------------------------- servers

class Server:
    """A server process, started and stopped the same way whatever its kind."""

    def __init__(self, name, argv, proto, logdir, ready_timeout):
        self.name = name
        self.argv = pin_prefix("server") + argv
        self.proto = proto
        self.ready_timeout = ready_timeout
        self.log_path = os.path.join(logdir, f"{name}.log")
        self.proc = None
        self.host = None
        self.port = None
        self._log = None
        self._ready = threading.Event()
        self._reader = None

    def start(self):
        self._log = open(self.log_path, "ab", buffering=0)
        self._log.write(f"$ {' '.join(self.argv)}\n".encode())
        try:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                cwd=REPO_ROOT, start_new_session=True)  # Ctrl-C reaches us, we stop it
        except OSError as e:
            raise BenchError(f"cannot start {self.name} ({self.argv[0]}): {e}")
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + self.ready_timeout
        while not self._ready.wait(0.1):
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with status {self.proc.returncode} before "
                                 f"it was ready; log {self.log_path}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} printed no 'ready on HOST:PORT' line within "
                                 f"{self.ready_timeout:.0f} s; log {self.log_path}:\n"
                                 f"{self.log_tail()}")

    def _read_stdout(self):
        for raw in iter(self.proc.stdout.readline, b""):
            try:
                self._log.write(b"[stdout] " + raw)
            except (OSError, ValueError):
                pass
            if not self._ready.is_set():
                m = READY_RE.search(raw.decode("utf-8", "replace"))
                if m:
                    self.host, self.port = m.group(1), int(m.group(2))
                    self._ready.set()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n=20):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
            return "\n".join("    " + line for line in lines[-n:])
        except OSError:
            return "    (no log)"

    def stop(self):
        """Shutdown request for socket servers, then SIGTERM, then SIGKILL. Returns a note."""
        if self.proc is None:
            return "not started"
        note = ""
        if self.alive() and self.proto == "socket" and self.port is not None:
            try:
                sock = bench_client.socket_connect(self.host, self.port, 3.0, True)
                try:
                    sock.sendall(bench_client.frame({"action": "shutdown"}, 2))
                    resp = bench_client.recv_message(sock)
                    if resp.get("status") != "success":
                        note = f"shutdown answered {resp!r}; "
                finally:
                    sock.close()
                self.proc.wait(timeout=5)
            except Exception as e:  # noqa: BLE001 -- any failure: fall back to signals
                note += f"shutdown request did not stop it ({type(e).__name__}: {e}); "
        for sig, wait in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
            if not self.alive():
                break
            note += f"sent {sig.name}; "
            try:
                os.killpg(self.proc.pid, sig)  # its own session: children go too
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                pass
        if self._reader is not None:
            self._reader.join(timeout=2)
        if self._log is not None:
            self._log.close()
            self._log = None
        return note + f"exit status {self.proc.returncode}"


PIN = {}  # "server"/"client" -> CPU list string for taskset, when --pin


def pin_prefix(role):
    return ["taskset", "-c", PIN[role]] if role in PIN else []


def setup_pinning():
    """--pin: the server on CPU 0, the client processes on the other CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise BenchError("--pin needs at least 2 CPUs")
    if shutil.which("taskset") is None:
        raise BenchError("--pin needs `taskset` (util-linux)")
    PIN["server"] = str(cpus[0])
    PIN["client"] = ",".join(str(c) for c in cpus[1:])


def server_argv(name, args):
    if name == "sam6d":
        return [args.sam6d, "serve", "--bench-noop", "--host", args.host, "--port", "0"]
    script = {"legacy": "legacy_server.py", "fastapi": "fastapi_server.py"}[name]
    return [sys.executable, os.path.join(HERE, script), "--host", args.host, "--port", "0"]


def check_sam6d(path):
    build = "build it first: `source scripts/env.sh && cargo build --release` (in the repo root)"
    if not os.path.isfile(path):
        raise BenchError(f"no sam6d binary at {path}; {build}, or pass --sam6d PATH "
                         f"(or leave it out with --servers legacy,fastapi)")
    if not os.access(path, os.X_OK):
        raise BenchError(f"{path} is not executable; {build}")
    try:
        out = subprocess.run([path, "serve", "--help"], capture_output=True, timeout=120,
                             cwd=REPO_ROOT)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"`{path} serve --help` failed: {e}")
    text = (out.stdout + out.stderr).decode("utf-8", "replace")
    if "--bench-noop" not in text:
        raise BenchError(f"`{path} serve --help` does not list --bench-noop: that binary "
                         f"predates the server's benchmark mode; {build}. It said:\n{text[:600]}")


def ensure_fastapi():
    missing = [m for m in ("fastapi", "uvicorn") if importlib.util.find_spec(m) is None]
    if not missing:
        return
    print(f"installing {' '.join(missing)} into {sys.prefix} ...", flush=True)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "fastapi", "uvicorn"])
    importlib.invalidate_caches()
    if r.returncode != 0 or any(importlib.util.find_spec(m) is None for m in missing):
        raise BenchError("could not install fastapi/uvicorn with pip; install them, or leave "
                         "FastAPI out with --servers sam6d,legacy")


def sanity_check(server, args):
    """One ping and one inference, checked field by field, before timing anything."""
    c = argparse.Namespace(host=server.host, port=server.port, timeout=10.0, reconnect=False,
                           no_nodelay=False, det_score_thresh=0.5, rgb=args.rgb,
                           depth=args.depth, pickle_protocol=args.pickle_protocol,
                           proto=server.proto, mode=None)
    for mode in ("ping", "infer"):
        c.mode = mode
        cl = bench_client.make_client(c)
        try:
            resp = cl.one()
        except Exception as e:  # noqa: BLE001
            raise BenchError(f"{server.name}: {mode} request failed: {type(e).__name__}: {e}")
        finally:
            cl.close()
        try:
            bench_client.check_response(resp, mode)
            if mode == "infer":
                for k in ("rotation", "translation", "pose_scores"):
                    if not isinstance(resp["data"].get(k), list):
                        raise bench_client.ProtocolError(f"data[{k!r}] is not a list: {resp}")
        except bench_client.ProtocolError as e:
            raise BenchError(f"{server.name}: {e}")


# ---------------------------------------------------------------- clients

def cpu_seconds(pid):
    """User + system CPU time of a process, all its threads, from /proc (None elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            # The command name may hold spaces: fields start after its closing parenthesis.
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_scenario(server, opts, args):
    argv = pin_prefix("client") + [sys.executable, os.path.join(HERE, "client.py"),
            "--host", server.host, "--port", str(server.port), "--proto", server.proto,
            "--mode", opts["mode"], "--procs", str(opts["procs"]),
            "--seconds", str(args.seconds), "--warmup", str(args.warmup),
            "--rgb", args.rgb, "--depth", args.depth,
            "--pickle-protocol", str(args.pickle_protocol)]
    if opts.get("reconnect"):
        argv.append("--reconnect")
    timeout = args.warmup + args.seconds + 120
    # Its own process group, so that a timeout or Ctrl-C takes its worker processes down too.
    cpu0 = cpu_seconds(server.proc.pid)
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=REPO_ROOT, start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
        cpu1 = cpu_seconds(server.proc.pid)
    except BaseException as e:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        if isinstance(e, subprocess.TimeoutExpired):
            return {"error": f"client timed out after {timeout:.0f} s"}
        raise
    lines = stdout.decode("utf-8", "replace").strip().splitlines()
    try:
        res = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        err = stderr.decode("utf-8", "replace").strip()[-800:]
        return {"error": f"client exited with {proc.returncode}: {err}"}
    # The server's own cost per request, which the client processes sharing the CPUs do not
    # blur the way they blur requests/s. Ticks are 10 ms: over seconds of traffic, fine.
    if cpu0 is not None and cpu1 is not None and res.get("all_requests"):
        res["server_cpu_ms"] = (cpu1 - cpu0) * 1e3 / res["all_requests"]
    if res.get("fatal") or res.get("requests", 0) == 0:
        res["error"] = res.get("first_error") or "no request completed"
    elif res.get("errors"):
        res["error"] = f"{res['errors']} failed requests, first: {res['first_error']}"
    return res


# ---------------------------------------------------------------- report

def fmt_rps(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def pick(results):
    """The round with the median throughput (rounds > 1), else the only one."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return results[-1] if results else None
    ok.sort(key=lambda r: r["rps"])
    return ok[(len(ok) - 1) // 2]


def print_table(servers, table, args, out=sys.stdout):
    colw = 20
    head1 = f"{'':<36}" + "".join(f"{SERVER_LABELS[s]:>{colw}}" for s in servers)
    head2 = f"{'scenario':<36}" + "".join(f"{'req/s':>11}{'med ms':>9}" for _ in servers)
    ratios = [(a, b) for a, b in (("sam6d", "legacy"), ("sam6d", "fastapi"))
              if a in servers and b in servers]
    for a, b in ratios:
        lab = f"{a}/{'FastAPI' if b == 'fastapi' else b}"
        head1 += f"{lab:>15}"
        head2 += f"{'(req/s)':>15}"
    print(head1, file=out)
    print(head2, file=out)
    print("-" * len(head2), file=out)
    for key, label, _ in SCENARIOS:
        row = f"{label:<36}"
        for s in servers:
            r = table.get(s, {}).get(key)
            if r is None:
                row += f"{'-':>11}{'-':>9}"
            elif "error" in r:
                row += f"{'ERROR':>11}{'':>9}"
            else:
                row += f"{fmt_rps(r['rps']):>11}{r['median_ms']:>9.3f}"
        for a, b in ratios:
            ra, rb = table.get(a, {}).get(key), table.get(b, {}).get(key)
            if ra and rb and "error" not in ra and "error" not in rb and rb["rps"] > 0:
                row += f"{ra['rps'] / rb['rps']:>14.2f}x"
            else:
                row += f"{'-':>15}"
        print(row, file=out)


def print_cpu_table(servers, table, out=sys.stdout):
    """Server CPU time per request (from /proc), and how many times less sam6d spends."""
    colw = 20
    others = [b for b in ("legacy", "fastapi") if "sam6d" in servers and b in servers]
    print(f"{'server CPU ms per request':<36}" + "".join(f"{SERVER_LABELS[s]:>{colw}}" for s in servers)
          + "".join(f"{b + '/sam6d':>15}" for b in others), file=out)
    for key, label, _ in SCENARIOS:
        row = f"{label:<36}"
        for s in servers:
            r = table.get(s, {}).get(key)
            v = r.get("server_cpu_ms") if r and "error" not in r else None
            row += f"{v:>{colw}.3f}" if v is not None else f"{'-':>{colw}}"
        for b in others:
            ra, rb = table.get("sam6d", {}).get(key), table.get(b, {}).get(key)
            a_cpu, b_cpu = (ra or {}).get("server_cpu_ms"), (rb or {}).get("server_cpu_ms")
            row += f"{b_cpu / a_cpu:>14.2f}x" if a_cpu and b_cpu else f"{'-':>15}"
        print(row, file=out)


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--seconds", type=float, default=3.0,
                    help="measured seconds per scenario (default 3)")
    ap.add_argument("--warmup", type=float, default=0.5,
                    help="unmeasured seconds before each scenario (default 0.5)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat everything; the table shows each cell's median round")
    ap.add_argument("--sam6d", default=os.path.join(REPO_ROOT, "target", "release", "sam6d"),
                    help="the sam6d binary (default: target/release/sam6d)")
    ap.add_argument("--servers", default="sam6d,legacy,fastapi",
                    help="comma-separated subset of sam6d,legacy,fastapi, in run order")
    ap.add_argument("--rgb", default=bench_client.DEFAULT_RGB,
                    help="colour PNG sent by inference requests (default: the example frame)")
    ap.add_argument("--depth", default=bench_client.DEFAULT_DEPTH,
                    help="16-bit depth PNG sent by inference requests")
    ap.add_argument("--pickle-protocol", type=int,
                    default=bench_client.pickle.DEFAULT_PROTOCOL,
                    help="pickle protocol of the requests (default: Python's default, "
                         f"{bench_client.pickle.DEFAULT_PROTOCOL})")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--ready-timeout", type=float, default=60.0,
                    help="seconds to wait for a server's 'ready on' line")
    ap.add_argument("--pin", action="store_true",
                    help="pin the server to the first CPU and the clients to the others "
                         "(steadier 1-connection numbers: whether client and server share a "
                         "CPU otherwise changes a ping's latency by 2-3x from run to run)")
    ap.add_argument("--json", metavar="FILE", help="write the raw numbers here as JSON")
    ap.add_argument("--logdir", help="where server logs go (default: a new temp dir)")
    args = ap.parse_args()

    servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    bad = [s for s in servers if s not in SERVER_LABELS]
    if bad or not servers or len(set(servers)) != len(servers):
        ap.error(f"--servers: pick from sam6d,legacy,fastapi (got {args.servers!r})")
    if args.seconds <= 0 or args.warmup < 0 or args.rounds < 1:
        ap.error("--seconds must be > 0, --warmup >= 0, --rounds >= 1")
    args.sam6d = os.path.abspath(args.sam6d)
    args.rgb, args.depth = os.path.abspath(args.rgb), os.path.abspath(args.depth)

    try:
        for p in (args.rgb, args.depth):
            if not os.path.isfile(p):
                raise BenchError(f"{p} not found: inference requests send the example frame "
                                 "(../shared/testdata/sam6d-example beside the repo); "
                                 "give --rgb/--depth")
        if args.pin:
            setup_pinning()
        if "sam6d" in servers:
            check_sam6d(args.sam6d)
        if "fastapi" in servers:
            ensure_fastapi()
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    logdir = args.logdir or tempfile.mkdtemp(prefix="sam6d-transport-")
    os.makedirs(logdir, exist_ok=True)
    frame_kb = (os.path.getsize(args.rgb) + os.path.getsize(args.depth)) / 1000
    versions = {"python": platform.python_version()}
    for m in ("fastapi", "uvicorn"):
        try:
            versions[m] = __import__(m).__version__
        except Exception:  # noqa: BLE001
            pass
    print(f"transport benchmark: {args.seconds:g} s per scenario after {args.warmup:g} s "
          f"warm-up, {args.rounds} round(s), {os.cpu_count()} CPUs, loopback {args.host}; "
          f"inference frame {frame_kb:.0f} kB (rgb+depth), pickle protocol "
          f"{args.pickle_protocol}"
          + (f"; server on CPU {PIN['server']}, clients on CPU {PIN['client']}" if PIN else "")
          + f"; logs in {logdir}", flush=True)

    raw = {s: {k: [] for k, _, _ in SCENARIOS} for s in servers}
    notes = {s: [] for s in servers}
    failed = False
    current = None

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        for rnd in range(args.rounds):
            for name in servers:
                proto = "http" if name == "fastapi" else "socket"
                current = Server(name, server_argv(name, args), proto, logdir, args.ready_timeout)
                print(f"[round {rnd + 1}] {SERVER_LABELS[name]}: starting ...", flush=True)
                try:
                    current.start()
                    sanity_check(current, args)
                except BenchError as e:
                    print(f"  error: {e}", file=sys.stderr, flush=True)
                    notes[name].append(str(e))
                    failed = True
                    for key, _, _ in SCENARIOS:
                        raw[name][key].append({"error": str(e)})
                    notes[name].append("stop: " + current.stop())
                    current = None
                    continue
                print(f"  listening on {current.host}:{current.port}", flush=True)
                for key, label, opts in SCENARIOS:
                    if not current.alive():
                        res = {"error": f"server died (status {current.proc.returncode}); "
                                        f"log {current.log_path}"}
                    else:
                        res = run_scenario(current, opts, args)
                    raw[name][key].append(res)
                    if "error" in res:
                        failed = True
                        print(f"  {label:<36} ERROR: {res['error']}", flush=True)
                    else:
                        print(f"  {label:<36} {fmt_rps(res['rps']):>9} req/s   median "
                              f"{res['median_ms']:.3f} ms   p90 {res['p90_ms']:.3f} ms",
                              flush=True)
                note = current.stop()
                notes[name].append("stop: " + note)
                if "SIGKILL" in note or (proto == "socket" and "SIG" in note):
                    print(f"  stop: {note}", flush=True)
                current = None
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the server", file=sys.stderr)
        failed = True
    finally:
        if current is not None:
            current.stop()

    table = {s: {k: pick(raw[s][k]) for k, _, _ in SCENARIOS} for s in servers}
    print()
    print_table(servers, table, args)
    print()
    print_cpu_table(servers, table)
    print(f"\nreq/s: requests per second summed over the client processes; med ms: median "
          f"latency per request (client side, connect included per request in the last row). "
          f"FastAPI is HTTP/1.1 keep-alive with base64 JSON bodies (new connection per request "
          f"in the last row).\nserver logs: {logdir}")

    if args.json:
        doc = {
            "config": {"seconds": args.seconds, "warmup": args.warmup, "rounds": args.rounds,
                       "cpus": os.cpu_count(), "host": args.host, "servers": servers,
                       "sam6d": args.sam6d if "sam6d" in servers else None,
                       "rgb": args.rgb, "depth": args.depth, "frame_bytes": int(frame_kb * 1000),
                       "pickle_protocol": args.pickle_protocol, "versions": versions,
                       "pin": dict(PIN) or None,
                       "logdir": logdir, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
            "scenarios": [{"key": k, "label": l, **o} for k, l, o in SCENARIOS],
            "table": table,
            "ratios": {f"{a}/{b}": {k: (table[a][k]["rps"] / table[b][k]["rps"]
                                        if table[a][k] and table[b][k]
                                        and "error" not in table[a][k]
                                        and "error" not in table[b][k] else None)
                                    for k, _, _ in SCENARIOS}
                       for a, b in (("sam6d", "legacy"), ("sam6d", "fastapi"))
                       if a in servers and b in servers},
            "raw": raw,
            "notes": notes,
        }
        with open(args.json, "w") as f:
            json.dump(doc, f, indent=1)
        print(f"raw numbers: {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
