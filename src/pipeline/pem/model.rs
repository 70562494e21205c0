//! The whole Pose Estimation Model (reference: `pose_estimation_model.Net` with
//! `ViTEncoder.forward` / `get_obj_feats`; spec: sam6d-pipeline.md §5.4–5.10): RGB features at
//! the sampled pixels, normalisation by the template radius, sparse sets by farthest point
//! sampling, geometric embeddings, then the coarse and the fine matching stage.
//!
//! [`Pem::object_features`] runs once per object (its templates' points and features, §5.2);
//! [`Pem::forward`] once per batch of detections of that object. The network's parameters
//! carry the checkpoint's names (`feature_extraction.*`, `geo_embedding.*`,
//! `coarse_point_matching.*`, `fine_point_matching.*`: 462 tensors, manifest-pem-base.json).
use super::coarse_point_matching::{CoarsePointMatching, MatchingConfig};
use super::feature_extraction::{FeatureExtraction, FeatureExtractionConfig};
use super::fine_point_matching::FinePointMatching;
use super::geo_embedding::{GeoEmbedding, GeoEmbeddingConfig};
use super::point_ops;
use super::pose_solver;
use super::shared::once_per_object;
use anyhow::Context;
use std::path::Path;
use tch::{nn, Device, Kind, Tensor};

/// Name prefixes of the PEM's tensors (all of the checkpoint).
pub const PREFIXES: &[&str] = &["feature_extraction.", "geo_embedding.", "coarse_point_matching.", "fine_point_matching."];
/// The official checkpoint's file name.
pub const OFFICIAL_FILE: &str = "sam-6d-pem-base.pth";
/// The converted weights' file name in the weights directory.
pub const FILE_NAME: &str = "sam6d_pem_base.safetensors";
/// Added to the radius before dividing by it (as the reference).
const RADIUS_EPS: f64 = 1e-6;
/// The background point prepended to each sparse set for the geometric embedding.
const BG_POINT: f64 = 100.0;
/// Templates run through the ViT together (memory bound, not a result change).
const TEMPLATE_CHUNK: usize = 8;
/// Detections per forward pass (see [`Pem::estimate`]).
const DETECTIONS_PER_FORWARD_CPU: i64 = 4;
const DETECTIONS_PER_FORWARD_CUDA: i64 = 8;

/// BatchNorm's step counter: the reference's loader tolerates its absence (gorilla
/// `load_checkpoint`), and inference never reads it.
pub fn tolerated_missing(name: &str) -> bool {
    name.ends_with(".num_batches_tracked")
}

/// Sizes of the network (`model` in `config/base.yaml`); tests shrink them.
#[derive(Clone, Debug, PartialEq)]
pub struct PemConfig {
    pub feature_extraction: FeatureExtractionConfig,
    pub geo_embedding: GeoEmbeddingConfig,
    pub coarse: MatchingConfig,
    pub fine: MatchingConfig,
    /// Sparse points per set (`coarse_npoint`, 196).
    pub coarse_npoint: i64,
    /// Dense template points (`fine_npoint`, 2048).
    pub fine_npoint: i64,
    /// Coarse hypotheses drawn / kept (`nproposal1` 6000, `nproposal2` 300).
    pub n_proposal1: i64,
    pub n_proposal2: i64,
}

impl PemConfig {
    /// The released checkpoint's configuration.
    pub fn base() -> Self {
        PemConfig {
            feature_extraction: FeatureExtractionConfig::base(),
            geo_embedding: GeoEmbeddingConfig::default(),
            coarse: MatchingConfig::base(),
            fine: MatchingConfig::base(),
            coarse_npoint: 196,
            fine_npoint: 2048,
            n_proposal1: 6000,
            n_proposal2: 300,
        }
    }
}

impl PemConfig {
    /// A few-kilobyte network for unit tests of code around the PEM.
    #[cfg(test)]
    pub(crate) fn tiny() -> Self {
        PemConfig {
            feature_extraction: FeatureExtractionConfig { embed_dim: 32, depth: 4, heads: 2, out_dim: 16, num_classes: 3 },
            geo_embedding: GeoEmbeddingConfig { hidden_dim: 16, ..Default::default() },
            coarse: MatchingConfig { input_dim: 16, hidden_dim: 16, out_dim: 16, nblock: 1 },
            fine: MatchingConfig { input_dim: 16, hidden_dim: 16, out_dim: 16, nblock: 1 },
            coarse_npoint: 8,
            fine_npoint: 32,
            n_proposal1: 20,
            n_proposal2: 5,
        }
    }
}

impl Default for PemConfig {
    fn default() -> Self {
        Self::base()
    }
}

/// One batch of detections of one object (the reference's `end_points`).
#[derive(Debug)]
pub struct PemBatch {
    /// Observed points (B, N, 3), metres, camera frame.
    pub pts: Tensor,
    /// Network images (B, 3, 224, 224) (see `inputs`).
    pub rgb: Tensor,
    /// Feature-map indices of the observed points (B, N).
    pub rgb_choose: Tensor,
    /// CAD samples (B, M, 3), metres, model frame.
    pub model: Tensor,
    /// Template points (B, fine_npoint, 3), metres, and features (B, fine_npoint, C), from
    /// [`Pem::object_features`] (expanded over the batch).
    pub dense_po: Tensor,
    pub dense_fo: Tensor,
}

/// The network's results and the intermediate values parity tests compare.
#[derive(Debug)]
pub struct PemOutput {
    /// (B, 3, 3), model → camera.
    pub pred_r: Tensor,
    /// (B, 3), metres.
    pub pred_t: Tensor,
    /// (B,), the network's pose score (the product multiplies it by the detection score).
    pub pose_score: Tensor,
    /// (B,): max norm of the template points, metres (Q14: not the CAD radius).
    pub radius: Tensor,
    /// Sparse indices into the dense observed / template points (B, coarse_npoint).
    pub fps_idx_m: Tensor,
    pub fps_idx_o: Tensor,
    /// Coarse pose, normalised units.
    pub init_r: Tensor,
    pub init_t: Tensor,
    pub coarse_similarity: Tensor,
    pub fine_similarity: Tensor,
}

#[derive(Debug)]
pub struct Pem {
    cfg: PemConfig,
    device: Device,
    pub feature_extraction: FeatureExtraction,
    pub geo_embedding: GeoEmbedding,
    pub coarse_point_matching: CoarsePointMatching,
    pub fine_point_matching: FinePointMatching,
}

impl Pem {
    /// The network under `p` (its root: names as in the checkpoint), random weights.
    pub fn new(p: &nn::Path, cfg: &PemConfig) -> Pem {
        Pem {
            cfg: cfg.clone(),
            device: p.device(),
            feature_extraction: FeatureExtraction::with_config(p / "feature_extraction", &cfg.feature_extraction),
            geo_embedding: GeoEmbedding::with_config(p / "geo_embedding", &cfg.geo_embedding),
            coarse_point_matching: CoarsePointMatching::with_config(p / "coarse_point_matching", &cfg.coarse),
            fine_point_matching: FinePointMatching::with_config(p / "fine_point_matching", &cfg.fine),
        }
    }

    pub fn config(&self) -> &PemConfig {
        &self.cfg
    }

    /// Runs the ViT-B feature extractor in `kind` (bf16 on a CPU with bf16 dot products is
    /// ~3× faster) while the matching stages and the solver stay as they are: their features
    /// are converted to the matching stages' kind.
    pub fn set_backbone_kind(&self, kind: Kind) {
        self.feature_extraction.to_kind(kind);
    }

    pub fn device(&self) -> Device {
        self.device
    }

    /// The released network from converted weights (`sam6d weights convert
    /// sam-6d-pem-base.pth`), loaded strictly: every tensor must fit, none may be left over
    /// (BatchNorm's `num_batches_tracked` may be absent, as the reference tolerates).
    pub fn load(path: &Path, device: Device) -> anyhow::Result<Pem> {
        if !path.is_file() {
            anyhow::bail!(
                "PEM weights {} not found: convert the official {OFFICIAL_FILE} once with `sam6d weights convert {OFFICIAL_FILE} --out {}`",
                path.display(),
                path.display()
            );
        }
        let vs = nn::VarStore::new(device);
        let net = tch::no_grad(|| Pem::new(&vs.root(), &PemConfig::base()));
        let tensors = Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
        let mut report = crate::nn::load_named(&vs, &tensors, PREFIXES).with_context(|| format!("{} does not fit the PEM", path.display()))?;
        report.missing.retain(|n| !tolerated_missing(n));
        report.add_foreign(&tensors, PREFIXES);
        if let Some(m) = report.mismatch() {
            anyhow::bail!("{} does not fit the PEM: {m}; `sam6d weights check {}` lists every difference", path.display(), path.display());
        }
        Ok(net)
    }

    /// The object's template points and features (`get_obj_feats`, §5.2): every template's
    /// image through the feature extractor, the features at its sampled pixels, all templates
    /// concatenated, then farthest point sampling down to `fine_npoint`.
    /// `templates`: (rgb (3, 224, 224), pts (K, 3) metres, rgb_choose (K)) per view.
    /// → (dense_po (1, fine_npoint, 3) metres, dense_fo (1, fine_npoint, C)).
    pub fn object_features(&self, templates: &[(&Tensor, &Tensor, &Tensor)]) -> (Tensor, Tensor) {
        let _guard = tch::no_grad_guard();
        let mut feats = Vec::with_capacity(templates.len());
        for chunk in templates.chunks(TEMPLATE_CHUNK) {
            let rgb = Tensor::stack(&chunk.iter().map(|t| t.0.to_device(self.device)).collect::<Vec<_>>(), 0);
            let map = self.feature_extraction.forward(&rgb);
            for (i, t) in chunk.iter().enumerate() {
                let choose = t.2.to_device(self.device).unsqueeze(0);
                feats.push(FeatureExtraction::features_at(&map.narrow(0, i as i64, 1), &choose));
            }
        }
        let pts = Tensor::cat(&templates.iter().map(|t| t.1.to_device(self.device).to_kind(Kind::Float)).collect::<Vec<_>>(), 0).unsqueeze(0);
        let feats = Tensor::cat(&feats, 1).to_kind(self.coarse_point_matching.kind());
        let (po, fo, _) = sample_points_features(&pts, &feats, self.cfg.fine_npoint);
        (po, fo)
    }

    /// One batch of detections → poses (§5.5, §5.8–5.10). `uniforms` (B, 3·n_proposal1): the
    /// coarse stage's hypothesis draws (see [`pose_solver::hypothesis_uniforms`]).
    pub fn forward(&self, batch: &PemBatch, uniforms: &Tensor) -> PemOutput {
        let _guard = tch::no_grad_guard();
        let dev = self.device;
        if batch.pts.size()[0] == 0 {
            // Q9: the reference crashes on an empty batch; here no detection, no pose.
            return self.empty_output(batch.pts.size()[1]);
        }
        let map = self.feature_extraction.forward(&batch.rgb.to_device(dev));
        let kind = self.coarse_point_matching.kind();
        let dense_fm = FeatureExtraction::features_at(&map, &batch.rgb_choose.to_device(dev)).to_kind(kind);
        let dense_fo = batch.dense_fo.to_device(dev).to_kind(kind);
        let float = |t: &Tensor| t.to_device(dev).to_kind(Kind::Float);
        let dense_po_m = float(&batch.dense_po);
        // Normalise every point set by the template radius (Q14).
        let radius = dense_po_m.norm_scalaropt_dim(2, [2i64], false).amax([1i64], false);
        let scale = (&radius + RADIUS_EPS).view([-1, 1, 1]);
        let dense_pm = float(&batch.pts) / &scale;
        let dense_po = dense_po_m / &scale;
        let model = float(&batch.model) / &scale;

        let b = dense_pm.size()[0];
        let bg = Tensor::full([b, 1, 3], BG_POINT, (Kind::Float, dev));
        let (sparse_pm, sparse_fm, fps_idx_m) = sample_points_features(&dense_pm, &dense_fm, self.cfg.coarse_npoint);
        let geo_m = self.geo_embedding.forward(&Tensor::cat(&[&bg, &sparse_pm], 1));
        // A frame's detections are all posed against one object: its sparse set and geometric
        // embedding (a third of the coarse stage's cost) are computed once for the batch.
        let ((sparse_po, sparse_fo, fps_idx_o), geo_o) = once_per_object(&[&dense_po, &dense_fo], |rows| {
            let (po, fo, idx) = sample_points_features(&rows[0], &rows[1], self.cfg.coarse_npoint);
            let geo = self.geo_embedding.forward(&Tensor::cat(&[&bg.narrow(0, 0, po.size()[0]), &po], 1));
            ((po, fo, idx), geo)
        });

        let coarse = self.coarse_point_matching.forward(&sparse_pm, &sparse_fm, &geo_m, &sparse_po, &sparse_fo, &geo_o, &model, &uniforms.to_device(dev), self.cfg.n_proposal1, self.cfg.n_proposal2);
        let fine = self.fine_point_matching.forward(&dense_pm, &dense_fm, &geo_m, &fps_idx_m, &dense_po, &dense_fo, &geo_o, &fps_idx_o, &coarse.init_r, &coarse.init_t, &model);
        PemOutput {
            pred_t: &fine.t * (&radius + RADIUS_EPS).view([-1, 1]),
            pred_r: fine.r,
            pose_score: fine.pose_score,
            radius,
            fps_idx_m,
            fps_idx_o,
            init_r: coarse.init_r,
            init_t: coarse.init_t,
            coarse_similarity: coarse.similarity,
            fine_similarity: fine.similarity,
        }
    }

    /// The results of a batch of no detections (n observed points each): every tensor with a
    /// leading 0, otherwise shaped as [`Pem::forward`]'s.
    fn empty_output(&self, n: i64) -> PemOutput {
        let f = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, self.device));
        let idx = || Tensor::zeros([0, self.cfg.coarse_npoint], (Kind::Int64, self.device));
        let s = 1 + self.cfg.coarse_npoint;
        PemOutput {
            pred_r: f(&[0, 3, 3]),
            pred_t: f(&[0, 3]),
            pose_score: f(&[0]),
            radius: f(&[0]),
            fps_idx_m: idx(),
            fps_idx_o: idx(),
            init_r: f(&[0, 3, 3]),
            init_t: f(&[0, 3]),
            coarse_similarity: f(&[0, s, s]),
            fine_similarity: f(&[0, 1 + n, 1 + n]),
        }
    }

    /// [`Pem::forward`] with the hypothesis draws from torch's RNG (seed it for repeatability),
    /// [`Pem::detections_per_forward`] detections at a time: a crowded frame's dozens of
    /// detections in one batch would need ~0.6 GB each. All draws are made first, as for one
    /// batch, so the results do not depend on the split.
    pub fn estimate(&self, batch: &PemBatch) -> PemOutput {
        let b = batch.pts.size()[0];
        self.forward_in_chunks(batch, &pose_solver::hypothesis_uniforms(b, self.cfg.n_proposal1, self.device))
    }

    /// [`Pem::forward`] on [`Pem::detections_per_forward`] detections at a time.
    fn forward_in_chunks(&self, batch: &PemBatch, uniforms: &Tensor) -> PemOutput {
        let b = batch.pts.size()[0];
        let step = self.detections_per_forward();
        if b <= step {
            return self.forward(batch, uniforms);
        }
        let parts: Vec<PemOutput> = (0..b).step_by(step as usize).map(|i| {
            let n = step.min(b - i);
            self.forward(&batch.narrow(i, n), &uniforms.narrow(0, i, n))
        }).collect();
        PemOutput::cat(&parts)
    }

    /// How many detections one forward pass takes (about 0.6 GB each): a few on a CPU (memory,
    /// not speed, is what batching changes there), more on a GPU (8: about 5 GB).
    pub fn detections_per_forward(&self) -> i64 {
        if self.device.is_cuda() { DETECTIONS_PER_FORWARD_CUDA } else { DETECTIONS_PER_FORWARD_CPU }
    }
}

impl PemBatch {
    /// Detections `start..start + len`.
    pub fn narrow(&self, start: i64, len: i64) -> PemBatch {
        let n = |t: &Tensor| t.narrow(0, start, len);
        PemBatch { pts: n(&self.pts), rgb: n(&self.rgb), rgb_choose: n(&self.rgb_choose), model: n(&self.model), dense_po: n(&self.dense_po), dense_fo: n(&self.dense_fo) }
    }
}

impl PemOutput {
    /// The outputs of consecutive batches as one.
    fn cat(parts: &[PemOutput]) -> PemOutput {
        let cat = |f: fn(&PemOutput) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
        PemOutput {
            pred_r: cat(|o| &o.pred_r),
            pred_t: cat(|o| &o.pred_t),
            pose_score: cat(|o| &o.pose_score),
            radius: cat(|o| &o.radius),
            fps_idx_m: cat(|o| &o.fps_idx_m),
            fps_idx_o: cat(|o| &o.fps_idx_o),
            init_r: cat(|o| &o.init_r),
            init_t: cat(|o| &o.init_t),
            coarse_similarity: cat(|o| &o.coarse_similarity),
            fine_similarity: cat(|o| &o.fine_similarity),
        }
    }
}

/// `sample_pts_feats`: farthest point sampling of `pts` (B, N, 3) to `npoint`, the points and
/// features (B, N, C) at those indices → (pts (B, npoint, 3), feats (B, npoint, C), idx (B, npoint)).
pub fn sample_points_features(pts: &Tensor, feats: &Tensor, npoint: i64) -> (Tensor, Tensor, Tensor) {
    let idx = point_ops::furthest_point_sample(pts, npoint);
    let p = point_ops::gather(&pts.transpose(1, 2), &idx).transpose(1, 2);
    let f = point_ops::gather(&feats.transpose(1, 2), &idx).transpose(1, 2);
    (p, f, idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_names_a_missing_file() {
        let err = Pem::load(Path::new("/nonexistent/sam6d_pem_base.safetensors"), Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/sam6d_pem_base.safetensors") && err.contains(OFFICIAL_FILE) && err.contains("sam6d weights convert"), "{err}");
    }

    #[test]
    fn small_network_runs_end_to_end() {
        tch::manual_seed(0);
        let cfg = PemConfig::tiny();
        let vs = nn::VarStore::new(Device::Cpu);
        let pem = Pem::new(&vs.root(), &cfg);
        let opts = (Kind::Float, Device::Cpu);
        let tem_rgb = Tensor::randn([3, 224, 224], opts);
        let tem_pts = Tensor::randn([40, 3], opts) * 0.05;
        let tem_choose = Tensor::randint(224 * 224, [40], (Kind::Int64, Device::Cpu));
        let (po, fo) = pem.object_features(&[(&tem_rgb, &tem_pts, &tem_choose), (&tem_rgb, &tem_pts, &tem_choose)]);
        assert_eq!((po.size(), fo.size()), (vec![1, 32, 3], vec![1, 32, 16]));
        let b = 2;
        let batch = PemBatch {
            pts: Tensor::randn([b, 32, 3], opts) * 0.05 + Tensor::from_slice(&[0f32, 0., 0.7]),
            rgb: Tensor::randn([b, 3, 224, 224], opts),
            rgb_choose: Tensor::randint(224 * 224, [b, 32], (Kind::Int64, Device::Cpu)),
            model: Tensor::randn([b, 24, 3], opts) * 0.05,
            dense_po: po.expand([b, 32, 3], false),
            dense_fo: fo.expand([b, 32, 16], false),
        };
        let out = pem.estimate(&batch);
        assert_eq!(out.pred_r.size(), [b, 3, 3]);
        assert_eq!(out.pred_t.size(), [b, 3]);
        assert_eq!(out.pose_score.size(), [b]);
        assert_eq!(out.coarse_similarity.size(), [b, 9, 9]);
        assert_eq!(out.fine_similarity.size(), [b, 33, 33]);
        // Rotations: RᵀR = I.
        let eye = out.pred_r.transpose(1, 2).matmul(&out.pred_r) - Tensor::eye(3, opts);
        assert!(eye.abs().max().double_value(&[]) < 1e-4);
    }

    fn random_batch(b: i64, po: &Tensor, fo: &Tensor) -> PemBatch {
        let opts = (Kind::Float, Device::Cpu);
        PemBatch {
            pts: Tensor::randn([b, 32, 3], opts) * 0.05 + Tensor::from_slice(&[0f32, 0., 0.7]),
            rgb: Tensor::randn([b, 3, 224, 224], opts),
            rgb_choose: Tensor::randint(224 * 224, [b, 32], (Kind::Int64, Device::Cpu)),
            model: Tensor::randn([b, 24, 3], opts) * 0.05,
            dense_po: po.expand([b, -1, -1], false),
            dense_fo: fo.expand([b, -1, -1], false),
        }
    }

    fn tiny_object(pem: &Pem) -> (Tensor, Tensor) {
        let opts = (Kind::Float, Device::Cpu);
        let tem_rgb = Tensor::randn([3, 224, 224], opts);
        let tem_pts = Tensor::randn([40, 3], opts) * 0.05;
        let tem_choose = Tensor::randint(224 * 224, [40], (Kind::Int64, Device::Cpu));
        pem.object_features(&[(&tem_rgb, &tem_pts, &tem_choose)])
    }

    #[test]
    fn many_detections_go_in_chunks_with_the_same_results() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let pem = Pem::new(&vs.root(), &PemConfig::tiny());
        let (po, fo) = tiny_object(&pem);
        let b = 2 * pem.detections_per_forward() + 1;
        let batch = random_batch(b, &po, &fo);
        // The same draws for both (torch's RNG is shared with tests running in parallel).
        let uniforms = pose_solver::hypothesis_uniforms(b, pem.config().n_proposal1, Device::Cpu);
        let chunked = pem.forward_in_chunks(&batch, &uniforms);
        let whole = pem.forward(&batch, &uniforms);
        let diff = |a: &Tensor, c: &Tensor| (a - c).abs().max().double_value(&[]);
        assert_eq!(chunked.pred_r.size(), [b, 3, 3]);
        // Batches of other sizes round a little differently (the parity tolerances apply).
        assert!(diff(&chunked.pred_r, &whole.pred_r) < 1e-4);
        assert!(diff(&chunked.pred_t, &whole.pred_t) < 1e-5);
        // The score counts observed points (matched to the object, not the background token,
        // and near the CAD model) in steps of 1/N: at random weights the match is often a
        // near-tie that rounding flips (it failed a 1e-4 bound twice, in full runs only), so
        // a point or two may count differently.
        let point = 1.0 / batch.pts.size()[1] as f64;
        let d = diff(&chunked.pose_score, &whole.pose_score);
        assert!(d < 2.0 * point + 1e-4, "scores {} vs {}", chunked.pose_score, whole.pose_score);
        assert_eq!(diff(&chunked.fps_idx_m, &whole.fps_idx_m), 0.0);
    }

    #[test]
    fn template_work_shared_by_a_batch_equals_each_detection_alone() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let pem = Pem::new(&vs.root(), &PemConfig::tiny());
        let (po, fo) = tiny_object(&pem);
        let batch = random_batch(3, &po, &fo);
        let uniforms = pose_solver::hypothesis_uniforms(3, pem.config().n_proposal1, Device::Cpu);
        let together = pem.forward(&batch, &uniforms);
        let diff = |a: &Tensor, c: &Tensor| (a - c).abs().max().double_value(&[]);
        for i in 0..3 {
            let alone = pem.forward(&batch.narrow(i, 1), &uniforms.narrow(0, i, 1));
            assert_eq!(diff(&together.fps_idx_o.narrow(0, i, 1), &alone.fps_idx_o), 0.0);
            // Float rounding only (the parity tolerances): a wrongly shared object is off by O(1).
            assert!(diff(&together.coarse_similarity.narrow(0, i, 1), &alone.coarse_similarity) < 1e-4);
            assert!(diff(&together.fine_similarity.narrow(0, i, 1), &alone.fine_similarity) < 1e-4);
            assert!(diff(&together.pred_r.narrow(0, i, 1), &alone.pred_r) < 1e-4);
            assert!(diff(&together.pred_t.narrow(0, i, 1), &alone.pred_t) < 1e-5);
        }
        // Different objects in one batch take the general path, with the same per-element results.
        let (po2, fo2) = tiny_object(&pem);
        let mixed = PemBatch { dense_po: Tensor::cat(&[&po, &po2], 0), dense_fo: Tensor::cat(&[&fo, &fo2], 0), ..batch.narrow(0, 2) };
        let out = pem.forward(&mixed, &uniforms.narrow(0, 0, 2));
        let second = pem.forward(&mixed.narrow(1, 1), &uniforms.narrow(0, 1, 1));
        assert!(diff(&out.pred_r.narrow(0, 1, 1), &second.pred_r) < 1e-4);
        assert!(diff(&out.fine_similarity.narrow(0, 1, 1), &second.fine_similarity) < 1e-4);
    }

    #[test]
    fn a_bf16_backbone_feeds_f32_matching() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let pem = Pem::new(&vs.root(), &PemConfig::tiny());
        let (po, fo) = tiny_object(&pem);
        let batch = random_batch(2, &po, &fo);
        let map32 = pem.feature_extraction.forward(&batch.rgb);
        pem.set_backbone_kind(Kind::BFloat16);
        assert_eq!(pem.feature_extraction.kind(), Kind::BFloat16);
        assert_eq!(pem.coarse_point_matching.kind(), Kind::Float);
        let map16 = pem.feature_extraction.forward(&batch.rgb);
        assert_eq!(map16.kind(), Kind::BFloat16);
        let rel = (map16.to_kind(Kind::Float) - &map32).norm().double_value(&[]) / map32.norm().double_value(&[]);
        assert!(rel > 0.0 && rel < 0.02, "bf16 features off by {rel} (relative)");
        // The object's features come out in the matching stages' kind, and a pass runs.
        let (po16, fo16) = tiny_object(&pem);
        assert_eq!(fo16.kind(), Kind::Float);
        let out = pem.estimate(&random_batch(2, &po16, &fo16));
        assert_eq!(out.pred_r.kind(), Kind::Float);
    }
}
