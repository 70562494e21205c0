//! The PEM's inputs and assembled network against SAM-6D's own code.
//!
//! Fixtures: `testdata/pem-fixtures/model_*.npz`, made by `scripts/gen_pem_fixtures_model.py`:
//! - model_inputs.npz: `get_bbox` on 24 random masks; `cv2.resize` (INTER_LINEAR, uint8) on six
//!   sizes; two 64×64 templates through `_get_template` and an 80×60 RGB-D frame with five
//!   detections through `get_test_data` (300 / 256 sampled points), with the reference's
//!   `np.random.choice` draws, its network images (as the uint8 BGR images they were
//!   normalised from), points and feature-map indices.
//!
//! Boxes, resized pixels, draws and indices must match exactly; images bit for bit; points to
//! 1e-7 m.
//!
//! Checkpoint: the network we build has the names and shapes of manifest-pem-base.json (462),
//! and a `.pth` in SAM-6D's layout (`{'model': {'module.' + name: …}}`, made at test time by
//! cli-tests/fixtures/pem_pth_fixture.py) checks, converts and loads, with or without BatchNorm's
//! `num_batches_tracked`.
use sam6d::io::{Camera, DepthMm};
use sam6d::pipeline::pem::inputs::{self, ReplaySampler};
use sam6d::pipeline::Frame;
use crate::{run_fixture, s, sam6d, stderr};
use sam6d::pipeline::pem::model::Pem;
use sam6d::weights::registry::Network;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use tch::{Device, Kind, Tensor};
use crate::{committed_npz, f32s, get, i64s, max_diff};

fn npz(name: &str) -> HashMap<String, Tensor> {
    committed_npz("pem-fixtures", name, "scripts/gen_pem_fixtures_model.py")
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).contiguous().view([-1])).unwrap()
}

fn u8s(t: &Tensor) -> Vec<u8> {
    Vec::<u8>::try_from(t.to_kind(Kind::Uint8).contiguous().view([-1])).unwrap()
}

fn bools(t: &Tensor) -> Vec<bool> {
    u8s(t).into_iter().map(|v| v != 0).collect()
}

fn rgb_image(t: &Tensor) -> image::RgbImage {
    let (h, w, _) = t.size3().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, u8s(t)).unwrap()
}

/// The normalised network image the reference made from `u8` (224,224,3) BGR: float32 x/255,
/// then (x − mean)/std, as torchvision does.
fn normalised(u8: &Tensor) -> Tensor {
    let mean = Tensor::from_slice(&inputs::MEAN).view([3, 1, 1]);
    let std = Tensor::from_slice(&inputs::STD).view([3, 1, 1]);
    (u8.permute([2, 0, 1]).to_kind(Kind::Float) / 255.0 - mean) / std
}

fn replay(draws: &[&Tensor]) -> ReplaySampler {
    ReplaySampler(draws.iter().map(|t| i64s(t).into_iter().map(|i| i as usize).collect()).collect::<VecDeque<_>>())
}

#[test]
fn pem_bbox_and_resize_match_the_reference() {
    let f = npz("model_inputs.npz");
    let masks = get(&f, "bbox_masks");
    let want = i64s(get(&f, "bbox_out"));
    let (n, h, w) = masks.size3().unwrap();
    for k in 0..n {
        let got = inputs::get_bbox(&bools(&masks.get(k)), w as usize, h as usize).unwrap();
        assert_eq!(got.map(|v| v as i64).to_vec(), want[k as usize * 4..k as usize * 4 + 4], "mask {k}");
    }
    for i in 0..6 {
        let src = get(&f, &format!("resize{i}_src"));
        let dst = get(&f, &format!("resize{i}_dst"));
        let (sh, sw, c) = src.size3().unwrap();
        let (dh, dw, _) = dst.size3().unwrap();
        let got = sam6d::io::image::resize_linear_cv(&u8s(src), sw as usize, sh as usize, c as usize, dw as usize, dh as usize);
        let want = u8s(dst);
        let bad = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(bad, 0, "resize {sw}x{sh} → {dw}x{dh}: {bad} of {} values differ from cv2.resize", want.len());
    }
}

#[test]
fn pem_template_input_matches_the_reference() {
    let f = npz("model_inputs.npz");
    for v in 0..2 {
        let key = |s: &str| format!("tem{v}_{s}");
        let rgb = rgb_image(get(&f, &key("rgb_in")));
        let mask = bools(get(&f, &key("mask")));
        let xyz: Vec<[f32; 3]> = f32s(get(&f, &key("xyz_mm"))).chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
        let mut sampler = replay(&[get(&f, &key("draw"))]);
        let t = inputs::template_input(&rgb, &mask, &xyz, 300, &mut sampler).expect("a template with a mask");
        assert!(t.rgb.equal(&normalised(get(&f, &key("image")))), "template {v}: network image differs");
        assert_eq!(t.rgb_choose, i64s(get(&f, &key("choose"))), "template {v}: rgb_choose");
        let pts: Vec<f32> = t.pts.iter().flatten().copied().collect();
        assert_eq!(max_diff(&pts, &f32s(get(&f, &key("pts")))), 0.0, "template {v}: points");
    }
}

#[test]
fn pem_observed_input_matches_the_reference() {
    let f = npz("model_inputs.npz");
    let rgb = rgb_image(get(&f, "obs_rgb"));
    let depth = get(&f, "obs_depth");
    let (h, w) = depth.size2().unwrap();
    let depth = DepthMm { width: w as usize, height: h as usize, mm: f32s(depth) };
    let k = f64s(get(&f, "obs_K"));
    let frame = Frame::new(rgb, depth, Camera::new(k[0], k[4], k[2], k[5], 1.0).unwrap()).unwrap();
    let radius = f32s(get(&f, "obs_radius"))[0];
    let scores = f64s(get(&f, "obs_scores"));
    let masks = get(&f, "obs_masks");
    let kept = i64s(get(&f, "obs_kept"));
    let (want_pts, want_choose) = (get(&f, "obs_pts"), get(&f, "obs_choose"));
    let mut got_kept = Vec::new();
    for d in 0..masks.size()[0] {
        if scores[d as usize] <= 0.2 {
            continue;
        }
        let j = got_kept.len() as i64;
        let draw = format!("obs{j}_draw");
        let mut sampler = replay(&f.get(&draw).into_iter().collect::<Vec<_>>());
        let Some(o) = inputs::observed_input(&frame, &bools(&masks.get(d)), radius, 256, &mut sampler) else { continue };
        got_kept.push(d);
        assert!(o.rgb.equal(&normalised(get(&f, &format!("obs{j}_image")))), "detection {d}: network image differs");
        assert_eq!(o.rgb_choose, i64s(&want_choose.get(j)), "detection {d}: rgb_choose");
        let pts: Vec<f32> = o.pts.iter().flatten().copied().collect();
        let diff = max_diff(&pts, &f32s(&want_pts.get(j)));
        assert!(diff <= 1e-7, "detection {d}: points differ by {diff} m");
    }
    assert_eq!(got_kept, kept, "kept detections");
}

fn manifest() -> Option<BTreeMap<String, Vec<i64>>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/manifest-pem-base.json");
    let text = std::fs::read_to_string(&path).ok()?;
    Some(serde_json::from_str(&text).expect("manifest: name → shape"))
}

#[test]
fn pem_network_equals_the_checkpoint_manifest() {
    let Some(manifest) = manifest() else {
        eprintln!("skipped: ../shared/reference/manifest-pem-base.json not present");
        return;
    };
    assert_eq!(manifest.len(), 462);
    let ours: BTreeMap<String, Vec<i64>> = Network::PemBase.expected().into_iter().map(|t| (t.name, t.shape)).collect();
    let only_ours: Vec<_> = ours.keys().filter(|k| !manifest.contains_key(*k)).collect();
    let only_theirs: Vec<_> = manifest.keys().filter(|k| !ours.contains_key(*k)).collect();
    assert!(only_ours.is_empty() && only_theirs.is_empty(), "only ours {only_ours:?}, only the manifest {only_theirs:?}");
    let shapes: Vec<_> = ours.iter().filter(|(k, v)| manifest[*k] != **v).collect();
    assert!(shapes.is_empty(), "shapes differ: {shapes:?}");
    assert_eq!(Network::detect(&Network::PemBase.expected()), Some(Network::PemBase));
}

#[test]
fn pem_checkpoint_converts_checks_and_loads() {
    if manifest().is_none() {
        eprintln!("skipped: ../shared/reference/manifest-pem-base.json not present");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    run_fixture("pem_pth_fixture.py", dir.path());
    for (pth, tensors) in [("pem_nobn.pth", 456), ("pem.pth", 462)] {
        let input = dir.path().join(pth);
        // The .pth itself (its pickle): nested under 'model', 'module.' stripped, detected.
        let o = sam6d(&["weights", "check", s(&input)]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(out.contains(&format!("sam6d-pem-base (detected): OK, {tensors} tensors")), "{out}");
        let st = dir.path().join(pth.replace(".pth", ".safetensors"));
        let o = sam6d(&["weights", "convert", s(&input), "--out", s(&st)]);
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(out.contains("prefix:   'module.' removed") && out.contains("the checkpoint's 'model'") && out.contains("sam6d-pem-base (detected"), "{out}");
        let o = sam6d(&["weights", "check", s(&st)]);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
        assert!(out.contains(&format!("sam6d-pem-base (detected): OK, {tensors} tensors")), "{out}");
        // Loads strictly, values where they belong (the fixture's ramp: element i = i / largest).
        let pem = Pem::load(&st, Device::Cpu).unwrap_or_else(|e| panic!("{pth}: {e:#}"));
        let _ = pem;
        let file: HashMap<String, Tensor> = Tensor::read_safetensors(&st).unwrap().into_iter().collect();
        let w = &file["coarse_point_matching.in_proj.weight"];
        assert_eq!(w.size(), [256, 256]);
        assert!((w.double_value(&[1, 3]) - f64::from(259f32 / (4096.0 * 3072.0))).abs() < 1e-12);
    }
}
