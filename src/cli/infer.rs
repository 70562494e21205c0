//! `sam6d infer`: one RGB-D frame in, poses out (JSON); or a batch of frames (folders, `*`
//! patterns, a BOP scene) through the same pipeline, loaded once ([`batch`]).
mod batch;
mod frames;

use anyhow::Context;
use sam6d::client::{self, Client};
use sam6d::device::DeviceRequest;
use sam6d::geometry::Pose;
use sam6d::io::{self, Camera};
use sam6d::results::{self, round3};
use sam6d::pipeline::{CadUnit, Frame, ObjectModel, Options};
use sam6d::protocol::message;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Estimate the 6D pose of an object in one RGB-D frame, or in a batch of frames.
///
/// Prints a JSON object on stdout (or writes it with --out / --output-dir):
/// {"rotation": [[[r00,r01,r02],[..],[..]], ...], "translation": [[x,y,z], ...] (mm),
/// "pose_scores": [...], "object", "image_size", "timings_ms", ...}, best instance first.
/// The pose maps model to camera coordinates: x_cam = R · x_model + t (OpenCV camera axes).
///
/// The default pipeline is weights-free: point-pair-feature voting on the depth, ICP, then
/// render-and-compare verification, whose agreement score is the pose score in [0, 1].
///
/// Batches: --rgb-dir/--depth-dir (pairs matched by file stem), --rgb/--depth patterns with one
/// `*` (matched by what the `*` matched) or --scene (a BOP scene folder). The model is prepared
/// once. Results go to --output-dir DIR (DIR/<name>.json per frame), --jsonl FILE (one record
/// per line: the single-frame JSON plus "frame", "obj_id", "time_s"), --bop-csv FILE (BOP19)
/// and/or stdout with --format json. A frame that fails gets an error record
/// ({"frame", "inputs", "error"}) and the batch goes on. Exit status: 0 every frame worked,
/// 1 some frames failed (or the batch could not start), 2 usage error. Existing result files
/// are never replaced without --overwrite.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
  sam6d infer --rgb rgb.png --depth depth.png --cam camera.json --cad obj_000005.ply\n  \
  CAD_PATH=model.ply CAM_PATH=camera.json sam6d infer --rgb rgb.png --depth depth.png --out pose.json\n  \
  sam6d infer --rgb 000001.png --depth 000001.png --cam scene_camera.json --cam-frame 1 --cad obj_000005.ply\n\n\
Batches:\n  \
  sam6d infer --rgb-dir caps/rgb --depth-dir caps/depth --cam camera.json --cad model.ply --output-dir results\n  \
  sam6d infer --rgb 'caps/*_rgb.png' --depth 'caps/*_depth.png' --cam camera.json --cad model.ply --jsonl poses.jsonl\n  \
  sam6d infer --scene lmo/test/000002 --cad models/obj_000005.ply --bop-csv sam6d_lmo-test.csv --vis vis/\n  \
  sam6d infer --scene lmo/test/000002 --cad lmo/models --bop-csv sam6d_lmo-test.csv   # every object scene_gt.json lists\n  \
  sam6d infer --rgb rgb.png --depth depth.png --cam camera.json --cad models/   # one JSON line per model\n  \
  sam6d infer --scene lmo/test/000002 --cad models/obj_000005.ply --format json | jq -c '[.frame.im_id, .pose_scores]'")]
pub struct InferArgs {
    /// Colour image: PNG or JPEG; 8-bit RGB, RGBA (alpha ignored) or grey.
    /// A pattern with one `*` in the file name ('caps/*_rgb.png', quoted) makes a batch.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["rgb_dir", "scene"])]
    rgb: Option<PathBuf>,

    /// Depth image registered to the colour image: single-channel 16-bit PNG, raw × depth_scale = mm, 0 = no data.
    /// With a --rgb pattern, a pattern too ('caps/*_depth.png'): frames pair by what the `*` matched.
    #[arg(long, value_name = "FILE", required_unless_present_any = ["depth_dir", "scene"])]
    depth: Option<PathBuf>,

    /// Camera intrinsics: SAM-6D camera.json ({"cam_K": [9 numbers, row-major], "depth_scale": s}) or a BOP scene_camera.json
    /// (in a batch, each image's entry is found by its id). With --connect it is optional and, when given, overrides the
    /// server's camera. With --scene, the scene's scene_camera.json is used instead.
    #[arg(long, value_name = "FILE", env = "CAM_PATH", required_unless_present_any = ["connect", "scene"])]
    cam: Option<PathBuf>,

    /// Image id to use from a BOP scene_camera.json (default: the lowest id).
    #[arg(long, value_name = "ID")]
    cam_frame: Option<String>,

    /// Override the camera file's depth_scale (millimetres per raw depth unit).
    #[arg(long, value_name = "S")]
    depth_scale: Option<f64>,

    /// CAD model of the object: PLY (ASCII or binary) with faces, in millimetres unless --cad-unit m.
    /// Its colours (vertex colours, or a texture named by `comment TextureFile`, found next to the
    /// PLY) are checked against the image. A folder (a BOP models/) looks for each of its .ply
    /// models, one record per frame and object (files named <frame>_<model>), sharing each
    /// frame's points; in a --scene only the objects its scene_gt.json lists per image. A folder
    /// makes even one frame a batch, whose records go to stdout by default. With --connect the
    /// server's models are used (pick one with --object); --cad is then only needed to draw
    /// --overlay.
    #[arg(long, value_name = "FILE", env = "CAD_PATH", required_unless_present = "connect")]
    cad: Option<PathBuf>,

    /// Unit of the CAD model's coordinates.
    #[arg(long, value_enum, default_value_t = CadUnit::Mm)]
    cad_unit: CadUnit,

    /// Write the JSON result to this file ("-" for stdout) instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,

    /// Write the JSON result to DIR/sam6d_results/detection_pose.json (SAM-6D's layout); in a
    /// batch, one DIR/<name>.json per frame.
    #[arg(long, value_name = "DIR", env = "OUTPUT_DIR")]
    output_dir: Option<PathBuf>,

    /// Drop poses whose score is below this (0..1). On the synthetic benchmark 0.4 keeps ~99 % of
    /// the right poses and drops a third of the wrong ones; raise it when a false positive costs
    /// more than a miss. With --pipeline sam6d and the PEM it is SAM-6D's: ISM detections scoring
    /// at most this get no pose. [default: 0.4; 0.2 with the PEM; with --connect, the server's]
    #[arg(long, value_parser = super::parse_unit_interval)]
    det_score_thresh: Option<f32>,

    /// Return at most this many instances, best first (with --connect: the server's setting).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_instances: u32,

    /// Where tch stages run: auto (CUDA if libtorch sees a GPU), cpu, cuda or cuda:N.
    /// The geometric pipeline itself runs on the CPU threads.
    #[arg(long, default_value = "auto", value_name = "DEVICE")]
    device: DeviceRequest,

    #[command(flatten)]
    stages: super::stages::StageArgs,

    /// Also write a PNG like SAM-6D's vis_pem.png: the colour image | the same with each pose's
    /// visible model points, 3D bounding box and score drawn over it (best in red, then green, blue, ...).
    #[arg(long, value_name = "FILE")]
    overlay: Option<PathBuf>,

    /// Also write a PNG like SAM-6D's vis_ism.png: the colour image | the segmenter's proposals
    /// (those the pose search used filled in colour, the others outlined). Needs a segmenter.
    #[arg(long, value_name = "FILE")]
    ism_overlay: Option<PathBuf>,

    /// With --pipeline sam6d: write the ISM's detections in SAM-6D's detection_ism.json layout
    /// (scene_id, image_id, category_id, bbox [x,y,w,h], score, time, segmentation as
    /// uncompressed column-major RLE), which SAM-6D's PEM and pycocotools read; with the PEM also
    /// detection_pem.json beside it (each posed detection with its pose score, R and t in mm).
    /// With --output-dir both go to DIR/sam6d_results/ without asking.
    #[arg(long, value_name = "FILE")]
    ism_json: Option<PathBuf>,

    /// Pretty-print the JSON.
    #[arg(long)]
    pretty: bool,

    /// json: one compact JSON line per frame on stdout, with "frame", "obj_id" and "time_s" added
    /// (the --jsonl schema), for shell loops. Without it a batch prints only a summary on stderr.
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Format>,

    /// Batch: colour images, paired with --depth-dir by file stem (000001.png with 000001.png).
    #[arg(long, value_name = "DIR", requires = "depth_dir", conflicts_with_all = ["rgb", "depth", "scene"], help_heading = "Batch")]
    rgb_dir: Option<PathBuf>,

    /// Batch: depth images (16-bit PNG) for --rgb-dir.
    #[arg(long, value_name = "DIR", requires = "rgb_dir", help_heading = "Batch")]
    depth_dir: Option<PathBuf>,

    /// Batch: a BOP scene folder (rgb/, depth/, scene_camera.json). scene_id is the folder name,
    /// im_id the file stem; each image's camera comes from scene_camera.json.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rgb", "depth"], help_heading = "Batch")]
    scene: Option<PathBuf>,

    /// Batch: write one JSON record per frame to FILE (JSON lines), in frame order.
    #[arg(long, value_name = "FILE", help_heading = "Batch")]
    jsonl: Option<PathBuf>,

    /// Batch: write BOP19 results (scene_id,im_id,obj_id,score,R,t,time), one row per instance.
    /// Needs numeric image names and an object id (--obj-id, or digits in the CAD name).
    #[arg(long, value_name = "FILE", help_heading = "Batch")]
    bop_csv: Option<PathBuf>,

    /// Batch: BOP object id for --bop-csv and the records [default: the digits of the CAD file
    /// name, obj_000005.ply → 5].
    #[arg(long, value_name = "N", help_heading = "Batch")]
    obj_id: Option<i64>,

    /// Batch: with --scene and a --cad folder, look for every model in every image, not only the
    /// objects scene_gt.json lists for it.
    #[arg(long, requires = "scene", help_heading = "Batch")]
    all_objects: bool,

    /// Batch: write each frame's overlay (as --overlay: model points, 3D box and score per pose) to
    /// DIR/<name>.png, and with a segmenter its proposals (as --ism-overlay) to DIR/<name>_ism.png.
    #[arg(long, value_name = "DIR", help_heading = "Batch")]
    vis: Option<PathBuf>,

    /// Batch: frames in flight at once. The pipeline already uses every core inside a frame;
    /// 2 overlaps one frame's decoding and serial stages with another's estimate.
    #[arg(long, short = 'j', value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..), help_heading = "Batch")]
    jobs: u32,

    /// Batch: replace existing result files (by default the batch refuses to start).
    #[arg(long, help_heading = "Batch")]
    overwrite: bool,

    /// Batch: no progress bar or per-frame lines, no summary (errors still go to stderr).
    #[arg(long, short, help_heading = "Batch")]
    quiet: bool,

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

/// How results are printed on stdout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One compact JSON record per frame and line (the --jsonl schema).
    Json,
}

pub fn run(args: InferArgs) -> anyhow::Result<()> {
    if let Some(listing) = batch_listing(&args)? {
        return batch::run(&args, listing);
    }
    let batch_only = [
        (args.jsonl.is_some(), "--jsonl"),
        (args.bop_csv.is_some(), "--bop-csv"),
        (args.vis.is_some(), "--vis"),
        (args.obj_id.is_some(), "--obj-id"),
        (args.all_objects, "--all-objects"),
        (args.jobs != 1, "--jobs"),
        (args.overwrite, "--overwrite"),
        (args.quiet, "--quiet"),
    ];
    if let Some((_, flag)) = batch_only.iter().find(|(given, _)| *given) {
        usage_error(format!(
            "{flag} is for batches (--rgb-dir/--depth-dir, --scene, or --rgb/--depth patterns with a `*`); for one frame use --out or --overlay"
        ));
    }
    let t0 = Instant::now();
    let (mut out, n, object) = match &args.connect {
        Some(addr) => remote(&args, addr)?,
        None => local(&args)?,
    };
    if args.format == Some(Format::Json) {
        // The batch record of this one frame, so that a shell loop gets the same lines as a batch.
        let rgb = args.rgb.as_deref().expect("clap requires --rgb");
        let name = rgb.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let cad_stem = args.cad.as_deref().and_then(Path::file_stem).map(|s| s.to_string_lossy().into_owned());
        let obj_id = cad_stem.as_deref().and_then(results::obj_id_from_stem);
        out.insert("frame".into(), json!({"name": name, "scene_id": null, "im_id": name.parse::<i64>().ok()}));
        out.insert("obj_id".into(), json!(obj_id));
        out.insert("time_s".into(), json!(round3(t0.elapsed().as_secs_f64() * 1e3) / 1e3));
    }
    let value = Value::Object(out);
    let text = if args.pretty && args.format.is_none() { serde_json::to_string_pretty(&value)? } else { serde_json::to_string(&value)? };
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

/// The frames of a batch, or `None` for the single-frame form (--rgb FILE --depth FILE).
fn batch_listing(args: &InferArgs) -> anyhow::Result<Option<frames::Listing>> {
    if let Some(scene) = &args.scene {
        return frames::from_scene(scene).map(Some);
    }
    if let (Some(rgb), Some(depth)) = (&args.rgb_dir, &args.depth_dir) {
        return frames::from_dirs(rgb, depth).map(Some);
    }
    let (rgb, depth) = (args.rgb.as_deref().expect("clap requires --rgb"), args.depth.as_deref().expect("clap requires --depth"));
    match (frames::is_pattern(rgb), frames::is_pattern(depth)) {
        // Every model of a folder in one frame: a batch of one frame, one record per object.
        (false, false) if args.connect.is_none() && args.cad.as_deref().is_some_and(Path::is_dir) => Ok(Some(frames::from_files(rgb, depth))),
        (false, false) => Ok(None),
        (true, true) => frames::from_patterns(rgb, depth).map(Some),
        _ => usage_error("--rgb and --depth must both be patterns with a `*` (quoted: --rgb 'caps/*_rgb.png' --depth 'caps/*_depth.png'), or both files"),
    }
}

/// A usage error found after parsing: clap's message format and exit status 2.
fn usage_error(msg: impl std::fmt::Display) -> ! {
    clap::Error::raw(clap::error::ErrorKind::ArgumentConflict, format!("{msg}\n")).exit()
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
    let (rgb_path, depth_path) = single_paths(args);
    let rgb = io::image::read_rgb(rgb_path)?;
    let depth = io::image::read_depth(depth_path, camera.depth_scale)?;
    let frame = Frame::new(rgb, depth, camera).with_context(|| format!("{} and {}", rgb_path.display(), depth_path.display()))?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t1 = Instant::now();
    let model = ObjectModel::load(cad, args.cad_unit)?;
    let model_ms = t1.elapsed().as_secs_f64() * 1e3;
    tracing::info!("model {} ready: diameter {:.1} mm, {:.0} ms", model.name, model.diameter, model_ms);

    let t2 = Instant::now();
    let options = Options { det_score_thresh: args.det_score_thresh.unwrap_or(args.stages.default_det_score_thresh()), max_instances: args.max_instances as usize, device, refine_icp: args.stages.refine_icp() };
    // SAM-6D's networks take seconds to load and, on a CPU, up to minutes per frame: show that
    // something is happening (the geometric pipeline alone answers in under a second).
    let neural = args.stages.segmenter_kind(args.stages.pipeline_kind().0) != sam6d::pipeline::segment::segmenter::SegmenterKind::None;
    let spinner = if neural { super::status_spinner(format!("loading the networks on {device}")) } else { indicatif::ProgressBar::hidden() };
    let pipeline = args.stages.build(options)?;
    spinner.set_message(format!("{} on {device}", pipeline.name()));
    anyhow::ensure!(args.ism_overlay.is_none() || pipeline.has_segmenter(), "--ism-overlay draws the segmenter's proposals, but no segmenter is in use (--segmenter; see sam6d infer --help)");
    anyhow::ensure!(args.ism_json.is_none() || pipeline.has_ism(), "--ism-json writes the ISM's detections: it needs --pipeline sam6d");
    let segmenter_ms = t2.elapsed().as_secs_f64() * 1e3;
    let est = pipeline.estimate(&frame, &model);
    spinner.finish_and_clear();
    let est = est?;

    let mut out = results::estimate_json(&est, &model.name, &frame, &pipeline.name(), &device.to_string());
    out.insert("load_ms".into(), json!({"inputs": round3(load_ms), "model": round3(model_ms), "segmenter": round3(segmenter_ms)}));
    out.insert(
        "inputs".into(),
        json!({"rgb": args.rgb, "depth": args.depth, "cam": cam, "cad": cad, "diameter_mm": model.diameter}),
    );
    if let Some(path) = &args.overlay {
        let poses: Vec<_> = est.poses.iter().map(|p| (p.pose, p.score)).collect();
        write_overlay(path, &frame, &model, &poses)?;
        out.insert("overlay".into(), json!(path));
    }
    if let Some(path) = &args.ism_overlay {
        write_ism_overlay(path, &frame, &est)?;
        out.insert("ism_overlay".into(), json!(path));
    }
    // SAM-6D's detection_ism.json: where asked, and beside detection_pose.json in --output-dir.
    let ism_json = args.ism_json.clone().or_else(|| args.output_dir.as_ref().filter(|_| args.out.is_none() && pipeline.has_ism()).map(|d| d.join("sam6d_results").join("detection_ism.json")));
    if let Some(path) = ism_json {
        write_ism_json(&path, &est, None, None, None)?;
        out.insert("detection_ism".into(), json!(path));
    }
    Ok((out, est.poses.len(), model.name))
}

/// Sends the frame to a running server. The images travel as the files' bytes, undecoded.
fn remote(args: &InferArgs, addr: &str) -> anyhow::Result<(Map<String, Value>, usize, String)> {
    let (rgb_path, depth_path) = single_paths(args);
    let rgb = std::fs::read(rgb_path).with_context(|| format!("reading {}", rgb_path.display()))?;
    let depth = std::fs::read(depth_path).with_context(|| format!("reading {}", depth_path.display()))?;
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
        let rgb = io::image::decode_rgb(&rgb, &rgb_path.display().to_string())?;
        let depth = io::image::decode_depth(&depth, camera.depth_scale, &depth_path.display().to_string())?;
        write_overlay(path, &Frame::new(rgb, depth, camera)?, &model, &poses)?;
        out.insert("overlay".into(), json!(path));
    }
    Ok((out, n, object))
}

/// --rgb and --depth of the single-frame form (clap requires both when no batch flag is given).
fn single_paths(args: &InferArgs) -> (&Path, &Path) {
    (args.rgb.as_deref().expect("clap requires --rgb"), args.depth.as_deref().expect("clap requires --depth"))
}

fn write_overlay<P: sam6d::render::overlay::ScoredPose>(path: &Path, frame: &Frame, model: &ObjectModel, poses: &[P]) -> anyhow::Result<()> {
    // SAM-6D's vis_pem.png layout: input | model points, 3D box and score (when `poses` carry
    // scores, e.g. `(Pose, f32)`) per instance.
    let img = sam6d::render::overlay::vis_pem(&frame.rgb, &model.mesh, &frame.camera, poses);
    img.save(path).with_context(|| format!("writing overlay {}", path.display()))
}

/// Poses and scores back from the `rotation` / `translation` / `pose_scores` lists of an answer.
fn write_ism_overlay(path: &Path, frame: &Frame, est: &sam6d::pipeline::Estimate) -> anyhow::Result<()> {
    let proposals = est.proposals.as_deref().unwrap_or_default();
    sam6d::render::masks::vis_ism(&frame.rgb, proposals, &est.selected).save(path).with_context(|| format!("writing {}", path.display()))
}

/// SAM-6D's `detection_ism.json` of one frame, written atomically; nothing without the ISM.
/// Ids as its custom script (scene 0, image 0, category 1) unless a BOP scene and object id
/// give them.
pub(crate) fn write_ism_json(path: &Path, est: &sam6d::pipeline::Estimate, scene_id: Option<i64>, image_id: Option<i64>, category_id: Option<i64>) -> anyhow::Result<()> {
    use sam6d::results::detections::{to_json, IsmRecord, PemRecord};
    let (Some(scores), Some(proposals)) = (&est.ism, &est.proposals) else { return Ok(()) };
    let record = |index: usize, score: f32| IsmRecord::new(&proposals[index], score, scene_id.unwrap_or(0), image_id.unwrap_or(0), category_id.unwrap_or(1));
    let records: Vec<IsmRecord> = scores.iter().map(|s| record(s.index, s.score)).collect();
    write_atomically(path, &to_json(&records))?;
    // With the PEM, SAM-6D's detection_pem.json beside it: every detection it posed.
    if let Some(poses) = &est.pem {
        let records: Vec<PemRecord> =
            poses.iter().map(|p| PemRecord { detection: record(p.index, p.score), r: p.pose.rotation_rows(), t: p.pose.translation_array() }).collect();
        let name = path.file_name().map(|n| n.to_string_lossy().replace("detection_ism", "detection_pem")).filter(|n| n.contains("detection_pem")).unwrap_or_else(|| "detection_pem.json".into());
        write_atomically(&path.with_file_name(name), &to_json(&records))?;
    }
    Ok(())
}

/// Writes `text` to a temporary file beside `path`, then renames it: never half a file.
fn write_atomically(path: &Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn poses_from_json(out: &Map<String, Value>) -> anyhow::Result<Vec<(Pose, f32)>> {
    let rot: Vec<[[f64; 3]; 3]> = serde_json::from_value(out.get("rotation").cloned().unwrap_or_default())?;
    let tr: Vec<[f64; 3]> = serde_json::from_value(out.get("translation").cloned().unwrap_or_default())?;
    let scores: Vec<f32> = serde_json::from_value(out.get("pose_scores").cloned().unwrap_or_default())?;
    anyhow::ensure!(
        rot.len() == tr.len() && tr.len() == scores.len(),
        "the answer has {} rotations, {} translations and {} scores",
        rot.len(),
        tr.len(),
        scores.len()
    );
    Ok(rot.iter().zip(&tr).zip(scores).map(|((r, t), s)| (Pose::from_rows(r, t), s)).collect())
}
