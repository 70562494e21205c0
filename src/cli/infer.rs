//! `sam6d infer`: one RGB-D frame in, poses out (JSON).
use anyhow::Context;
use sam6d::device::DeviceRequest;
use sam6d::io::{self, Camera};
use sam6d::pipeline::{CadUnit, Frame, ObjectModel, Options, Pipeline};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

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
    #[arg(long, value_name = "FILE", env = "CAM_PATH")]
    cam: PathBuf,

    /// Image id to use from a BOP scene_camera.json (default: the lowest id).
    #[arg(long, value_name = "ID")]
    cam_frame: Option<String>,

    /// Override the camera file's depth_scale (millimetres per raw depth unit).
    #[arg(long, value_name = "S")]
    depth_scale: Option<f64>,

    /// CAD model of the object: PLY (ASCII or binary) with faces, in millimetres unless --cad-unit m.
    #[arg(long, value_name = "FILE", env = "CAD_PATH")]
    cad: PathBuf,

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
    /// more than a miss.
    #[arg(long, default_value_t = 0.4, value_parser = parse_unit_interval)]
    det_score_thresh: f32,

    /// Return at most this many instances, best first.
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
}

fn parse_unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is outside [0, 1]")) }
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    let device = args.device.resolve().map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    let mut camera = Camera::from_json_file(&args.cam, args.cam_frame.as_deref())?;
    if let Some(s) = args.depth_scale {
        camera = Camera::new(camera.fx, camera.fy, camera.cx, camera.cy, s)?;
    }
    let rgb = io::image::read_rgb(&args.rgb)?;
    let depth = io::image::read_depth(&args.depth, camera.depth_scale)?;
    let frame = Frame::new(rgb, depth, camera).with_context(|| format!("{} and {}", args.rgb.display(), args.depth.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let model = ObjectModel::load(&args.cad, args.cad_unit)?;
    let model_ms = t1.elapsed().as_secs_f64() * 1e3;
    tracing::info!("model {} ready: diameter {:.1} mm, {:.0} ms", model.name, model.diameter, model_ms);

    let pipeline = Pipeline::new(Options { det_score_thresh: args.det_score_thresh, max_instances: args.max_instances as usize, device });
    let est = pipeline.estimate(&frame, &model)?;

    let mut out = io::results::pose_lists(&est);
    out.insert("object".into(), json!(model.name));
    out.insert("image_size".into(), json!({"width": frame.width(), "height": frame.height()}));
    out.insert("pipeline".into(), json!("geometric"));
    out.insert("device".into(), json!(device.to_string()));
    out.insert("timings_ms".into(), io::results::timings(&est));
    out.insert("load_ms".into(), json!({"inputs": round3(load_ms), "model": round3(model_ms)}));
    out.insert(
        "inputs".into(),
        json!({"rgb": args.rgb, "depth": args.depth, "cam": args.cam, "cad": args.cad, "diameter_mm": model.diameter}),
    );
    if let Some(path) = &args.overlay {
        let poses: Vec<_> = est.poses.iter().map(|p| p.pose).collect();
        let img = sam6d::render::overlay::draw_outlines(&frame.rgb, &model.mesh, &frame.camera, &poses);
        img.save(path).with_context(|| format!("writing overlay {}", path.display()))?;
        out.insert("overlay".into(), json!(path));
    }
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
            eprintln!("{} instance(s) of {} -> {}", est.poses.len(), model.name, path.display());
        }
    }
    Ok(())
}

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}
