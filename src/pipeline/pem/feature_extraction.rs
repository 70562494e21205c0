//! The PEM's RGB feature extractor (reference: `feature_extraction.py`, `ViT_AE` with a timm
//! `VisionTransformer`; spec: sam6d-pipeline.md §5.4): a ViT-B/16 whose tokens after four of its
//! blocks become a dense 256-channel feature map at the input's resolution, so that every
//! observed or template point can take the feature of its pixel.
//!
//! ViT: 16×16 patch conv → class token prepended → learned positional embedding (224 px only,
//! no resampling) → pre-norm blocks `x += Attn(LN1(x)); x += MLP(LN2(x))` (exact GELU, LayerNorm
//! eps 1e-6, no LayerScale). The *final* LayerNorm is applied to copies of the sequence after
//! blocks d−1−k·(d/4), k = 3..0 (2, 5, 8, 11 for ViT-B), their patch tokens are concatenated
//! (4·768), projected by `output_upscaling` to 16·256 per patch and rearranged into 4×4 pixel
//! blocks (a 56×56 map), then resized bilinearly to 224×224.
//!
//! Parameters live under the checkpoint's names (`rgb_net.vit.blocks.0.attn.qkv.weight`,
//! `rgb_net.output_upscaling.weight`, …) below the caller's path (`feature_extraction`),
//! including the classifier head that the reference builds but never uses, so that loading the
//! checkpoint is strict both ways.
use crate::nn::precision::{conv_tensors, layer_norm_tensors, linear_tensors, set_kind};
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

/// Patch side in pixels.
pub const PATCH: i64 = 16;
/// Input side in pixels: the positional embedding is stored for a 14×14 grid.
pub const IMAGE_SIZE: i64 = 224;
/// Side of each patch's block in the upscaled map (224/16 patches → 56 = 14·4).
const UPSCALE: i64 = 4;

/// Sizes of the extractor (`model.feature_extraction` with `vit_type: vit_base`).
#[derive(Clone, Debug, PartialEq)]
pub struct FeatureExtractionConfig {
    pub embed_dim: i64,
    pub depth: i64,
    pub heads: i64,
    /// Output channels (`out_dim`, 256).
    pub out_dim: i64,
    /// Classes of the unused timm head (1000).
    pub num_classes: i64,
}

impl FeatureExtractionConfig {
    /// SAM-6D's ViT-B/16: 768 wide, 12 blocks, 12 heads, 256 output channels.
    pub fn base() -> Self {
        FeatureExtractionConfig { embed_dim: 768, depth: 12, heads: 12, out_dim: 256, num_classes: 1000 }
    }

    /// The blocks whose output is tapped, in the order they are concatenated (the reference's
    /// `[d-1, d-n-1, d-2n-1, d-3n-1]`, n = d/4, taken in block order).
    pub fn tapped_blocks(&self) -> Vec<i64> {
        let n = self.depth / 4;
        let mut taps: Vec<i64> = (0..4).map(|k| self.depth - 1 - k * n).filter(|&i| i >= 0).collect();
        taps.sort();
        taps.dedup();
        taps
    }
}

impl Default for FeatureExtractionConfig {
    fn default() -> Self {
        Self::base()
    }
}

/// One pre-norm timm block.
#[derive(Debug)]
struct Block {
    norm1: nn::LayerNorm,
    qkv: nn::Linear,
    proj: nn::Linear,
    norm2: nn::LayerNorm,
    fc1: nn::Linear,
    fc2: nn::Linear,
    heads: i64,
}

impl Block {
    fn new(p: nn::Path, cfg: &FeatureExtractionConfig) -> Block {
        let d = cfg.embed_dim;
        let ln = nn::LayerNormConfig { eps: 1e-6, ..Default::default() };
        Block {
            norm1: nn::layer_norm(&p / "norm1", vec![d], ln),
            qkv: nn::linear(&p / "attn" / "qkv", d, 3 * d, Default::default()),
            proj: nn::linear(&p / "attn" / "proj", d, d, Default::default()),
            norm2: nn::layer_norm(&p / "norm2", vec![d], ln),
            fc1: nn::linear(&p / "mlp" / "fc1", d, 4 * d, Default::default()),
            fc2: nn::linear(&p / "mlp" / "fc2", 4 * d, d, Default::default()),
            heads: cfg.heads,
        }
    }

    /// x: (B, T, D).
    fn forward(&self, x: &Tensor) -> Tensor {
        let (b, t, d) = x.size3().expect("tokens are B×T×D");
        let qkv = self.qkv.forward(&self.norm1.forward(x)).reshape([b, t, 3, self.heads, d / self.heads]).permute([2, 0, 3, 1, 4]);
        let a = Tensor::scaled_dot_product_attention(&qkv.get(0), &qkv.get(1), &qkv.get(2), None::<Tensor>, 0.0, false, None, false);
        let x = x + self.proj.forward(&a.transpose(1, 2).reshape([b, t, d]));
        let m = self.fc2.forward(&self.fc1.forward(&self.norm2.forward(&x)).gelu("none"));
        x + m
    }

    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = layer_norm_tensors(&self.norm1);
        for l in [&self.qkv, &self.proj] {
            v.extend(linear_tensors(l));
        }
        v.extend(layer_norm_tensors(&self.norm2));
        for l in [&self.fc1, &self.fc2] {
            v.extend(linear_tensors(l));
        }
        v
    }
}

/// `feature_extraction.rgb_net` (ViT + `output_upscaling`).
#[derive(Debug)]
pub struct FeatureExtraction {
    cfg: FeatureExtractionConfig,
    patch_embed: nn::Conv2D,
    cls_token: Tensor,
    pos_embed: Tensor,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    /// The timm classifier (`head`): in the checkpoint, never used.
    _head: nn::Linear,
    output_upscaling: nn::Linear,
    taps: Vec<i64>,
}

impl FeatureExtraction {
    /// The checkpoint's ViT-B/16 under `p` (`feature_extraction`), random weights.
    pub fn new(p: nn::Path) -> Self {
        Self::with_config(p, &FeatureExtractionConfig::base())
    }

    /// Any size (tests use small ones); the tapped blocks follow the reference's formula.
    pub fn with_config(p: nn::Path, cfg: &FeatureExtractionConfig) -> Self {
        let r = &p / "rgb_net";
        let v = &r / "vit";
        let d = cfg.embed_dim;
        let grid = IMAGE_SIZE / PATCH;
        let normal = |s| nn::Init::Randn { mean: 0.0, stdev: s };
        FeatureExtraction {
            cfg: cfg.clone(),
            patch_embed: nn::conv2d(&v / "patch_embed" / "proj", 3, d, PATCH, nn::ConvConfig { stride: PATCH, ..Default::default() }),
            cls_token: v.var("cls_token", &[1, 1, d], normal(1e-6)),
            pos_embed: v.var("pos_embed", &[1, grid * grid + 1, d], normal(0.02)),
            blocks: (0..cfg.depth).map(|i| Block::new(&v / "blocks" / i, cfg)).collect(),
            norm: nn::layer_norm(&v / "norm", vec![d], nn::LayerNormConfig { eps: 1e-6, ..Default::default() }),
            _head: nn::linear(&v / "head", d, cfg.num_classes, Default::default()),
            output_upscaling: nn::linear(&r / "output_upscaling", 4 * d, UPSCALE * UPSCALE * cfg.out_dim, Default::default()),
            taps: cfg.tapped_blocks(),
        }
    }

    pub fn config(&self) -> &FeatureExtractionConfig {
        &self.cfg
    }

    /// Every parameter (the VarStore has their names).
    fn tensors(&self) -> Vec<&Tensor> {
        let mut v = conv_tensors(&self.patch_embed);
        v.extend([&self.cls_token, &self.pos_embed]);
        for b in &self.blocks {
            v.extend(b.tensors());
        }
        v.extend(layer_norm_tensors(&self.norm));
        v.extend(linear_tensors(&self._head));
        v.extend(linear_tensors(&self.output_upscaling));
        v
    }

    /// Runs the extractor in `kind` (`Kind::BFloat16` on a CPU or CUDA, `Kind::Half` on CUDA,
    /// `Kind::Float` back): [`FeatureExtraction::forward`] computes and returns in that kind.
    pub fn to_kind(&self, kind: Kind) {
        set_kind(&self.tensors(), kind);
    }

    /// The element type it computes in.
    pub fn kind(&self) -> Kind {
        self.pos_embed.kind()
    }

    /// rgb: (B, 3, 224, 224), normalised as the PEM prepares it (BGR order, quirk Q12: the
    /// caller's business) → dense feature map (B, out_dim, 224, 224), in the weights' kind.
    ///
    /// # Panics
    /// When rgb is not B×3×224×224 (a caller bug: the PEM always resizes its crops to 224).
    pub fn forward(&self, rgb: &Tensor) -> Tensor {
        let (b, c, h, w) = rgb.size4().expect("rgb must be B×3×224×224");
        assert!(c == 3 && h == IMAGE_SIZE && w == IMAGE_SIZE, "PEM rgb input {:?}: need B×3×224×224", rgb.size());
        let d = self.cfg.embed_dim;
        let x = rgb.to_device(self.pos_embed.device()).to_kind(self.kind());
        let patches = self.patch_embed.forward(&x).flatten(2, -1).transpose(1, 2);
        let mut t = Tensor::cat(&[self.cls_token.expand([b, 1, d], false), patches], 1) + &self.pos_embed;
        let mut tapped = Vec::with_capacity(4);
        for (i, blk) in self.blocks.iter().enumerate() {
            t = blk.forward(&t);
            if self.taps.contains(&(i as i64)) {
                tapped.push(self.norm.forward(&t).narrow(1, 1, t.size()[1] - 1));
            }
        }
        let x = self.output_upscaling.forward(&Tensor::cat(&tapped, 2)); // (B, 196, 16·C)
        // Output a·4C + b·C + c of patch (i, j) goes to pixel (4i + a, 4j + b), channel c.
        let (g, u, oc) = (IMAGE_SIZE / PATCH, UPSCALE, self.cfg.out_dim);
        let map = x.view([b, g, g, u, u, oc]).permute([0, 5, 1, 3, 2, 4]).reshape([b, oc, g * u, g * u]);
        map.upsample_bilinear2d([h, w], false, None, None)
    }

    /// The map's channel vectors at flat pixel indices (row·W + col): map (B, C, H, W), choose
    /// (B, K) integer → (B, K, C).
    pub fn features_at(map: &Tensor, choose: &Tensor) -> Tensor {
        let (b, c, h, w) = map.size4().expect("feature map is B×C×H×W");
        let idx = choose.to_kind(Kind::Int64).to_device(map.device());
        let k = idx.size()[1];
        map.reshape([b, c, h * w]).gather(2, &idx.unsqueeze(1).expand([b, c, k], false), false).transpose(1, 2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn tapped_blocks_follow_the_reference_formula() {
        assert_eq!(FeatureExtractionConfig::base().tapped_blocks(), [2, 5, 8, 11]);
        let c = |depth| FeatureExtractionConfig { depth, ..FeatureExtractionConfig::base() };
        assert_eq!(c(8).tapped_blocks(), [1, 3, 5, 7]);
        assert_eq!(c(24).tapped_blocks(), [5, 11, 17, 23]);
    }

    #[test]
    fn pixel_blocks_and_gather() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = FeatureExtractionConfig { embed_dim: 16, depth: 4, heads: 2, out_dim: 4, num_classes: 3 };
        let fe = FeatureExtraction::with_config(vs.root() / "feature_extraction", &cfg);
        assert_eq!(vs.variables()["feature_extraction.rgb_net.output_upscaling.weight"].size(), [64, 64]);
        let map = fe.forward(&Tensor::randn([2, 3, 224, 224], (Kind::Float, Device::Cpu)));
        assert_eq!(map.size(), [2, 4, 224, 224]);
        let choose = Tensor::from_slice(&[0i64, 224 * 5 + 7, 224 * 224 - 1]).view([1, 3]).repeat([2, 1]);
        let f = FeatureExtraction::features_at(&map, &choose);
        assert_eq!(f.size(), [2, 3, 4]);
        assert_eq!(f.double_value(&[1, 1, 2]), map.double_value(&[1, 2, 5, 7]));
    }
}
