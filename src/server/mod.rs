//! `sam6d serve`: the pipeline behind a TCP socket that speaks our users' pickle protocol.
//!
//! One thread accepts (`listener`), one thread per connection reads frames, decodes requests and
//! images and answers pings itself (`connection`), and N worker threads, each owning a pipeline
//! on its device, take inference requests in arrival order from one bounded queue (`worker`).
//! `shutdown` stops the listener and lets every request already received finish.
mod connection;
mod listener;
mod shutdown;
mod worker;

pub use listener::Server;
pub use shutdown::Shutdown;

use crate::device::Device;
use crate::io::Camera;
use crate::pipeline::{ObjectModel, Options};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything `sam6d serve` is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Frames announcing more bytes than this are refused before anything is allocated.
    pub max_frame_bytes: usize,
    /// A connection idle (or stuck mid-frame) this long is closed. `None`: never.
    pub read_timeout: Option<Duration>,
    /// Inference requests waiting for the pipeline beyond this many are answered `busy`.
    pub queue_size: usize,
    /// Threads of each worker's own pool for the pipeline's parallel parts; `None`: the
    /// workers share the process's pool (one per core).
    pub worker_threads: Option<usize>,
    /// Connections beyond this many are answered `busy` and closed.
    pub max_connections: usize,
    /// With a token, `shutdown` is also accepted from non-loopback peers that send it.
    pub shutdown_token: Option<String>,
    /// Answer inference requests without decoding or estimating (transport benchmarks only).
    pub bench_noop: bool,
    /// Where `'visualize': True` writes its PNGs.
    pub output_dir: Option<PathBuf>,
    /// Defaults for requests that do not say otherwise.
    pub options: Options,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame_bytes: 64 << 20,
            read_timeout: Some(Duration::from_secs(120)),
            queue_size: 32,
            worker_threads: None,
            max_connections: 256,
            shutdown_token: None,
            bench_noop: false,
            output_dir: None,
            options: Options::default(),
        }
    }
}

/// What the server loaded once at start-up and every thread reads.
pub struct Loaded {
    /// Registered models; requests pick one by name.
    pub models: Vec<ObjectModel>,
    /// The default camera; requests may override `cam_K` / `depth_scale`.
    pub camera: Option<Camera>,
    /// The workers' devices, one per worker (`--workers`, `--device`).
    pub devices: Vec<Device>,
    /// What answers name as their pipeline (`geometric`, `sam-tiny+geometric`, ...).
    pub pipeline: String,
}

/// State shared by all threads of one server.
pub(crate) struct Shared {
    pub config: Config,
    pub loaded: Arc<Loaded>,
    pub shutdown: Arc<Shutdown>,
    pub started: Instant,
    pub stats: Stats,
    pub workers: Option<worker::Pool>,
}

#[derive(Default)]
pub(crate) struct Stats {
    pub requests: AtomicU64,
    pub inferences: AtomicU64,
    pub errors: AtomicU64,
    pub connections: AtomicUsize,
}

impl Loaded {
    /// The devices as answers and `ping` name them: `cpu`, or `cuda:0,cuda:1` for several.
    pub fn device_names(&self) -> String {
        let mut names: Vec<String> = Vec::new();
        for d in &self.devices {
            let n = d.to_string();
            if !names.contains(&n) {
                names.push(n);
            }
        }
        if names.is_empty() { "cpu".into() } else { names.join(",") }
    }
}

impl Stats {
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}
