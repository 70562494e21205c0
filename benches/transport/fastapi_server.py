#!/usr/bin/env python3
"""A stand-in for the old FastAPI SAM-6D service, for the transport benchmark.

POST /sam6d_inference with JSON {"rgb_b64": ..., "depth_b64": ..., "det_score_thresh": 0.5}
base64-decodes both images (as the old service did), runs a pipeline that does nothing and
answers {"status": "success", "data": {"rotation": [], "translation": [], "pose_scores": []},
"message": ""}. GET /ping answers {"status": "success", "data": {}, "message": "pong"}.
One uvicorn worker, uvicorn's defaults otherwise, log level warning.

    python3 fastapi_server.py --host 127.0.0.1 --port 0

lets uvicorn bind HOST:PORT exactly as `uvicorn --host HOST --port PORT` does (port 0: the
kernel picks one) and prints `ready on HOST:PORT` with the real port on stdout once uvicorn
serves it. Stop it with SIGTERM or Ctrl-C.

(Binding the socket ourselves and passing `sockets=` to uvicorn would be slower than a normal
uvicorn run: asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP, a
plain `socket.socket()` has proto 0, and the responses then wait ~40 ms on delayed ACKs.)
"""

import argparse
import base64

import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

app = FastAPI(title="SAM-6D (transport benchmark stand-in)")


class InferenceRequest(BaseModel):
    rgb_b64: str
    depth_b64: str
    det_score_thresh: float = 0.5


def run_pipeline(rgb_bytes, depth_bytes, det_score_thresh):
    """The no-op pipeline: no image decoding, no poses."""
    return {"rotation": [], "translation": [], "pose_scores": []}


@app.get("/ping")
async def ping():
    return {"status": "success", "data": {}, "message": "pong"}


@app.post("/sam6d_inference")
async def sam6d_inference(request: InferenceRequest):
    try:
        rgb_bytes = base64.b64decode(request.rgb_b64)
        depth_bytes = base64.b64decode(request.depth_b64)
    except ValueError as e:
        raise HTTPException(status_code=400, detail=f"bad base64: {e}")
    data = run_pipeline(rgb_bytes, depth_bytes, request.det_score_thresh)
    return {"status": "success", "data": data, "message": ""}


class ReadyServer(uvicorn.Server):
    """Says `ready on HOST:PORT` once uvicorn has started serving its socket."""

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            print(f"fastapi server ready on {host}:{port}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = ap.parse_args()

    config = uvicorn.Config(app, host=args.host, port=args.port, workers=1, log_level="warning")
    ReadyServer(config).run()


if __name__ == "__main__":
    main()
