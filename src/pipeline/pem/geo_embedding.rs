//! The geometric structure embedding of the PEM (reference:
//! `transformer.GeometricStructureEmbedding`, GeoTransformer's; spec: sam6d-pipeline.md §5.6).
//!
//! For a point set (the sparse points with the background point first) it gives every ordered
//! pair (i, j) a d-dimensional embedding of their distance and of the angles that p_j − p_i makes
//! with the vectors from p_i to its k nearest neighbours. The geometric self-attention layers use
//! it as a relative position term; one module (`geo_embedding.*`) serves both point sets and
//! both matching stages.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Settings of `model.geo_embedding` in the reference's `base.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct GeoEmbeddingConfig {
    /// Embedding width (`hidden_dim`, 256).
    pub hidden_dim: i64,
    /// Distance unit (`sigma_d`, 0.2 in normalised units).
    pub sigma_d: f64,
    /// Angle unit in degrees (`sigma_a`, 15).
    pub sigma_a: f64,
    /// Neighbours per point for the angles (`angle_k`, 3).
    pub angle_k: i64,
}

impl Default for GeoEmbeddingConfig {
    fn default() -> Self {
        GeoEmbeddingConfig { hidden_dim: 256, sigma_d: 0.2, sigma_a: 15.0, angle_k: 3 }
    }
}

/// `geo_embedding.{embedding.div_term, proj_d, proj_a}`; the angle embeddings are reduced by max
/// over the neighbours (`reduction_a: max`).
#[derive(Debug)]
pub struct GeoEmbedding {
    cfg: GeoEmbeddingConfig,
    /// ω_k = exp(−2k·ln(10000)/d), k = 0..d/2: a buffer in the checkpoint, loaded like the rest.
    div_term: Tensor,
    proj_d: nn::Linear,
    proj_a: nn::Linear,
}

impl GeoEmbedding {
    /// The checkpoint's configuration under `p` (`geo_embedding`).
    pub fn new(p: nn::Path) -> Self {
        Self::with_config(p, &GeoEmbeddingConfig::default())
    }

    pub fn with_config(p: nn::Path, cfg: &GeoEmbeddingConfig) -> Self {
        let d = cfg.hidden_dim;
        assert!(d % 2 == 0, "sinusoidal embedding width must be even, got {d}");
        let mut div_term = (&p / "embedding").zeros_no_train("div_term", &[d / 2]);
        tch::no_grad(|| {
            let k = Tensor::arange_start_step(0, d, 2, (Kind::Float, div_term.device()));
            div_term.copy_(&(k * (-(10000f64.ln()) / d as f64)).exp());
        });
        GeoEmbedding {
            cfg: cfg.clone(),
            div_term,
            proj_d: nn::linear(&p / "proj_d", d, d, Default::default()),
            proj_a: nn::linear(&p / "proj_a", d, d, Default::default()),
        }
    }

    /// points: (B, N, 3) → (B, N, N, d).
    pub fn forward(&self, points: &Tensor) -> Tensor {
        let (d_idx, a_idx) = self.indices(&points.to_kind(Kind::Float));
        let kind = self.proj_d.ws.kind();
        let d_emb = self.proj_d.forward(&self.sinusoid(&d_idx).to_kind(kind));
        let a_emb = self.proj_a.forward(&self.sinusoid(&a_idx).to_kind(kind)); // (B,N,N,k,d)
        d_emb + a_emb.amax(3i64, false)
    }

    /// Distance indices (B, N, N) and angle indices (B, N, N, k), f32.
    fn indices(&self, points: &Tensor) -> (Tensor, Tensor) {
        let (b, n, _) = points.size3().expect("points are B×N×3");
        // ‖p_i − p_j‖ as the reference computes it: x² − 2xy + y², clamped at 0.
        let sq = points.square().sum_dim_intlist(-1i64, false, Kind::Float);
        let xy = points.matmul(&points.transpose(1, 2));
        let dist = (sq.unsqueeze(2) - xy * 2.0 + sq.unsqueeze(1)).clamp_min(0.0).sqrt();
        let d_idx = &dist / self.cfg.sigma_d;

        // The k nearest neighbours of each point, dropping the nearest (itself).
        let k = self.cfg.angle_k;
        let (_, knn) = dist.topk(k + 1, 2, false, true);
        let knn = knn.narrow(2, 1, k); // (B,N,k)
        let knn_points = points.unsqueeze(1).expand([b, n, n, 3], false).gather(2, &knn.unsqueeze(3).expand([b, n, k, 3], false), false);
        let refs = (knn_points - points.unsqueeze(2)).unsqueeze(2); // (B,N,1,k,3)
        let anchors = (points.unsqueeze(1) - points.unsqueeze(2)).unsqueeze(3); // (B,N,N,1,3)
        let (refs, anchors) = (refs.expand([b, n, n, k, 3], false), anchors.expand([b, n, n, k, 3], false));
        let sin = refs.linalg_cross(&anchors, -1).norm_scalaropt_dim(2.0, [-1], false);
        let cos = (&refs * &anchors).sum_dim_intlist(-1i64, false, Kind::Float);
        let factor_a = 180.0 / (self.cfg.sigma_a * std::f64::consts::PI);
        (d_idx, sin.atan2(&cos) * factor_a)
    }

    /// Interleaved sinusoids: x (…) → (…, d) with [2k] = sin(x·ω_k), [2k+1] = cos(x·ω_k).
    fn sinusoid(&self, x: &Tensor) -> Tensor {
        let omegas = x.unsqueeze(-1) * &self.div_term;
        let mut shape = x.size();
        shape.push(self.cfg.hidden_dim);
        Tensor::stack(&[omegas.sin(), omegas.cos()], -1).view(shape.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn layout_and_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let g = GeoEmbedding::with_config(vs.root() / "geo_embedding", &GeoEmbeddingConfig { hidden_dim: 8, ..Default::default() });
        let v = vs.variables();
        assert_eq!(v.len(), 5);
        assert_eq!(v["geo_embedding.embedding.div_term"].size(), [4]);
        let e = g.sinusoid(&Tensor::from_slice(&[0.5f32]));
        let w = f64::exp(-2.0 * 10000f64.ln() / 8.0);
        let got = Vec::<f32>::try_from(e.view([-1])).unwrap();
        assert!((got[0] as f64 - 0.5f64.sin()).abs() < 1e-6 && (got[1] as f64 - 0.5f64.cos()).abs() < 1e-6);
        assert!((got[2] as f64 - (0.5 * w).sin()).abs() < 1e-6 && (got[3] as f64 - (0.5 * w).cos()).abs() < 1e-6);
        let pts = Tensor::randn([2, 6, 3], (Kind::Float, Device::Cpu));
        assert_eq!(g.forward(&pts).size(), [2, 6, 6, 8]);
    }

    #[test]
    fn angle_indices_are_degrees_over_sigma() {
        let vs = nn::VarStore::new(Device::Cpu);
        let g = GeoEmbedding::with_config(vs.root(), &GeoEmbeddingConfig { hidden_dim: 8, angle_k: 1, ..Default::default() });
        // Point 0 at the origin; its nearest neighbour is on +x; point 2 on +y → 90° = 6 units.
        let pts = Tensor::from_slice(&[0f32, 0., 0., 1., 0., 0., 0., 3., 0.]).view([1, 3, 3]);
        let (d, a) = g.indices(&pts);
        assert!((d.double_value(&[0, 0, 2]) - 15.0).abs() < 1e-5);
        assert!((a.double_value(&[0, 0, 2, 0]) - 6.0).abs() < 1e-5);
    }
}
