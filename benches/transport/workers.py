#!/usr/bin/env python3
"""Worker-pool benchmark: real inference throughput of `sam6d serve --workers N` on the CPU.

    python3 benches/transport/workers.py [--seconds 12] [--workers 1,2] [--json FILE]

For each worker count N it starts `sam6d serve --workers N --threads-per-worker T` on the
example frame's can (geometric pipeline, no segmenter), keeps 2·N client processes sending the
example frame back to back (client.py, one connection each, so the queue is never empty), and
prints requests/s, median latency and the server's CPU seconds per request (from /proc). Rows:
N workers × 1 thread (the scaling the pool gives: each worker on one core) and 1 worker × all
cores (what a single worker gets by parallelising inside a frame). Unlike run.py this runs the
pipeline: numbers are pose estimation plus transport, and the client processes' own CPU (PNG
reading, pickling) shares the machine.
"""

import argparse
import json
import os
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run as transport  # noqa: E402  (run.py beside this file: Server, run_scenario)

EXAMPLE = os.path.normpath(os.path.join(transport.REPO_ROOT, "..", "shared", "testdata", "sam6d-example"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:]))
    cores = os.cpu_count() or 1
    ap.add_argument("--workers", default=",".join(str(n) for n in sorted({1, 2, cores})),
                    help="comma-separated worker counts (default: 1, 2 and the core count)")
    ap.add_argument("--seconds", type=float, default=12.0, help="measured seconds per row")
    ap.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    ap.add_argument("--sam6d", default=os.path.join(transport.REPO_ROOT, "target", "release", "sam6d"))
    ap.add_argument("--example", default=EXAMPLE, help="the SAM-6D example folder")
    ap.add_argument("--json", metavar="FILE", help="write the rows here as JSON")
    args = ap.parse_args()
    counts = [int(n) for n in args.workers.split(",") if n.strip()]
    if not counts or min(counts) < 1:
        ap.error("--workers: positive integers, e.g. 1,2,4")
    ex = args.example
    for f in ("rgb.png", "depth.png", "camera.json", "obj_000005.ply"):
        if not os.path.isfile(os.path.join(ex, f)):
            print(f"error: {os.path.join(ex, f)} not found (../shared/testdata/sam6d-example "
                  "beside the repo, or --example DIR)", file=sys.stderr)
            return 2
    if not os.path.isfile(args.sam6d):
        print(f"error: no sam6d binary at {args.sam6d}: `source scripts/env.sh && cargo build "
              "--release` first", file=sys.stderr)
        return 2

    logdir = tempfile.mkdtemp(prefix="sam6d-workers-")
    # (workers, threads per worker): the pool's scaling, then one worker on every core.
    configs = [(n, 1) for n in counts] + ([(1, cores)] if cores > 1 else [])
    opts = argparse.Namespace(seconds=args.seconds, warmup=args.warmup,
                              rgb=os.path.join(ex, "rgb.png"), depth=os.path.join(ex, "depth.png"),
                              pickle_protocol=4)
    print(f"worker benchmark: {cores} CPUs, example frame, {args.seconds:g} s per row after "
          f"{args.warmup:g} s warm-up; logs in {logdir}", flush=True)
    rows = []
    for workers, threads in configs:
        argv = [args.sam6d, "serve", "--port", "0", "--segmenter", "none",
                "--cad", os.path.join(ex, "obj_000005.ply"), "--cam", os.path.join(ex, "camera.json"),
                "--workers", str(workers), "--threads-per-worker", str(threads)]
        server = transport.Server(f"w{workers}t{threads}", argv, "socket", logdir, 120.0)
        try:
            server.start()
            res = transport.run_scenario(server, {"mode": "infer", "procs": 2 * workers}, opts)
        finally:
            server.stop()
        if "error" in res:
            print(f"  {workers} worker(s) x {threads} thread(s): ERROR {res['error']}", file=sys.stderr)
            return 1
        row = {"workers": workers, "threads_per_worker": threads, "clients": 2 * workers,
               "rps": res["rps"], "median_ms": res["median_ms"], "server_cpu_ms": res.get("server_cpu_ms")}
        rows.append(row)
        print(f"  {workers} worker(s) x {threads} thread(s), {2 * workers} clients: "
              f"{res['rps']:.2f} req/s, median {res['median_ms']:.0f} ms, server CPU "
              f"{(res.get('server_cpu_ms') or float('nan')):.0f} ms/request", flush=True)
    base = next((r["rps"] for r in rows if r["workers"] == 1 and r["threads_per_worker"] == 1), None)
    print()
    print(f"{'workers x threads':<20}{'req/s':>8}{'median ms':>11}{'CPU ms/req':>12}{'vs 1x1':>8}")
    for r in rows:
        speedup = f"{r['rps'] / base:.2f}x" if base else "-"
        cpu = f"{r['server_cpu_ms']:.0f}" if r["server_cpu_ms"] is not None else "-"
        print(f"{str(r['workers']) + ' x ' + str(r['threads_per_worker']):<20}{r['rps']:>8.2f}"
              f"{r['median_ms']:>11.0f}{cpu:>12}{speedup:>8}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": cores, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
