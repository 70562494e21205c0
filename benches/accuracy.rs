//! Accuracy of the pipeline on the synthetic benchmark set (BOP-style scores).
//!
//! `cargo bench --bench accuracy -- [--seed N] [--scenes N] [--verbose]`
//!
//! Targets: obj_000005 (from ../shared/testdata/sam6d-example, when present) and the
//! procedural mug and bracket. Each frame is run once per target object that appears in it;
//! estimates are matched one-to-one to that object's instances, greedily by MSSD (pairs beyond
//! 0.5 × diameter never match). Unmatched instances count as missed, unmatched estimates as
//! false positives. AR = mean of AR_MSSD and AR_MSPD (BOP 2019+ without VSD).
mod common;

use common::arg;
use sam6d::geometry::metrics::{add_recall, ar_mssd_mspd, PoseErrors};
use sam6d::geometry::{Pose, Vec3};
use sam6d::pipeline::geometric::Params;
use sam6d::pipeline::{Frame, ObjectModel, Options, Pipeline};
use sam6d::synth::eval::{match_estimates, mean, median, StageTimes};
use sam6d::synth::{benchmark_set, procedural_targets, NamedMesh};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const DEFAULT_SEED: u64 = 2024;
const DEFAULT_SCENES: usize = 24;
const EXAMPLE_DIR: &str = "../shared/testdata/sam6d-example";


/// Per-object (and overall) accumulators.
#[derive(Default)]
struct Tally {
    errors: Vec<PoseErrors>,
    false_positives: usize,
    failures: usize,
    ms: Vec<f64>,
}

fn main() -> anyhow::Result<()> {
    let seed: u64 = arg("--seed", DEFAULT_SEED);
    let n_scenes: usize = arg("--scenes", DEFAULT_SCENES);
    // Per-instance lines: scene, object, visible fraction, errors of the matched estimate.
    let verbose = std::env::args().any(|a| a == "--verbose");

    // Tuning sweeps: --step-rel F, --ref-stride N, --candidates N (defaults: the pipeline's).
    let mut params = Params::default();
    params.step_rel = arg("--step-rel", params.step_rel);
    params.ref_stride = arg("--ref-stride", params.ref_stride);
    params.candidates = arg("--candidates", params.candidates);
    params.peaks_per_ref = arg("--peaks", params.peaks_per_ref);
    params.icp_iterations = arg("--icp-iterations", params.icp_iterations);

    // --det-score-thresh T: the threshold the pipeline applies (default: the pipeline's).
    let options = Options { det_score_thresh: arg("--det-score-thresh", Options::default().det_score_thresh), ..Options::default() };

    let mut targets = Vec::new();
    let obj5 = Path::new(EXAMPLE_DIR).join("obj_000005.ply");
    match sam6d::io::ply::read_ply(&obj5) {
        Ok(mesh) => targets.push(NamedMesh::new("obj_000005", mesh)),
        Err(e) => println!("note: {e}; running with procedural targets only"),
    }
    targets.extend(procedural_targets());

    let t0 = Instant::now();
    let frames = benchmark_set(seed, n_scenes, &targets);
    let gen_s = t0.elapsed().as_secs_f64();

    let mut models: BTreeMap<String, (ObjectModel, Vec<Vec3>, f64)> = BTreeMap::new();
    let mut build_ms = Vec::new();
    for t in &targets {
        let t0 = Instant::now();
        let model = ObjectModel::from_mesh_with(&t.name, (*t.mesh).clone(), params.clone())?;
        build_ms.push((t.name.clone(), t0.elapsed().as_secs_f64() * 1e3));
        let pts = model.mesh.vertices.clone();
        let diameter = model.diameter as f64;
        models.insert(t.name.clone(), (model, pts, diameter));
    }

    println!("sam6d accuracy benchmark");
    println!("scenes {n_scenes}, seed {seed}, 640x480 Kinect intrinsics, Kinect-like depth noise");
    println!("det_score_thresh {}", options.det_score_thresh);
    println!("params: step_rel {}, ref_stride {}, candidates {}", params.step_rel, params.ref_stride, params.candidates);
    println!("scene generation {:.2} s", gen_s);
    for (name, ms) in &build_ms {
        println!("model build {name}: {ms:.1} ms (diameter {:.1} mm)", models[name].2);
    }

    // --dump DIR: write every scene as files the CLI reads (debugging a failure by hand).
    if let Some(i) = std::env::args().position(|a| a == "--dump") {
        let dir = std::path::PathBuf::from(std::env::args().nth(i + 1).expect("--dump DIR"));
        dump(&dir, &frames, &targets)?;
        println!("scenes written to {}", dir.display());
    }

    let pipeline = Pipeline::new(options.clone());
    let (mut true_scores, mut false_scores, mut top1): (Vec<f32>, Vec<f32>, Vec<bool>) = (Vec::new(), Vec::new(), Vec::new());
    let mut per_object: BTreeMap<String, Tally> = BTreeMap::new();
    let mut stages = StageTimes::default();
    let mut first_error = None;
    for (i, f) in frames.iter().enumerate() {
        let frame = Frame { rgb: f.rgb.clone(), depth: f.depth.clone(), camera: f.camera };
        let mut names: Vec<&str> = f.gt.iter().map(|g| g.object.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let (model, pts, diameter) = &models[name];
            let gt: Vec<Pose> = f.gt.iter().filter(|g| g.object == name).map(|g| g.pose).collect();
            let tally = per_object.entry(name.to_string()).or_default();
            let t0 = Instant::now();
            let result = pipeline.estimate(&frame, model);
            tally.ms.push(t0.elapsed().as_secs_f64() * 1e3);
            let mut scores: Vec<f32> = Vec::new();
            let estimates: Vec<Pose> = match result {
                Ok(est) => {
                    for (stage, ms) in &est.timings {
                        stages.add(stage, *ms);
                    }
                    scores = est.poses.iter().map(|p| p.score).collect();
                    est.poses.iter().map(|p| p.pose).collect()
                }
                Err(e) => {
                    tally.failures += 1;
                    first_error.get_or_insert_with(|| format!("scene {i}, {name}: {e:#}"));
                    Vec::new()
                }
            };
            let m = match_estimates(&estimates, &gt, pts, &f.camera, *diameter);
            if verbose {
                let vis = f.gt.iter().filter(|g| g.object == name).map(|g| g.visible_fraction);
                for (e, vf) in m.errors.iter().zip(vis) {
                    println!(
                        "scene {i:>3} {name:<12} visible {vf:.2}  ADD {:>7.1}  MSSD {:>7.1}  MSPD {:>6.1}  ({} estimates)",
                        e.add,
                        e.mssd,
                        e.mspd,
                        estimates.len()
                    );
                }
            }
            for (&score, &hit) in scores.iter().zip(&m.matched) {
                if hit { true_scores.push(score) } else { false_scores.push(score) }
            }
            // Top-1: the best estimate is an instance within 0.1 d (ADD), what a grasp needs.
            let top_ok = estimates.first().is_some_and(|e| gt.iter().any(|g| sam6d::geometry::metrics::add(e, g, pts) < 0.1 * diameter));
            top1.push(top_ok);
            tally.errors.extend(m.errors);
            tally.false_positives += m.false_positives;
        }
    }

    println!();
    println!(
        "{:<12} {:>5} {:>9} {:>8} {:>8} {:>6} {:>4} {:>6} {:>9} {:>9}",
        "object", "inst", "ADD-0.1d", "AR_MSSD", "AR_MSPD", "AR", "FP", "failed", "mean ms", "median ms"
    );
    let mut all = Tally::default();
    let row = |name: &str, t: &Tally| {
        let ar = ar_mssd_mspd(&t.errors, 640);
        println!(
            "{:<12} {:>5} {:>9.3} {:>8.3} {:>8.3} {:>6.3} {:>4} {:>6} {:>9.1} {:>9.1}",
            name,
            t.errors.len(),
            add_recall(&t.errors, 0.1),
            ar.ar_mssd,
            ar.ar_mspd,
            ar.ar,
            t.false_positives,
            t.failures,
            mean(&t.ms),
            median(&t.ms)
        );
    };
    for (name, t) in &per_object {
        row(name, t);
        all.errors.extend_from_slice(&t.errors);
        all.false_positives += t.false_positives;
        all.failures += t.failures;
        all.ms.extend_from_slice(&t.ms);
    }
    row("overall", &all);

    // How to pick --det-score-thresh: estimates kept at each threshold.
    println!();
    println!(
        "top-1 estimate correct (ADD < 0.1 d): {}/{} calls ({:.3})",
        top1.iter().filter(|t| **t).count(),
        top1.len(),
        top1.iter().filter(|t| **t).count() as f64 / top1.len().max(1) as f64
    );
    println!("{:<10} {:>16} {:>16}", "score >=", "matched kept", "unmatched kept");
    for th in [0.2f32, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8] {
        let t = true_scores.iter().filter(|s| **s >= th).count();
        let f = false_scores.iter().filter(|s| **s >= th).count();
        println!("{th:<10.1} {:>9}/{:<6} {:>9}/{:<6}", t, true_scores.len(), f, false_scores.len());
    }

    println!();
    println!("{:<24} {:>9} {:>9} {:>6}", "stage", "mean ms", "median ms", "calls");
    for (stage, m, med, n) in stages.summary() {
        println!("{stage:<24} {m:>9.1} {med:>9.1} {n:>6}");
    }
    if let Some(e) = first_error {
        println!();
        println!("first pipeline error: {e}");
    }
    Ok(())
}

fn dump(dir: &Path, frames: &[sam6d::synth::SyntheticFrame], targets: &[NamedMesh]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for t in targets {
        sam6d::io::ply::write_ascii_ply(&t.mesh, &dir.join(format!("{}.ply", t.name)))?;
    }
    for (i, f) in frames.iter().enumerate() {
        let d = dir.join(format!("{i:03}"));
        std::fs::create_dir_all(&d)?;
        f.rgb.save(d.join("rgb.png"))?;
        sam6d::io::image::write_depth_png(&f.depth, 1.0, &d.join("depth.png"))?;
        let c = f.camera;
        std::fs::write(d.join("camera.json"), format!("{{\"cam_K\": [{}, 0, {}, 0, {}, {}, 0, 0, 1], \"depth_scale\": 1.0}}", c.fx, c.cx, c.fy, c.cy))?;
        for (k, g) in f.gt.iter().enumerate() {
            let gt = serde_json::json!({"object": g.object, "r": g.pose.rotation_rows(), "t": g.pose.translation_array(), "visible": g.visible_fraction});
            std::fs::write(d.join(format!("gt_{}_{k}.json", g.object)), gt.to_string())?;
        }
    }
    Ok(())
}
