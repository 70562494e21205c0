#!/usr/bin/env python3
"""Load generator for the transport benchmark (standard library only).

Talks either the socket protocol of `sam6d serve` and the old Python server (every message a
4-byte big-endian length followed by a pickled dict) or, with `--proto http`, the FastAPI
stand-in's JSON + base64 API over `http.client`.

    python3 client.py --port 5555 --mode ping  --procs 8 --seconds 3
    python3 client.py --port 5555 --mode infer --procs 4 --seconds 3
    python3 client.py --port 5555 --mode infer --reconnect      # one connection per request
    python3 client.py --port 8000 --proto http --mode infer     # FastAPI, HTTP keep-alive

Each of the `--procs` processes opens its connection, sends requests back to back for
`--warmup` seconds, waits for the others, then sends requests back to back for `--seconds`
seconds, timing each one (connect included with `--reconnect`). `infer` sends the real
example frame (`--rgb`, `--depth`). The request is serialised once per process, as a client
sending the same frame again would; each response is parsed and checked. Prints one JSON
object: total requests/s (sum over processes), latency median/p90/p99 in ms, errors.
"""

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import pickle
import socket
import struct
import sys
import time
from array import array

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE_DIR = os.path.join(REPO_ROOT, "..", "shared", "testdata", "sam6d-example")
DEFAULT_RGB = os.path.normpath(os.path.join(EXAMPLE_DIR, "rgb.png"))
DEFAULT_DEPTH = os.path.normpath(os.path.join(EXAMPLE_DIR, "depth.png"))


class ProtocolError(Exception):
    pass


# ---------------------------------------------------------------- socket (pickle) protocol

def recv_exact(sock, n):
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise ConnectionError("server closed the connection")
        got += k
    return buf


def recv_message(sock):
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    return pickle.loads(recv_exact(sock, length))


def frame(obj, protocol):
    payload = pickle.dumps(obj, protocol=protocol)
    return struct.pack(">I", len(payload)) + payload


def socket_connect(host, port, timeout, nodelay):
    sock = socket.create_connection((host, port), timeout=timeout)
    if nodelay:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def check_response(resp, mode):
    if not isinstance(resp, dict) or resp.get("status") != "success":
        raise ProtocolError(f"unexpected response: {str(resp)[:300]}")
    if mode == "ping" and resp.get("message") != "pong":
        raise ProtocolError(f"ping answered {str(resp)[:300]}")
    if mode == "infer" and not isinstance(resp.get("data"), dict):
        raise ProtocolError(f"inference answered {str(resp)[:300]}")


class SocketClient:
    def __init__(self, args, request):
        self.args = args
        self.frame = frame(request, args.pickle_protocol)
        self.sock = None

    def _connect(self):
        return socket_connect(self.args.host, self.args.port, self.args.timeout,
                              not self.args.no_nodelay)

    def one(self):
        if self.args.reconnect or self.sock is None:
            self.sock = self._connect()
        try:
            self.sock.sendall(self.frame)
            resp = recv_message(self.sock)
        except BaseException:
            self.close()
            raise
        if self.args.reconnect:
            self.close()
        return resp

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None


# ---------------------------------------------------------------- HTTP (FastAPI) protocol

class HttpClient:
    def __init__(self, args, mode, rgb, depth):
        self.args = args
        self.conn = None
        if mode == "ping":
            self.method, self.path, self.body, self.headers = "GET", "/ping", None, {}
        else:
            self.method, self.path = "POST", "/sam6d_inference"
            self.body = json.dumps({
                "rgb_b64": base64.b64encode(rgb).decode("ascii"),
                "depth_b64": base64.b64encode(depth).decode("ascii"),
                "det_score_thresh": args.det_score_thresh,
            }).encode("ascii")
            self.headers = {"Content-Type": "application/json"}
        if args.reconnect:
            self.headers = dict(self.headers, Connection="close")

    def one(self):
        if self.args.reconnect or self.conn is None:
            # http.client sets TCP_NODELAY itself and sends headers + a bytes body in one write.
            self.conn = http.client.HTTPConnection(self.args.host, self.args.port,
                                                   timeout=self.args.timeout)
        try:
            self.conn.request(self.method, self.path, body=self.body, headers=self.headers)
            r = self.conn.getresponse()
            body = r.read()
            if r.status != 200:
                raise ProtocolError(f"HTTP {r.status}: {body[:300]!r}")
            resp = json.loads(body)
        except BaseException:
            self.close()
            raise
        if self.args.reconnect:
            self.close()
        return resp

    def close(self):
        if self.conn is not None:
            try:
                self.conn.close()
            finally:
                self.conn = None


# ---------------------------------------------------------------- worker processes

def make_client(args):
    rgb = depth = b""
    if args.mode == "infer":
        with open(args.rgb, "rb") as f:
            rgb = f.read()
        with open(args.depth, "rb") as f:
            depth = f.read()
    if args.proto == "http":
        return HttpClient(args, args.mode, rgb, depth)
    if args.mode == "ping":
        request = {"action": "ping"}
    else:
        request = {"action": "sam6d_inference", "rgb_bytes": rgb, "depth_bytes": depth,
                   "det_score_thresh": args.det_score_thresh}
    return SocketClient(args, request)


def worker(idx, args, barrier, results):
    out = {"idx": idx, "count": 0, "warmup_count": 0, "errors": 0, "first_error": None,
           "elapsed": 0.0, "latencies": b""}
    try:
        client = make_client(args)
        perf = time.perf_counter
        mode = args.mode

        def attempt(lat):
            t0 = perf()
            try:
                resp = client.one()
                check_response(resp, mode)
            except (OSError, ProtocolError, pickle.UnpicklingError, EOFError,
                    http.client.HTTPException, ValueError) as e:
                out["errors"] += 1
                if out["first_error"] is None:
                    out["first_error"] = f"{type(e).__name__}: {e}"
                if out["errors"] > args.max_errors:
                    raise
                time.sleep(0.01)
                return
            if lat is not None:
                lat.append(perf() - t0)

        end = perf() + args.warmup
        while perf() < end:
            attempt(None)
            out["warmup_count"] += 1
        out["errors"] = 0  # warm-up errors (e.g. the very first connect) do not count
        barrier.wait(timeout=args.warmup + args.timeout + 30)
        lat = array("d")
        t_start = perf()
        end = t_start + args.seconds
        while perf() < end:
            attempt(lat)
        out["elapsed"] = perf() - t_start
        out["count"] = len(lat)
        out["latencies"] = lat.tobytes()
        client.close()
    except BaseException as e:  # report, never hang the parent
        out["fatal"] = f"{type(e).__name__}: {e}"
        try:
            barrier.abort()
        except Exception:
            pass
    results.put(out)


def percentile(sorted_vals, q):
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


def run(args):
    ctx = mp.get_context("fork")
    barrier = ctx.Barrier(args.procs)
    results = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(i, args, barrier, results), daemon=True)
             for i in range(args.procs)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + args.warmup + args.seconds + args.timeout + 60
    outs = []
    try:
        while len(outs) < len(procs):
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"only {len(outs)} of {len(procs)} client processes reported")
            try:
                outs.append(results.get(timeout=min(left, 1.0)))
            except Exception:  # queue.Empty
                if all(not p.is_alive() for p in procs) and results.empty():
                    raise RuntimeError("client processes died without reporting")
    finally:
        for p in procs:
            p.join(timeout=2)
            if p.is_alive():
                p.kill()
    fatal = [o["fatal"] for o in outs if "fatal" in o]
    lat = array("d")
    for o in outs:
        a = array("d")
        a.frombytes(o["latencies"])
        lat.extend(a)
    s = sorted(lat)
    total = sum(o["count"] for o in outs)
    rps = sum(o["count"] / o["elapsed"] for o in outs if o["elapsed"] > 0)
    errors = sum(o["errors"] for o in outs)
    first_error = next((o["first_error"] for o in outs if o["first_error"]), None)
    return {
        "proto": args.proto,
        "mode": args.mode,
        "procs": args.procs,
        "reconnect": args.reconnect,
        "pickle_protocol": args.pickle_protocol if args.proto == "socket" else None,
        "seconds": args.seconds,
        "requests": total,
        # Everything the server answered, warm-up included: what its CPU time is divided by.
        "all_requests": total + sum(o["warmup_count"] for o in outs),
        "errors": errors,
        "first_error": first_error or (fatal[0] if fatal else None),
        "fatal": fatal,
        "rps": rps,
        "median_ms": percentile(s, 0.5) * 1e3,
        "p90_ms": percentile(s, 0.9) * 1e3,
        "p99_ms": percentile(s, 0.99) * 1e3,
        "mean_ms": (sum(s) / len(s) * 1e3) if s else float("nan"),
        "per_proc_rps": [round(o["count"] / o["elapsed"], 1) if o["elapsed"] > 0 else 0.0
                         for o in sorted(outs, key=lambda o: o["idx"])],
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proto", choices=["socket", "http"], default="socket",
                    help="socket: length-prefixed pickles; http: the FastAPI JSON API")
    ap.add_argument("--mode", choices=["ping", "infer"], default="ping")
    ap.add_argument("--reconnect", action="store_true",
                    help="one connection per request, like the old client")
    ap.add_argument("--procs", type=int, default=1, help="client processes")
    ap.add_argument("--seconds", type=float, default=3.0, help="measured time per process")
    ap.add_argument("--warmup", type=float, default=0.5, help="unmeasured time first")
    ap.add_argument("--rgb", default=DEFAULT_RGB, help="colour PNG sent by `infer`")
    ap.add_argument("--depth", default=DEFAULT_DEPTH, help="16-bit depth PNG sent by `infer`")
    ap.add_argument("--det-score-thresh", type=float, default=0.5)
    ap.add_argument("--pickle-protocol", type=int, default=pickle.DEFAULT_PROTOCOL,
                    help=f"pickle protocol of the requests (default {pickle.DEFAULT_PROTOCOL})")
    ap.add_argument("--timeout", type=float, default=10.0, help="socket timeout, seconds")
    ap.add_argument("--max-errors", type=int, default=100,
                    help="a process gives up after this many failed requests")
    ap.add_argument("--no-nodelay", action="store_true",
                    help="leave Nagle on for the socket protocol (http.client always sets it)")
    args = ap.parse_args(argv)
    if args.procs < 1:
        ap.error("--procs must be at least 1")
    if not 0 <= args.pickle_protocol <= pickle.HIGHEST_PROTOCOL:
        ap.error(f"--pickle-protocol must be 0..{pickle.HIGHEST_PROTOCOL}")
    if args.mode == "infer":
        for p in (args.rgb, args.depth):
            if not os.path.isfile(p):
                ap.error(f"{p} not found (give --rgb/--depth; the example lives in "
                         f"../shared/testdata/sam6d-example beside the repo)")
    result = run(args)
    print(json.dumps(result))
    return 1 if result["fatal"] or result["requests"] == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
