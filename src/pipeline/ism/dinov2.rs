//! DINOv2 ViT-S/B/L/G-14: the descriptor network of SAM-6D's ISM (ViT-L/14 by default). It turns
//! a normalised crop into a class token (semantic descriptor) and one token per 14×14 patch
//! (appearance descriptors).
//!
//! The math is the reference's (`dinov2` hub code, vendored by SAM-6D as
//! `ISM/model/vision_transformer.py`): 14×14 patch-embedding conv → class token prepended →
//! positional embedding (stored for a 37×37 grid, i.e. 518 px, resampled to the input's grid) →
//! `depth` pre-norm blocks `x += γ1·Attn(LN1(x)); x += γ2·FFN(LN2(x))` → final LayerNorm. The FFN
//! is a GELU (exact erf) MLP, except for ViT-G whose official checkpoint uses SwiGLU.
//!
//! Every parameter is created under the official checkpoint's name (`cls_token`, `pos_embed`,
//! `blocks.0.attn.qkv.weight`, …), so `sam6d weights convert dinov2_vitl14_pretrain.pth` gives
//! a file that [`load`] copies in by name.
use anyhow::Context;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use crate::nn::precision::{conv_tensors, layer_norm_tensors, linear_tensors, set_kind};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// The official DINOv2 backbones (`dinov2_vit{s,b,l,g}14` on torch hub).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DinoKind {
    VitS14,
    VitB14,
    /// SAM-6D's default (`dinov2_vitl14_pretrain.pth`).
    VitL14,
    VitG14,
}

impl DinoKind {
    pub const ALL: [DinoKind; 4] = [DinoKind::VitS14, DinoKind::VitB14, DinoKind::VitL14, DinoKind::VitG14];

    /// The hub / SAM-6D `model_name` (`dinov2_vitl14`).
    pub fn model_name(self) -> &'static str {
        match self {
            DinoKind::VitS14 => "dinov2_vits14",
            DinoKind::VitB14 => "dinov2_vitb14",
            DinoKind::VitL14 => "dinov2_vitl14",
            DinoKind::VitG14 => "dinov2_vitg14",
        }
    }
}

impl std::fmt::Display for DinoKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.model_name())
    }
}

/// The converted weights' file name in the weights directory (`dinov2_vitl14.safetensors`).
pub fn file_name(kind: DinoKind) -> &'static str {
    match kind {
        DinoKind::VitS14 => "dinov2_vits14.safetensors",
        DinoKind::VitB14 => "dinov2_vitb14.safetensors",
        DinoKind::VitL14 => "dinov2_vitl14.safetensors",
        DinoKind::VitG14 => "dinov2_vitg14.safetensors",
    }
}

/// The official checkpoint the weights come from (`dinov2_vitl14_pretrain.pth`).
pub fn official_file_name(kind: DinoKind) -> String {
    format!("{}_pretrain.pth", kind.model_name())
}

/// Hyper-parameters of one backbone.
#[derive(Clone, Debug, PartialEq)]
pub struct Dinov2Config {
    pub dim: i64,
    pub depth: i64,
    pub heads: i64,
    /// Hidden width of the FFN: `fc1`'s outputs, or for SwiGLU each half of `w12` (= `w3`'s inputs).
    pub mlp_hidden: i64,
    /// Patch side in pixels (14).
    pub patch: i64,
    /// Side of the stored positional-embedding grid (37: built for 518 px).
    pub pos_grid: i64,
    /// SwiGLU FFN (`mlp.w12`, `mlp.w3`) instead of the GELU MLP (`mlp.fc1`, `mlp.fc2`).
    pub swiglu: bool,
    pub layer_norm_eps: f64,
    /// Added to the target grid size when resampling the positional embedding (reference: 0.1).
    pub interpolate_offset: f64,
}

impl Dinov2Config {
    /// The configuration the hub constructor builds for `kind` (img_size 518, patch 14,
    /// mlp_ratio 4, ViT-G with `ffn_layer="swiglufused"`).
    pub fn of(kind: DinoKind) -> Self {
        match kind {
            DinoKind::VitS14 => Self::custom(384, 12, 6, 37, false),
            DinoKind::VitB14 => Self::custom(768, 12, 12, 37, false),
            DinoKind::VitL14 => Self::custom(1024, 24, 16, 37, false),
            DinoKind::VitG14 => Self::custom(1536, 40, 24, 37, true),
        }
    }

    /// Any size (tests use small ones), with the hub's rules: MLP ratio 4, and for SwiGLU two
    /// thirds of that rounded up to a multiple of 8 (`SwiGLUFFNFused`: 1536 → 6144 → 4096).
    pub fn custom(dim: i64, depth: i64, heads: i64, pos_grid: i64, swiglu: bool) -> Self {
        let hidden = 4 * dim;
        let mlp_hidden = if swiglu { (hidden * 2 / 3 + 7) / 8 * 8 } else { hidden };
        Dinov2Config { dim, depth, heads, mlp_hidden, patch: 14, pos_grid, swiglu, layer_norm_eps: 1e-6, interpolate_offset: 0.1 }
    }
}

/// A linear layer initialised as the reference's `init_weights_vit_timm` does (weights
/// N(0, 0.02) — untruncated here —, zero biases): random-weight runs behave like the reference's.
fn linear(p: nn::Path, i: i64, o: i64) -> nn::Linear {
    nn::linear(p, i, o, nn::LinearConfig { ws_init: nn::Init::Randn { mean: 0.0, stdev: 0.02 }, bs_init: Some(nn::Init::Const(0.0)), bias: true })
}

/// The feed-forward half of a block.
#[derive(Debug)]
enum Ffn {
    /// `fc2(GELU(fc1(x)))`, exact-erf GELU.
    Mlp { fc1: nn::Linear, fc2: nn::Linear },
    /// `w3(SiLU(a) · b)` with `a, b` the two halves of `w12(x)` (first half gated): the official
    /// ViT-G layout. SAM-6D builds ViT-G with `fc1/fc2`, so its strict load of the official file
    /// fails (quirk Q17); we build what the checkpoint holds (fix).
    SwiGlu { w12: nn::Linear, w3: nn::Linear },
}

impl Ffn {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self {
            Ffn::Mlp { fc1, fc2 } => fc2.forward(&fc1.forward(x).gelu("none")),
            Ffn::SwiGlu { w12, w3 } => {
                let ab = w12.forward(x).chunk(2, -1);
                w3.forward(&(ab[0].silu() * &ab[1]))
            }
        }
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let (a, b) = match self {
            Ffn::Mlp { fc1, fc2 } => (fc1, fc2),
            Ffn::SwiGlu { w12, w3 } => (w12, w3),
        };
        linear_tensors(a).into_iter().chain(linear_tensors(b)).collect()
    }
}

/// One pre-norm transformer block with LayerScale.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    ls1: Tensor,
    norm2: nn::LayerNorm,
    ffn: Ffn,
    ls2: Tensor,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, cfg: &Dinov2Config) -> Block {
        let d = cfg.dim;
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        let ffn = if cfg.swiglu {
            Ffn::SwiGlu { w12: linear(&p / "mlp" / "w12", d, 2 * cfg.mlp_hidden), w3: linear(&p / "mlp" / "w3", cfg.mlp_hidden, d) }
        } else {
            Ffn::Mlp { fc1: linear(&p / "mlp" / "fc1", d, cfg.mlp_hidden), fc2: linear(&p / "mlp" / "fc2", cfg.mlp_hidden, d) }
        };
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            qkv: linear(&p / "attn" / "qkv", d, 3 * d),
            proj: linear(&p / "attn" / "proj", d, d),
            // The hub builds every backbone with init_values 1.0.
            ls1: (&p / "ls1").var("gamma", &[d], nn::Init::Const(1.0)),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            ffn,
            ls2: (&p / "ls2").var("gamma", &[d], nn::Init::Const(1.0)),
            heads: cfg.heads,
        }
    }

    /// x: (N, T, D).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (n, t, d) = x.size3().expect("tokens are N×T×D");
        let qkv = self.qkv.forward(&self.norm1.forward(x)).reshape([n, t, 3, self.heads, d / self.heads]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        // softmax(q·kᵀ / √head_dim)·v in one fused kernel: equal to the reference's explicit
        // (q·scale)·kᵀ → softmax → ·v within float rounding (checked by cli-tests/dinov2_parity.rs).
        let a = Tensor::scaled_dot_product_attention(&q, &k, &v, None::<Tensor>, 0.0, false, None, false);
        let a = self.proj.forward(&a.transpose(1, 2).reshape([n, t, d]));
        let x = x + a * &self.ls1;
        let m = self.ffn.forward(&self.norm2.forward(&x));
        x + m * &self.ls2
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = layer_norm_tensors(&self.norm1);
        v.extend(linear_tensors(&self.qkv));
        v.extend(linear_tensors(&self.proj));
        v.push(&self.ls1);
        v.extend(layer_norm_tensors(&self.norm2));
        v.extend(self.ffn.tensors());
        v.push(&self.ls2);
        v
    }
}

/// A DINOv2 backbone (no head).
#[derive(Debug)]
pub struct Dinov2 {
    cfg: Dinov2Config,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    /// Only used in training (masked-patch objective); kept so the checkpoint loads strictly.
    mask_token: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    /// Element type the blocks run in (see [`Dinov2::to_kind`]).
    kind: Kind,
    /// Resampled positional embeddings by patch grid (rows, cols), f32: the ISM always asks for
    /// 16×16, so it is computed once.
    pos_cache: Mutex<HashMap<(i64, i64), Tensor>>,
}

impl Dinov2 {
    /// Creates the parameters under `p` (use a VarStore's root for the official names), with
    /// random weights initialised like the reference's; load a checkpoint to use it for real.
    pub fn new(p: &nn::Path, cfg: &Dinov2Config) -> Dinov2 {
        let d = cfg.dim;
        let patch_embed = nn::conv2d(p / "patch_embed" / "proj", 3, d, cfg.patch, nn::ConvConfig { stride: cfg.patch, ..Default::default() });
        let tokens = cfg.pos_grid * cfg.pos_grid + 1;
        let ln = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
        Dinov2 {
            cfg: cfg.clone(),
            patch_embed,
            cls_token: p.var("cls_token", &[1, 1, d], nn::Init::Randn { mean: 0.0, stdev: 1e-6 }),
            pos_embed: p.var("pos_embed", &[1, tokens, d], nn::Init::Randn { mean: 0.0, stdev: 0.02 }),
            mask_token: p.var("mask_token", &[1, d], nn::Init::Const(0.0)),
            blocks: (0..cfg.depth).map(|i| Block::new(p / "blocks" / i, cfg)).collect(),
            norm: nn::layer_norm(p / "norm", vec![d], ln),
            kind: Kind::Float,
            pos_cache: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &Dinov2Config {
        &self.cfg
    }

    pub fn device(&self) -> Device {
        self.pos_embed.device()
    }

    /// Every parameter (no names; see the VarStore for those).
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = conv_tensors(&self.patch_embed);
        v.extend([&self.cls_token, &self.pos_embed, &self.mask_token]);
        for b in &self.blocks {
            v.extend(b.tensors());
        }
        v.extend(layer_norm_tensors(&self.norm));
        v
    }

    /// Runs the network in `kind` (`Kind::BFloat16` on a CPU or CUDA, `Kind::Half` on CUDA;
    /// `Kind::Float` back to full precision). The positional embedding is resampled in f32 as the reference does;
    /// [`Dinov2::forward`] still returns f32.
    pub fn to_kind(&mut self, kind: Kind) {
        set_kind(&self.tensors(), kind);
        self.kind = kind;
        self.pos_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forgets the resampled positional embeddings (call after changing the weights in place).
    pub fn clear_cache(&self) {
        self.pos_cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// The positional embedding for a `gh`×`gw` patch grid, CLS position first, f32.
    ///
    /// As the reference's `interpolate_pos_encoding`: the stored grid is returned as is when the
    /// input has exactly that grid; otherwise it is resampled bicubically (a = −0.75,
    /// align_corners False, no antialias) with the *scale factor* ((gh + 0.1)/37, (gw + 0.1)/37),
    /// so source coordinates use 37/(g + 0.1), not 37/g. libtorch's `upsample_bicubic2d` with the
    /// output size and these explicit scales is exactly the call PyTorch's `interpolate` makes.
    fn pos_embed_for(&self, gh: i64, gw: i64) -> Tensor {
        let mut cache = self.pos_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = cache.get(&(gh, gw)) {
            return t.shallow_clone();
        }
        let g = self.cfg.pos_grid;
        let pos = self.pos_embed.to_kind(Kind::Float);
        let out = if gh == g && gw == g {
            pos
        } else {
            let d = self.cfg.dim;
            let cls = pos.narrow(1, 0, 1);
            let grid = pos.narrow(1, 1, g * g).reshape([1, g, g, d]).permute([0, 3, 1, 2]);
            let off = self.cfg.interpolate_offset;
            let (sh, sw) = ((gh as f64 + off) / g as f64, (gw as f64 + off) / g as f64);
            let grid = grid.upsample_bicubic2d([gh, gw], false, sh, sw);
            Tensor::cat(&[cls, grid.permute([0, 2, 3, 1]).reshape([1, gh * gw, d])], 1)
        };
        cache.insert((gh, gw), out.shallow_clone());
        out
    }

    /// x: (N, 3, H, W) float, normalised by the caller, H and W multiples of 14. Returns the
    /// final-LayerNorm tokens (N, 1 + (H/14)(W/14), dim) in f32: the class token first, then the
    /// patches row-major.
    ///
    /// # Panics
    /// When `x` is not N×3×H×W with H and W positive multiples of the patch size (a caller bug:
    /// the ISM always passes 224×224 crops).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let (n, c, h, w) = x.size4().expect("DINOv2 input must be N×3×H×W");
        let p = self.cfg.patch;
        assert!(c == 3 && h > 0 && w > 0 && h % p == 0 && w % p == 0, "DINOv2 input {:?}: need N×3×H×W with H, W multiples of {p}", x.size());
        tch::no_grad(|| {
            let x = x.to_device(self.device()).to_kind(self.kind);
            let patches = self.patch_embed.forward(&x).flatten(2, -1).transpose(1, 2);
            let cls = self.cls_token.expand([n, 1, self.cfg.dim], false);
            let pos = self.pos_embed_for(h / p, w / p).to_kind(self.kind);
            let mut t = Tensor::cat(&[cls, patches], 1) + pos;
            for b in &self.blocks {
                t = b.forward(&t);
            }
            self.norm.forward(&t).to_kind(Kind::Float)
        })
    }
}

/// The names every DINOv2 tensor starts with (the checkpoint has no common prefix).
pub const PREFIXES: &[&str] = &["cls_token", "pos_embed", "mask_token", "patch_embed.", "blocks.", "norm."];

/// Builds `kind` on `device` and loads the converted official checkpoint `path` (safetensors,
/// official names) into it. Every parameter must be in the file and every tensor of the file
/// must be used, as the reference's strict `load_state_dict`; otherwise the error names the file
/// and the differences.
pub fn load(path: &Path, kind: DinoKind, device: Device) -> anyhow::Result<Dinov2> {
    if !path.is_file() {
        anyhow::bail!(
            "DINOv2 weights {} not found: convert the official {} once with `sam6d weights convert {} --out {}`",
            path.display(),
            official_file_name(kind),
            official_file_name(kind),
            path.display()
        );
    }
    let vs = nn::VarStore::new(device);
    let net = tch::no_grad(|| Dinov2::new(&vs.root(), &Dinov2Config::of(kind)));
    let tensors = Tensor::read_safetensors(path).with_context(|| format!("reading {}", path.display()))?;
    let mut report = crate::nn::load_named(&vs, &tensors, PREFIXES).with_context(|| format!("{} does not fit {kind}", path.display()))?;
    report.add_foreign(&tensors, PREFIXES);
    if let Some(m) = report.mismatch() {
        anyhow::bail!("{} does not fit {kind}: {m}; `sam6d weights check {}` lists every difference", path.display(), path.display());
    }
    Ok(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(cfg: &Dinov2Config) -> (nn::VarStore, Dinov2) {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Dinov2::new(&vs.root(), cfg);
        (vs, net)
    }

    #[test]
    fn official_sizes() {
        let l = Dinov2Config::of(DinoKind::VitL14);
        assert_eq!((l.dim, l.depth, l.heads, l.mlp_hidden, l.swiglu), (1024, 24, 16, 4096, false));
        // SwiGLUFFNFused: int(6144·2/3) = 4096, already a multiple of 8.
        let g = Dinov2Config::of(DinoKind::VitG14);
        assert_eq!((g.dim, g.depth, g.heads, g.mlp_hidden, g.swiglu), (1536, 40, 24, 4096, true));
        assert_eq!(Dinov2Config::custom(100, 1, 4, 37, true).mlp_hidden, 272); // int(400·2/3)=266 → 272
    }

    #[test]
    fn names_and_shapes_follow_the_official_layout() {
        let (vs, _) = build(&Dinov2Config::custom(64, 2, 4, 5, false));
        let v = vs.variables();
        assert_eq!(v.len(), 5 + 2 * 14 + 2);
        assert_eq!(v["pos_embed"].size(), [1, 26, 64]);
        assert_eq!(v["blocks.1.mlp.fc1.weight"].size(), [256, 64]);
        assert_eq!(v["blocks.0.ls2.gamma"].size(), [64]);
        let (vs, _) = build(&Dinov2Config::custom(48, 1, 4, 5, true));
        let v = vs.variables();
        assert_eq!(v["blocks.0.mlp.w12.weight"].size(), [256, 48]);
        assert_eq!(v["blocks.0.mlp.w3.weight"].size(), [48, 128]);
        assert!(!v.contains_key("blocks.0.mlp.fc1.weight"));
    }

    #[test]
    fn token_layout_and_cached_pos_embed() {
        let (_vs, net) = build(&Dinov2Config::custom(32, 1, 2, 5, false));
        let x = Tensor::randn([2, 3, 42, 28], (Kind::Float, Device::Cpu));
        let y = net.forward(&x);
        assert_eq!(y.size(), [2, 1 + 3 * 2, 32]);
        // The stored grid as is, and a resampled one reused from the cache.
        assert_eq!(net.forward(&Tensor::randn([1, 3, 70, 70], (Kind::Float, Device::Cpu))).size(), [1, 26, 32]);
        assert_eq!(net.pos_cache.lock().unwrap().len(), 2);
        let y2 = net.forward(&x);
        assert!(y.equal(&y2));
    }

    #[test]
    fn load_names_a_missing_file() {
        let err = load(Path::new("/nonexistent/dinov2_vitl14.safetensors"), DinoKind::VitL14, Device::Cpu).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/dinov2_vitl14.safetensors") && err.contains("dinov2_vitl14_pretrain.pth") && err.contains("sam6d weights convert"), "{err}");
    }
}
