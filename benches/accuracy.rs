//! Accuracy of the pipeline on the synthetic benchmark set, scored by the BOP evaluation
//! (`sam6d::eval`, the code behind `sam6d eval`).
//!
//! `cargo bench --bench accuracy -- [--seed N] [--scenes N] [--box] [--no-colour] [--verbose] [--dump DIR]`
//!
//! Targets: obj_000005 (from ../shared/testdata/sam6d-example, when present) and the
//! procedural mug and bracket (with `--box`, also the printed box). The generated frames are written as one BOP scene
//! (`test/000001`, im_id = index of the generated scene) with a models folder (`models/`), each
//! frame is run once per target object that appears in it, the estimates go to a BOP19 CSV
//! (`results.csv`), and that CSV is scored against the scene as `sam6d eval` would: targets are
//! the instances with visib_fract ≥ 0.1, only the top n estimates per image and object count
//! (n = targets), greedy matching per threshold; AR = mean of AR_VSD, AR_MSSD and AR_MSPD.
//! With `--dump DIR` the scene, models and CSV stay in DIR, so that
//! `sam6d eval --scene DIR/test/000001 --pred DIR/results.csv --models DIR/models` reruns it.
mod common;
mod real;

use common::arg;
use sam6d::eval::{self, dataset, matching, predictions};
use sam6d::geometry::metrics::{self, PoseErrors};
use sam6d::geometry::Pose;
use sam6d::results::{bop_csv_rows, BOP_CSV_HEADER};
use sam6d::pipeline::geometric::Params;
use sam6d::pipeline::segment::sam::automatic::AmgConfig;
use sam6d::pipeline::segment::segmenter::{weights_dir, Segmenter, SegmenterKind};
use sam6d::pipeline::{Estimate, Frame, ObjectModel, Options, Pipeline};
use sam6d::synth::bop::{write_scene, BopFrame};
use sam6d::synth::eval::{mean, median, StageTimes};
use sam6d::synth::{benchmark_set, procedural_targets, NamedMesh};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const DEFAULT_SEED: u64 = 2024;
const DEFAULT_SCENES: usize = 24;
const EXAMPLE_DIR: &str = "../shared/testdata/sam6d-example";
const SCENE_ID: u32 = 1;

/// BOP object ids of the targets: obj_000005 keeps its LM id; the procedural objects get ids
/// of their own.
fn obj_id(name: &str) -> Option<u32> {
    match name {
        "obj_000005" => Some(5),
        "mug" => Some(1),
        "bracket" => Some(2),
        "printed_box" => Some(3),
        _ => None,
    }
}

/// One pipeline call: a frame and one target object.
struct Call {
    im_id: u32,
    object: String,
    ms: f64,
    result: Result<Estimate, String>,
}

fn main() -> anyhow::Result<()> {
    let seed: u64 = arg("--seed", DEFAULT_SEED);
    let n_scenes: usize = arg("--scenes", DEFAULT_SCENES);
    // Per-instance lines: scene, object, visible fraction, errors of the closest estimate.
    let verbose = std::env::args().any(|a| a == "--verbose");

    // Tuning sweeps: --step-rel F, --ref-stride N, --candidates N, --rivals N (defaults: the
    // pipeline's).
    let mut params = Params::default();
    params.step_rel = arg("--step-rel", params.step_rel);
    params.ref_stride = arg("--ref-stride", params.ref_stride);
    params.candidates = arg("--candidates", params.candidates);
    params.peaks_per_ref = arg("--peaks", params.peaks_per_ref);
    params.icp_iterations = arg("--icp-iterations", params.icp_iterations);
    params.edge_band = arg("--edge-band", params.edge_band);
    params.bucket_cap_rel = arg("--bucket-cap", params.bucket_cap_rel);
    params.rivals = arg("--rivals", params.rivals);

    // --det-score-thresh T: the threshold the pipeline applies (default: the pipeline's).
    let options = Options { det_score_thresh: arg("--det-score-thresh", Options::default().det_score_thresh), ..Options::default() };

    // --real DIR: real RGB-D frames of a BOP dataset instead of the synthetic set.
    if let Some(dir) = common::string_arg("--real") {
        let segmenter_kind = match common::string_arg("--segmenter") {
            Some(name) => name.parse::<SegmenterKind>().map_err(anyhow::Error::msg)?,
            None => SegmenterKind::None,
        };
        let amg = AmgConfig { points_per_side: arg("--sam-points", AmgConfig::default().points_per_side), ..AmgConfig::default() };
        let pipeline = Pipeline::with_segmenter(options.clone(), Segmenter::load_with(segmenter_kind, &weights_dir(None), options.device, amg, Default::default())?);
        println!("sam6d accuracy benchmark on real frames: {dir} (pipeline {}, det_score_thresh {})", pipeline.name(), options.det_score_thresh);
        return real::run(Path::new(&dir), &pipeline, &params, verbose);
    }

    let mut targets = Vec::new();
    let obj5 = Path::new(EXAMPLE_DIR).join("obj_000005.ply");
    match sam6d::geometry::ply::read_ply(&obj5) {
        Ok(mesh) => targets.push(NamedMesh::new("obj_000005", mesh)),
        Err(e) => println!("note: {e}; running with procedural targets only"),
    }
    targets.extend(procedural_targets());
    // --box: also the printed box, whose flips only its colours tell apart.
    if std::env::args().any(|a| a == "--box") {
        targets.push(sam6d::synth::printed_box());
    }
    // --no-colour: the pipeline gets the models without their colours (what colour verification
    // is worth); the scenes still show them.
    let no_colour = std::env::args().any(|a| a == "--no-colour");

    let t0 = Instant::now();
    let frames = benchmark_set(seed, n_scenes, &targets);
    let gen_s = t0.elapsed().as_secs_f64();

    let mut models: BTreeMap<String, ObjectModel> = BTreeMap::new();
    let mut build_ms = Vec::new();
    for t in &targets {
        let t0 = Instant::now();
        let mut mesh = (*t.mesh).clone();
        if no_colour {
            mesh.colors = None;
        }
        let model = ObjectModel::from_mesh_with(&t.name, mesh, params.clone())?;
        build_ms.push((t.name.clone(), t0.elapsed().as_secs_f64() * 1e3));
        models.insert(t.name.clone(), model);
    }

    // --dump DIR keeps the BOP files; otherwise they go to a temporary folder.
    let dump = std::env::args().position(|a| a == "--dump").map(|i| std::path::PathBuf::from(std::env::args().nth(i + 1).expect("--dump DIR")));
    let tmp = tempfile::tempdir()?;
    let root = dump.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let scene_dir = root.join("test").join(format!("{SCENE_ID:06}"));
    let models_dir = root.join("models");
    let csv_path = root.join("results.csv");
    // Depth is mm-quantised by the noise model, so 1.0 mm units store it losslessly: the files
    // hold exactly the frames the pipeline sees.
    let bop: Vec<BopFrame> = frames.iter().enumerate().map(|(i, f)| BopFrame { im_id: i as u32, frame: f }).collect();
    write_scene(&scene_dir, &bop, 1.0, obj_id)?;
    write_models(&models_dir, &targets, Path::new(EXAMPLE_DIR))?;

    println!("sam6d accuracy benchmark (scored by the BOP evaluation, as `sam6d eval`)");
    println!("scenes {n_scenes}, seed {seed}, 640x480 Kinect intrinsics, Kinect-like depth noise");
    println!("det_score_thresh {}", options.det_score_thresh);
    println!("params: step_rel {}, ref_stride {}, candidates {}", params.step_rel, params.ref_stride, params.candidates);
    println!("scene generation {:.2} s", gen_s);
    for (name, ms) in &build_ms {
        println!("model build {name} (obj_id {}): {ms:.1} ms (diameter {:.1} mm)", obj_id(name).unwrap(), models[name].diameter);
    }

    // Every frame, once per target object in its ground truth.
    // --segmenter NAME (default none): mask proposals in front of the pose search.
    let segmenter_kind = match std::env::args().position(|a| a == "--segmenter").and_then(|i| std::env::args().nth(i + 1)) {
        Some(name) => name.parse::<SegmenterKind>().map_err(anyhow::Error::msg)?,
        None => SegmenterKind::None,
    };
    // --sam-points N: the mask generator's grid (default SAM-6D's 32).
    let amg = AmgConfig { points_per_side: arg("--sam-points", AmgConfig::default().points_per_side), ..AmgConfig::default() };
    let pipeline = Pipeline::with_segmenter(options.clone(), Segmenter::load_with(segmenter_kind, &weights_dir(None), options.device, amg, Default::default())?);
    println!("pipeline {}", pipeline.name());
    let mut calls: Vec<Call> = Vec::new();
    let mut stages = StageTimes::default();
    for (i, f) in frames.iter().enumerate() {
        let frame = Frame { rgb: f.rgb.clone(), depth: f.depth.clone(), camera: f.camera };
        for name in f.target_names() {
            let t0 = Instant::now();
            let result = pipeline.estimate(&frame, &models[name]);
            let ms = t0.elapsed().as_secs_f64() * 1e3;
            if let Ok(est) = &result {
                for (stage, ms) in &est.timings {
                    stages.add(stage, *ms);
                }
            }
            calls.push(Call { im_id: i as u32, object: name.to_string(), ms, result: result.map_err(|e| format!("{e:#}")) });
        }
    }

    // BOP19 CSV: the time column is the image's time over all its objects (BOP's convention).
    let mut frame_s: BTreeMap<u32, f64> = BTreeMap::new();
    for c in &calls {
        *frame_s.entry(c.im_id).or_default() += c.ms / 1e3;
    }
    let mut csv = format!("{BOP_CSV_HEADER}\n");
    for c in &calls {
        if let Ok(est) = &c.result {
            csv += &bop_csv_rows(SCENE_ID as i64, c.im_id as i64, obj_id(&c.object).unwrap() as i64, est, frame_s[&c.im_id]);
        }
    }
    std::fs::write(&csv_path, csv)?;

    // Scored by the library code behind `sam6d eval`, from the files just written.
    let scene = dataset::read_scene(&scene_dir, None)?;
    let preds = predictions::read_predictions(&csv_path, Some(SCENE_ID))?;
    let models_eval = dataset::ModelsDir::open(&models_dir)?;
    let report = eval::evaluate(std::slice::from_ref(&scene), &preds, &models_eval, &[])?;

    if verbose {
        print_instances(&frames, &calls, &models);
    }

    println!();
    println!(
        "{:<12} {:>6} {:>5} {:>5} {:>9} {:>8} {:>8} {:>8} {:>6} {:>6} {:>9} {:>9}",
        "object", "obj_id", "inst", "est", "ADD-0.1d", "AR_VSD", "AR_MSSD", "AR_MSPD", "AR", "failed", "mean ms", "median ms"
    );
    let row = |name: &str, id: &str, s: &eval::Scores, calls: &[&Call]| {
        let ms: Vec<f64> = calls.iter().map(|c| c.ms).collect();
        println!(
            "{:<12} {:>6} {:>5} {:>5} {:>9.3} {:>8.3} {:>8.3} {:>8.3} {:>6.3} {:>6} {:>9.1} {:>9.1}",
            name,
            id,
            s.targets,
            s.estimates,
            s.add_recall,
            s.ar_vsd,
            s.ar_mssd,
            s.ar_mspd,
            s.ar,
            calls.iter().filter(|c| c.result.is_err()).count(),
            mean(&ms),
            median(&ms)
        );
    };
    for t in &targets {
        let id = obj_id(&t.name).unwrap();
        if let Some(o) = report.objects.iter().find(|o| o.obj_id == id) {
            let mine: Vec<&Call> = calls.iter().filter(|c| c.object == t.name).collect();
            row(&t.name, &id.to_string(), &o.scores, &mine);
        }
    }
    row("overall", "", &report.overall, &calls.iter().collect::<Vec<_>>());
    println!("inst: targets (visib_fract >= 0.1); est: estimates evaluated (top n per image and object, n = targets)");

    // How to pick --det-score-thresh: estimates kept at each threshold, split into right ones
    // (matched to an instance with MSSD < 0.5 d, BOP's matching with every estimate of the
    // call, best score first) and wrong ones.
    let (mut right, mut wrong, mut top1) = (Vec::new(), Vec::new(), Vec::new());
    for c in &calls {
        let Ok(est) = &c.result else { continue };
        let f = &frames[c.im_id as usize];
        let model = &models[&c.object];
        let pts = &model.mesh.vertices;
        let d = model.diameter as f64;
        let gt: Vec<Pose> = f.gt.iter().filter(|g| g.object == c.object).map(|g| g.pose).collect();
        let errors: Vec<Vec<f64>> = est.poses.iter().map(|p| gt.iter().map(|g| metrics::mssd(&p.pose, g, pts)).collect()).collect();
        for (p, m) in est.poses.iter().zip(matching::greedy_match(&errors, 0.5 * d)) {
            if m.is_some() { right.push(p.score) } else { wrong.push(p.score) }
        }
        // Top-1: the best estimate is an instance within 0.1 d (ADD), what a grasp needs.
        top1.push(est.poses.first().is_some_and(|p| gt.iter().any(|g| metrics::add(&p.pose, g, pts) < 0.1 * d)));
    }
    println!();
    let ok = top1.iter().filter(|t| **t).count();
    println!("top-1 estimate correct (ADD < 0.1 d): {ok}/{} calls ({:.3})", calls.len(), ok as f64 / calls.len().max(1) as f64);
    println!("{:<10} {:>16} {:>16}", "score >=", "matched kept", "unmatched kept");
    for th in [0.2f32, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] {
        let t = right.iter().filter(|s| **s >= th).count();
        let f = wrong.iter().filter(|s| **s >= th).count();
        println!("{th:<10.1} {:>9}/{:<6} {:>9}/{:<6}", t, right.len(), f, wrong.len());
    }

    println!();
    println!("{:<24} {:>9} {:>9} {:>6}", "stage", "mean ms", "median ms", "calls");
    for (stage, m, med, n) in stages.summary() {
        println!("{stage:<24} {m:>9.1} {med:>9.1} {n:>6}");
    }
    if let Some(c) = calls.iter().find(|c| c.result.is_err()) {
        println!();
        println!("first pipeline error: scene {}, {}: {}", c.im_id, c.object, c.result.as_ref().err().unwrap());
    }

    println!();
    println!("BOP evaluation report (obj_id 5 = obj_000005, 1 = mug, 2 = bracket, 3 = printed_box):");
    print!("{}", report.table());
    if let Some(dir) = &dump {
        println!();
        println!("BOP scene, models and results written to {}; rerun the scoring with:", dir.display());
        println!(
            "  sam6d eval --scene {} --pred {} --models {}",
            scene_dir.display(),
            csv_path.display(),
            models_dir.display()
        );
    }
    Ok(())
}

/// The models folder: obj_000005 copied from the example (unchanged), the procedural meshes
/// written as PLY, and models_info.json with each diameter and bounding box (no symmetries:
/// the targets have none that leave them looking the same; the mug's handle breaks its own).
fn write_models(dir: &Path, targets: &[NamedMesh], example: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut info = serde_json::Map::new();
    for t in targets {
        let id = obj_id(&t.name).expect("every target has an obj_id");
        let path = dir.join(format!("obj_{id:06}.ply"));
        if t.name == "obj_000005" {
            std::fs::copy(example.join("obj_000005.ply"), &path)?;
        } else {
            sam6d::geometry::ply::write_ascii_ply(&t.mesh, &path)?;
        }
        let (lo, hi) = t.mesh.bounds();
        info.insert(
            id.to_string(),
            serde_json::json!({
                "diameter": t.mesh.diameter() as f64,
                "min_x": lo.x, "min_y": lo.y, "min_z": lo.z,
                "size_x": hi.x - lo.x, "size_y": hi.y - lo.y, "size_z": hi.z - lo.z,
            }),
        );
    }
    std::fs::write(dir.join("models_info.json"), serde_json::to_string_pretty(&serde_json::Value::Object(info))? + "\n")?;
    Ok(())
}

/// Per ground-truth instance: its visibility and the errors of the estimate closest to it (by
/// MSSD; not BOP's matching, a debugging aid).
fn print_instances(frames: &[sam6d::synth::SyntheticFrame], calls: &[Call], models: &BTreeMap<String, ObjectModel>) {
    for c in calls {
        let f = &frames[c.im_id as usize];
        let model = &models[&c.object];
        let d = model.diameter as f64;
        let poses: Vec<Pose> = c.result.as_ref().map(|e| e.poses.iter().map(|p| p.pose).collect()).unwrap_or_default();
        for g in f.gt.iter().filter(|g| g.object == c.object) {
            let e = poses
                .iter()
                .map(|p| PoseErrors::compute(p, &g.pose, &model.mesh.vertices, &f.camera, d))
                .min_by(|a, b| a.mssd.total_cmp(&b.mssd))
                .unwrap_or(PoseErrors::missed(d));
            println!(
                "scene {:>3} {:<12} visible {:.2}  ADD {:>7.1}  MSSD {:>7.1}  MSPD {:>6.1}  ({} estimates)",
                c.im_id,
                c.object,
                g.visible_fraction,
                e.add,
                e.mssd,
                e.mspd,
                poses.len()
            );
        }
    }
}
