//! Speed of SAM-6D's Pose Estimation Model, full size (`config/base.yaml`) at random weights,
//! on the CPU and (when libtorch sees one) on CUDA: the per-object template features (42 views
//! through the ViT, FPS of 210 000 points to 2048) and the per-frame pose of B detections.
//!
//! `cargo bench --bench pem -- [--runs N] [--batch B]`
//!
//! The detections are a disk mask around the watering can of SAM-6D's example frame (the
//! network's cost does not depend on what the mask holds); B detections go through
//! `stage::estimate` as a frame's do (4 per forward pass on a CPU, 8 on CUDA). Times are medians of --runs runs (default 3) after
//! one untimed run.
mod common;

use common::{arg, time_runs};
use sam6d::device::Device;
use sam6d::pipeline::pem::model::{Pem, PemConfig};
use sam6d::pipeline::pem::stage;
use sam6d::pipeline::segment::Proposal;
use sam6d::pipeline::{Frame, ObjectModel};
use sam6d::synth::eval::median;
use std::path::Path;

const EXAMPLE: &str = "../shared/testdata/sam6d-example";

fn main() -> anyhow::Result<()> {
    let runs: usize = arg("--runs", 3);
    let batch: usize = arg("--batch", 4);
    let example = Path::new(EXAMPLE);
    anyhow::ensure!(example.is_dir(), "{EXAMPLE} is missing");
    let camera = sam6d::io::Camera::from_json_file(&example.join("camera.json"), None)?;
    let frame = Frame::new(sam6d::io::image::read_rgb(&example.join("rgb.png"))?, sam6d::io::image::read_depth(&example.join("depth.png"), camera.depth_scale)?, camera)?;
    let model = ObjectModel::load(&example.join("obj_000005.ply"), Default::default())?;
    let (w, h) = (frame.width(), frame.height());
    let mask: Vec<bool> = (0..w * h).map(|i| ((i % w) as f64 - 405.0).hypot((i / w) as f64 - 270.0) < 60.0).collect();
    let proposal = Proposal { width: w, height: h, mask, bbox: [345.0, 210.0, 465.0, 330.0], predicted_iou: 0.95, stability_score: 0.98 };
    let proposals = vec![proposal; batch];
    let detections: Vec<(usize, f32)> = (0..batch).map(|i| (i, 0.8)).collect();
    let mut devices = vec![Device::Cpu];
    if sam6d::device::cuda_device_count() > 0 {
        devices.push(Device::Cuda(0));
    }
    println!("PEM benchmark: full size at random weights, obj_000005, {batch} detection(s) per frame, {} CPU threads", tch::get_num_threads());
    for device in devices {
        let vs = tch::nn::VarStore::new(device.tch());
        let pem = tch::no_grad(|| Pem::new(&vs.root(), &PemConfig::base()));
        let (ms, data) = time_runs(device.tch(), runs, || stage::object_data(&pem, &model).expect("templates"));
        println!("{:<8} {:<44} {:>10.1} ms  (median of {})", device.to_string(), "object: 42 templates → 2048 points + features", median(&ms), ms.len());
        let (ms, poses) = time_runs(device.tch(), runs, || stage::estimate(&pem, &data, &frame, &proposals, &detections));
        let m = median(&ms);
        println!("{:<8} {:<44} {:>10.1} ms  (median of {}; {:.1} ms per detection, {} posed)", device.to_string(), format!("frame: {batch} detection(s)"), m, ms.len(), m / batch as f64, poses.len());
    }
    Ok(())
}
