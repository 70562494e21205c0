//! Speed of the pipeline by stage: on the real example frame and on synthetic scenes.
//!
//! `cargo bench --bench speed -- [--runs N] [--warmup N] [--scenes N] [--seed N]`
//!
//! Real example: ../shared/testdata/sam6d-example (rgb.png, depth.png, camera.json,
//! obj_000005.ply), `--runs` timed runs (default 10) after `--warmup` untimed ones (default 1).
//! Synthetic: `--scenes` frames (default 8) of the benchmark set, each run once per target
//! object present.
mod common;

use common::arg;
use sam6d::io::Camera;
use sam6d::pipeline::{CadUnit, Frame, ObjectModel, Options, Pipeline};
use sam6d::synth::eval::{mean, median, StageTimes};
use sam6d::synth::{benchmark_set, procedural_targets, NamedMesh};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const EXAMPLE_DIR: &str = "../shared/testdata/sam6d-example";


fn print_table(title: &str, total: &[f64], stages: &StageTimes) {
    println!();
    println!("{title}");
    println!("{:<24} {:>9} {:>9} {:>6}", "stage", "mean ms", "median ms", "calls");
    for (stage, m, med, n) in stages.summary() {
        println!("{stage:<24} {m:>9.1} {med:>9.1} {n:>6}");
    }
    println!("{:<24} {:>9.1} {:>9.1} {:>6}", "total (wall)", mean(total), median(total), total.len());
}

fn real_example(pipeline: &Pipeline, runs: usize, warmup: usize) -> anyhow::Result<()> {
    let dir = Path::new(EXAMPLE_DIR);
    let camera = Camera::from_json_file(&dir.join("camera.json"), None)?;
    let rgb = sam6d::io::image::read_rgb(&dir.join("rgb.png"))?;
    let depth = sam6d::io::image::read_depth(&dir.join("depth.png"), camera.depth_scale)?;
    let frame = Frame::new(rgb, depth, camera)?;
    let t0 = Instant::now();
    let model = ObjectModel::load(&dir.join("obj_000005.ply"), CadUnit::Mm)?;
    let load_ms = t0.elapsed().as_secs_f64() * 1e3;
    println!("real example {}: {}x{}, model load + build {load_ms:.1} ms", dir.display(), frame.width(), frame.height());

    for _ in 0..warmup {
        pipeline.estimate(&frame, &model)?;
    }
    let (mut total, mut stages) = (Vec::new(), StageTimes::default());
    let mut found = 0;
    let mut again = Vec::new();
    for _ in 0..runs {
        // A fresh pipeline each run: the pipeline keeps the last frame's points for the next
        // object asked for in it, and each run here must pay for its frame.
        let pipeline = Pipeline::new(pipeline.options.clone());
        let t0 = Instant::now();
        let est = pipeline.estimate(&frame, &model)?;
        total.push(t0.elapsed().as_secs_f64() * 1e3);
        // The same frame again, as a second object (or client) asking for it would.
        let t1 = Instant::now();
        pipeline.estimate(&frame, &model)?;
        again.push(t1.elapsed().as_secs_f64() * 1e3);
        for (stage, ms) in &est.timings {
            stages.add(stage, *ms);
        }
        found = est.poses.len();
    }
    print_table(&format!("real example, {runs} runs after {warmup} warm-up ({found} poses per run)"), &total, &stages);
    println!("{:<24} {:>9.1} {:>9.1} {:>6}", "same frame again (wall)", mean(&again), median(&again), again.len());
    Ok(())
}

fn synthetic(pipeline: &Pipeline, n_scenes: usize, seed: u64) -> anyhow::Result<()> {
    let mut targets = Vec::new();
    if let Ok(mesh) = sam6d::geometry::ply::read_ply(&Path::new(EXAMPLE_DIR).join("obj_000005.ply")) {
        targets.push(NamedMesh::new("obj_000005", mesh));
    }
    targets.extend(procedural_targets());
    let t0 = Instant::now();
    let frames = benchmark_set(seed, n_scenes, &targets);
    println!();
    println!("synthetic: {n_scenes} scenes (seed {seed}) generated in {:.2} s", t0.elapsed().as_secs_f64());
    let mut models = BTreeMap::new();
    for t in &targets {
        let t0 = Instant::now();
        let model = ObjectModel::from_mesh(&t.name, (*t.mesh).clone())?;
        println!("model build {}: {:.1} ms", t.name, t0.elapsed().as_secs_f64() * 1e3);
        models.insert(t.name.clone(), model);
    }
    let (mut total, mut stages) = (Vec::new(), StageTimes::default());
    for f in &frames {
        let frame = Frame { rgb: f.rgb.clone(), depth: f.depth.clone(), camera: f.camera };
        for name in f.target_names() {
            let t0 = Instant::now();
            let est = pipeline.estimate(&frame, &models[name])?;
            total.push(t0.elapsed().as_secs_f64() * 1e3);
            for (stage, ms) in &est.timings {
                stages.add(stage, *ms);
            }
        }
    }
    print_table(&format!("synthetic, {} pipeline calls", total.len()), &total, &stages);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs", 10);
    let warmup: usize = arg("--warmup", 1);
    let n_scenes: usize = arg("--scenes", 8);
    let seed: u64 = arg("--seed", 2024);
    let pipeline = Pipeline::new(Options::default());
    println!("sam6d speed benchmark (threads: {})", rayon::current_num_threads());
    if let Err(e) = real_example(&pipeline, runs, warmup) {
        println!("real example skipped: {e:#}");
    }
    synthetic(&pipeline, n_scenes, seed)
}
