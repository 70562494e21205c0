//! `sam6d infer`: one RGB-D frame in, poses out (JSON).
use anyhow::Context;
use sam6d::client::{self, Client};
use sam6d::device::DeviceRequest;
use sam6d::geometry::Pose;
use sam6d::io::{self, results::round3, Camera};
use sam6d::pipeline::{CadUnit, Frame, ObjectModel, Options, Pipeline};
use sam6d::protocol::message;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Estimate the 6D pose of an object in one RGB-D frame.
///
/// Prints a JSON object on stdout (or writes it with --out / --output-dir):
/// {"rotation": [[[r00,r01,r02],[..],[..]], ...], "translation": [[x,y,z], ...] (mm),
/// "pose_scores": [...], "object", "image_size", "timings_ms", ...}, best instance first.
/// The pose maps model to camera coordinates: x_cam = R · x_model + t (OpenCV camera axes).
///
/// The default pipeline is weights-free: point-pair-feature voting on the depth, ICP, then
/// render-and-compare verification, whose agreement score is the pose score in [0, 1].
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  sam6d infer --rgb rgb.png --depth depth.png --cam camera.json --cad obj_000005.ply\n  \
  CAD_PATH=model.ply CAM_PATH=camera.json sam6d infer --rgb rgb.png --depth depth.png --out pose.json\n  \
  sam6d infer --rgb 000001.png --depth 000001.png --cam scene_camera.json --cam-frame 1 --cad obj_000005.ply")]
pub struct InferArgs {
    /// Colour image: PNG or JPEG; 8-bit RGB, RGBA (alpha ignored) or grey.
    #[arg(long, value_name = "FILE")]
    rgb: PathBuf,

    /// Depth image registered to the colour image: single-channel 16-bit PNG, raw × depth_scale = mm, 0 = no data.
    #[arg(long, value_name = "FILE")]
    depth: PathBuf,

    /// Camera intrinsics: SAM-6D camera.json ({"cam_K": [9 numbers, row-major], "depth_scale": s}) or a BOP scene_camera.json.
    /// With --connect it is optional and, when given, overrides the server's camera.
    #[arg(long, value_name = "FILE", env = "CAM_PATH", required_unless_present = "connect")]
    cam: Option<PathBuf>,

    /// Image id to use from a BOP scene_camera.json (default: the lowest id).
    #[arg(long, value_name = "ID")]
    cam_frame: Option<String>,

    /// Override the camera file's depth_scale (millimetres per raw depth unit).
    #[arg(long, value_name = "S")]
    depth_scale: Option<f64>,

    /// CAD model of the object: PLY (ASCII or binary) with faces, in millimetres unless --cad-unit m.
    /// With --connect the server's models are used (pick one with --object); --cad is then only
    /// needed to draw --overlay.
    #[arg(long, value_name = "FILE", env = "CAD_PATH", required_unless_present = "connect")]
    cad: Option<PathBuf>,

    /// Unit of the CAD model's coordinates.
    #[arg(long, value_enum, default_value_t = CadUnit::Mm)]
    cad_unit: CadUnit,

    /// Write the JSON result to this file ("-" for stdout) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Write the JSON result to DIR/sam6d_results/detection_pose.json (SAM-6D's layout).
    #[arg(long, value_name = "DIR", env = "OUTPUT_DIR")]
    output_dir: Option<PathBuf>,

    /// Drop poses whose score is below this (0..1). On the synthetic benchmark 0.4 keeps ~99 % of
    /// the right poses and drops a third of the wrong ones; raise it when a false positive costs
    /// more than a miss. [default: 0.4; with --connect, the server's --det-score-thresh]
    #[arg(long, value_parser = super::parse_unit_interval)]
    det_score_thresh: Option<f32>,

    /// Return at most this many instances, best first (with --connect: the server's setting).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,

    /// Where tch stages run: auto (CUDA if libtorch sees a GPU), cpu, cuda or cuda:N.
    /// The geometric pipeline itself runs on the CPU threads.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceRequest,

    /// Also write a PNG of the colour image with each pose's model outline drawn over it
    /// (best pose in red, then green, blue, ...).
    #[arg(long, value_name = "FILE")]
    overlay: Option<PathBuf>,

    /// Pretty-print the JSON.
    #[arg(long)]
    pretty: bool,

    /// Send the frame to a running `sam6d serve` at HOST:PORT instead of running the pipeline
    /// here (models stay loaded there; the output has the same shape).
    #[arg(long, value_name = "HOST:PORT", help_heading = "Server")]
    connect: Option<String>,

    /// With --connect: which of the server's models to look for (a name from `sam6d ping`).
    #[arg(long, value_name = "NAME", requires = "connect", help_heading = "Server")]
    object: Option<String>,

    /// With --connect: seconds to wait for the server's answer.
    #[arg(long, value_name = "SECS", default_value_t = 120.0, requires = "connect", help_heading = "Server")]
    timeout: f64,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let (out, n, object) = match &args.connect {
        Some(addr) => remote(&args, addr)?,
        None => local(&args)?,
    };
    let value = Value::Object(out);
    let text = if args.pretty { serde_json::to_string_pretty(&value)? } else { serde_json::to_string(&value)? };
    let target = match (&args.out, &args.output_dir) {
        (Some(p), _) if p.as_os_str() == "-" => None,
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => Some(dir.join("sam6d_results").join("detection_pose.json")),
        (None, None) => None,
    };
    match target {
        None => println!("{text}"),
        Some(path) => {
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
            }
            // Write then rename: a crash never leaves a half-written result behind.
            let tmp = path.with_extension("json.tmp");
            std::fs::write(&tmp, text + "\n").with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{n} instance(s) of {object} -> {}", path.display());
        }
    }
    Ok(())
}

fn load_camera(args: &InferArgs, path: &Path) -> anyhow::Result<Camera> {
    let camera = Camera::from_json_file(path, args.cam_frame.as_deref())?;
    Ok(match args.depth_scale {
        Some(s) => Camera::new(camera.fx, camera.fy, camera.cx, camera.cy, s)?,
        None => camera,
    })
}

/// Runs the pipeline in this process. Returns the JSON, the instance count and the object name.
fn local(args: &InferArgs) -> anyhow::Result<(Map<String, Value>, usize, String)> {
    let (cam, cad) = (args.cam.as_deref().expect("clap requires --cam"), args.cad.as_deref().expect("clap requires --cad"));
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let camera = load_camera(args, cam)?;
    let rgb = io::image::read_rgb(&args.rgb)?;
    let depth = io::image::read_depth(&args.depth, camera.depth_scale)?;
    let frame = Frame::new(rgb, depth, camera).with_context(|| format!("{} and {}", args.rgb.display(), args.depth.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let model = ObjectModel::load(cad, args.cad_unit)?;
    let model_ms = t1.elapsed().as_secs_f64() * 1e3;
    tracing::info!("model {} ready: diameter {:.1} mm, {:.0} ms", model.name, model.diameter, model_ms);

    let pipeline = Pipeline::new(Options { det_score_thresh: args.det_score_thresh.unwrap_or(Options::default().det_score_thresh), max_instances: args.max_instances as usize, device });
    let est = pipeline.estimate(&frame, &model)?;

    let mut out = io::results::estimate_json(&est, &model.name, &frame, "geometric", &device.to_string());
    out.insert("load_ms".into(), json!({"inputs": round3(load_ms), "model": round3(model_ms)}));
    out.insert(
        "inputs".into(),
        json!({"rgb": args.rgb, "depth": args.depth, "cam": cam, "cad": cad, "diameter_mm": model.diameter}),
    );
    if let Some(path) = &args.overlay {
        let poses: Vec<_> = est.poses.iter().map(|p| p.pose).collect();
        write_overlay(path, &frame, &model, &poses)?;
        out.insert("overlay".into(), json!(path));
    }
    Ok((out, est.poses.len(), model.name))
}

/// Sends the frame to a running server. The images travel as the files' bytes, undecoded.
fn remote(args: &InferArgs, addr: &str) -> anyhow::Result<(Map<String, Value>, usize, String)> {
    let rgb = std::fs::read(&args.rgb).with_context(|| format!("reading {}", args.rgb.display()))?;
    let depth = std::fs::read(&args.depth).with_context(|| format!("reading {}", args.depth.display()))?;
    let camera = args.cam.as_deref().map(|p| load_camera(args, p)).transpose()?;
    let request = client::InferenceRequest {
        action: message::ACTION_INFERENCE,
        rgb_bytes: &rgb,
        depth_bytes: &depth,
        det_score_thresh: args.det_score_thresh,
        visualize: false,
        object: args.object.as_deref(),
        cam_k: camera.map(|c| c.k()),
        depth_scale: camera.map(|c| c.depth_scale).or(args.depth_scale),
    };
    anyhow::ensure!(args.timeout > 0.0 && args.timeout.is_finite(), "--timeout must be a positive number of seconds");
    let timeout = Duration::from_secs_f64(args.timeout);
    let t0 = Instant::now();
    let mut conn = Client::connect(addr, timeout)?;
    let answer = conn.call(&request)?.into_result()?;
    let rtt_ms = t0.elapsed().as_secs_f64() * 1e3;
    let Value::Object(mut out) = answer.data() else { anyhow::bail!("{addr} answered success without a data dict") };
    let n = out.get("pose_scores").and_then(Value::as_array).map_or(0, Vec::len);
    let object = out.get("object").and_then(Value::as_str).unwrap_or("the object").to_string();
    out.insert("server".into(), json!({"address": addr, "round_trip_ms": round3(rtt_ms)}));
    out.insert("inputs".into(), json!({"rgb": args.rgb, "depth": args.depth, "cam": args.cam, "object": args.object}));
    if let Some(path) = &args.overlay {
        let cad = args.cad.as_deref().context("--overlay with --connect needs --cad to draw the model")?;
        let model = ObjectModel::load(cad, args.cad_unit)?;
        let camera = match camera {
            Some(c) => c,
            None => anyhow::bail!("--overlay with --connect needs --cam to project the model"),
        };
        let poses = poses_from_json(&out)?;
        let rgb = io::image::decode_rgb(&rgb, &args.rgb.display().to_string())?;
        let depth = io::image::decode_depth(&depth, camera.depth_scale, &args.depth.display().to_string())?;
        write_overlay(path, &Frame::new(rgb, depth, camera)?, &model, &poses)?;
        out.insert("overlay".into(), json!(path));
    }
    Ok((out, n, object))
}

fn write_overlay(path: &Path, frame: &Frame, model: &ObjectModel, poses: &[Pose]) -> anyhow::Result<()> {
    let img = sam6d::render::overlay::draw_outlines(&frame.rgb, &model.mesh, &frame.camera, poses);
    img.save(path).with_context(|| format!("writing overlay {}", path.display()))
}

/// Poses back from the `rotation` / `translation` lists of an answer.
fn poses_from_json(out: &Map<String, Value>) -> anyhow::Result<Vec<Pose>> {
    let rot: Vec<[[f64; 3]; 3]> = serde_json::from_value(out.get("rotation").cloned().unwrap_or_default())?;
    let tr: Vec<[f64; 3]> = serde_json::from_value(out.get("translation").cloned().unwrap_or_default())?;
    anyhow::ensure!(rot.len() == tr.len(), "the answer has {} rotations but {} translations", rot.len(), tr.len());
    Ok(rot.iter().zip(&tr).map(|(r, t)| Pose::from_rows(r, t)).collect())
}
