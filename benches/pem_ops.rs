//! Speed of the PEM's point operations on the CPU and (when libtorch sees one) on CUDA:
//! farthest point sampling of the template set (210 000 → 2048), ball query + grouping at the
//! positional encoding's sizes (2048 centres among 2048 points, r 0.1/32 and 0.2/64), and the
//! pose solver's coarse and fine stages at the default sizes.
//!
//! `cargo bench --bench pem_ops -- [--runs N] [--cpu-only]`
//!
//! Inputs are random (uniform in the unit cube, the template set with duplicates as sampling
//! with replacement makes them). Times are medians of --runs runs (default 3) after one
//! untimed run.
mod common;

use common::arg;
use sam6d::pipeline::pem::{point_ops, pose_solver};
use std::time::Instant;
use tch::{Device, Kind, Tensor};

fn median_ms(device: Device, runs: usize, mut f: impl FnMut() -> Tensor) -> f64 {
    let _ = f();
    common::sync(device);
    let mut ms: Vec<f64> = (0..runs.max(1))
        .map(|_| {
            let t = Instant::now();
            let _ = f();
            common::sync(device);
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

fn bench(device: Device, runs: usize) {
    tch::manual_seed(0);
    let opts = (Kind::Float, device);
    // 42 × 5000 template points drawn with replacement from 150 000 distinct ones
    let distinct = Tensor::rand([1, 150_000, 3], opts);
    let pick = Tensor::randint(150_000, [1, 210_000], (Kind::Int64, device));
    let template = distinct.index_select(1, &pick.view([-1]));
    let ms = median_ms(device, runs, || point_ops::furthest_point_sample(&template, 2048));
    println!("{device:?} fps 210000 -> 2048: {ms:.1} ms");
    let obs = Tensor::rand([1, 2048, 3], opts);
    let ms = median_ms(device, runs, || point_ops::furthest_point_sample(&obs, 196));
    println!("{device:?} fps 2048 -> 196: {ms:.1} ms");
    let dense = (Tensor::rand([1, 2048, 3], opts) - 0.5) * 2.0;
    for (r, ns) in [(0.1, 32), (0.2, 64)] {
        let ms = median_ms(device, runs, || point_ops::ball_query(r, ns, &dense, &dense));
        println!("{device:?} ball query 2048x2048 r {r} ns {ns}: {ms:.1} ms");
        let idx = point_ops::ball_query(r, ns, &dense, &dense);
        let feats = dense.transpose(1, 2);
        let ms = median_ms(device, runs, || point_ops::group(&feats, &idx));
        println!("{device:?} group (1,3,2048,{ns}): {ms:.2} ms");
    }
    let (_, _) = point_ops::knn(&dense, &dense, 4);
    let ms = median_ms(device, runs, || point_ops::knn(&dense, &dense, 4).1);
    println!("{device:?} knn 2048x2048 k 4: {ms:.1} ms");

    let atten = Tensor::randn([1, 197, 197], opts) * 3.0;
    let p1 = Tensor::rand([1, 196, 3], opts);
    let p2 = Tensor::rand([1, 196, 3], opts);
    let model = Tensor::rand([1, 1024, 3], opts);
    let ms = median_ms(device, runs, || {
        let u = pose_solver::hypothesis_uniforms(1, 6000, device);
        pose_solver::compute_coarse_rt(&atten, &p1, &p2, &model, &u, 6000, 300).0
    });
    println!("{device:?} compute_coarse_rt (197², 6000 → 300, 1024 CAD points): {ms:.1} ms");
    let atten = Tensor::randn([1, 2049, 2049], opts) * 3.0;
    let p1 = Tensor::rand([1, 2048, 3], opts);
    let p2 = Tensor::rand([1, 2048, 3], opts);
    let ms = median_ms(device, runs, || pose_solver::compute_fine_rt(&atten, &p1, &p2, &model, 0.15).2);
    println!("{device:?} compute_fine_rt (2049², 1024 CAD points): {ms:.1} ms");
}

fn main() {
    let runs: usize = arg("--runs", 3);
    let _guard = tch::no_grad_guard();
    bench(Device::Cpu, runs);
    let cpu_only = std::env::args().any(|a| a == "--cpu-only");
    if !cpu_only && tch::Cuda::is_available() {
        bench(Device::Cuda(0), runs);
    }
}
