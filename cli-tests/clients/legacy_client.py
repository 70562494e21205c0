"""A client written like our users' existing ones: socket + struct + pickle, nothing else.

The cli-tests drive `sam6d serve` with it. Every scenario asserts what it expects and exits
non-zero (with the reason on stderr) when the server misbehaves; on success it prints one JSON
document on stdout for the Rust side to check further.

    python3 legacy_client.py PORT ping|shutdown|infer|bad-requests|bad-frames|concurrent|infer-many|traffic ... [--protocol N]
"""
import argparse
import json
import os
import pickle
import socket
import struct
import sys
import tempfile
import threading
import time
import zlib

HOST = "127.0.0.1"


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError(f"connection closed after {len(buf)} of {n} bytes")
        buf.extend(chunk)
    return bytes(buf)


def send_msg(sock, obj, protocol):
    data = pickle.dumps(obj, protocol=protocol)
    # Like the original client: header and payload in two sends.
    sock.sendall(struct.pack(">I", len(data)))
    sock.sendall(data)


def recv_msg(sock):
    (n,) = struct.unpack(">I", recv_exact(sock, 4))
    return pickle.loads(recv_exact(sock, n))


def send_raw(sock, payload):
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def request(port, obj, protocol):
    """One connection per request, as the existing client does."""
    with socket.create_connection((HOST, port), timeout=120) as s:
        send_msg(s, obj, protocol)
        return recv_msg(s)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def plain(obj):
    """Checks the answer holds only plain Python types (no numpy, nothing to import)."""
    if isinstance(obj, dict):
        return all(isinstance(k, str) and plain(v) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return all(plain(v) for v in obj)
    return obj is None or isinstance(obj, (bool, int, float, str))


def png(width, height, channels, bit_depth, fill=0):
    """A minimal PNG encoder, so the tests need no imaging library."""
    colour = {1: 0, 3: 2}[channels]
    bpp = channels * bit_depth // 8
    row = bytes([0]) + bytes([fill]) * (width * bpp)
    raw = row * height

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def cmd_ping(a):
    r = request(a.port, {"action": "ping"}, a.protocol)
    check(r["status"] == "success" and r["message"] == "pong", f"ping answer {r}")
    check(plain(r), "ping answer is plain data")
    print(json.dumps(r))


def cmd_shutdown(a):
    req = {"action": "shutdown"}
    if a.token is not None:
        req["token"] = a.token
    print(json.dumps(request(a.port, req, a.protocol)))


def inference_request(a):
    req = {"action": "sam6d_inference", "rgb_bytes": open(a.rgb, "rb").read(), "depth_bytes": open(a.depth, "rb").read()}
    if a.thresh is not None:
        req["det_score_thresh"] = a.thresh
    if a.object:
        req["object"] = a.object
    if a.cam:
        cam = json.load(open(a.cam))
        req["cam_K"] = [cam["cam_K"][0:3], cam["cam_K"][3:6], cam["cam_K"][6:9]]
        req["depth_scale"] = cam.get("depth_scale", 1.0)
    if a.visualize:
        req["visualize"] = True
    return req


def cmd_infer(a):
    r = request(a.port, inference_request(a), a.protocol)
    check(plain(r), "inference answer is plain data")
    print(json.dumps(r))


BAD_REQUESTS = [
    # (name, payload builder, text expected in the message)
    ("non-dict payload", lambda ok, p: pickle.dumps([1, 2, 3], protocol=p), "must be a dict"),
    ("missing action", lambda ok, p: pickle.dumps({"rgb_bytes": b"x"}, protocol=p), "no 'action'"),
    ("unknown action", lambda ok, p: pickle.dumps({"action": "detect"}, protocol=p), "unknown action 'detect'"),
    ("non-str action", lambda ok, p: pickle.dumps({"action": 7}, protocol=p), "'action' must be a str"),
    ("missing rgb_bytes", lambda ok, p: pickle.dumps({k: v for k, v in ok.items() if k != "rgb_bytes"}, protocol=p), "'rgb_bytes' is missing"),
    ("missing depth_bytes", lambda ok, p: pickle.dumps({k: v for k, v in ok.items() if k != "depth_bytes"}, protocol=p), "'depth_bytes' is missing"),
    ("str rgb_bytes", lambda ok, p: pickle.dumps(dict(ok, rgb_bytes="rgb.png"), protocol=p), "'rgb_bytes' must be bytes"),
    ("list depth_bytes", lambda ok, p: pickle.dumps(dict(ok, depth_bytes=[1, 2, 3]), protocol=p), "'depth_bytes' must be bytes"),
    ("undecodable rgb", lambda ok, p: pickle.dumps(dict(ok, rgb_bytes=b"definitely not an image"), protocol=p), "rgb_bytes"),
    ("undecodable depth", lambda ok, p: pickle.dumps(dict(ok, depth_bytes=b"\x89PNG\r\n\x1a\n broken"), protocol=p), "depth_bytes"),
    ("size mismatch", lambda ok, p: pickle.dumps(dict(ok, rgb_bytes=png(32, 24, 3, 8, 128)), protocol=p), "32x24"),
    ("8-bit colour depth", lambda ok, p: pickle.dumps(dict(ok, depth_bytes=ok["rgb_bytes"]), protocol=p), "16-bit"),
    ("threshold above 1", lambda ok, p: pickle.dumps(dict(ok, det_score_thresh=1.5), protocol=p), "[0, 1]"),
    ("threshold negative", lambda ok, p: pickle.dumps(dict(ok, det_score_thresh=-0.1), protocol=p), "[0, 1]"),
    ("threshold not a number", lambda ok, p: pickle.dumps(dict(ok, det_score_thresh="high"), protocol=p), "must be a number"),
    ("unknown object", lambda ok, p: pickle.dumps(dict(ok, object="../../etc/passwd"), protocol=p), "unknown object"),
    ("bad cam_K", lambda ok, p: pickle.dumps(dict(ok, cam_K=[1, 2, 3]), protocol=p), "cam_K"),
    ("bad depth_scale", lambda ok, p: pickle.dumps(dict(ok, depth_scale=0), protocol=p), "depth_scale"),
    ("trailing garbage", lambda ok, p: pickle.dumps({"action": "ping"}, protocol=p) + b"garbage", "trailing"),
    ("truncated pickle", lambda ok, p: pickle.dumps({"action": "ping", "pad": "x" * 100}, protocol=p)[:-20], "truncated"),
    ("empty payload", lambda ok, p: b"", "empty"),
    ("not a pickle", lambda ok, p: b"GET / HTTP/1.1\r\n\r\n", "pickle"),
]


class Evil:
    """Pickles to os.system(...): a server that unpickles with pickle.loads would run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def cmd_bad_requests(a):
    """Every bad request on ONE connection: each gets its error, and the connection stays usable."""
    ok = inference_request(a)
    marker = os.path.join(tempfile.mkdtemp(), "pwned")
    cases = list(BAD_REQUESTS)
    cases.append(("code-executing pickle", lambda ok, p: pickle.dumps({"action": "ping", "x": Evil(marker)}, protocol=p), "refused"))
    # pickle.dumps itself recurses; build the deep pickle by hand (protocol 2 opcodes).
    nested = b"\x80\x02" + b"]" * 10000 + b"a" * 9999 + b"."
    cases.append(("10000-deep nesting", lambda ok, p: nested, "deeper"))
    cases.append(("numpy array", lambda ok, p: b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00.", "numpy"))
    results = []
    with socket.create_connection((HOST, a.port), timeout=60) as s:
        for name, build, needle in cases:
            send_raw(s, build(ok, a.protocol))
            r = recv_msg(s)
            check(plain(r), f"{name}: answer is plain data")
            check(r.get("status") == "error", f"{name}: expected an error, got {r}")
            check(needle.lower() in r.get("message", "").lower(), f"{name}: message {r.get('message')!r} lacks {needle!r}")
            results.append({"case": name, "message": r["message"], "code": r.get("code")})
            # The same connection still answers.
            send_msg(s, {"action": "ping"}, a.protocol)
            check(recv_msg(s).get("message") == "pong", f"{name}: connection unusable afterwards")
    check(not os.path.exists(marker), "the server executed a pickled os.system call")
    print(json.dumps(results))


def cmd_bad_frames(a):
    """Frame-level errors close only their own connection; the server stays up."""
    out = {}
    # A length prefix over --max-frame-bytes: an error answer, then the connection closes.
    with socket.create_connection((HOST, a.port), timeout=30) as s:
        s.sendall(struct.pack(">I", a.max_frame_bytes + 1) + b"\x80")
        r = recv_msg(s)
        check(r.get("status") == "error" and r.get("code") == "too_large", f"oversized frame: {r}")
        check(s.recv(1) == b"", "connection should be closed after an oversized frame")
        out["too_large"] = r["message"]
    # A half-sent frame: closed after --read-timeout, without an answer.
    t0 = time.time()
    with socket.create_connection((HOST, a.port), timeout=30) as s:
        s.sendall(struct.pack(">I", 1000) + b"\x80\x04")
        check(s.recv(1) == b"", "a half-sent frame should be closed")
        out["half_sent_closed_after_s"] = time.time() - t0
    # An idle connection: closed after --read-timeout too.
    t0 = time.time()
    with socket.create_connection((HOST, a.port), timeout=30) as s:
        check(s.recv(1) == b"", "an idle connection should be closed")
        out["idle_closed_after_s"] = time.time() - t0
    # A half-sent header, then the client goes away.
    with socket.create_connection((HOST, a.port), timeout=30) as s:
        s.sendall(b"\x00\x00")
    r = request(a.port, {"action": "ping"}, a.protocol)
    check(r.get("message") == "pong", "server still answers after broken frames")
    print(json.dumps(out))


def cmd_concurrent(a):
    """N clients × M requests at once; every answer must be the one for its own request."""
    errors = []

    def client(ci):
        try:
            persistent = ci % 2 == 0  # half keep one connection, half reconnect like the old client
            s = socket.create_connection((HOST, a.port), timeout=60) if persistent else None
            for ri in range(a.requests):
                size = 1000 + ci * 100 + ri
                req = {"action": "sam6d_inference", "rgb_bytes": bytes([ci]) * size, "depth_bytes": bytes([ri]) * (size * 2), "id": ci * 1000 + ri}
                if persistent:
                    send_msg(s, req, a.protocol)
                    r = recv_msg(s)
                else:
                    r = request(a.port, req, a.protocol)
                got = (r.get("status"), r.get("id"), r.get("data", {}).get("received_bytes"))
                want = ("success", ci * 1000 + ri, {"rgb": size, "depth": size * 2})
                if got != want:
                    errors.append(f"client {ci} request {ri}: got {got}, want {want}")
            if s:
                s.close()
        except Exception as e:  # noqa: BLE001 - reported to the test
            errors.append(f"client {ci}: {e!r}")

    threads = [threading.Thread(target=client, args=(ci,)) for ci in range(a.clients)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "; ".join(errors[:5]))
    print(json.dumps({"answers": a.clients * a.requests, "seconds": time.time() - t0}))


def cmd_infer_many(a):
    """Several real inference requests at once, mixing two objects/frames: each gets its own answer."""
    jobs = json.loads(a.jobs)
    answers = [None] * len(jobs)

    def run(i, job):
        req = {"action": "sam6d_inference", "rgb_bytes": open(job["rgb"], "rb").read(), "depth_bytes": open(job["depth"], "rb").read(), "object": job["object"], "id": i}
        if job.get("cam"):
            cam = json.load(open(job["cam"]))
            req["cam_K"] = cam["cam_K"]
            req["depth_scale"] = cam.get("depth_scale", 1.0)
        answers[i] = request(a.port, req, a.protocol)

    threads = [threading.Thread(target=run, args=(i, j)) for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(all(r is not None for r in answers), "every job answered")
    print(json.dumps(answers))


def cmd_traffic(a):
    """Clients sending requests back to back for --seconds through a balancer, retrying a
    request whose connection breaks (a backend killed or draining) on a new connection. Each
    answer must be its own request's: with --rgb/--depth (real frames) the pose's depth must be
    within 20 mm of --want-z; without (bench-noop servers), the echoed byte counts must match the
    request's, which differ per request. Prints what was answered, retried, lost and wrong."""
    stop_at = time.time() + a.seconds
    stats = {"answered": 0, "retries": 0, "lost": 0, "wrong": 0, "codes": {}}
    problems = []
    lock = threading.Lock()
    real = None
    if a.rgb:
        real = {"rgb_bytes": open(a.rgb, "rb").read(), "depth_bytes": open(a.depth, "rb").read()}
        if a.cam:
            cam = json.load(open(a.cam))
            real["cam_K"], real["depth_scale"] = cam["cam_K"], cam.get("depth_scale", 1.0)

    def client(ci):
        sock, ri = None, 0
        while time.time() < stop_at:
            rid = ci * 1_000_000 + ri
            if real:
                req = dict(real, action="sam6d_inference", id=rid)
            else:
                size = 100 + (rid * 7919) % 5000
                req = {"action": "sam6d_inference", "rgb_bytes": b"r" * size, "depth_bytes": b"d" * (size + 1), "id": rid}
            answer = None
            for attempt in range(a.attempts):
                try:
                    if sock is None:
                        sock = socket.create_connection((HOST, a.port), timeout=60)
                    send_msg(sock, req, a.protocol)
                    answer = recv_msg(sock)
                except (OSError, ConnectionError, struct.error, EOFError):
                    answer = None
                if answer is not None and answer.get("code") in ("busy", "shutting_down"):
                    answer = None  # said so explicitly: also fine to retry elsewhere
                if answer is not None:
                    break
                if sock is not None:
                    sock.close()
                    sock = None
                with lock:
                    stats["retries"] += 1
                time.sleep(0.05 * (attempt + 1))
            with lock:
                if answer is None:
                    stats["lost"] += 1
                    problems.append(f"request {rid}: no answer after {a.attempts} attempts")
                    continue
                stats["answered"] += 1
                code = answer.get("code", answer.get("status"))
                stats["codes"][code] = stats["codes"].get(code, 0) + 1
                data = answer.get("data", {})
                if real:
                    t = data.get("translation") or [[0, 0, 0]]
                    ok = answer.get("id") == rid and answer.get("status") == "success" and abs(t[0][2] - a.want_z) < 20
                else:
                    want = {"rgb": len(req["rgb_bytes"]), "depth": len(req["depth_bytes"])}
                    ok = answer.get("id") == rid and answer.get("status") == "success" and data.get("received_bytes") == want
                if not ok:
                    stats["wrong"] += 1
                    problems.append(f"request {rid}: wrong answer {str(answer)[:300]}")
            ri += 1
        if sock is not None:
            sock.close()

    threads = [threading.Thread(target=client, args=(ci,)) for ci in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats["problems"] = problems[:10]
    print(json.dumps(stats))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("command")
    p.add_argument("--protocol", type=int, default=pickle.DEFAULT_PROTOCOL)
    p.add_argument("--rgb")
    p.add_argument("--depth")
    p.add_argument("--cam")
    p.add_argument("--thresh", type=float)
    p.add_argument("--object")
    p.add_argument("--visualize", action="store_true")
    p.add_argument("--token")
    p.add_argument("--max-frame-bytes", type=int, default=64 << 20)
    p.add_argument("--clients", type=int, default=16)
    p.add_argument("--requests", type=int, default=10)
    p.add_argument("--jobs")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--attempts", type=int, default=20)
    p.add_argument("--want-z", type=float, default=0.0)
    a = p.parse_args()
    commands = {
        "ping": cmd_ping,
        "shutdown": cmd_shutdown,
        "infer": cmd_infer,
        "bad-requests": cmd_bad_requests,
        "bad-frames": cmd_bad_frames,
        "concurrent": cmd_concurrent,
        "infer-many": cmd_infer_many,
        "traffic": cmd_traffic,
    }
    commands[a.command](a)


if __name__ == "__main__":
    main()
