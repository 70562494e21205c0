#!/usr/bin/env python3
"""A stand-in for the old Python SAM-6D socket server, for the transport benchmark.

Written the way the old server was: `socket` + `threading` (one thread per connection), a
hand-written receive loop (recv until the 4-byte big-endian length is in, then until the
payload is complete), `pickle.loads`, a pipeline that does nothing, and a `pickle.dumps`
reply with the same framing. One connection carries any number of requests. Like the old
server (and like `sam6d serve`), it logs one line per request to stderr (`--quiet` turns that
off).

    python3 legacy_server.py --host 127.0.0.1 --port 0

prints `ready on HOST:PORT` on stdout once it accepts connections. Stop it with a
{'action': 'shutdown'} request, SIGTERM or Ctrl-C.
"""

import argparse
import logging
import pickle
import socket
import struct
import sys
import threading

MAX_MESSAGE = 256 * 1024 * 1024  # refuse absurd lengths rather than allocate them


def receive_message(conn):
    """One framed pickle from `conn`; None when the peer closed between messages."""
    header = b""
    while len(header) < 4:
        chunk = conn.recv(4 - len(header))
        if not chunk:
            if header:
                raise ConnectionError("connection closed inside a length prefix")
            return None
        header += chunk
    (length,) = struct.unpack(">I", header)
    if length > MAX_MESSAGE:
        raise ValueError(f"message of {length} bytes is too large")
    data = bytearray()
    while len(data) < length:
        chunk = conn.recv(min(length - len(data), 4 * 1024 * 1024))
        if not chunk:
            raise ConnectionError("connection closed inside a message")
        data += chunk
    return pickle.loads(data)


def send_message(conn, obj):
    payload = pickle.dumps(obj)
    # One sendall for prefix + payload: two small writes would meet Nagle + delayed ACK.
    conn.sendall(struct.pack(">I", len(payload)) + payload)


def run_pipeline(rgb_bytes, depth_bytes, det_score_thresh):
    """The no-op pipeline: no image decoding, no poses."""
    return {"rotation": [], "translation": [], "pose_scores": []}


class LegacyServer:
    def __init__(self, host, port, quiet):
        self.host = host
        self.port = port
        self.quiet = quiet
        self.running = threading.Event()
        self.sock = None

    def handle_request(self, request):
        if not isinstance(request, dict):
            return {"status": "error", "message": "request must be a dict"}
        action = request.get("action")
        if action == "ping":
            return {"status": "success", "data": {}, "message": "pong"}
        if action == "shutdown":
            self.running.clear()
            return {"status": "success", "data": {}, "message": "shutting down"}
        if action == "sam6d_inference":
            try:
                rgb_bytes = request["rgb_bytes"]
                depth_bytes = request["depth_bytes"]
            except KeyError as e:
                return {"status": "error", "message": f"missing field {e.args[0]!r}"}
            thresh = float(request.get("det_score_thresh", 0.5))
            data = run_pipeline(rgb_bytes, depth_bytes, thresh)
            return {"status": "success", "data": data, "message": ""}
        return {"status": "error", "message": f"unknown action {action!r}"}

    def handle_client(self, conn, address):
        try:
            while True:
                try:
                    request = receive_message(conn)
                except (ValueError, pickle.UnpicklingError, EOFError) as e:
                    send_message(conn, {"status": "error", "message": f"bad request: {e}"})
                    break
                if request is None:
                    break
                response = self.handle_request(request)
                if not self.quiet:
                    logging.info("%s:%d %s -> %s", address[0], address[1],
                                 request.get("action") if isinstance(request, dict) else "?",
                                 response["status"])
                send_message(conn, response)
                if not self.running.is_set():
                    break
        except (ConnectionError, OSError) as e:
            logging.warning("connection %s: %s", address, e)
        finally:
            conn.close()

    def serve(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.host, self.port))
        self.sock.listen(128)
        self.sock.settimeout(0.5)  # wake up now and then to notice a shutdown request
        host, port = self.sock.getsockname()[:2]
        self.running.set()
        print(f"legacy python server ready on {host}:{port}", flush=True)
        try:
            while self.running.is_set():
                try:
                    conn, address = self.sock.accept()
                except socket.timeout:
                    continue
                t = threading.Thread(target=self.handle_client, args=(conn, address), daemon=True)
                t.start()
        finally:
            self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--quiet", action="store_true", help="no log line per request")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    try:
        LegacyServer(args.host, args.port, args.quiet).serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
