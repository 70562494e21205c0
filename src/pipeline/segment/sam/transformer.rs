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

    /// (heads, head width, embedding width).
    fn dims(&self) -> (i64, i64, i64) {
        let (internal, c) = self.q_proj.ws.size2().unwrap();
        (self.num_heads, internal / self.num_heads, c)
    }

    /// `forward(q, image + image_pe, image)` — prompt tokens (q: B×T×C) attending to the image
    /// tokens (image: B×L×C, or 1×L×C shared by all prompts; image_pe: 1×L×C) — without
    /// projecting the L image tokens. Each head's query is carried into the embedding space
    /// instead (q·W_kᵀ, T rows, not L), and the attention-weighted sum of the raw image tokens
    /// is projected by W_v afterwards (each row of the attention sums to 1, so W_v's bias passes
    /// through). W_k's bias adds the same logit to every key of a query, which softmax ignores.
    /// Same result up to float rounding; ~2.5× fewer multiply-adds per prompt.
    pub fn tokens_to_image(&self, q: &Tensor, image: &Tensor, image_pe: &Tensor) -> Tensor {
        let (h, d, c) = self.dims();
        let (b, t, _) = q.size3().unwrap();
        let l = image.size()[1];
        let qh = self.heads(&self.q_proj.forward(q));
        // B×H×T×d · H×d×C → queries in the embedding space, B×(H·T)×C, scaled for the softmax.
        let qf = (qh.matmul(&self.k_proj.ws.view([h, d, c])) / (d as f64).sqrt()).reshape([b, h * t, c]);
        let logits = mm_shared(&qf, image) + mm_shared(&qf, image_pe);
        let attn = logits.softmax(-1, Kind::Float);
        let ctx = if image.size()[0] == 1 {
            attn.view([b * h * t, l]).matmul(&image.get(0)).view([b, h, t, c])
        } else {
            attn.matmul(image).view([b, h, t, c])
        };
        let wv = self.v_proj.ws.view([h, d, c]).transpose(1, 2);
        let mut out = ctx.matmul(&wv);
        if let Some(bv) = &self.v_proj.bs {
            out += bv.view([1, h, 1, d]);
        }
        self.out_proj.forward(&out.transpose(1, 2).reshape([b, t, h * d]))
    }

    /// `forward(image + image_pe, k, v)` — the image tokens (image: B×L×C or 1×L×C shared;
    /// image_pe: 1×L×C) attending to the prompt tokens (k, v: B×T×C) — without projecting the
    /// L image tokens: each key is carried into the embedding space (k·W_q, plus the logit
    /// W_q's bias gives it), and each value through W_o before the attention-weighted sum, so
    /// the only L-sized products are image·keysᵀ and attention·values with H·T columns.
    /// Returns B×L×C; same result up to float rounding.
    pub fn image_to_tokens(&self, image: &Tensor, image_pe: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
        let (h, d, c) = self.dims();
        let (b, t, _) = k.size3().unwrap();
        let (bi, l) = (image.size()[0], image.size()[1]);
        let scale = 1.0 / (d as f64).sqrt();
        let kh = self.heads(&self.k_proj.forward(k));
        let kf = (kh.matmul(&self.q_proj.ws.view([h, d, c])) * scale).reshape([b, h * t, c]);
        let mut logits = if bi == 1 && image_pe.size()[0] == 1 {
            // One GEMM for all prompts: L×C · C×(B·H·T), then viewed B×L×(H·T).
            let img = image.get(0) + image_pe.get(0);
            img.matmul(&kf.reshape([b * h * t, c]).tr()).view([l, b, h * t]).permute([1, 0, 2])
        } else {
            image.matmul(&kf.transpose(1, 2)) + mm_shared(&kf, image_pe).transpose(1, 2)
        };
        if let Some(bq) = &self.q_proj.bs {
            let kb = (&kh * bq.view([1, h, 1, d])).sum_dim_intlist(-1, false, None::<Kind>) * scale;
            logits += kb.view([b, 1, h * t]);
        }
        let attn = logits.reshape([b, l, h, t]).softmax(-1, Kind::Float).view([b, l, h * t]);
        // Values through the output projection first: B×H×T×d · H×d×C → B×(H·T)×C.
        let wo = self.out_proj.ws.view([c, h, d]).permute([1, 2, 0]);
        let vw = self.heads(&self.v_proj.forward(v)).matmul(&wo).reshape([b, h * t, c]);
        let mut out = attn.matmul(&vw);
        if let Some(bo) = &self.out_proj.bs {
            out += bo;
        }
        out
    }
}

/// `a · bᵀ` for a: B×M×K and b: B×N×K or 1×N×K (one matrix for the whole batch, multiplied as
/// a single (B·M)×K GEMM rather than broadcast, which would copy it B times): B×M×N.
fn mm_shared(a: &Tensor, b: &Tensor) -> Tensor {
    let (bs, m, k) = a.size3().unwrap();
    if b.size()[0] == 1 {
        a.reshape([bs * m, k]).matmul(&b.get(0).tr()).view([bs, m, -1])
    } else {
        a.matmul(&b.transpose(1, 2))
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
        let queries = self.norm2.forward(&(&queries + self.cross_attn_token_to_image.tokens_to_image(&q, keys, key_pe)));

        let queries = self.norm3.forward(&(&queries + self.mlp.forward(&queries)));

        let q = &queries + query_pe;
        // `keys` may be one image shared by all prompts (1×L×C): the sum broadcasts to B×L×C.
        let mut out = self.cross_attn_image_to_token.image_to_tokens(keys, key_pe, &q, &queries);
        out += keys;
        let keys = self.norm4.forward(&out);
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

    /// `image_embedding` and `image_pe` B×C×h×w (or 1×C×h×w: one image, or one positional
    /// encoding, for all B prompts, which is cheaper than repeating it), `point_embedding` B×N×C
    /// → (tokens B×N×C, image tokens B×hw×C).
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
        let queries = self.norm_final_attn.forward(&(&queries + self.final_attn_token_to_image.tokens_to_image(&q, &keys, &image_pe)));
        (queries, keys)
    }
}
