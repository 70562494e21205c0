//! Typed requests and responses over the pickled dicts of the wire protocol.
//!
//! Requests: `{'action': 'sam6d_inference', 'rgb_bytes': b'..', 'depth_bytes': b'..', ...}`,
//! `{'action': 'ping'}`, `{'action': 'shutdown'}`. Responses: `{'status': 'success', 'data':
//! {...}, 'message': ''}` or `{'status': 'error', 'message': '...', 'code': '...'}`, plain
//! lists/floats/str so that clients need nothing but `pickle.loads`.
use super::pickle::Value;
use serde_json::{json, Map};

/// Field names as the existing clients spell them.
pub const ACTION_INFERENCE: &str = "sam6d_inference";
pub const ACTION_PING: &str = "ping";
pub const ACTION_SHUTDOWN: &str = "shutdown";

#[derive(Debug)]
pub enum Request<'a> {
    Ping,
    Shutdown { token: Option<&'a str> },
    Inference(InferenceRequest<'a>),
}

/// An inference request; the image bytes still point into the received frame.
#[derive(Debug)]
pub struct InferenceRequest<'a> {
    pub rgb: &'a [u8],
    pub depth: &'a [u8],
    pub det_score_thresh: Option<f32>,
    pub visualize: bool,
    /// Name of a model registered at start-up (never a path).
    pub object: Option<&'a str>,
    /// Row-major 3×3 intrinsics overriding the server's camera.
    pub cam_k: Option<[f64; 9]>,
    pub depth_scale: Option<f64>,
}

/// A request the server understood as a frame but cannot serve; the message goes to the client.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RequestError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, RequestError> {
    Err(RequestError(msg.into()))
}

impl<'a> Request<'a> {
    pub fn from_value(v: &'a Value<'a>) -> Result<Request<'a>, RequestError> {
        if !matches!(v, Value::Dict(_)) {
            return err(format!("the request must be a dict with an 'action' key, got a {}", v.type_name()));
        }
        let action = match v.get("action") {
            None => return err("the request has no 'action': expected 'sam6d_inference', 'ping' or 'shutdown'"),
            Some(a) => a.as_str().ok_or_else(|| RequestError(format!("'action' must be a str, got {}", a.type_name())))?,
        };
        match action {
            ACTION_PING => Ok(Request::Ping),
            ACTION_SHUTDOWN => Ok(Request::Shutdown { token: optional_str(v, "token")? }),
            ACTION_INFERENCE => Ok(Request::Inference(InferenceRequest::from_value(v)?)),
            other => err(format!("unknown action '{}': expected 'sam6d_inference', 'ping' or 'shutdown'", truncate(other, 64))),
        }
    }

    pub fn action(&self) -> &'static str {
        match self {
            Request::Ping => ACTION_PING,
            Request::Shutdown { .. } => ACTION_SHUTDOWN,
            Request::Inference(_) => ACTION_INFERENCE,
        }
    }
}

impl<'a> InferenceRequest<'a> {
    fn from_value(v: &'a Value<'a>) -> Result<InferenceRequest<'a>, RequestError> {
        let image = |key: &str, what: &str| -> Result<&'a [u8], RequestError> {
            match v.get(key) {
                None => err(format!("'{key}' is missing: send the {what} file's bytes")),
                Some(Value::Bytes(b)) if b.is_empty() => err(format!("'{key}' is empty: send the {what} file's bytes")),
                Some(Value::Bytes(b)) => Ok(b_slice(b)),
                Some(other) => err(format!(
                    "'{key}' must be bytes (the {what} file's bytes, e.g. open(path, 'rb').read() or cv2.imencode('.png', img)[1].tobytes()), got {}",
                    other.type_name()
                )),
            }
        };
        let rgb = image("rgb_bytes", "encoded PNG/JPEG colour image")?;
        let depth = image("depth_bytes", "16-bit PNG depth image")?;

        let det_score_thresh = match optional_number(v, "det_score_thresh")? {
            None => None,
            Some(t) if (0.0..=1.0).contains(&t) => Some(t as f32),
            Some(t) => return err(format!("'det_score_thresh' must be in [0, 1], got {t}")),
        };
        let visualize = match v.get("visualize") {
            None | Some(Value::None) => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::Int(i @ (0 | 1))) => *i == 1,
            Some(other) => return err(format!("'visualize' must be True or False, got {}", other.type_name())),
        };
        let cam_k = match v.get("cam_K") {
            None | Some(Value::None) => None,
            Some(k) => Some(parse_cam_k(k)?),
        };
        let depth_scale = match optional_number(v, "depth_scale")? {
            Some(s) if !(s.is_finite() && s > 0.0) => return err(format!("'depth_scale' must be a positive number (mm per depth unit), got {s}")),
            s => s,
        };
        Ok(InferenceRequest { rgb, depth, det_score_thresh, visualize, object: optional_str(v, "object")?, cam_k, depth_scale })
    }
}

// A `Cow<[u8]>` from the decoder borrows the frame; owned ones (protocol-2 latin-1 bytes) live
// as long as the decoded value, which is what `'a` ties us to here.
fn b_slice<'a>(b: &'a std::borrow::Cow<'a, [u8]>) -> &'a [u8] {
    b.as_ref()
}

fn optional_str<'a>(v: &'a Value<'a>, key: &str) -> Result<Option<&'a str>, RequestError> {
    match v.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(Value::Str(s)) => Ok(Some(s.as_ref())),
        Some(other) => err(format!("'{key}' must be a str, got {}", other.type_name())),
    }
}

fn optional_number(v: &Value<'_>, key: &str) -> Result<Option<f64>, RequestError> {
    match v.get(key) {
        None | Some(Value::None) => Ok(None),
        Some(x) => match x.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f)),
            Some(f) => err(format!("'{key}' must be a finite number, got {f}")),
            None => err(format!("'{key}' must be a number, got {}", x.type_name())),
        },
    }
}

/// `cam_K` as 9 numbers (row-major) or 3 rows of 3, like camera.json.
fn parse_cam_k(k: &Value<'_>) -> Result<[f64; 9], RequestError> {
    let bad = || RequestError("'cam_K' must be 9 numbers (row-major 3x3) or 3 lists of 3 numbers".into());
    let items = k.as_seq().ok_or_else(bad)?;
    let mut flat = Vec::with_capacity(9);
    for item in items {
        match item.as_seq() {
            Some(row) => {
                for x in row {
                    flat.push(x.as_f64().ok_or_else(bad)?);
                }
            }
            None => flat.push(item.as_f64().ok_or_else(bad)?),
        }
    }
    flat.try_into().map_err(|_| bad())
}

fn truncate(s: &str, max_chars: usize) -> String {
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max_chars).collect::<String>())
    }
}

/// Machine-readable error kinds, sent as `code` beside the human `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request was understood as a frame but is not a valid request; fix the request.
    BadRequest,
    /// The inference queue is full; retry later.
    Busy,
    /// Not allowed from this peer (shutdown without loopback or token).
    Forbidden,
    /// The frame exceeds --max-frame-bytes; the connection is closed after this reply.
    TooLarge,
    /// The server is stopping and takes no new work.
    ShuttingDown,
    /// A failure inside the server; the request may be fine.
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Busy => "busy",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
        }
    }
}

/// `{'status': 'success', 'data': data, 'message': message}`.
pub fn success(data: Map<String, serde_json::Value>, message: &str) -> serde_json::Value {
    json!({"status": "success", "data": data, "message": message})
}

/// `{'status': 'error', 'message': message, 'code': code}`.
pub fn error(code: ErrorCode, message: &str) -> serde_json::Value {
    json!({"status": "error", "message": message, "code": code.as_str()})
}

/// Appends the pickle of `value` (protocol 3: every Python 3 reads it) to `buf`.
pub fn encode_into(buf: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), serde_pickle::Error> {
    serde_pickle::to_writer(buf, value, serde_pickle::SerOptions::new())
}

/// A decoded value as JSON, for printing what a server answered. Byte strings become
/// `{"bytes": length}`; non-finite floats become strings.
pub fn to_json(v: &Value<'_>) -> serde_json::Value {
    match v {
        Value::None => serde_json::Value::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Float(f) if f.is_finite() => json!(f),
        Value::Float(f) => json!(f.to_string()),
        Value::Str(s) => json!(s),
        Value::Bytes(b) => json!({"bytes": b.len()}),
        Value::List(items) | Value::Tuple(items) => serde_json::Value::Array(items.iter().map(to_json).collect()),
        Value::Dict(items) => {
            let mut m = Map::new();
            for (k, v) in items {
                let key = match k {
                    Value::Str(s) => s.to_string(),
                    other => to_json(other).to_string(),
                };
                m.insert(key, to_json(v));
            }
            serde_json::Value::Object(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn s(x: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(x))
    }

    fn request<'a>(items: Vec<(&'a str, Value<'a>)>) -> Value<'a> {
        Value::Dict(items.into_iter().map(|(k, v)| (s(k), v)).collect())
    }

    fn message(v: &Value<'_>) -> String {
        Request::from_value(v).unwrap_err().0
    }

    #[test]
    fn parses_ping_shutdown_and_inference() {
        assert!(matches!(Request::from_value(&request(vec![("action", s("ping"))])), Ok(Request::Ping)));
        let v = request(vec![("action", s("shutdown")), ("token", s("t0k"))]);
        assert!(matches!(Request::from_value(&v), Ok(Request::Shutdown { token: Some("t0k") })));
        let rows = Value::List((0..3).map(|r| Value::List((0..3).map(|c| Value::Float((r * 3 + c) as f64)).collect())).collect());
        let v = request(vec![
            ("action", s("sam6d_inference")),
            ("rgb_bytes", Value::Bytes(Cow::Borrowed(b"png"))),
            ("depth_bytes", Value::Bytes(Cow::Borrowed(b"d"))),
            ("det_score_thresh", Value::Float(0.5)),
            ("visualize", Value::Bool(true)),
            ("object", s("obj_000005")),
            ("cam_K", rows),
            ("depth_scale", Value::Int(1)),
            ("unknown_key", Value::None),
        ]);
        let Ok(Request::Inference(r)) = Request::from_value(&v) else { panic!() };
        assert_eq!((r.rgb, r.depth), (&b"png"[..], &b"d"[..]));
        assert_eq!(r.det_score_thresh, Some(0.5));
        assert!(r.visualize);
        assert_eq!(r.object, Some("obj_000005"));
        assert_eq!(r.cam_k.unwrap()[5], 5.0);
        assert_eq!(r.depth_scale, Some(1.0));
    }

    #[test]
    fn every_bad_request_says_what_is_wrong() {
        assert!(message(&Value::List(vec![])).contains("must be a dict"));
        assert!(message(&request(vec![])).contains("no 'action'"));
        assert!(message(&request(vec![("action", Value::Int(3))])).contains("'action' must be a str"));
        assert!(message(&request(vec![("action", s("detect"))])).contains("unknown action 'detect'"));
        let inference = |extra: Vec<(&'static str, Value<'static>)>| {
            let mut items = vec![
                ("action", s("sam6d_inference")),
                ("rgb_bytes", Value::Bytes(Cow::Borrowed(b"x"))),
                ("depth_bytes", Value::Bytes(Cow::Borrowed(b"y"))),
            ];
            for (k, v) in extra {
                items.retain(|(key, _)| *key != k);
                items.push((k, v));
            }
            message(&request(items))
        };
        assert!(inference(vec![("rgb_bytes", s("abc"))]).contains("'rgb_bytes' must be bytes"));
        assert!(inference(vec![("depth_bytes", Value::Bytes(Cow::Borrowed(b"")))]).contains("'depth_bytes' is empty"));
        assert!(inference(vec![("det_score_thresh", Value::Float(1.5))]).contains("[0, 1]"));
        assert!(inference(vec![("det_score_thresh", s("high"))]).contains("must be a number"));
        assert!(inference(vec![("det_score_thresh", Value::Float(f64::NAN))]).contains("finite"));
        assert!(inference(vec![("visualize", s("yes"))]).contains("True or False"));
        assert!(inference(vec![("cam_K", Value::List(vec![Value::Int(1); 8]))]).contains("9 numbers"));
        assert!(inference(vec![("depth_scale", Value::Float(-1.0))]).contains("positive"));
        assert!(inference(vec![("object", Value::Int(5))]).contains("'object' must be a str"));
        let missing = message(&request(vec![("action", s("sam6d_inference")), ("rgb_bytes", Value::Bytes(Cow::Borrowed(b"x")))]));
        assert!(missing.contains("'depth_bytes' is missing"), "{missing}");
    }

    #[test]
    fn responses_pickle_to_plain_dicts() {
        let mut data = Map::new();
        data.insert("pose_scores".into(), json!([0.5]));
        let mut buf = Vec::new();
        encode_into(&mut buf, &success(data, "")).unwrap();
        let back: serde_json::Value = serde_pickle::from_slice(&buf, Default::default()).unwrap();
        assert_eq!(back, json!({"status": "success", "data": {"pose_scores": [0.5]}, "message": ""}));
        assert_eq!(buf[..2], [0x80, 3], "protocol 3");
    }
}
