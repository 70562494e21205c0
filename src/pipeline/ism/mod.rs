//! SAM-6D's Instance Segmentation Model: which of the segmenter's mask proposals are the target
//! object, judged against rendered templates of its CAD model through DINOv2 descriptors.
//!
//! Per object, once: render the 42 level-0 templates ([`crate::render::templates`]), crop them
//! like proposals and describe them with DINOv2 (class token + masked patch tokens), cached on
//! disk ([`cache`]). Per frame: crop every proposal, describe it the same way, and score it
//! against the templates ([`score`]): semantic, appearance, geometric and visible ratio.
pub mod cache;
pub mod descriptors;
pub mod dinov2;
pub mod score;

use crate::device::{Device, Precision};
use crate::geometry::Proposal;
use crate::pipeline::{Frame, ObjectModel};
use crate::render::templates;
use anyhow::Context;
use descriptors::Descriptors;
use dinov2::{DinoKind, Dinov2};
use nalgebra::Matrix3;
use score::{IsmScores, Mode};
use std::path::{Path, PathBuf};
use tch::{Kind, Tensor};

/// CAD surface samples of the geometric score (the custom script's 2048).
const CAD_SAMPLES: usize = 2048;
/// DINOv2 forward batches (the reference's `chunk_size`): bounds memory, not results.
const CHUNK: i64 = 16;

/// How the ISM is set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IsmConfig {
    pub dino: DinoKind,
    /// `Reference` reproduces the custom script's quirks Q1 (templates described without
    /// ImageNet normalisation) and Q2 (one empty box intersection zeroes every geometric score);
    /// `Fixed` normalises templates like queries and scores each proposal on its own.
    pub mode: Mode,
    /// DINOv2's element type; descriptors and scores are f32 whatever it is.
    pub precision: Precision,
}

impl Default for IsmConfig {
    fn default() -> Self {
        IsmConfig { dino: DinoKind::VitL14, mode: Mode::Fixed, precision: Precision::F32 }
    }
}

/// The loaded descriptor network.
pub struct Ism {
    dino: Dinov2,
    device: tch::Device,
    config: IsmConfig,
    /// The weights file, part of the template cache key.
    weights: PathBuf,
}

/// One object's templates as the ISM uses them.
pub struct ObjectTemplates {
    /// Model → template camera rotation of each view (the geometric score's candidate rotations).
    pub rotations: Vec<Matrix3<f64>>,
    pub reference: Descriptors,
    /// CAD surface samples, metres.
    pub cad_samples_m: Vec<[f32; 3]>,
}

impl Ism {
    /// Loads `dinov2_<kind>.safetensors` from `weights_dir`. A missing file is an error that
    /// names it and the command that makes it from the official checkpoint.
    pub fn load(weights_dir: &Path, config: IsmConfig, device: Device) -> anyhow::Result<Ism> {
        let path = weights_dir.join(dinov2::file_name(config.dino));
        config.precision.check(device).map_err(anyhow::Error::msg)?;
        let dino = dinov2::load(&path, config.dino, device.tch()).context("the ISM (--pipeline sam6d) describes proposals and templates with DINOv2")?;
        Ok(Self::from_network(dino, config, path))
    }

    /// An ISM around a network built elsewhere (benchmarks and tests at random weights);
    /// `weights_id` names its weights in template cache keys. The network is switched to the
    /// config's precision.
    pub fn from_network(mut dino: Dinov2, config: IsmConfig, weights_id: PathBuf) -> Ism {
        if config.precision != Precision::F32 {
            dino.to_kind(config.precision.kind());
        }
        Ism { device: dino.device(), dino, config, weights: weights_id }
    }

    pub fn config(&self) -> IsmConfig {
        self.config
    }

    /// The object's template descriptors: from the cache in `cache_dir` when an entry matches,
    /// else rendered and described now (and stored).
    pub fn templates(&self, model: &ObjectModel, cache_dir: Option<&Path>) -> anyhow::Result<ObjectTemplates> {
        let key = self.cache_key(model);
        let rotations = templates::level0_rotations();
        let cad_samples_m = cad_samples_m(model);
        if let Some([cls, patches]) = cache_dir.and_then(|d| cache::load(d, key, ["cls", "patches"], self.device)) {
            tracing::info!("templates of {} from the cache", model.name);
            return Ok(ObjectTemplates { rotations, reference: Descriptors { cls, patches }, cad_samples_m });
        }
        let t0 = std::time::Instant::now();
        let views = templates::render_templates(&model.mesh);
        let render_ms = t0.elapsed().as_secs_f64() * 1e3;
        let rgbs: Vec<_> = views.iter().map(|v| v.rgb.clone()).collect();
        let masks: Vec<_> = views.iter().map(|v| v.mask.clone()).collect();
        // Q1: the reference's custom script describes templates without ImageNet normalisation.
        let normalize = self.config.mode == Mode::Fixed;
        let (images, masks224) = descriptors::template_batch(&rgbs, &masks, normalize, self.device)?;
        let mut reference = self.describe(&images, &masks224);
        // A view that shows nothing (a flat part edge-on) must match nothing: its class token,
        // zeroed, has cosine 0 with every proposal (its patches are all invalid already).
        let blank = descriptors::blank_views(&masks224);
        let n_blank = blank.sum(Kind::Int64).int64_value(&[]);
        anyhow::ensure!(n_blank < blank.size()[0], "none of the {} template views shows {}: is the mesh empty or degenerate?", blank.size()[0], model.name);
        if n_blank > 0 {
            tracing::warn!("{n_blank} of {} template views show nothing of {} (seen edge-on?): they match no proposal", blank.size()[0], model.name);
            let keep = blank.logical_not().unsqueeze(1).to_kind(reference.cls.kind());
            reference.cls = &reference.cls * keep;
        }
        tracing::info!(
            "templates of {}: rendered in {render_ms:.0} ms, described in {:.0} ms",
            model.name,
            t0.elapsed().as_secs_f64() * 1e3 - render_ms
        );
        if let Some(dir) = cache_dir {
            cache::store(dir, key, &[("cls", &reference.cls), ("patches", &reference.patches)]);
        }
        Ok(ObjectTemplates { rotations, reference, cad_samples_m })
    }

    /// Scores every proposal against the object's templates; the kept ones (semantic score
    /// above the reference's 0.2), in proposal order.
    pub fn detect(&self, frame: &Frame, proposals: &[Proposal], t: &ObjectTemplates) -> anyhow::Result<Vec<IsmScores>> {
        let query = descriptors::query_batch(&frame.rgb, proposals, self.device);
        if query.kept.is_empty() {
            return Ok(Vec::new());
        }
        let described = self.describe(&query.images, &query.masks);
        Ok(score::score_proposals(
            &described,
            &query.kept,
            &t.reference,
            &t.rotations,
            proposals,
            &frame.depth,
            &frame.camera,
            &t.cad_samples_m,
            self.config.mode,
        ))
    }

    /// DINOv2 descriptors of (N,3,224,224) crops and their (N,224,224) masks, in chunks.
    fn describe(&self, images: &Tensor, masks: &Tensor) -> Descriptors {
        tch::no_grad(|| {
            let n = images.size()[0];
            let tokens: Vec<Tensor> = (0..n).step_by(CHUNK as usize).map(|s| self.dino.forward(&images.narrow(0, s, CHUNK.min(n - s)))).collect();
            descriptors::descriptors(&Tensor::cat(&tokens, 0), masks, 14)
        })
    }

    fn cache_key(&self, model: &ObjectModel) -> cache::Key {
        cache::Key::versioned()
            .str(&format!("{:?} {:?} {}", self.config.dino, self.config.mode, self.config.precision))
            .file(&self.weights)
            .mesh(&model.mesh)
    }
}

/// The geometric score's CAD points: area-uniform surface samples, metres. Seeded, unlike the
/// reference's trimesh sampling (Q16), so results repeat.
fn cad_samples_m(model: &ObjectModel) -> Vec<[f32; 3]> {
    let (points, _) = model.mesh.sample_surface(CAD_SAMPLES, 2048);
    points.iter().map(|p| [p.x / 1000.0, p.y / 1000.0, p.z / 1000.0]).collect()
}


/// Detections scoring at most this are not searched for a pose (the reference PEM's
/// `det_score_thresh`).
pub const MIN_SCORE: f32 = 0.2;
/// Box IoU above which the lower-scoring of two detections counts as a duplicate: the BOP
/// path's `nms_thresh`. The custom script keeps every overlapping proposal (Q20); the pose
/// search gains nothing from duplicates, so they are dropped here.
pub const NMS_IOU: f32 = 0.25;

/// The proposals the pose stage searches: best ISM score first, scores above [`MIN_SCORE`],
/// duplicates dropped, at most `max`. Indices into `proposals`.
pub fn select(scores: &[IsmScores], proposals: &[Proposal], max: usize) -> Vec<usize> {
    let candidates: Vec<(usize, f32)> = scores.iter().filter(|s| s.score > MIN_SCORE && s.index < proposals.len()).map(|s| (s.index, s.score)).collect();
    distinct_best(&candidates, proposals, max).into_iter().map(|k| candidates[k].0).collect()
}

/// Greedy non-maximum suppression on the proposals' boxes: `candidates` are (proposal index,
/// score); returns positions into `candidates`, best score first, none overlapping a better one
/// by IoU > [`NMS_IOU`], at most `max`.
pub(crate) fn distinct_best(candidates: &[(usize, f32)], proposals: &[Proposal], max: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    order.sort_by(|&a, &b| candidates[b].1.total_cmp(&candidates[a].1));
    let bbox = |k: usize| &proposals[candidates[k].0].bbox;
    let mut kept: Vec<usize> = Vec::new();
    for k in order {
        if kept.len() == max {
            break;
        }
        if kept.iter().all(|&j| box_iou(bbox(j), bbox(k)) <= NMS_IOU) {
            kept.push(k);
        }
    }
    kept
}

/// IoU of two boxes with inclusive max corners (SAM's).
fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let area = |r: &[f32; 4]| (r[2] - r[0] + 1.0).max(0.0) * (r[3] - r[1] + 1.0).max(0.0);
    let iw = (a[2].min(b[2]) - a[0].max(b[0]) + 1.0).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1]) + 1.0).max(0.0);
    let inter = iw * ih;
    let union = area(a) + area(b) - inter;
    if union > 0.0 { inter / union } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(bbox: [f32; 4]) -> Proposal {
        Proposal { width: 4, height: 4, mask: vec![false; 16], bbox, predicted_iou: 0.9, stability_score: 0.97 }
    }

    fn scored(index: usize, score: f32) -> IsmScores {
        IsmScores { index, semantic: 0.5, appearance: 0.5, geometric: 0.5, visible_ratio: 1.0, score, best_template: 0 }
    }

    #[test]
    fn select_keeps_the_best_non_overlapping_detections_above_the_threshold() {
        let proposals = [
            proposal([0.0, 0.0, 9.0, 9.0]),
            proposal([1.0, 1.0, 10.0, 10.0]), // IoU 0.68 with #0: a duplicate
            proposal([20.0, 20.0, 29.0, 29.0]),
            proposal([40.0, 40.0, 49.0, 49.0]),
        ];
        let scores = [scored(0, 0.6), scored(1, 0.7), scored(2, 0.5), scored(3, 0.2)];
        // #1 beats its duplicate #0; #3 is not above 0.2.
        assert_eq!(select(&scores, &proposals, 10), vec![1, 2]);
        assert_eq!(select(&scores, &proposals, 1), vec![1]);
        assert!(select(&[], &proposals, 10).is_empty());
    }

    #[test]
    fn template_views_that_show_nothing_match_nothing() {
        tch::manual_seed(0);
        let vs = tch::nn::VarStore::new(tch::Device::Cpu);
        let dino = Dinov2::new(&vs.root(), &dinov2::Dinov2Config::custom(32, 1, 2, 16, false));
        let ism = Ism::from_network(dino, IsmConfig { dino: DinoKind::VitS14, ..IsmConfig::default() }, PathBuf::from("random"));
        let sheet = crate::geometry::shapes::cuboid(60.0, 40.0, 0.0);
        let edge_on: Vec<bool> = templates::render_templates(&sheet).iter().map(|v| !v.mask.contains(&true)).collect();
        assert!(edge_on.contains(&true) && edge_on.contains(&false));
        let t = ism.templates(&ObjectModel::from_mesh("sheet", sheet).unwrap(), None).unwrap();
        let norms: Vec<f32> = Vec::try_from(t.reference.cls.norm_scalaropt_dim(2, [1i64], false)).unwrap();
        assert_eq!(norms.len(), edge_on.len(), "one descriptor per view, in view order");
        for (view, (&n, &blank)) in norms.iter().zip(&edge_on).enumerate() {
            assert_eq!(n == 0.0, blank, "view {view}: class-token norm {n}");
        }
    }

    #[test]
    fn box_iou_uses_inclusive_corners() {
        assert_eq!(box_iou(&[0.0, 0.0, 9.0, 9.0], &[0.0, 0.0, 9.0, 9.0]), 1.0);
        assert_eq!(box_iou(&[0.0, 0.0, 9.0, 9.0], &[10.0, 0.0, 19.0, 9.0]), 0.0);
        // Two 10×10 boxes sharing a 5×10 half: 50 / 150.
        assert!((box_iou(&[0.0, 0.0, 9.0, 9.0], &[5.0, 0.0, 14.0, 9.0]) - 1.0 / 3.0).abs() < 1e-6);
    }
}
