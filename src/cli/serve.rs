//! `sam6d serve`: load the models once, then answer socket clients until shut down.
use anyhow::Context;
use sam6d::device::{Device, DeviceRequest};
use sam6d::io::Camera;
use sam6d::pipeline::{load_models, CadUnit, Options, Pipeline};
use sam6d::server::{Config, Loaded, Server};
use std::path::PathBuf;
use std::time::Duration;

/// Serve pose estimation to socket clients (the protocol of SAM-6D's Python clients).
///
/// Every message, both ways, is a 4-byte big-endian length and a pickled dict. Requests:
/// {'action': 'sam6d_inference', 'rgb_bytes': <PNG/JPEG file bytes>, 'depth_bytes': <16-bit PNG
/// bytes>, 'det_score_thresh': 0.5, 'visualize': False, 'object': 'obj_000005', 'cam_K': [9 numbers],
/// 'depth_scale': 1.0} (all but the first three optional), {'action': 'ping'} and
/// {'action': 'shutdown'}. Answers: {'status': 'success', 'data': {'rotation', 'translation'
/// (mm), 'pose_scores', ...}, 'message': ''} or {'status': 'error', 'message': ..., 'code': ...}.
///
/// Models are loaded before the server prints "ready on HOST:PORT". Inference requests wait in one
/// queue and run in arrival order on the pipeline workers (one, or --workers N); pings are
/// answered at once. Several servers can sit behind HAProxy (deploy/haproxy.cfg, docs/serving.md).
/// Pickles are decoded as plain data only:
/// nothing a client sends is ever executed. Stop it with `sam6d shutdown`, SIGINT or SIGTERM: the
/// requests already received are answered first.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  sam6d serve --cad obj_000005.ply --cam camera.json\n  \
  CAD_PATH=obj_000005.ply CAM_PATH=camera.json OUTPUT_DIR=out sam6d serve --port 8000\n  \
  sam6d serve --cad bop/lmo/models --cam camera.json      # every model of a BOP folder; clients send 'object'\n  \
  sam6d serve --cad models --cam camera.json --workers 2   # two frames at once (CPU: a core each)\n  \
  sam6d serve --cad models --cam camera.json --device cuda:0,cuda:1   # one worker per GPU\n  \
  sam6d ping && sam6d shutdown\n\n\
A Python client needs only the standard library:\n  \
  import pickle, socket, struct\n  \
  def call(req, addr=('127.0.0.1', 8000)):\n      \
      with socket.create_connection(addr) as s:\n          \
          data = pickle.dumps(req); s.sendall(struct.pack('>I', len(data)) + data)\n          \
          n = struct.unpack('>I', s.recv(4, socket.MSG_WAITALL))[0]\n          \
          return pickle.loads(s.recv(n, socket.MSG_WAITALL))\n  \
  call({'action': 'sam6d_inference', 'rgb_bytes': open('rgb.png', 'rb').read(),\n        \
        'depth_bytes': open('depth.png', 'rb').read()})")]
pub struct ServeArgs {
    /// CAD model(s) to serve: a PLY file, or a folder (BOP models/) whose .ply files are all loaded.
    /// Repeat for several; clients pick one by file stem with 'object'.
    #[arg(long, value_name = "FILE|DIR", env = "CAD_PATH", required_unless_present = "bench_noop")]
    cad: Vec<PathBuf>,

    /// Unit of the CAD models' coordinates.
    #[arg(long, value_enum, default_value_t = CadUnit::Mm)]
    cad_unit: CadUnit,

    /// Default camera intrinsics (SAM-6D camera.json or BOP scene_camera.json). Without it every
    /// request must carry 'cam_K' (and 'depth_scale', else 1.0 mm per unit).
    #[arg(long, value_name = "FILE", env = "CAM_PATH")]
    cam: Option<PathBuf>,

    /// Image id to use from a BOP scene_camera.json (default: the lowest id).
    #[arg(long, value_name = "ID")]
    cam_frame: Option<String>,

    /// Override the camera file's depth_scale (millimetres per raw depth unit).
    #[arg(long, value_name = "S")]
    depth_scale: Option<f64>,

    /// Where requests with 'visualize': True write their overlay PNGs (DIR/sam6d_results/).
    #[arg(long, value_name = "DIR", env = "OUTPUT_DIR")]
    output_dir: Option<PathBuf>,

    /// Address to listen on. 127.0.0.1 takes only local clients; 0.0.0.0 takes anyone who can
    /// reach the port (there is no authentication or encryption).
    #[arg(long, default_value = "127.0.0.1", env = "SAM6D_HOST", help_heading = "Network")]
    host: String,

    /// Port to listen on; 0 picks a free one (printed in the ready line).
    #[arg(long, default_value_t = 8000, env = "SAM6D_PORT", help_heading = "Network")]
    port: u16,

    /// Default score threshold; a request's 'det_score_thresh' overrides it. [default: 0.4 on
    /// the geometric stage's verification scores; 0.2 on ISM scores with --pipeline sam6d and
    /// the PEM, as SAM-6D]
    #[arg(long, value_parser = super::parse_unit_interval)]
    det_score_thresh: Option<f32>,

    /// Return at most this many instances per request, best first.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,

    /// Where tch stages run: auto, cpu, cuda or cuda:N. Several (comma-separated or repeated)
    /// start one worker on each: --device cuda:0,cuda:1. With --workers N they are taken in
    /// turn; auto spreads the workers over every GPU libtorch sees (else the CPU).
    #[arg(long, default_value = "auto", value_name = "DEVICE", value_delimiter = ',')]
    device: Vec<DeviceRequest>,

    /// Pipeline workers, each with its own copy of the networks on its device, fed from one
    /// queue in arrival order. [default: one per --device]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=256))]
    workers: Option<u32>,

    /// Threads each worker uses for the pipeline's parallel parts. [default: all cores with one
    /// worker; cores / N each with N workers, so that N CPU workers do not contend]
    #[arg(long, value_name = "T", value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads_per_worker: Option<u32>,

    #[command(flatten)]
    stages: super::stages::StageArgs,

    /// Inference requests allowed to wait for the pipeline; beyond that clients get a 'busy' error.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    queue_size: u32,

    /// Simultaneous connections; beyond that new ones get a 'busy' error and are closed.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Limits")]
    max_connections: u32,

    /// Largest message accepted, checked against the length prefix before reading (suffixes k, M, G).
    #[arg(long, default_value = "64M", value_parser = parse_size, value_name = "BYTES", help_heading = "Limits")]
    max_frame_bytes: usize,

    /// Close a connection that is idle, or stuck in the middle of a message, this many seconds (0: never).
    #[arg(long, default_value_t = 120.0, value_name = "SECS", help_heading = "Limits")]
    read_timeout: f64,

    /// Also accept 'shutdown' from non-loopback clients that send this as 'token'.
    #[arg(long, value_name = "TOKEN", env = "SAM6D_SHUTDOWN_TOKEN", hide_env_values = true, help_heading = "Network")]
    shutdown_token: Option<String>,

    /// Answer inference requests without decoding images or running the pipeline (transport
    /// benchmarks only; needs no model).
    #[arg(long)]
    bench_noop: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1usize << 10),
        Some((i, 'm' | 'M')) => (&t[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: usize = num.trim().parse().map_err(|_| format!("'{s}' is not a size (e.g. 65536, 64k, 64M)"))?;
    let bytes = n.checked_mul(mult).ok_or_else(|| format!("'{s}' is too large"))?;
    // The length prefix is 32 bits.
    if bytes == 0 || bytes > u32::MAX as usize {
        return Err(format!("'{s}' must be between 1 byte and 4G"));
    }
    Ok(bytes)
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.read_timeout >= 0.0 && args.read_timeout.is_finite(), "--read-timeout must be a number of seconds ≥ 0");
    let devices = worker_devices(&args.device, args.workers.map(|n| n as usize))?;
    let device = devices[0];
    // Bind first: a taken port should fail before seconds of model loading.
    let listener = Server::bind(&format!("{}:{}", bracket_ipv6(&args.host), args.port))?;

    let camera = match &args.cam {
        Some(path) => {
            let c = Camera::from_json_file(path, args.cam_frame.as_deref())?;
            Some(match args.depth_scale {
                Some(s) => Camera::new(c.fx, c.fy, c.cx, c.cy, s)?,
                None => c,
            })
        }
        None => None,
    };
    let models = if args.bench_noop && args.cad.is_empty() {
        Vec::new()
    } else {
        let t0 = std::time::Instant::now();
        let models = load_models(&args.cad, args.cad_unit)?;
        tracing::info!("{} model(s) ready in {:.0} ms", models.len(), t0.elapsed().as_secs_f64() * 1e3);
        models
    };
    let options = Options { det_score_thresh: args.det_score_thresh.unwrap_or(args.stages.default_det_score_thresh()), max_instances: args.max_instances as usize, device, refine_icp: args.stages.refine_icp() };
    // Each worker loads its own networks on its device; a device that fails says which.
    let mut pipelines = Vec::new();
    for (i, &device) in devices.iter().enumerate() {
        let options = Options { device, ..options.clone() };
        let pipeline = if args.bench_noop {
            Pipeline::new(options)
        } else {
            args.stages.build(options).with_context(|| format!("starting worker {i} on {device}"))?
        };
        // Template descriptors now (from the cache when it has them), so that no request waits.
        for model in &models {
            pipeline.prepare(model).with_context(|| format!("worker {i} on {device}: preparing the templates of {}", model.name))?;
        }
        pipelines.push(pipeline);
    }
    let pipeline_name = pipelines[0].name().to_string();
    if camera.is_none() && !args.bench_noop {
        tracing::warn!("no --cam / CAM_PATH: every request must carry 'cam_K' (and 'depth_scale')");
    }
    let names: Vec<String> = models.iter().map(|m| m.name.clone()).collect();
    let worker_threads = worker_threads(args.threads_per_worker, devices.len());
    let loaded = Loaded { models, camera, devices, pipeline: pipeline_name };
    let workers = if loaded.devices.len() == 1 { String::new() } else { format!("; {} workers", loaded.devices.len()) };
    let summary = format!("{} model(s): {}; pipeline {}; device {}{workers}", names.len(), if names.is_empty() { "-".into() } else { names.join(", ") }, loaded.pipeline, loaded.device_names());

    let config = Config {
        max_frame_bytes: args.max_frame_bytes,
        read_timeout: (args.read_timeout > 0.0).then(|| Duration::from_secs_f64(args.read_timeout)),
        queue_size: args.queue_size as usize,
        worker_threads,
        max_connections: args.max_connections as usize,
        shutdown_token: args.shutdown_token.filter(|t| !t.is_empty()),
        bench_noop: args.bench_noop,
        output_dir: args.output_dir,
        options,
    };
    let server = Server::new(listener, config, loaded, pipelines)?;
    server.shutdown_handle().on_signals().context("installing the SIGINT/SIGTERM handler")?;
    let mode = if args.bench_noop { " [bench-noop: inference requests are NOT run]" } else { "" };
    // Scripts and tests wait for this line; it comes only once models are loaded.
    println!("sam6d serve ready on {} ({summary}){mode}", server.local_addr());
    use std::io::Write;
    std::io::stdout().flush()?;
    server.run()
}

/// The device of each worker: the requests taken in turn, `workers` of them (default: one per
/// request). `auto` stands for every GPU libtorch sees, or the CPU.
fn worker_devices(requests: &[DeviceRequest], workers: Option<usize>) -> anyhow::Result<Vec<Device>> {
    let mut pool = Vec::new();
    for r in requests {
        match r {
            DeviceRequest::Auto if workers.is_some() && requests.len() == 1 => {
                let gpus = sam6d::device::cuda_device_count();
                pool.extend((0..gpus.max(1)).map(|i| if gpus == 0 { Device::Cpu } else { Device::Cuda(i) }));
            }
            r => pool.push(r.resolve().map_err(anyhow::Error::msg)?),
        }
    }
    let n = workers.unwrap_or(requests.len()).max(1);
    Ok((0..n).map(|i| pool[i % pool.len()]).collect())
}

/// Each worker's own thread count, or `None` for one worker on the process's pool.
fn worker_threads(asked: Option<u32>, workers: usize) -> Option<usize> {
    match asked {
        Some(t) => Some(t as usize),
        None if workers > 1 => {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            Some((cores / workers).max(1))
        }
        None => None,
    }
}

/// `::1` → `[::1]` so that host and port can be joined.
pub fn bracket_ipv6(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(super::parse_size("64M"), Ok(64 << 20));
        assert_eq!(super::parse_size("100"), Ok(100));
        assert_eq!(super::parse_size("2k"), Ok(2048));
        assert!(super::parse_size("0").is_err());
        assert!(super::parse_size("5G").is_err());
        assert!(super::parse_size("lots").is_err());
    }
}
