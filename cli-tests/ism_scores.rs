//! The ISM's proposal processing and scores against SAM-6D's own code.
//!
//! Fixtures: `testdata/ism-fixtures/*.npz`, made by `scripts/gen_ism_fixtures.py` from the
//! reference functions (CropResizePad, CustomDINOv2 with a stand-in network that returns fixed
//! tokens, the detector's semantic/appearance/geometric scoring) at fixed random inputs:
//! - crop.npz: 40 boxes on a 640×480 frame (223 long sides, tall/wide/tiny boxes) as the
//!   reference's crop index maps, and the resized long side of every width 1..640;
//! - templates_crop.npz: three templates prepared as the custom script does, their masked
//!   images and crop maps;
//! - ism_templates.npz: 42 templates' tokens (int8 / 4), crop masks and rotations;
//! - ism_chain_{a,b}.npz: a 64×48 frame (rgb, depth, camera, 6 proposals, query tokens) and
//!   the reference's crops (a: as maps over its normalised image), descriptors (a) and every
//!   score; b triggers Q2 and has a proposal without depth.
//!
//! Crops and indices must match exactly, scores to 1e-5.
use sam6d::io::{Camera, DepthMm};
use sam6d::pipeline::ism::descriptors::{self, crop_map, crop_resize_pad, Descriptors, CROP, PATCH};
use sam6d::pipeline::ism::score::{self, Mode};
use sam6d::pipeline::segment::Proposal;
use std::collections::HashMap;
use tch::{Device, Kind, Tensor};
use crate::{committed_npz, f32s, get, i64s, max_diff};

fn npz(name: &str) -> HashMap<String, Tensor> {
    committed_npz("ism-fixtures", name, "scripts/gen_ism_fixtures.py")
}

const TOKEN_SCALE: f64 = 4.0;

/// `src` (C,H,W) read through index maps (−1 = zero), the way the fixtures store crops.
fn gather(src: &Tensor, rows: &[i64], cols: &[i64]) -> Tensor {
    let (_, h, w) = src.size3().unwrap();
    let padded = src.constant_pad_nd([0, 1, 0, 1]);
    let r: Vec<i64> = rows.iter().map(|&i| if i < 0 { h } else { i }).collect();
    let c: Vec<i64> = cols.iter().map(|&i| if i < 0 { w } else { i }).collect();
    padded.index(&[None, Some(Tensor::from_slice(&r).view([-1, 1])), Some(Tensor::from_slice(&c).view([1, -1]))])
}

fn rgb_image(t: &Tensor) -> image::RgbImage {
    let (h, w, _) = t.size3().unwrap();
    image::RgbImage::from_raw(w as u32, h as u32, Vec::<u8>::try_from(t.contiguous().view([-1])).unwrap()).unwrap()
}

fn bool_mask(t: &Tensor) -> Vec<bool> {
    Vec::<u8>::try_from(t.contiguous().view([-1])).unwrap().into_iter().map(|v| v != 0).collect()
}

#[test]
fn crop_maps_match_the_reference_crop_resize_pad() {
    let f = npz("crop.npz");
    let size = i64s(get(&f, "image_size"));
    let (h, w) = (size[0], size[1]);
    let boxes = i64s(get(&f, "boxes"));
    let rows = get(&f, "rows");
    let cols = get(&f, "cols");
    // An image whose channels are row+1 and column+1: a crop of it shows where each pixel came from.
    let index = Tensor::stack(
        &[Tensor::arange(h, (Kind::Float, Device::Cpu)).view([h, 1]).expand([h, w], false) + 1.0, Tensor::arange(w, (Kind::Float, Device::Cpu)).view([1, w]).expand([h, w], false) + 1.0],
        0,
    );
    let n = boxes.len() / 4;
    for k in 0..n {
        let b = [boxes[4 * k], boxes[4 * k + 1], boxes[4 * k + 2], boxes[4 * k + 3]];
        let (r_ref, c_ref) = (i64s(&rows.get(k as i64)), i64s(&cols.get(k as i64)));
        let (r, c) = crop_map(b, w, h).unwrap_or_else(|| panic!("box {b:?} skipped"));
        assert_eq!((&r, &c), (&r_ref, &c_ref), "index maps of box {b:?}");
        let ours = crop_resize_pad(&index, b).unwrap();
        assert_eq!(ours.size(), [2, CROP, CROP]);
        assert!(ours.equal(&gather(&index, &r_ref, &c_ref)), "crop of box {b:?}");
    }
    let long = i64s(get(&f, "long_side"));
    for l in 1..=w {
        let (_, c) = crop_map([0, 0, l, (l / 2).max(1)], w, h).unwrap();
        assert_eq!(c.iter().filter(|&&i| i >= 0).count() as i64, long[(l - 1) as usize], "long side of width {l}");
    }
    eprintln!("crop_resize_pad: {n} boxes and {w} widths exact");
}

#[test]
fn template_batch_matches_the_reference_template_preparation() {
    let f = npz("templates_crop.npz");
    let rgb = get(&f, "rgb");
    let masks = get(&f, "masks");
    let t = rgb.size()[0];
    let rgbs: Vec<image::RgbImage> = (0..t).map(|k| rgb_image(&rgb.get(k))).collect();
    let ms: Vec<Vec<bool>> = (0..t).map(|k| bool_mask(&masks.get(k))).collect();
    let (images, crops) = descriptors::template_batch(&rgbs, &ms, false, Device::Cpu).unwrap();
    assert_eq!(images.size(), [t, 3, CROP, CROP]);
    for k in 0..t {
        let (r, c) = (i64s(&get(&f, "rows").get(k)), i64s(&get(&f, "cols").get(k)));
        assert!(images.get(k).equal(&gather(&get(&f, "masked").get(k), &r, &c)), "template {k} image");
        let m = gather(&masks.get(k).to_kind(Kind::Float).unsqueeze(0), &r, &c).squeeze_dim(0);
        assert!(crops.get(k).equal(&m), "template {k} mask");
    }
}

struct Templates {
    desc: Descriptors,
    rotations: Vec<nalgebra::Matrix3<f64>>,
    ref_cls: Tensor,
}

fn templates() -> Templates {
    let f = npz("ism_templates.npz");
    let tokens = get(&f, "t_tokens").to_kind(Kind::Float) / TOKEN_SCALE;
    let desc = descriptors::descriptors(&tokens, &get(&f, "t_masks224").to_kind(Kind::Float), PATCH);
    let rot = Vec::<f64>::try_from(get(&f, "rotations").contiguous().view([-1])).unwrap();
    let rotations = rot.chunks(9).map(nalgebra::Matrix3::from_row_slice).collect();
    Templates { desc, rotations, ref_cls: get(&f, "ref_cls").shallow_clone() }
}

struct Frame {
    f: HashMap<String, Tensor>,
    rgb: image::RgbImage,
    proposals: Vec<Proposal>,
    depth: DepthMm,
    camera: Camera,
    cad: Vec<[f32; 3]>,
}

fn frame(name: &str) -> Frame {
    let f = npz(name);
    let rgb = rgb_image(get(&f, "rgb"));
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let masks = get(&f, "masks");
    let boxes = i64s(get(&f, "boxes"));
    let proposals = (0..masks.size()[0])
        .map(|k| Proposal {
            width: w,
            height: h,
            mask: bool_mask(&masks.get(k)),
            bbox: std::array::from_fn(|i| boxes[4 * k as usize + i] as f32),
            predicted_iou: 1.0,
            stability_score: 1.0,
        })
        .collect();
    let depth = DepthMm { width: w, height: h, mm: f32s(get(&f, "depth")) };
    let k = Vec::<f64>::try_from(get(&f, "cam_k").contiguous().view([-1])).unwrap();
    let camera = Camera::from_k(&k, 1.0, "fixture camera").unwrap();
    let cad = f32s(get(&f, "cad")).chunks(3).map(|c| [c[0], c[1], c[2]]).collect();
    Frame { f, rgb, proposals, depth, camera, cad }
}

#[test]
fn query_crops_and_descriptors_match_the_reference() {
    let fr = frame("ism_chain_a.npz");
    let f = &fr.f;
    let q = descriptors::query_batch(&fr.rgb, &fr.proposals, Device::Cpu);
    let n = fr.proposals.len();
    assert_eq!(q.kept, (0..n).collect::<Vec<_>>());
    let norm = get(f, "norm_rgb");
    for k in 0..n as i64 {
        let (r, c) = (i64s(&get(f, "rows").get(k)), i64s(&get(f, "cols").get(k)));
        let m = gather(&get(f, "masks").get(k).to_kind(Kind::Float).unsqueeze(0), &r, &c);
        assert!(q.images.get(k).equal(&(gather(norm, &r, &c) * &m)), "query crop {k}");
        assert!(q.masks.get(k).equal(&m.squeeze_dim(0)), "query mask {k}");
        assert!(q.masks.get(k).equal(&get(f, "masks224").get(k).to_kind(Kind::Float)), "query mask {k} (stored)");
    }
    let tokens = get(f, "q_tokens").to_kind(Kind::Float) / TOKEN_SCALE;
    let d = descriptors::descriptors(&tokens, &q.masks, PATCH);
    let e_cls = (&d.cls - get(f, "q_cls")).abs().max().double_value(&[]);
    let e_patch = (&d.patches - get(f, "q_patches")).abs().max().double_value(&[]);
    eprintln!("descriptors: max abs error cls {e_cls:.2e}, patches {e_patch:.2e}");
    assert!(e_cls <= 1e-6 && e_patch <= 1e-6, "cls {e_cls}, patches {e_patch}");
    // The zeroed patches are exactly the reference's.
    assert!(d.patches.eq(0.0).equal(&get(f, "q_patches").eq(0.0)));

    let t = templates();
    let e_ref = (&t.desc.cls - &t.ref_cls).abs().max().double_value(&[]);
    assert!(e_ref <= 1e-6, "template cls {e_ref}");
    // Function-level scores on the reference's own descriptors.
    let (sem, best) = score::semantic(get(f, "q_cls"), &t.ref_cls);
    let e_sem = max_diff(&sem, &f32s(get(f, "sem_all")));
    assert_eq!(best.iter().map(|&b| b as i64).collect::<Vec<_>>(), i64s(get(f, "best_all")), "best templates");
    let sel = get(f, "idx");
    let qp = get(f, "q_patches").index_select(0, sel);
    let e_app = max_diff(&score::appearance(&qp, get(f, "ref_aux")), &f32s(get(f, "appe")));
    let e_vis = max_diff(&score::visible_ratio(&qp, get(f, "ref_aux")), &f32s(get(f, "vis")));
    // The best templates' patch descriptors, ours from the tokens, against the reference's.
    let ours_aux = t.desc.patches.index_select(0, get(f, "best"));
    let e_aux = (&ours_aux - get(f, "ref_aux")).abs().max().double_value(&[]);
    eprintln!("semantic {e_sem:.2e}, appearance {e_app:.2e}, visible ratio {e_vis:.2e}, template patches {e_aux:.2e}");
    assert!(e_sem <= 1e-5 && e_app <= 1e-5 && e_vis <= 1e-5 && e_aux <= 1e-6);
}

/// The whole scoring (semantic filter, appearance, visible ratio, geometric, final) from tokens,
/// in both modes, against the reference's run of the custom script's steps.
fn check_chain(name: &str) {
    let fr = frame(name);
    let f = &fr.f;
    let t = templates();
    let q = descriptors::query_batch(&fr.rgb, &fr.proposals, Device::Cpu);
    assert!(q.masks.equal(&get(f, "masks224").to_kind(Kind::Float)), "{name}: query masks");
    let tokens = get(f, "q_tokens").to_kind(Kind::Float) / TOKEN_SCALE;
    let d = descriptors::descriptors(&tokens, &q.masks, PATCH);
    let idx: Vec<usize> = i64s(get(f, "idx")).into_iter().map(|i| i as usize).collect();
    let best: Vec<usize> = i64s(get(f, "best")).into_iter().map(|i| i as usize).collect();

    // geometric() alone, on the reference's selection.
    let boxes: Vec<[i64; 4]> = idx.iter().map(|&i| descriptors::sam_box(&fr.proposals[i])).collect();
    let masks: Vec<&[bool]> = idx.iter().map(|&i| fr.proposals[i].mask.as_slice()).collect();
    let rot: Vec<_> = best.iter().map(|&b| t.rotations[b]).collect();
    for (mode, key) in [(Mode::Reference, "geo_ref"), (Mode::Fixed, "geo_fixed")] {
        let g = score::geometric(&boxes, &masks, &fr.depth, &fr.camera, &rot, &fr.cad, mode);
        let e = max_diff(&g, &f32s(get(f, key)));
        eprintln!("{name}: geometric {mode:?} {g:?}, max abs error {e:.2e}");
        assert!(e <= 1e-5, "{name}: geometric {mode:?}: {g:?} vs {:?}", f32s(get(f, key)));
    }

    for (mode, geo_key, final_key) in [(Mode::Reference, "geo_ref", "final_ref"), (Mode::Fixed, "geo_fixed", "final_fixed")] {
        let s = score::score_proposals(&d, &q.kept, &t.desc, &t.rotations, &fr.proposals, &fr.depth, &fr.camera, &fr.cad, mode);
        assert_eq!(s.iter().map(|x| x.index).collect::<Vec<_>>(), idx, "{name}: kept proposals");
        assert_eq!(s.iter().map(|x| x.best_template).collect::<Vec<_>>(), best, "{name}: best templates");
        let col = |g: fn(&score::IsmScores) -> f32| s.iter().map(g).collect::<Vec<f32>>();
        let errs = [
            ("semantic", max_diff(&col(|x| x.semantic), &f32s(get(f, "sem")))),
            ("appearance", max_diff(&col(|x| x.appearance), &f32s(get(f, "appe")))),
            ("visible", max_diff(&col(|x| x.visible_ratio), &f32s(get(f, "vis")))),
            ("geometric", max_diff(&col(|x| x.geometric), &f32s(get(f, geo_key)))),
            ("final", max_diff(&col(|x| x.score), &f32s(get(f, final_key)))),
        ];
        eprintln!("{name} {mode:?}: max abs errors {errs:?}");
        for (what, e) in errs {
            assert!(e <= 1e-5, "{name} {mode:?}: {what} off by {e}");
        }
    }
}

#[test]
fn scores_match_the_reference_without_q2() {
    let f = npz("ism_chain_a.npz");
    assert!(!bool::try_from(get(&f, "q2")).unwrap());
    check_chain("ism_chain_a.npz");
}

#[test]
fn scores_match_the_reference_with_q2_and_a_proposal_without_depth() {
    let f = npz("ism_chain_b.npz");
    assert!(bool::try_from(get(&f, "q2")).unwrap(), "scenario b triggers Q2");
    check_chain("ism_chain_b.npz");
}

#[test]
fn one_kept_proposal_is_scored() {
    // Q3: the reference crashes with exactly one kept proposal; here it is just a batch of one,
    // with the same scores it has in the batch (Fixed mode: per-proposal IoU).
    let fr = frame("ism_chain_a.npz");
    let t = templates();
    let q = descriptors::query_batch(&fr.rgb, &fr.proposals[..1], Device::Cpu);
    let d = descriptors::descriptors(&(fr.f["q_tokens"].narrow(0, 0, 1).to_kind(Kind::Float) / TOKEN_SCALE), &q.masks, PATCH);
    let s = score::score_proposals(&d, &q.kept, &t.desc, &t.rotations, &fr.proposals, &fr.depth, &fr.camera, &fr.cad, Mode::Fixed);
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].index, 0);
    assert!((s[0].score - f32s(&fr.f["final_fixed"])[0]).abs() <= 1e-5);
}

/// Timing at the real sizes (640×480, 100 proposals, ViT-L's 1024-d tokens, 42 templates) on
/// the GPU when there is one, else the CPU: `cargo test --release --test cli ism_scores_timing
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn ism_scores_timing() {
    use std::time::Instant;
    let device = Device::cuda_if_available();
    let (w, h, n, dim, t) = (640usize, 480usize, 100usize, 1024i64, 42i64);
    let mut rgb = image::RgbImage::new(w as u32, h as u32);
    for (x, y, p) in rgb.enumerate_pixels_mut() {
        *p = image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8]);
    }
    let proposals: Vec<Proposal> = (0..n)
        .map(|k| {
            let (x0, y0) = ((k * 37) % 500, (k * 53) % 380);
            let (x1, y1) = (x0 + 20 + (k * 7) % 120, y0 + 15 + (k * 11) % 90);
            let mut mask = vec![false; w * h];
            for y in y0..=y1 {
                for x in x0..=x1 {
                    mask[y * w + x] = true;
                }
            }
            Proposal { width: w, height: h, mask, bbox: [x0 as f32, y0 as f32, x1 as f32, y1 as f32], predicted_iou: 1.0, stability_score: 1.0 }
        })
        .collect();
    let depth = DepthMm { width: w, height: h, mm: vec![700.0; w * h] };
    let camera = Camera::new(600.0, 600.0, 320.0, 240.0, 1.0).unwrap();
    let cad: Vec<[f32; 3]> = (0..2048).map(|i| [((i % 13) as f32 - 6.0) * 0.005, ((i % 7) as f32 - 3.0) * 0.01, ((i % 5) as f32 - 2.0) * 0.01]).collect();
    let rotations = vec![nalgebra::Matrix3::identity(); t as usize];
    let templ_tokens = Tensor::randn([t, 257, dim], (Kind::Float, device));
    let templ_masks = Tensor::ones([t, CROP, CROP], (Kind::Float, device));
    let reference = descriptors::descriptors(&templ_tokens, &templ_masks, PATCH);
    for round in 0..2 {
        let t0 = Instant::now();
        let q = descriptors::query_batch(&rgb, &proposals, device);
        let _ = q.images.sum(Kind::Float).double_value(&[]);
        let t1 = Instant::now();
        // Queries near the templates, so that every proposal passes the semantic filter.
        let near = Tensor::arange(q.kept.len() as i64, (Kind::Int64, device)).remainder(t);
        let tokens = templ_tokens.index_select(0, &near) + Tensor::randn([q.kept.len() as i64, 257, dim], (Kind::Float, device)) * 0.3;
        let t2 = Instant::now();
        let d = descriptors::descriptors(&tokens, &q.masks, PATCH);
        let s = score::score_proposals(&d, &q.kept, &reference, &rotations, &proposals, &depth, &camera, &cad, Mode::Fixed);
        let t3 = Instant::now();
        eprintln!(
            "round {round} on {device:?}: query_batch {:.1} ms, descriptors + scores {:.1} ms ({} proposals, {} scored)",
            (t1 - t0).as_secs_f64() * 1e3,
            (t3 - t2).as_secs_f64() * 1e3,
            q.kept.len(),
            s.len()
        );
    }
}
