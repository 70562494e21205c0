//! The attention layers of the PEM's two matching stages (reference:
//! `Pose_Estimation_Model/model/transformer.py`; spec: sam6d-pipeline.md §5.7, §5.9 step 4).
//!
//! - [`GeometricTransformer`] (`['self', 'cross']`): geometric self-attention with relative
//!   position embeddings, then cross-attention between the observed and the template set. Used
//!   three times by the coarse stage and inside every [`SparseToDenseTransformer`].
//! - [`SparseToDenseTransformer`]: the fine stage's block. The 196 sparse tokens go through a
//!   geometric transformer; the 2048 dense tokens then attend to them with focused linear
//!   attention.
//!
//! Every layer is post-norm: `LayerNorm(x + Linear(attention))`, then the feed-forward block
//! `LayerNorm(x + Linear(ReLU(Linear(x))))`. There is no dropout at inference. Parameters are
//! created under the official checkpoint names (`layers.0.attention.attention.proj_q.weight`,
//! `dense_layer.attention.attention.scale`, …) below the path the caller gives, e.g.
//! `coarse_point_matching.transformers.0`.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Attention heads of every PEM attention layer (hard-coded by the reference).
pub const HEADS: i64 = 4;

/// The reference's focusing factor of the fine stage's linear attention (`focusing_factor`).
pub const FOCUSING_FACTOR: f64 = 3.0;

/// LayerNorm as `nn.LayerNorm(d)` (eps 1e-5).
fn layer_norm(p: nn::Path, d: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![d], Default::default())
}

/// (B, N, H·c) → (B, H, N, c).
fn split_heads(x: &Tensor) -> Tensor {
    let (b, n, d) = x.size3().expect("tokens are B×N×D");
    x.view([b, n, HEADS, d / HEADS]).transpose(1, 2)
}

/// (B, H, N, c) → (B, N, H·c).
fn merge_heads(x: &Tensor) -> Tensor {
    let (b, h, n, c) = x.size4().expect("heads are B×H×N×c");
    x.transpose(1, 2).contiguous().view([b, n, h * c])
}

/// The feed-forward block (`AttentionOutput`): `LayerNorm(x + squeeze(ReLU(expand(x))))`, hidden
/// width 2·d.
#[derive(Debug)]
struct FeedForward {
    expand: nn::Linear,
    squeeze: nn::Linear,
    norm: nn::LayerNorm,
}

impl FeedForward {
    fn new(p: nn::Path, d: i64) -> Self {
        FeedForward {
            expand: nn::linear(&p / "expand", d, 2 * d, Default::default()),
            squeeze: nn::linear(&p / "squeeze", 2 * d, d, Default::default()),
            norm: layer_norm(&p / "norm", d),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let h = self.squeeze.forward(&self.expand.forward(x).relu());
        self.norm.forward(&(x + h))
    }
}

/// The post-norm residual around an attention (`AttentionLayer.linear` / `.norm`).
#[derive(Debug)]
struct Residual {
    linear: nn::Linear,
    norm: nn::LayerNorm,
}

impl Residual {
    fn new(p: &nn::Path, d: i64) -> Self {
        Residual { linear: nn::linear(p / "linear", d, d, Default::default()), norm: layer_norm(p / "norm", d) }
    }

    fn forward(&self, input: &Tensor, attended: &Tensor) -> Tensor {
        self.norm.forward(&(self.linear.forward(attended) + input))
    }
}

/// Geometric self-attention ("self" block, `RPETransformerLayer`): scores
/// `(q_i·k_j + q_i·p_ij)/√c` with `p_ij = proj_p(emb_ij)`.
#[derive(Debug)]
struct RpeLayer {
    proj_q: nn::Linear,
    proj_k: nn::Linear,
    proj_v: nn::Linear,
    proj_p: nn::Linear,
    residual: Residual,
    output: FeedForward,
}

impl RpeLayer {
    fn new(p: nn::Path, d: i64) -> Self {
        let a = &p / "attention";
        let m = &a / "attention";
        RpeLayer {
            proj_q: nn::linear(&m / "proj_q", d, d, Default::default()),
            proj_k: nn::linear(&m / "proj_k", d, d, Default::default()),
            proj_v: nn::linear(&m / "proj_v", d, d, Default::default()),
            proj_p: nn::linear(&m / "proj_p", d, d, Default::default()),
            residual: Residual::new(&a, d),
            output: FeedForward::new(&p / "output", d),
        }
    }

    /// x: (B, N, d), memory: (B, M, d), emb: (B, N, M, d) → (B, N, d).
    fn forward(&self, x: &Tensor, memory: &Tensor, emb: &Tensor) -> Tensor {
        let q = split_heads(&self.proj_q.forward(x));
        let k = split_heads(&self.proj_k.forward(memory));
        let v = split_heads(&self.proj_v.forward(memory));
        let (h, c) = (q.size()[1], q.size()[3]);
        let d = emb.size()[3];
        // q_i·proj_p(e_ij) = (W_pᵀ q_i)·e_ij + q_i·b_p: projecting the queries (B,H,N,d) instead
        // of the (B,N,M,d) embedding gives the reference's term at ~1/M of its cost.
        let wp = self.proj_p.ws.view([1, h, c, d]);
        let qw = q.matmul(&wp); // (B,H,N,d)
        let qb = match &self.proj_p.bs {
            Some(b) => q.matmul(&b.view([1, h, c, 1])), // (B,H,N,1)
            None => Tensor::zeros([1], (q.kind(), q.device())),
        };
        let pos = qw.transpose(1, 2).matmul(&emb.transpose(2, 3)).transpose(1, 2) + qb; // (B,H,N,M)
        // softmax((q·kᵀ + pos)/√c)·v, with the positional term as an additive mask.
        let scale = 1.0 / (c as f64).sqrt();
        let mask = pos * scale;
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, Some(mask), 0.0, false, Some(scale), false);
        self.output.forward(&self.residual.forward(x, &merge_heads(&a)))
    }
}

/// Multi-head cross-attention ("cross" block, `TransformerLayer`): softmax(q·kᵀ/√c)·v.
#[derive(Debug)]
struct CrossLayer {
    proj_q: nn::Linear,
    proj_k: nn::Linear,
    proj_v: nn::Linear,
    residual: Residual,
    output: FeedForward,
}

impl CrossLayer {
    fn new(p: nn::Path, d: i64) -> Self {
        let a = &p / "attention";
        let m = &a / "attention";
        CrossLayer {
            proj_q: nn::linear(&m / "proj_q", d, d, Default::default()),
            proj_k: nn::linear(&m / "proj_k", d, d, Default::default()),
            proj_v: nn::linear(&m / "proj_v", d, d, Default::default()),
            residual: Residual::new(&a, d),
            output: FeedForward::new(&p / "output", d),
        }
    }

    fn forward(&self, x: &Tensor, memory: &Tensor) -> Tensor {
        let q = split_heads(&self.proj_q.forward(x));
        let k = split_heads(&self.proj_k.forward(memory));
        let v = split_heads(&self.proj_v.forward(memory));
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        self.output.forward(&self.residual.forward(x, &merge_heads(&a)))
    }
}

/// `GeometricTransformer(blocks=['self', 'cross'])`: parameters `layers.0.*` (self) and
/// `layers.1.*` (cross).
#[derive(Debug)]
pub struct GeometricTransformer {
    self_layer: RpeLayer,
    cross_layer: CrossLayer,
}

impl GeometricTransformer {
    /// Width `d_model` (256 in the checkpoint), [`HEADS`] heads.
    pub fn new(p: nn::Path, d_model: i64) -> Self {
        GeometricTransformer { self_layer: RpeLayer::new(&p / "layers" / 0, d_model), cross_layer: CrossLayer::new(&p / "layers" / 1, d_model) }
    }

    /// f0: (B, N0, d) with its geometric embedding emb0 (B, N0, N0, d); f1, emb1 likewise.
    /// As the reference: the self layer runs on each set with the same weights; then set 0
    /// attends to set 1, and set 1 attends to the *updated* set 0 (sequential, not parallel).
    pub fn forward(&self, f0: &Tensor, emb0: &Tensor, f1: &Tensor, emb1: &Tensor) -> (Tensor, Tensor) {
        let f0 = self.self_layer.forward(f0, f0, emb0);
        let f1 = self.self_layer.forward(f1, f1, emb1);
        let f0 = self.cross_layer.forward(&f0, &f1);
        let f1 = self.cross_layer.forward(&f1, &f0);
        (f0, f1)
    }
}

/// Focused linear attention (`LinearTransformerLayer`, FLatten-Transformer style).
#[derive(Debug)]
struct LinearLayer {
    scale: Tensor,
    proj_q: nn::Linear,
    proj_k: nn::Linear,
    proj_v: nn::Linear,
    residual: Residual,
    output: FeedForward,
    focusing_factor: f64,
}

impl LinearLayer {
    fn new(p: nn::Path, d: i64, focusing_factor: f64) -> Self {
        let a = &p / "attention";
        let m = &a / "attention";
        LinearLayer {
            scale: m.var("scale", &[1, 1, d], nn::Init::Const(0.0)),
            proj_q: nn::linear(&m / "proj_q", d, d, Default::default()),
            proj_k: nn::linear(&m / "proj_k", d, d, Default::default()),
            proj_v: nn::linear(&m / "proj_v", d, d, Default::default()),
            residual: Residual::new(&a, d),
            output: FeedForward::new(&p / "output", d),
            focusing_factor,
        }
    }

    /// Kernel features of the queries or keys: ReLU + 1e-6, divided by softplus(scale), raised
    /// to the focusing factor and rescaled to their norm before the power (over all d channels,
    /// before the head split).
    fn focus(&self, x: &Tensor, scale: &Tensor) -> Tensor {
        let x = (x.relu() + 1e-6) / scale;
        let norm = x.norm_scalaropt_dim(2.0, [-1], true);
        let x = x.pow_tensor_scalar(self.focusing_factor);
        &x / x.norm_scalaropt_dim(2.0, [-1], true) * norm
    }

    /// x: queries (B, I, d); memory: keys and values (B, J, d) → (B, I, d).
    fn forward(&self, x: &Tensor, memory: &Tensor) -> Tensor {
        let scale = self.scale.softplus();
        let q = split_heads(&self.focus(&self.proj_q.forward(x), &scale)); // (B,H,I,c)
        let k = split_heads(&self.focus(&self.proj_k.forward(memory), &scale)); // (B,H,J,c)
        let v = split_heads(&self.proj_v.forward(memory)); // (B,H,J,c)
        let (i, j, c, dv) = (q.size()[2], k.size()[2], k.size()[3], v.size()[3]);
        // out_i = q_i·(Σ_j k_j v_jᵀ) / (q_i·Σ_j k_j + 1e-6). The two contraction orders are equal
        // in exact arithmetic; like the reference, take the cheaper one (same rounding).
        let z = (q.matmul(&k.sum_dim_intlist(2i64, true, None::<Kind>).transpose(2, 3)) + 1e-6).reciprocal(); // (B,H,I,1)
        let a = if i * j * (c + dv) > c * dv * (i + j) { q.matmul(&k.transpose(2, 3).matmul(&v)) } else { q.matmul(&k.transpose(2, 3)).matmul(&v) };
        let a = a * z;
        self.output.forward(&self.residual.forward(x, &merge_heads(&a)))
    }
}

/// The fine stage's block (`SparseToDenseTransformer`, with_bg_token and replace_bg_token):
/// parameters `sparse_layer.*` ([`GeometricTransformer`]) and `dense_layer.*` (linear attention).
#[derive(Debug)]
pub struct SparseToDenseTransformer {
    sparse_layer: GeometricTransformer,
    dense_layer: LinearLayer,
}

impl SparseToDenseTransformer {
    /// Width `d_model` (256 in the checkpoint), [`HEADS`] heads, focusing factor
    /// [`FOCUSING_FACTOR`].
    pub fn new(p: nn::Path, d_model: i64) -> Self {
        Self::with_focusing_factor(p, d_model, FOCUSING_FACTOR)
    }

    pub fn with_focusing_factor(p: nn::Path, d_model: i64, focusing_factor: f64) -> Self {
        SparseToDenseTransformer {
            sparse_layer: GeometricTransformer::new(&p / "sparse_layer", d_model),
            dense_layer: LinearLayer::new(&p / "dense_layer", d_model, focusing_factor),
        }
    }

    /// dense0: (B, 1+N0, d), the background token first; fps_idx0: (B, S0) sparse indices
    /// (any integer kind); geo_emb0: (B, 1+S0, 1+S0, d); set 1 likewise. Returns the updated
    /// dense sequences, background token first.
    pub fn forward(&self, dense0: &Tensor, dense1: &Tensor, fps_idx0: &Tensor, fps_idx1: &Tensor, geo_emb0: &Tensor, geo_emb1: &Tensor) -> (Tensor, Tensor) {
        let s0 = sparse_tokens(dense0, fps_idx0);
        let s1 = sparse_tokens(dense1, fps_idx1);
        let (s0, s1) = self.sparse_layer.forward(&s0, geo_emb0, &s1, geo_emb1);
        (self.dense_update(dense0, &s0), self.dense_update(dense1, &s1))
    }

    /// The dense points (without bg) attend to the sparse tokens (without their first token);
    /// the new dense bg token is the updated sparse bg token.
    fn dense_update(&self, dense: &Tensor, sparse: &Tensor) -> Tensor {
        let n = dense.size()[1];
        let s = sparse.size()[1];
        let points = self.dense_layer.forward(&dense.narrow(1, 1, n - 1), &sparse.narrow(1, 1, s - 1));
        Tensor::cat(&[sparse.narrow(1, 0, 1), points], 1)
    }
}

/// `[bg, dense[fps_idx]]`: the sparse sequence of a dense one (B, 1+N, d) → (B, 1+S, d).
///
/// Quirk Q13, reproduced (the trained weights expect it): the indices address the dense *point*
/// list but are applied to the sequence that starts with the bg token, so sparse token k holds
/// dense point fps_idx[k] − 1, and index 0 (FPS always starts there) picks the bg token again.
fn sparse_tokens(dense: &Tensor, fps_idx: &Tensor) -> Tensor {
    let (b, _, d) = dense.size3().expect("dense tokens are B×N×D");
    let idx = fps_idx.to_kind(Kind::Int64).to_device(dense.device());
    let s = idx.size()[1];
    let gathered = dense.gather(1, &idx.unsqueeze(2).expand([b, s, d], false), false);
    Tensor::cat(&[dense.narrow(1, 0, 1), gathered], 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn names_follow_the_checkpoint() {
        let vs = nn::VarStore::new(Device::Cpu);
        let _g = GeometricTransformer::new(vs.root() / "g", 16);
        let _s = SparseToDenseTransformer::new(vs.root() / "s", 16);
        let v = vs.variables();
        assert_eq!(v["g.layers.0.attention.attention.proj_p.weight"].size(), [16, 16]);
        assert!(!v.contains_key("g.layers.1.attention.attention.proj_p.weight"));
        assert_eq!(v["g.layers.1.output.expand.weight"].size(), [32, 16]);
        assert_eq!(v["s.dense_layer.attention.attention.scale"].size(), [1, 1, 16]);
        assert_eq!(v["s.sparse_layer.layers.0.attention.norm.bias"].size(), [16]);
        // self 18 + cross 16 tensors; sparse-to-dense adds the linear layer's 17.
        assert_eq!(v.len(), 2 * 34 + 17);
    }

    #[test]
    fn sparse_tokens_reproduce_the_off_by_one_gather() {
        let dense = Tensor::arange(5, (Kind::Float, Device::Cpu)).view([1, 5, 1]); // bg, p0..p3
        let idx = Tensor::from_slice(&[0i32, 3, 1]).view([1, 3]);
        let s = sparse_tokens(&dense, &idx);
        assert_eq!(Vec::<f32>::try_from(s.view([-1])).unwrap(), [0.0, 0.0, 3.0, 1.0]);
    }

    /// The factorised positional term equals the reference's explicit q·proj_p(e).
    #[test]
    fn rpe_scores_match_the_explicit_form() {
        let vs = nn::VarStore::new(Device::Cpu);
        let l = RpeLayer::new(vs.root(), 16);
        let x = Tensor::randn([2, 5, 16], (Kind::Float, Device::Cpu));
        let emb = Tensor::randn([2, 5, 5, 16], (Kind::Float, Device::Cpu));
        let got = l.forward(&x, &x, &emb);
        let q = split_heads(&l.proj_q.forward(&x));
        let k = split_heads(&l.proj_k.forward(&x));
        let v = split_heads(&l.proj_v.forward(&x));
        let p = l.proj_p.forward(&emb).view([2, 5, 5, HEADS, 4]).permute([0, 3, 1, 2, 4]); // b h n m c
        let sp = (q.unsqueeze(3) * &p).sum_dim_intlist(-1i64, false, None::<Kind>);
        let s = ((q.matmul(&k.transpose(2, 3)) + sp) / 2.0).softmax(-1, Kind::Float);
        let want = l.output.forward(&l.residual.forward(&x, &merge_heads(&s.matmul(&v))));
        assert!((got - want).abs().max().double_value(&[]) < 1e-5);
    }
}
