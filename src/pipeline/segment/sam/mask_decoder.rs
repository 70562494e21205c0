//! SAM's mask decoder: output tokens (IoU token + 4 mask tokens) and prompt tokens go through
//! the two-way transformer with the image embedding; the image side is upscaled ×4, each mask
//! token's hypernetwork MLP turns it into per-pixel weights, and an MLP on the IoU token predicts
//! each mask's quality. Parameters under `mask_decoder.*`.
use super::common::{embedding, Mlp};
use crate::nn::LayerNorm2d;
use super::transformer::TwoWayTransformer;
use tch::nn::{self, Module};
use tch::Tensor;

/// Prompts upscaled together on the CPU (see [`MaskDecoder::predict_masks`]).
const UPSCALE_CHUNK: i64 = 4;

#[derive(Clone, Debug)]
pub struct MaskDecoderConfig {
    pub transformer_dim: i64,
    pub num_multimask_outputs: i64,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: i64,
    pub transformer_depth: usize,
    pub transformer_heads: i64,
    pub transformer_mlp_dim: i64,
    pub attention_downsample_rate: i64,
}

impl Default for MaskDecoderConfig {
    /// The decoder of every official SAM (ViT-B, -L, -H).
    fn default() -> Self {
        MaskDecoderConfig {
            transformer_dim: 256,
            num_multimask_outputs: 3,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            transformer_depth: 2,
            transformer_heads: 8,
            transformer_mlp_dim: 2048,
            attention_downsample_rate: 2,
        }
    }
}

#[derive(Debug)]
pub struct MaskDecoder {
    pub config: MaskDecoderConfig,
    transformer: TwoWayTransformer,
    iou_token: Tensor,
    mask_tokens: Tensor,
    upscale0: nn::ConvTranspose2D,
    upscale_norm1: LayerNorm2d,
    upscale3: nn::ConvTranspose2D,
    hypernetworks: Vec<Mlp>,
    iou_prediction_head: Mlp,
}

impl MaskDecoder {
    /// `p` is the `mask_decoder` path.
    pub fn new(p: nn::Path, config: &MaskDecoderConfig) -> Self {
        let c = config.transformer_dim;
        let n_tokens = config.num_multimask_outputs + 1;
        let up = &p / "output_upscaling";
        let s2 = nn::ConvTransposeConfig { stride: 2, ..Default::default() };
        MaskDecoder {
            config: config.clone(),
            transformer: TwoWayTransformer::new(
                &p / "transformer",
                config.transformer_depth,
                c,
                config.transformer_heads,
                config.transformer_mlp_dim,
                config.attention_downsample_rate,
            ),
            iou_token: embedding(&p / "iou_token", 1, c),
            mask_tokens: embedding(&p / "mask_tokens", n_tokens, c),
            upscale0: nn::conv_transpose2d(&up / 0, c, c / 4, 2, s2),
            upscale_norm1: LayerNorm2d::new(&up / 1, c / 4),
            upscale3: nn::conv_transpose2d(&up / 3, c / 4, c / 8, 2, s2),
            hypernetworks: (0..n_tokens).map(|i| Mlp::new(&p / "output_hypernetworks_mlps" / i, c, c, c / 8, 3, false)).collect(),
            iou_prediction_head: Mlp::new(&p / "iou_prediction_head", c, config.iou_head_hidden_dim, n_tokens, config.iou_head_depth, false),
        }
    }

    /// All mask-token outputs: (mask logits B×4×4h×4w, IoU predictions B×4) for B prompts.
    /// `image_embeddings` is 1×C×h×w (repeated for each prompt; or B_img×C×h×w, each image
    /// repeated B times), `image_pe` 1×C×h×w, `sparse` B×N×C, `dense` B×C×h×w.
    pub fn predict_masks(&self, image_embeddings: &Tensor, image_pe: &Tensor, sparse: &Tensor, dense: &Tensor) -> (Tensor, Tensor) {
        let b = sparse.size()[0];
        let output_tokens = Tensor::cat(&[&self.iou_token, &self.mask_tokens], 0);
        let output_tokens = output_tokens.unsqueeze(0).expand([b, -1, -1], false);
        let tokens = Tensor::cat(&[output_tokens, sparse.to_kind(self.iou_token.kind())], 1);
        // One image and no mask prompt (the dense embedding is then one vector broadcast over
        // the batch): the transformer takes the image once, and its first attention layer
        // projects it once for all prompts instead of once per prompt.
        let shared = image_embeddings.size()[0] == 1 && (dense.size()[0] == 1 || dense.stride()[0] == 0);
        let src = if shared { image_embeddings + dense.narrow(0, 0, 1) } else { image_embeddings.repeat_interleave_self_int(b, 0, None) + dense };
        let (_, c, h, w) = src.size4().unwrap();
        let (hs, src) = self.transformer.forward(&src, image_pe, &tokens);
        let n = hs.size()[0];
        let src = src.expand([n, -1, -1], false);
        let iou_token_out = hs.select(1, 0);
        let n_masks = self.hypernetworks.len() as i64;
        let hyper_in: Vec<Tensor> = self.hypernetworks.iter().enumerate().map(|(i, mlp)| mlp.forward(&hs.select(1, 1 + i as i64))).collect();
        let hyper_in = Tensor::stack(&hyper_in, 1);
        // The image tokens B×hw×C are an N×H×W×C tensor: seen as N×C×H×W they are channels-last,
        // which the convolutions (and LayerNorm2d) take as they are, without a transposing copy.
        // On the CPU a few prompts at a time: the ×16-upscaled features are 8 MiB per prompt,
        // which then stay in cache through the upscaling and the mask product.
        let chunk = if src.device() == tch::Device::Cpu { UPSCALE_CHUNK } else { n };
        let masks: Vec<Tensor> = (0..n)
            .step_by(chunk as usize)
            .map(|s| {
                let m = chunk.min(n - s);
                let x = src.narrow(0, s, m).reshape([m, h, w, c]).permute([0, 3, 1, 2]);
                let mut up = self.upscale_norm1.forward(&self.upscale0.forward(&x));
                let _ = up.gelu_("none");
                let mut up = self.upscale3.forward(&up);
                let _ = up.gelu_("none");
                let (_, cu, hu, wu) = up.size4().unwrap();
                // masks = hyper_in · features, with the features as N×(hw)×C' (their layout).
                let feats = up.permute([0, 2, 3, 1]).reshape([m, hu * wu, cu]);
                hyper_in.narrow(0, s, m).matmul(&feats.transpose(1, 2)).view([m, n_masks, hu, wu])
            })
            .collect();
        let masks = Tensor::cat(&masks, 0);
        let iou = self.iou_prediction_head.forward(&iou_token_out);
        (masks, iou)
    }

    /// As the reference's `forward`: with `multimask_output` the 3 disambiguating masks (tokens
    /// 1..4), otherwise the single-mask token 0. Returns (mask logits B×M×4h×4w, IoU B×M).
    pub fn forward(&self, image_embeddings: &Tensor, image_pe: &Tensor, sparse: &Tensor, dense: &Tensor, multimask_output: bool) -> (Tensor, Tensor) {
        let (masks, iou) = self.predict_masks(image_embeddings, image_pe, sparse, dense);
        let n = masks.size()[1];
        let (start, len) = if multimask_output { (1, n - 1) } else { (0, 1) };
        (masks.narrow(1, start, len), iou.narrow(1, start, len))
    }
}
