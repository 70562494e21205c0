//! How well each proposal matches the object: SAM-6D's ISM scores.
//!
//! Semantic (class-token similarity to the templates), appearance (patch-level similarity to
//! the best template), geometric (IoU of the proposal's box with the CAD model's box projected
//! at the best template's rotation) and the visible ratio, combined into
//! (semantic + appearance + geometric × ratio) / (2 + ratio), as the reference's custom script
//! (`run_inference_custom.py`, `model/detector.py`, `model/loss.py`). Tensor work uses the same
//! libtorch operations in the same order as the reference, so scores agree to float rounding;
//! the parity tests run the reference's own functions (`scripts/gen_ism_fixtures.py`).
use super::descriptors::{sam_box, Descriptors};
use crate::io::{Camera, DepthMm};
use crate::geometry::Proposal;
use nalgebra::Matrix3;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

/// `avg_5`: the semantic score is the mean of the 5 best template similarities.
pub const TOP_K: i64 = 5;
/// Proposals with a semantic score above this (strictly) are kept (`confidence_thresh`).
pub const SEMANTIC_THRESHOLD: f32 = 0.2;
/// A template patch counts as visible when its best query-patch similarity is above this
/// (`visible_thred`).
pub const VISIBLE_THRESHOLD: f64 = 0.5;

/// Which reference quirks to reproduce in the geometric score.
///
/// Both modes reproduce Q4 (SAM's inclusive boxes used as exclusive: areas (x1−x0)(y1−y0)) and
/// Q22 (projected pixels truncated toward zero and clamped; points behind the camera kept), and
/// both fix Q3 (one kept proposal works) and Q9 (no proposal → no scores).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Per-proposal IoU (Q2 fixed). A proposal without any mask pixel of valid depth has no
    /// translation: its geometric score is 0.
    #[default]
    Fixed,
    /// Q2 reproduced: if any kept proposal's box misses its projected box (no positive
    /// intersection), every geometric score is 0. A proposal without valid depth is projected
    /// at translation 0, as the reference's 0 / (0 + 1e-8) mean gives.
    Reference,
}

/// The scores of one kept proposal.
#[derive(Clone, Debug, PartialEq)]
pub struct IsmScores {
    /// Index into the proposals.
    pub index: usize,
    pub semantic: f32,
    pub appearance: f32,
    pub geometric: f32,
    pub visible_ratio: f32,
    /// The final ISM score in [0, 1].
    pub score: f32,
    /// The template with the highest class-token similarity.
    pub best_template: usize,
}

fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

fn to_f32s(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(t.to_device(Device::Cpu).to_kind(Kind::Float).contiguous().view([-1])).expect("a float tensor")
}

/// Semantic score of each query (N,D) against the templates (T,D) (`PairwiseSimilarity` +
/// `avg_5`): cosine similarity of the L2-normalised class tokens clamped to [0, 1], mean of the
/// 5 largest over the templates; and the best template (argmax of the clamped similarities).
/// With fewer than 5 templates the mean is over all of them (the reference would crash).
pub fn semantic(query_cls: &Tensor, ref_cls: &Tensor) -> (Vec<f32>, Vec<usize>) {
    let n = query_cls.size()[0];
    let t = ref_cls.size()[0];
    if n == 0 {
        return (Vec::new(), Vec::new());
    }
    if t == 0 {
        return (vec![0.0; n as usize], vec![0; n as usize]);
    }
    let q = l2_normalize(query_cls).unsqueeze(1); // (N,1,D)
    let r = l2_normalize(&ref_cls.to_device(query_cls.device())).unsqueeze(0); // (1,T,D)
    let sims = Tensor::cosine_similarity(&q, &r, -1, 1e-8).clamp(0.0, 1.0); // (N,T)
    let score = sims.topk(TOP_K.min(t), -1, true, true).0.mean_dim(-1, false, None);
    let best = sims.max_dim(-1, false).1;
    (to_f32s(&score), Vec::<i64>::try_from(best.to_device(Device::Cpu)).expect("indices").into_iter().map(|i| i as usize).collect())
}

/// The patch similarity matrices (M,P,P) between each query and its best template.
fn patch_similarity(query_patches: &Tensor, ref_patches: &Tensor) -> Tensor {
    query_patches.matmul(&ref_patches.to_device(query_patches.device()).permute([0, 2, 1]))
}

/// `compute_straight`: for each query patch the best template-patch similarity, summed, over
/// the number of non-zero query patches (+1e-6), clamped to [0, 1].
fn appearance_from(s: &Tensor, query_patches: &Tensor) -> Vec<f32> {
    let best = s.amax([-1], false).sum_dim_intlist(&[-1i64][..], false, None);
    let factor = query_patches.sum_dim_intlist(&[-1i64][..], false, None).count_nonzero(-1).to_kind(Kind::Float) + 1e-6;
    to_f32s(&(best / factor).clamp(0.0, 1.0))
}

/// `compute_visible_ratio`: for each template patch the best query-patch similarity; the
/// fraction of the non-zero ones (+1e-6) that are above 0.5.
fn visible_from(s: &Tensor) -> Vec<f32> {
    let best = s.amax([1], false); // (M, P_ref)
    let valid = best.count_nonzero(1).to_kind(Kind::Float) + 1e-6;
    let visible = (&best * best.gt(VISIBLE_THRESHOLD)).count_nonzero(1);
    to_f32s(&(visible / valid))
}

/// Appearance score of each query's patches (M,P,D) against its best template's (M,P,D).
pub fn appearance(query_patches: &Tensor, ref_patches: &Tensor) -> Vec<f32> {
    if query_patches.size()[0] == 0 {
        return Vec::new();
    }
    appearance_from(&patch_similarity(query_patches, ref_patches), query_patches)
}

/// Visible ratio of each query against its best template (patches (M,P,D) both).
pub fn visible_ratio(query_patches: &Tensor, ref_patches: &Tensor) -> Vec<f32> {
    if query_patches.size()[0] == 0 {
        return Vec::new();
    }
    visible_from(&patch_similarity(query_patches, ref_patches))
}

/// The proposal's translation (m, float32): the mean of the back-projected mask pixels with
/// depth > 0 (`depth_image_to_pointcloud_translate_torch`, computed in float64 like the
/// reference). `None` when no mask pixel has depth.
fn translation(mask: &[bool], depth: &DepthMm, camera: &Camera) -> Option<[f32; 3]> {
    let w = depth.width;
    let (mut sx, mut sy, mut sz, mut n) = (0.0f64, 0.0f64, 0.0f64, 0u64);
    for (i, (&m, &d)) in mask.iter().zip(&depth.mm).enumerate() {
        if m && d > 0.0 {
            let (u, v) = ((i % w) as f64, (i / w) as f64);
            let z = d as f64 / 1000.0;
            sx += (u - camera.cx) * z / camera.fx;
            sy += (v - camera.cy) * z / camera.fy;
            sz += z;
            n += 1;
        }
    }
    (n > 0).then(|| [(sx / n as f64) as f32, (sy / n as f64) as f32, (sz / n as f64) as f32])
}

/// Projected boxes (x0, y0, x1, y1) of the CAD samples rotated by `rotations[k]` and moved by
/// `translations[k]`, as `project_template_to_image`: float32 throughout, pixel = homogeneous /
/// z truncated toward zero, clamped to the image (Q22).
fn projected_boxes(rotations: &[Matrix3<f64>], translations: &[[f32; 3]], cad_samples_m: &[[f32; 3]], camera: &Camera, width: i64, height: i64) -> Vec<[i64; 4]> {
    let m = rotations.len() as i64;
    let n = cad_samples_m.len() as i64;
    let r: Vec<f32> = rotations.iter().flat_map(|r| (0..3).flat_map(move |i| (0..3).map(move |j| r[(i, j)] as f32))).collect();
    let r = Tensor::from_slice(&r).view([m, 3, 3]);
    let pc = Tensor::from_slice(cad_samples_m.as_flattened()).view([1, n, 3]).repeat([m, 1, 1]);
    let t = Tensor::from_slice(translations.as_flattened()).view([m, 1, 3]);
    let posed = r.matmul(&pc.permute([0, 2, 1])).permute([0, 2, 1]) + t.repeat([1, n, 1]);
    let k = [camera.fx, 0.0, camera.cx, 0.0, camera.fy, camera.cy, 0.0, 0.0, 1.0].map(|v| v as f32);
    let k = Tensor::from_slice(&k).view([1, 3, 3]).repeat([m, 1, 1]);
    let homo = k.bmm(&posed.permute([0, 2, 1])).permute([0, 2, 1]);
    let uv = (&homo / homo.select(2, 2).unsqueeze(2)).narrow(2, 0, 2).to_kind(Kind::Int);
    let u = uv.select(2, 0).clamp(0, width - 1);
    let v = uv.select(2, 1).clamp(0, height - 1);
    let b = Tensor::stack(&[u.amin([1], false), v.amin([1], false), u.amax([1], false), v.amax([1], false)], 1).to_kind(Kind::Int64);
    Vec::<i64>::try_from(b.view([-1])).expect("boxes").chunks(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
}

/// Geometric score of each proposal (its box `boxes[k]`, SAM's inclusive XYXY, and its mask
/// `masks[k]`, row-major at the depth map's size): IoU of the box with the box of the CAD samples
/// (metres) projected at `rotations[k]` (the best template's object rotation) and the mask's
/// mean depth point (areas (x1−x0)(y1−y0), as the reference). See [`Mode`] for Q2 and for
/// proposals without valid depth. A mask of another size than the depth map has no valid depth.
pub fn geometric(
    boxes: &[[i64; 4]],
    masks: &[&[bool]],
    depth_mm: &DepthMm,
    camera: &Camera,
    rotations: &[Matrix3<f64>],
    cad_samples_m: &[[f32; 3]],
    mode: Mode,
) -> Vec<f32> {
    assert!(boxes.len() == masks.len() && boxes.len() == rotations.len(), "one box, mask and rotation per proposal");
    if boxes.is_empty() {
        return Vec::new();
    }
    let translations: Vec<Option<[f32; 3]>> = masks
        .par_iter()
        .map(|mask| {
            if mask.len() != depth_mm.width * depth_mm.height {
                tracing::warn!("a proposal mask of {} pixels on a {}×{} depth map: no geometric score", mask.len(), depth_mm.width, depth_mm.height);
                return None;
            }
            translation(mask, depth_mm, camera)
        })
        .collect();
    let t: Vec<[f32; 3]> = translations.iter().map(|t| t.unwrap_or([0.0; 3])).collect();
    let projected = if cad_samples_m.is_empty() {
        vec![[0; 4]; boxes.len()]
    } else {
        projected_boxes(rotations, &t, cad_samples_m, camera, depth_mm.width as i64, depth_mm.height as i64)
    };
    // `compute_iou(projected, proposal)`: intersection width/height, IoU only when both > 0.
    let inter: Vec<Option<i64>> = projected
        .iter()
        .zip(boxes)
        .map(|(a, b)| {
            let (w, h) = (a[2].min(b[2]) - a[0].max(b[0]), a[3].min(b[3]) - a[1].max(b[1]));
            (w > 0 && h > 0).then_some(w * h)
        })
        .collect();
    let iou = |k: usize, i: i64| {
        let (a, b) = (projected[k], boxes[k]);
        let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - i;
        i as f32 / union as f32
    };
    match mode {
        // Q2 reproduced: one empty intersection zeroes every score.
        Mode::Reference if inter.iter().any(Option::is_none) => vec![0.0; boxes.len()],
        Mode::Reference => inter.iter().enumerate().map(|(k, i)| iou(k, i.unwrap_or(0))).collect(),
        Mode::Fixed => inter.iter().zip(&translations).enumerate().map(|(k, (i, t))| match (i, t) {
            (Some(i), Some(_)) => iou(k, *i),
            _ => 0.0,
        })
        .collect(),
    }
}

/// The final ISM score: (semantic + appearance + geometric × ratio) / (2 + ratio).
pub fn final_score(semantic: f32, appearance: f32, geometric: f32, visible_ratio: f32) -> f32 {
    (semantic + appearance + geometric * visible_ratio) / (2.0 + visible_ratio)
}

/// The whole ISM scoring of the custom script. `query` holds the descriptors of the proposals
/// `kept` (row i = `proposals[kept[i]]`, as [`super::descriptors::QueryBatch::kept`]),
/// `reference` those of the templates whose object rotations are `template_rotations`. Proposals
/// with a semantic score > 0.2 get the other scores; returns them in SAM order (no NMS, no
/// size filter, as the custom script: Q20). Nothing kept → empty (Q9 fixed); one kept works (Q3
/// fixed).
#[allow(clippy::too_many_arguments)]
pub fn score_proposals(
    query: &Descriptors,
    kept: &[usize],
    reference: &Descriptors,
    template_rotations: &[Matrix3<f64>],
    proposals: &[Proposal],
    depth: &DepthMm,
    camera: &Camera,
    cad_samples_m: &[[f32; 3]],
    mode: Mode,
) -> Vec<IsmScores> {
    assert_eq!(query.cls.size()[0], kept.len() as i64, "one query descriptor per kept proposal");
    assert!(template_rotations.len() as i64 >= reference.cls.size()[0], "one rotation per template");
    if kept.is_empty() {
        return Vec::new();
    }
    let (sem, best) = semantic(&query.cls, &reference.cls);
    let rows: Vec<usize> = (0..kept.len()).filter(|&i| sem[i] > SEMANTIC_THRESHOLD).collect();
    if rows.is_empty() {
        return Vec::new();
    }
    let device = query.patches.device();
    let sel = Tensor::from_slice(&rows.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(device);
    let best_sel: Vec<usize> = rows.iter().map(|&i| best[i]).collect();
    let best_t = Tensor::from_slice(&best_sel.iter().map(|&b| b as i64).collect::<Vec<_>>()).to_device(reference.patches.device());
    let q = query.patches.index_select(0, &sel);
    let s = patch_similarity(&q, &reference.patches.index_select(0, &best_t));
    let app = appearance_from(&s, &q);
    let vis = visible_from(&s);
    let props: Vec<&Proposal> = rows.iter().map(|&i| &proposals[kept[i]]).collect();
    let boxes: Vec<[i64; 4]> = props.iter().map(|p| sam_box(p)).collect();
    let masks: Vec<&[bool]> = props.iter().map(|p| p.mask.as_slice()).collect();
    let rotations: Vec<Matrix3<f64>> = best_sel.iter().map(|&b| template_rotations[b]).collect();
    let geo = geometric(&boxes, &masks, depth, camera, &rotations, cad_samples_m, mode);
    rows.iter()
        .enumerate()
        .map(|(j, &i)| IsmScores {
            index: kept[i],
            semantic: sem[i],
            appearance: app[j],
            geometric: geo[j],
            visible_ratio: vis[j],
            score: final_score(sem[i], app[j], geo[j], vis[j]),
            best_template: best[i],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_score_formula() {
        assert_eq!(final_score(0.5, 0.4, 0.0, 0.0), 0.45);
        assert!((final_score(0.6, 0.5, 0.8, 0.5) - (0.6 + 0.5 + 0.4) / 2.5).abs() < 1e-7);
    }

    #[test]
    fn empty_inputs_give_empty_scores() {
        let z = |s: &[i64]| Tensor::zeros(s, (Kind::Float, Device::Cpu));
        assert!(semantic(&z(&[0, 4]), &z(&[3, 4])).0.is_empty());
        assert!(appearance(&z(&[0, 256, 4]), &z(&[0, 256, 4])).is_empty());
        let depth = DepthMm { width: 4, height: 4, mm: vec![0.0; 16] };
        let cam = Camera { fx: 10.0, fy: 10.0, cx: 2.0, cy: 2.0, depth_scale: 1.0 };
        assert!(geometric(&[], &[], &depth, &cam, &[], &[[0.0; 3]], Mode::Reference).is_empty());
        let q = Descriptors { cls: z(&[0, 4]), patches: z(&[0, 256, 4]) };
        let r = Descriptors { cls: z(&[3, 4]), patches: z(&[3, 256, 4]) };
        assert!(score_proposals(&q, &[], &r, &[Matrix3::identity(); 3], &[], &depth, &cam, &[[0.0; 3]], Mode::Fixed).is_empty());
    }

    #[test]
    fn no_valid_depth_gives_zero_geometric_score_in_fixed_mode() {
        let depth = DepthMm { width: 8, height: 8, mm: vec![0.0; 64] };
        let cam = Camera { fx: 10.0, fy: 10.0, cx: 4.0, cy: 4.0, depth_scale: 1.0 };
        let mask = vec![true; 64];
        let g = geometric(&[[1, 1, 6, 6]], &[&mask], &depth, &cam, &[Matrix3::identity()], &[[0.0, 0.0, 0.05], [0.01, 0.01, 0.06]], Mode::Fixed);
        assert_eq!(g, vec![0.0]);
    }
}
