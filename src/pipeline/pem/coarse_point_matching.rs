//! The PEM's coarse stage (reference: `coarse_point_matching.CoarsePointMatching`; spec:
//! sam6d-pipeline.md §5.8): the sparse observed and template tokens, each with a learned
//! background token in front, pass through geometric transformer blocks; their cosine
//! similarity gives the soft correspondences from which `compute_coarse_rt` hypothesises and
//! scores an initial pose.
//!
//! Parameters under `coarse_point_matching`: `in_proj`, `bg_token`, `transformers.{0,1,2}.*`,
//! `out_proj`.
use super::pose_solver;
use super::transformer::GeometricTransformer;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Softmax temperature of the similarity (`temp`).
pub const TEMPERATURE: f64 = 0.1;

/// Sizes of one matching stage (`model.coarse_point_matching` / `fine_point_matching`).
#[derive(Clone, Debug, PartialEq)]
pub struct MatchingConfig {
    /// Width of the incoming features (`input_dim`, the feature extractor's output).
    pub input_dim: i64,
    /// Token width (`hidden_dim`); also the geometric embedding's width.
    pub hidden_dim: i64,
    /// Width compared by the similarity (`out_dim`).
    pub out_dim: i64,
    /// Transformer blocks (`nblock`).
    pub nblock: i64,
}

impl MatchingConfig {
    /// The checkpoint's stages: 256 wide, 3 blocks.
    pub fn base() -> Self {
        MatchingConfig { input_dim: 256, hidden_dim: 256, out_dim: 256, nblock: 3 }
    }
}

/// `compute_feature_similarity(.., 'cosine', temp, normalize_feat=True)`: rows L2-normalised
/// (as `F.normalize`, eps 1e-12), f1·f2ᵀ / temp → (B, N1, N2).
pub fn cosine_similarity(f1: &Tensor, f2: &Tensor, temp: f64) -> Tensor {
    let unit = |f: &Tensor| f / f.norm_scalaropt_dim(2, [2i64], true).clamp_min(1e-12);
    unit(f1).matmul(&unit(f2).transpose(1, 2)) / temp
}

/// `[bg_token; in_proj(f)]` for a batch: f (B, N, C) → (B, 1+N, hidden).
pub(crate) fn with_bg_token(bg: &Tensor, projected: &Tensor) -> Tensor {
    let b = projected.size()[0];
    Tensor::cat(&[bg.to_kind(projected.kind()).expand([b, 1, bg.size()[2]], false), projected.shallow_clone()], 1)
}

#[derive(Debug)]
pub struct CoarsePointMatching {
    in_proj: nn::Linear,
    out_proj: nn::Linear,
    bg_token: Tensor,
    transformers: Vec<GeometricTransformer>,
}

/// What the coarse stage produced: the similarity of its last block and the initial pose.
#[derive(Debug)]
pub struct CoarseOutput {
    /// (B, 1+S, 1+S), background row/column 0.
    pub similarity: Tensor,
    /// (B, 3, 3), model → camera.
    pub init_r: Tensor,
    /// (B, 3), normalised units.
    pub init_t: Tensor,
}

impl CoarsePointMatching {
    /// The element type it computes in (its inputs are converted to it).
    pub fn kind(&self) -> tch::Kind {
        self.in_proj.ws.kind()
    }

    /// The checkpoint's stage under `p` (`coarse_point_matching`), random weights.
    pub fn new(p: nn::Path) -> Self {
        Self::with_config(p, &MatchingConfig::base())
    }

    pub fn with_config(p: nn::Path, cfg: &MatchingConfig) -> Self {
        CoarsePointMatching {
            in_proj: nn::linear(&p / "in_proj", cfg.input_dim, cfg.hidden_dim, Default::default()),
            out_proj: nn::linear(&p / "out_proj", cfg.hidden_dim, cfg.out_dim, Default::default()),
            bg_token: p.var("bg_token", &[1, 1, cfg.hidden_dim], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            transformers: (0..cfg.nblock).map(|i| GeometricTransformer::new(&p / "transformers" / i, cfg.hidden_dim)).collect(),
        }
    }

    /// Sparse observed points p1 (B, S, 3) with features f1 (B, S, C) and geometric embedding
    /// geo1 (B, 1+S, 1+S, hidden) (background point first); the template side p2, f2, geo2
    /// likewise; `model` the CAD points (B, M, 3) — all points in normalised units;
    /// `uniforms` (B, 3·n_proposal1) the hypothesis draws.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(&self, p1: &Tensor, f1: &Tensor, geo1: &Tensor, p2: &Tensor, f2: &Tensor, geo2: &Tensor, model: &Tensor, uniforms: &Tensor, n_proposal1: i64, n_proposal2: i64) -> CoarseOutput {
        let mut f1 = with_bg_token(&self.bg_token, &self.in_proj.forward(f1));
        let mut f2 = with_bg_token(&self.bg_token, &self.in_proj.forward(f2));
        for block in &self.transformers {
            (f1, f2) = block.forward(&f1, geo1, &f2, geo2);
        }
        let similarity = cosine_similarity(&self.out_proj.forward(&f1), &self.out_proj.forward(&f2), TEMPERATURE).to_kind(Kind::Float);
        let (init_r, init_t) = pose_solver::compute_coarse_rt(&similarity, &p1.to_kind(Kind::Float), &p2.to_kind(Kind::Float), &model.to_kind(Kind::Float), uniforms, n_proposal1, n_proposal2);
        CoarseOutput { similarity, init_r, init_t }
    }
}
