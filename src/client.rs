//! A client of `sam6d serve` (and of the Python servers it replaces): `sam6d ping`,
//! `sam6d shutdown` and `sam6d infer --connect` use it.
use crate::protocol::frame;
use crate::protocol::message::{self, to_json};
use crate::protocol::pickle;
use anyhow::Context;
use serde::Serialize;
use std::io::BufReader;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    addr: String,
}

/// A server's answer, as JSON (byte strings shown as their length).
#[derive(Debug)]
pub struct Answer {
    pub body: serde_json::Value,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        self.body.get("status").and_then(|s| s.as_str()) == Some("success")
    }

    pub fn message(&self) -> &str {
        self.body.get("message").and_then(|s| s.as_str()).unwrap_or("")
    }

    pub fn data(&self) -> serde_json::Value {
        self.body.get("data").cloned().unwrap_or(serde_json::Value::Null)
    }

    /// Success, or the server's error message as an error.
    pub fn into_result(self) -> anyhow::Result<Answer> {
        if self.is_success() {
            Ok(self)
        } else {
            let code = self.body.get("code").and_then(|s| s.as_str()).map(|c| format!(" [{c}]")).unwrap_or_default();
            anyhow::bail!("the server answered an error{code}: {}", self.message())
        }
    }
}

/// An inference request as existing clients send it; optional keys are left out when unset.
#[derive(Serialize)]
pub struct InferenceRequest<'a> {
    pub action: &'static str,
    #[serde(with = "serde_bytes")]
    pub rgb_bytes: &'a [u8],
    #[serde(with = "serde_bytes")]
    pub depth_bytes: &'a [u8],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub det_score_thresh: Option<f32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub visualize: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub object: Option<&'a str>,
    #[serde(rename = "cam_K", skip_serializing_if = "Option::is_none")]
    pub cam_k: Option<[f64; 9]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth_scale: Option<f64>,
}

impl Client {
    /// Connects to `host:port`; `timeout` bounds the connection and every answer.
    pub fn connect(addr: &str, timeout: Duration) -> anyhow::Result<Client> {
        let sock = addr
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {addr}"))?
            .next()
            .with_context(|| format!("{addr} resolves to no address"))?;
        let stream = TcpStream::connect_timeout(&sock, timeout).with_context(|| format!("cannot connect to a sam6d server at {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Client { reader: BufReader::new(stream.try_clone()?), writer: stream, addr: addr.to_string() })
    }

    /// Sends one request (any serialisable dict) and waits for its answer.
    pub fn call(&mut self, request: &impl Serialize) -> anyhow::Result<Answer> {
        let mut buf = frame::buffer_with_header();
        message::encode_into(&mut buf, request)?;
        frame::write_framed(&mut self.writer, buf).with_context(|| format!("sending to {}", self.addr))?;
        // Answers are small; 1 GiB only guards against a peer that is not a sam6d server.
        let payload = frame::read_frame(&mut self.reader, 1 << 30).with_context(|| format!("waiting for {}'s answer", self.addr))?;
        let value = pickle::decode(&payload, &pickle::Limits::default()).with_context(|| format!("decoding {}'s answer", self.addr))?;
        anyhow::ensure!(matches!(value, pickle::Value::Dict(_)), "{} answered a {}, not a dict", self.addr, value.type_name());
        Ok(Answer { body: to_json(&value) })
    }

    pub fn ping(&mut self) -> anyhow::Result<Answer> {
        self.call(&serde_json::json!({"action": message::ACTION_PING}))
    }
}
