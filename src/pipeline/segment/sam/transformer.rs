//! SAM's two-way transformer: prompt tokens and image tokens attend to each other (tokens →
//! tokens, tokens → image, MLP on tokens, image → tokens), then a final tokens → image
//! attention. Parameters under `mask_decoder.transformer.*`.
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Multi-head attention whose q/k/v projections may shrink the width by `downsample_rate`.
#[derive(Debug)]
pub struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    num_heads: i64,
}

impl Attention {
    pub fn new(p: nn::Path, embedding_dim: i64, num_heads: i64, downsample_rate: i64) -> Self {
        let internal = embedding_dim / downsample_rate;
        assert!(internal % num_heads == 0, "num_heads must divide the attention's internal width");
        let lin = |name: &str, i, o| nn::linear(&p / name, i, o, Default::default());
        Attention {
            q_proj: lin("q_proj", embedding_dim, internal),
            k_proj: lin("k_proj", embedding_dim, internal),
            v_proj: lin("v_proj", embedding_dim, internal),
            out_proj: lin("out_proj", internal, embedding_dim),
            num_heads,
        }
    }

    /// B×N×C → B×heads×N×(C/heads).
    fn heads(&self, x: &Tensor) -> Tensor {
        let (b, n, c) = x.size3().unwrap();
        x.reshape([b, n, self.num_heads, c / self.num_heads]).transpose(1, 2)
    }

    pub fn forward(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let q = self.heads(&self.q_proj.forward(q));
        let k = self.heads(&self.k_proj.forward(k));
        let v = self.heads(&self.v_proj.forward(v));
        let (b, h, n, d) = q.size4().unwrap();
        let attn = (q.matmul(&k.transpose(-2, -1)) / (d as f64).sqrt()).softmax(-1, Kind::Float);
        let out = attn.matmul(&v).transpose(1, 2).reshape([b, n, h * d]);
        self.out_proj.forward(&out)
    }
}

/// lin1 → ReLU → lin2.
#[derive(Debug)]
struct MlpBlock {
    lin1: nn::Linear,
    lin2: nn::Linear,
}

impl MlpBlock {
    fn new(p: nn::Path, dim: i64, mlp_dim: i64) -> Self {
        MlpBlock { lin1: nn::linear(&p / "lin1", dim, mlp_dim, Default::default()), lin2: nn::linear(&p / "lin2", mlp_dim, dim, Default::default()) }
    }
}

impl Module for MlpBlock {
    fn forward(&self, x: &Tensor) -> Tensor {
        self.lin2.forward(&self.lin1.forward(x).relu())
    }
}

#[derive(Debug)]
pub struct TwoWayAttentionBlock {
    self_attn: Attention,
    norm1: nn::LayerNorm,
    cross_attn_token_to_image: Attention,
    norm2: nn::LayerNorm,
    mlp: MlpBlock,
    norm3: nn::LayerNorm,
    norm4: nn::LayerNorm,
    cross_attn_image_to_token: Attention,
    skip_first_layer_pe: bool,
}

impl TwoWayAttentionBlock {
    pub fn new(p: nn::Path, dim: i64, num_heads: i64, mlp_dim: i64, downsample_rate: i64, skip_first_layer_pe: bool) -> Self {
        let ln = |name: &str| nn::layer_norm(&p / name, vec![dim], Default::default());
        TwoWayAttentionBlock {
            self_attn: Attention::new(&p / "self_attn", dim, num_heads, 1),
            norm1: ln("norm1"),
            cross_attn_token_to_image: Attention::new(&p / "cross_attn_token_to_image", dim, num_heads, downsample_rate),
            norm2: ln("norm2"),
            mlp: MlpBlock::new(&p / "mlp", dim, mlp_dim),
            norm3: ln("norm3"),
            norm4: ln("norm4"),
            cross_attn_image_to_token: Attention::new(&p / "cross_attn_image_to_token", dim, num_heads, downsample_rate),
            skip_first_layer_pe,
        }
    }

    /// (queries B×Nq×C, keys B×Nk×C) → updated (queries, keys).
    pub fn forward(&self, queries: &Tensor, keys: &Tensor, query_pe: &Tensor, key_pe: &Tensor) -> (Tensor, Tensor) {
        let queries = if self.skip_first_layer_pe {
            self.self_attn.forward(queries, queries, queries)
        } else {
            let q = queries + query_pe;
            queries + self.self_attn.forward(&q, &q, queries)
        };
        let queries = self.norm1.forward(&queries);

        let q = &queries + query_pe;
        let k = keys + key_pe;
        let queries = self.norm2.forward(&(&queries + self.cross_attn_token_to_image.forward(&q, &k, keys)));

        let queries = self.norm3.forward(&(&queries + self.mlp.forward(&queries)));

        let q = &queries + query_pe;
        let keys = self.norm4.forward(&(keys + self.cross_attn_image_to_token.forward(&k, &q, &queries)));
        (queries, keys)
    }
}

#[derive(Debug)]
pub struct TwoWayTransformer {
    layers: Vec<TwoWayAttentionBlock>,
    final_attn_token_to_image: Attention,
    norm_final_attn: nn::LayerNorm,
}

impl TwoWayTransformer {
    /// `p` is the `mask_decoder.transformer` path. SAM: depth 2, dim 256, 8 heads, MLP 2048,
    /// downsample rate 2.
    pub fn new(p: nn::Path, depth: usize, embedding_dim: i64, num_heads: i64, mlp_dim: i64, downsample_rate: i64) -> Self {
        let layers = (0..depth)
            .map(|i| TwoWayAttentionBlock::new(&p / "layers" / i as i64, embedding_dim, num_heads, mlp_dim, downsample_rate, i == 0))
            .collect();
        TwoWayTransformer {
            layers,
            final_attn_token_to_image: Attention::new(&p / "final_attn_token_to_image", embedding_dim, num_heads, downsample_rate),
            norm_final_attn: nn::layer_norm(&p / "norm_final_attn", vec![embedding_dim], Default::default()),
        }
    }

    /// `image_embedding` and `image_pe` B×C×h×w, `point_embedding` B×N×C → (tokens B×N×C,
    /// image tokens B×hw×C).
    pub fn forward(&self, image_embedding: &Tensor, image_pe: &Tensor, point_embedding: &Tensor) -> (Tensor, Tensor) {
        let image_embedding = image_embedding.flatten(2, -1).permute([0, 2, 1]);
        let image_pe = image_pe.flatten(2, -1).permute([0, 2, 1]);
        let mut queries = point_embedding.shallow_clone();
        let mut keys = image_embedding;
        for layer in &self.layers {
            let (q, k) = layer.forward(&queries, &keys, point_embedding, &image_pe);
            queries = q;
            keys = k;
        }
        let q = &queries + point_embedding;
        let k = &keys + &image_pe;
        let queries = self.norm_final_attn.forward(&(&queries + self.final_attn_token_to_image.forward(&q, &k, &keys)));
        (queries, keys)
    }
}
