//! One client connection: read a frame, answer it, repeat, in order, until the client closes,
//! times out, sends a broken frame, or the server shuts down.
//!
//! A well-framed request that is wrong in any way gets an error reply and the connection stays
//! usable; only a broken frame (too large, cut off) closes it, since the byte stream can no
//! longer be trusted to be in step.
use super::worker::{Done, Job, SubmitError};
use super::{Shared, Stats};
use crate::io::{self, Camera};
use crate::results;
use crate::pipeline::Frame;
use crate::protocol::frame::{self, FrameError};
use crate::protocol::message::{self, ErrorCode, InferenceRequest, Request};
use crate::protocol::pickle;
use serde_json::{json, Map, Value};
use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Instant;

/// An answer and what to log about it.
struct Reply {
    body: Value,
    /// Set after a successful `shutdown` request: stop the server once the reply is out.
    then_shutdown: bool,
}

impl Reply {
    fn ok(data: Map<String, Value>, message: &str) -> Reply {
        Reply { body: message::success(data, message), then_shutdown: false }
    }

    fn err(code: ErrorCode, msg: impl AsRef<str>) -> Reply {
        Reply { body: message::error(code, msg.as_ref()), then_shutdown: false }
    }

    fn status(&self) -> &str {
        match self.body.get("code").and_then(Value::as_str) {
            Some(code) => code,
            None => "ok",
        }
    }
}

pub(crate) fn serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let config = &shared.config;
    if let Err(e) = configure(&stream, config) {
        tracing::warn!(%peer, "cannot configure connection: {e}");
        return;
    }
    let Ok(read_half) = stream.try_clone() else { return };
    // Small requests (pings) arrive in one read; big ones bypass the buffer.
    let mut reader = BufReader::with_capacity(64 << 10, read_half);
    let mut writer = stream;
    tracing::debug!(%peer, "connected");
    loop {
        let payload = match frame::read_frame(&mut reader, config.max_frame_bytes) {
            Ok(p) => p,
            Err(FrameError::Closed) => break,
            Err(e @ FrameError::TooLarge { .. }) => {
                // The rest of the stream cannot be trusted to be in step: say why, then close.
                shared.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::info!(%peer, status = "too_large", "{e}; closing the connection");
                let _ = send(&mut writer, &message::error(ErrorCode::TooLarge, &e.to_string()));
                break;
            }
            Err(FrameError::Timeout) => {
                tracing::info!(%peer, "idle or stuck mid-frame for {:?}: closing", config.read_timeout.unwrap_or_default());
                break;
            }
            Err(e) => {
                tracing::info!(%peer, "{e}: closing");
                break;
            }
        };
        let t0 = Instant::now();
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        let (action, reply) = handle(&payload, peer, shared);
        if reply.status() != "ok" {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        let sent = send(&mut writer, &reply.body);
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        match reply.body.get("message").and_then(Value::as_str).filter(|_| reply.status() != "ok") {
            Some(msg) => tracing::info!(%peer, %action, bytes = payload.len(), ms = format_args!("{ms:.2}"), status = %reply.status(), "{msg}"),
            None => tracing::info!(%peer, %action, bytes = payload.len(), ms = format_args!("{ms:.2}"), status = %reply.status()),
        }
        if reply.then_shutdown && shared.shutdown.trigger() {
            tracing::info!(%peer, "shutdown requested: finishing the requests already received, then exiting");
        }
        if let Err(e) = sent {
            tracing::info!(%peer, "could not send the reply: {e}; closing");
            break;
        }
    }
    tracing::debug!(%peer, "disconnected");
}

fn configure(stream: &TcpStream, config: &super::Config) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(config.read_timeout)?;
    // A client that stops reading must not pin this thread forever either.
    stream.set_write_timeout(config.read_timeout)
}

pub(crate) fn send(w: &mut TcpStream, body: &Value) -> std::io::Result<()> {
    let mut buf = frame::buffer_with_header();
    message::encode_into(&mut buf, body).map_err(std::io::Error::other)?;
    frame::write_framed(w, buf)
}

/// Decodes and answers one request. Never fails: every problem is an error reply.
fn handle(payload: &[u8], peer: SocketAddr, shared: &Shared) -> (&'static str, Reply) {
    let value = match pickle::decode(payload, &pickle::Limits::default()) {
        Ok(v) => v,
        Err(e) => return ("?", Reply::err(ErrorCode::BadRequest, format!("could not decode the request: {e}"))),
    };
    let request = match Request::from_value(&value) {
        Ok(r) => r,
        Err(e) => {
            let action = value.get("action").and_then(|a| a.as_str()).map_or("?", known_action);
            return (action, Reply::err(ErrorCode::BadRequest, e.0));
        }
    };
    let action = request.action();
    let mut reply = match request {
        Request::Ping => Reply::ok(status(shared), "pong"),
        Request::Shutdown { token } => shutdown(peer, token, shared),
        Request::Inference(r) => inference(&r, shared),
    };
    // Echo a client's request id so that pipelining clients can match answers.
    if let Some(id) = value.get("id").filter(|v| matches!(v, pickle::Value::Int(_) | pickle::Value::Str(_))) {
        if let Value::Object(m) = &mut reply.body {
            m.insert("id".into(), message::to_json(id));
        }
    }
    (action, reply)
}

fn known_action(a: &str) -> &'static str {
    match a {
        message::ACTION_PING => message::ACTION_PING,
        message::ACTION_SHUTDOWN => message::ACTION_SHUTDOWN,
        message::ACTION_INFERENCE => message::ACTION_INFERENCE,
        _ => "?",
    }
}

/// The health-check answer of `ping`.
fn status(shared: &Shared) -> Map<String, Value> {
    let loaded = &shared.loaded;
    let mut m = Map::new();
    m.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    m.insert("pipeline".into(), json!(if shared.config.bench_noop { "bench-noop" } else { loaded.pipeline.as_str() }));
    m.insert("device".into(), json!(loaded.device_names()));
    let models: Vec<Value> = loaded.models.iter().map(|m| json!({"name": m.name, "diameter_mm": m.diameter})).collect();
    m.insert("models".into(), Value::Array(models));
    m.insert("camera".into(), loaded.camera.map_or(Value::Null, |c| json!({"cam_K": c.k(), "depth_scale": c.depth_scale})));
    m.insert("uptime_s".into(), json!(results::round3(shared.started.elapsed().as_secs_f64())));
    m.insert("requests".into(), json!(Stats::get(&shared.stats.requests)));
    m.insert("inferences".into(), json!(Stats::get(&shared.stats.inferences)));
    m.insert("errors".into(), json!(Stats::get(&shared.stats.errors)));
    m.insert("connections".into(), json!(shared.stats.connections.load(Ordering::Relaxed)));
    if let Some(pool) = &shared.workers {
        m.insert("queue".into(), json!({"waiting": pool.waiting(), "capacity": pool.capacity()}));
        let workers: Vec<Value> = pool
            .states()
            .iter()
            .enumerate()
            .map(|(id, w)| {
                let (done, failed) = w.counts();
                json!({"id": id, "device": loaded.devices[id].to_string(), "state": if w.is_busy() { "busy" } else { "idle" }, "done": done, "errors": failed})
            })
            .collect();
        m.insert("workers".into(), Value::Array(workers));
    }
    m.insert("pid".into(), json!(std::process::id()));
    m
}

fn shutdown(peer: SocketAddr, token: Option<&str>, shared: &Shared) -> Reply {
    let loopback = peer.ip().to_canonical().is_loopback();
    let token_ok = match (&shared.config.shutdown_token, token) {
        (Some(expected), Some(given)) => constant_time_eq(expected.as_bytes(), given.as_bytes()),
        _ => false,
    };
    if !(loopback || token_ok) {
        let how = if shared.config.shutdown_token.is_some() {
            "send the server's --shutdown-token as 'token'"
        } else {
            "connect from the server's own machine (loopback), or start the server with --shutdown-token"
        };
        return Reply::err(ErrorCode::Forbidden, format!("shutdown refused from {}: {how}", peer.ip()));
    }
    Reply { body: message::success(Map::new(), "shutting down"), then_shutdown: true }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn inference(r: &InferenceRequest<'_>, shared: &Shared) -> Reply {
    let t0 = Instant::now();
    if shared.config.bench_noop {
        // Transport benchmarks: answer as a real request would, without touching the images.
        let mut data = Map::new();
        for key in ["rotation", "translation", "pose_scores"] {
            data.insert(key.into(), json!([]));
        }
        data.insert("received_bytes".into(), json!({"rgb": r.rgb.len(), "depth": r.depth.len()}));
        return Reply::ok(data, "");
    }
    let loaded = &shared.loaded;
    let model = match pick_model(r.object, loaded) {
        Ok(i) => i,
        Err(msg) => return Reply::err(ErrorCode::BadRequest, msg),
    };
    let camera = match camera_for(r, loaded.camera) {
        Ok(c) => c,
        Err(msg) => return Reply::err(ErrorCode::BadRequest, msg),
    };
    // Decoding here, on the connection's thread, keeps the pipeline worker for inference only.
    let frame = match decode_frame(r, camera) {
        Ok(f) => f,
        Err(e) => return Reply::err(ErrorCode::BadRequest, e.to_string()),
    };
    let decode_ms = t0.elapsed().as_secs_f64() * 1e3;
    let mut options = shared.config.options.clone();
    if let Some(t) = r.det_score_thresh {
        options.det_score_thresh = t;
    }
    let Some(workers) = &shared.workers else { return Reply::err(ErrorCode::Internal, "no pipeline worker") };
    let (tx, rx) = mpsc::channel();
    match workers.submit(Job { frame, model, options, reply: tx }) {
        Ok(()) => {}
        Err(SubmitError::Busy { capacity }) => {
            return Reply::err(ErrorCode::Busy, format!("busy: {capacity} inference requests are already waiting; retry later"));
        }
        Err(SubmitError::Closed) => return Reply::err(ErrorCode::ShuttingDown, "the server is shutting down"),
    }
    let Ok(Done { frame, result, queue_ms, worker }) = rx.recv() else {
        return Reply::err(ErrorCode::Internal, "the pipeline worker stopped before answering");
    };
    let est = match result {
        Ok(est) => est,
        Err(msg) => return Reply::err(ErrorCode::Internal, format!("inference failed: {msg}")),
    };
    let n = shared.stats.inferences.fetch_add(1, Ordering::Relaxed) + 1;
    let model = &loaded.models[model];
    let mut data = results::estimate_json(&est, &model.name, &frame, &loaded.pipeline, &loaded.devices[worker].to_string());
    data.insert("worker".into(), json!(worker));
    data.insert("queue_ms".into(), json!(results::round3(queue_ms)));
    data.insert("decode_ms".into(), json!(results::round3(decode_ms)));
    if r.visualize {
        match write_visualisation(&frame, model, &est, n, shared) {
            Ok((path, ism)) => {
                data.insert("vis_path".into(), json!(path));
                if let Some(ism) = ism {
                    data.insert("vis_ism_path".into(), json!(ism));
                }
            }
            Err(msg) => return Reply::err(ErrorCode::BadRequest, msg),
        };
    }
    Reply::ok(data, "")
}

fn pick_model(object: Option<&str>, loaded: &super::Loaded) -> Result<usize, String> {
    let names = || loaded.models.iter().map(|m| format!("'{}'", m.name)).collect::<Vec<_>>().join(", ");
    match object {
        Some(name) => loaded.models.iter().position(|m| m.name == name).ok_or_else(|| {
            let shown: String = name.chars().take(64).collect();
            format!("unknown object '{shown}': this server has {}", names())
        }),
        None if loaded.models.len() == 1 => Ok(0),
        None => Err(format!("this server has several models ({}): say which with 'object'", names())),
    }
}

/// The server's camera with the request's overrides.
fn camera_for(r: &InferenceRequest<'_>, default: Option<Camera>) -> Result<Camera, String> {
    let depth_scale = r.depth_scale.or(default.map(|c| c.depth_scale)).unwrap_or(1.0);
    let camera = match (r.cam_k, default) {
        (Some(k), _) => Camera::from_k(&k, depth_scale, "cam_K"),
        (None, Some(c)) => Camera::new(c.fx, c.fy, c.cx, c.cy, depth_scale),
        (None, None) => {
            return Err("this server has no default camera (--cam / CAM_PATH): send 'cam_K' (and 'depth_scale') with the request".into())
        }
    };
    camera.map_err(|e| e.to_string())
}

fn decode_frame(r: &InferenceRequest<'_>, camera: Camera) -> Result<Frame, io::InputError> {
    let rgb = io::image::decode_rgb(r.rgb, "rgb_bytes")?;
    let depth = io::image::decode_depth(r.depth, camera.depth_scale, "depth_bytes")?;
    Frame::new(rgb, depth, camera)
}

/// Writes the overlay PNGs of one answered request (the pose overlay, and the proposals when a
/// segmenter ran); returns their paths.
fn write_visualisation(frame: &Frame, model: &crate::pipeline::ObjectModel, est: &crate::pipeline::Estimate, n: u64, shared: &Shared) -> Result<(String, Option<String>), String> {
    let Some(dir) = &shared.config.output_dir else {
        return Err("'visualize' needs an output folder: start the server with --output-dir or OUTPUT_DIR".into());
    };
    let dir = dir.join("sam6d_results");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let poses: Vec<_> = est.poses.iter().map(|p| (p.pose, p.score)).collect();
    let img = crate::render::overlay::vis_pem(&frame.rgb, &model.mesh, &frame.camera, &poses);
    // Unix milliseconds first: names sort by time and never collide with an earlier run's files.
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    let path = dir.join(format!("vis_{ms}_{n:06}.png"));
    img.save(&path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let ism = match &est.proposals {
        None => None,
        Some(proposals) => {
            let ism = dir.join(format!("vis_ism_{ms}_{n:06}.png"));
            crate::render::masks::vis_ism(&frame.rgb, proposals, &est.selected).save(&ism).map_err(|e| format!("cannot write {}: {e}", ism.display()))?;
            Some(ism.display().to_string())
        }
    };
    Ok((path.display().to_string(), ism))
}
