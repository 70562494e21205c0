//! The PEM's fine stage (reference: `fine_point_matching.FinePointMatching`; spec:
//! sam6d-pipeline.md §5.9, §5.10): all dense points, the observed ones moved into the model
//! frame by the coarse pose, get a positional encoding of their local geometry added to their
//! features; sparse-to-dense transformer blocks refine them, and `compute_fine_rt` turns the
//! final similarity into the pose and its score.
//!
//! Parameters under `fine_point_matching`: `in_proj`, `bg_token`, `PE.*`,
//! `transformers.{0,1,2}.*`, `out_proj`.
use super::coarse_point_matching::{cosine_similarity, with_bg_token, MatchingConfig, TEMPERATURE};
use super::pose_solver;
use super::positional_encoding::PositionalEncoding;
use super::transformer::{SparseToDenseTransformer, FOCUSING_FACTOR};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Distance below which an observed point counts as on the CAD surface for the pose score
/// (`compute_fine_Rt`'s default, not the YAML's `loss_dis_thres`).
pub const SCORE_DISTANCE: f64 = 0.15;

#[derive(Debug)]
pub struct FinePointMatching {
    in_proj: nn::Linear,
    out_proj: nn::Linear,
    bg_token: Tensor,
    pe: PositionalEncoding,
    transformers: Vec<SparseToDenseTransformer>,
}

/// What the fine stage produced.
#[derive(Debug)]
pub struct FineOutput {
    /// (B, 1+N, 1+N), background row/column 0.
    pub similarity: Tensor,
    /// (B, 3, 3), model → camera.
    pub r: Tensor,
    /// (B, 3), normalised units.
    pub t: Tensor,
    /// (B,).
    pub pose_score: Tensor,
}

impl FinePointMatching {
    /// The checkpoint's stage under `p` (`fine_point_matching`), random weights.
    pub fn new(p: nn::Path) -> Self {
        Self::with_config(p, &MatchingConfig::base())
    }

    pub fn with_config(p: nn::Path, cfg: &MatchingConfig) -> Self {
        FinePointMatching {
            in_proj: nn::linear(&p / "in_proj", cfg.input_dim, cfg.hidden_dim, Default::default()),
            out_proj: nn::linear(&p / "out_proj", cfg.hidden_dim, cfg.out_dim, Default::default()),
            bg_token: p.var("bg_token", &[1, 1, cfg.hidden_dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            pe: PositionalEncoding::with_out_dim(&p / "PE", cfg.hidden_dim),
            transformers: (0..cfg.nblock).map(|i| SparseToDenseTransformer::with_focusing_factor(&p / "transformers" / i, cfg.hidden_dim, FOCUSING_FACTOR)).collect(),
        }
    }

    /// Dense observed points p1 (B, N, 3), features f1 (B, N, C), the coarse stage's
    /// embedding geo1 and sparse indices fps_idx1 (B, S); the template side likewise; the
    /// coarse pose (init_r, init_t); CAD points `model` (B, M, 3). Points in normalised units.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, p1: &Tensor, f1: &Tensor, geo1: &Tensor, fps_idx1: &Tensor, p2: &Tensor, f2: &Tensor, geo2: &Tensor, fps_idx2: &Tensor, init_r: &Tensor, init_t: &Tensor, model: &Tensor) -> FineOutput {
        // Observed points in the model frame: Rᵀ(p − t), as row vectors (p − t)·R.
        let p1_model = (p1 - init_t.unsqueeze(1)).matmul(init_r);
        let kind = f1.kind();
        let mut f1 = with_bg_token(&self.bg_token, &(self.in_proj.forward(f1) + self.pe.forward(&p1_model).to_kind(kind)));
        // The template side is the same object for every detection: encode its positions once.
        let pe2 = super::shared::once_per_object(&[p2], |rows| self.pe.forward(&rows[0]));
        let mut f2 = with_bg_token(&self.bg_token, &(self.in_proj.forward(f2) + pe2.to_kind(kind)));
        for block in &self.transformers {
            (f1, f2) = block.forward(&f1, &f2, fps_idx1, fps_idx2, geo1, geo2);
        }
        let similarity = cosine_similarity(&self.out_proj.forward(&f1), &self.out_proj.forward(&f2), TEMPERATURE).to_kind(Kind::Float);
        let (r, t, pose_score) = pose_solver::compute_fine_rt(&similarity, &p1.to_kind(Kind::Float), &p2.to_kind(Kind::Float), &model.to_kind(Kind::Float), SCORE_DISTANCE);
        FineOutput { similarity, r, t, pose_score }
    }
}
