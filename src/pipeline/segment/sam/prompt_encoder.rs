//! SAM's prompt encoder: points, boxes and low-resolution masks → sparse (B×N×C) and dense
//! (B×C×h×w) embeddings for the mask decoder, plus the dense positional encoding of the image
//! embedding's grid. Parameters under `prompt_encoder.*` as in the official checkpoints.
use crate::nn::LayerNorm2d;
use std::f64::consts::PI;
use tch::nn::{self, Module};
use tch::{Kind, Tensor};

#[derive(Clone, Debug)]
pub struct PromptEncoderConfig {
    /// Prompt embedding dimension (256 for every official SAM).
    pub embed_dim: i64,
    /// (H, W) of the image embedding (64×64).
    pub image_embedding_size: (i64, i64),
    /// (H, W) of the padded encoder input (1024×1024); point and box coordinates are in it.
    pub input_image_size: (i64, i64),
    /// Hidden channels of the mask-downscaling convolutions (16).
    pub mask_in_chans: i64,
}

impl Default for PromptEncoderConfig {
    fn default() -> Self {
        PromptEncoderConfig { embed_dim: 256, image_embedding_size: (64, 64), input_image_size: (1024, 1024), mask_in_chans: 16 }
    }
}

/// Positional encoding with random spatial frequencies: coordinates in [0, 1]² go through a
/// fixed 2×F Gaussian matrix, then sin and cos (2F channels).
#[derive(Debug)]
pub struct PositionEmbeddingRandom {
    gaussian: Tensor,
}

impl PositionEmbeddingRandom {
    pub fn new(p: nn::Path, num_pos_feats: i64) -> Self {
        // A buffer in the reference (not trained), but stored in the checkpoint.
        PositionEmbeddingRandom { gaussian: p.zeros_no_train("positional_encoding_gaussian_matrix", &[2, num_pos_feats]) }
    }

    /// `coords` …×2 as (x, y) in [0, 1] → …×2F.
    fn encode(&self, coords: &Tensor) -> Tensor {
        let c = (coords * 2.0 - 1.0).matmul(&self.gaussian) * (2.0 * PI);
        Tensor::cat(&[c.sin(), c.cos()], -1)
    }

    /// The encoding of every cell centre of an h×w grid: 2F×h×w.
    pub fn grid(&self, (h, w): (i64, i64)) -> Tensor {
        let opts = (Kind::Float, self.gaussian.device());
        let y = ((Tensor::arange(h, opts) + 0.5) / h as f64).view([h, 1]).expand([h, w], false);
        let x = ((Tensor::arange(w, opts) + 0.5) / w as f64).view([1, w]).expand([h, w], false);
        self.encode(&Tensor::stack(&[x, y], -1)).permute([2, 0, 1])
    }

    /// `coords` B×N×2 in pixels of an image of `(h, w)` → B×N×2F.
    pub fn with_coords(&self, coords: &Tensor, (h, w): (i64, i64)) -> Tensor {
        let scale = Tensor::from_slice(&[1.0 / w as f32, 1.0 / h as f32]).to_device(coords.device());
        self.encode(&(coords.to_kind(Kind::Float) * scale))
    }
}

#[derive(Debug)]
pub struct PromptEncoder {
    pub config: PromptEncoderConfig,
    pe_layer: PositionEmbeddingRandom,
    /// Negative point, positive point, box top-left, box bottom-right: 1×C each.
    point_embeddings: Vec<Tensor>,
    not_a_point_embed: Tensor,
    no_mask_embed: Tensor,
    mask_conv0: nn::Conv2D,
    mask_norm1: LayerNorm2d,
    mask_conv3: nn::Conv2D,
    mask_norm4: LayerNorm2d,
    mask_conv6: nn::Conv2D,
}

impl PromptEncoder {
    /// `p` is the `prompt_encoder` path.
    pub fn new(p: nn::Path, config: &PromptEncoderConfig) -> Self {
        let c = config.embed_dim;
        let mic = config.mask_in_chans;
        let point_embeddings = (0..4).map(|i| super::common::embedding(&p / "point_embeddings" / i, 1, c)).collect();
        let md = &p / "mask_downscaling";
        let s2 = nn::ConvConfig { stride: 2, ..Default::default() };
        PromptEncoder {
            config: config.clone(),
            pe_layer: PositionEmbeddingRandom::new(&p / "pe_layer", c / 2),
            point_embeddings,
            not_a_point_embed: super::common::embedding(&p / "not_a_point_embed", 1, c),
            no_mask_embed: super::common::embedding(&p / "no_mask_embed", 1, c),
            mask_conv0: nn::conv2d(&md / 0, 1, mic / 4, 2, s2),
            mask_norm1: LayerNorm2d::new(&md / 1, mic / 4),
            mask_conv3: nn::conv2d(&md / 3, mic / 4, mic, 2, s2),
            mask_norm4: LayerNorm2d::new(&md / 4, mic),
            mask_conv6: nn::conv2d(&md / 6, mic, c, 1, Default::default()),
        }
    }

    /// The positional encoding of the image embedding's grid: 1×C×h×w.
    pub fn dense_pe(&self) -> Tensor {
        self.pe_layer.grid(self.config.image_embedding_size).unsqueeze(0)
    }

    /// Points B×N×2 (x, y in input-image pixels) with labels B×N (1 foreground, 0 background,
    /// −1 padding) → B×N'×C; a padding point is appended when `pad`.
    fn embed_points(&self, points: &Tensor, labels: &Tensor, pad: bool) -> Tensor {
        let mut points = points.to_kind(Kind::Float) + 0.5;
        let mut labels = labels.to_kind(Kind::Int64);
        if pad {
            let b = points.size()[0];
            points = Tensor::cat(&[points, Tensor::zeros([b, 1, 2], (Kind::Float, labels.device()))], 1);
            labels = Tensor::cat(&[labels, Tensor::full([b, 1], -1, (Kind::Int64, points.device()))], 1);
        }
        let pe = self.pe_layer.with_coords(&points, self.config.input_image_size);
        let l = labels.unsqueeze(-1);
        let is = |v: i64| l.eq(v).to_kind(Kind::Float);
        pe * l.ne(-1).to_kind(Kind::Float)
            + is(-1) * &self.not_a_point_embed
            + is(0) * &self.point_embeddings[0]
            + is(1) * &self.point_embeddings[1]
    }

    /// Boxes B×4 (x0, y0, x1, y1 in input-image pixels) → B×2×C.
    fn embed_boxes(&self, boxes: &Tensor) -> Tensor {
        let coords = (boxes.to_kind(Kind::Float) + 0.5).reshape([-1, 2, 2]);
        let pe = self.pe_layer.with_coords(&coords, self.config.input_image_size);
        let corner = Tensor::cat(&[&self.point_embeddings[2], &self.point_embeddings[3]], 0);
        pe + corner.unsqueeze(0)
    }

    /// Low-resolution mask logits B×1×4h×4w → B×C×h×w.
    fn embed_masks(&self, masks: &Tensor) -> Tensor {
        let x = self.mask_conv0.forward(masks);
        let x = self.mask_norm1.forward(&x).gelu("none");
        let x = self.mask_conv3.forward(&x);
        let x = self.mask_norm4.forward(&x).gelu("none");
        self.mask_conv6.forward(&x)
    }

    /// (sparse B×N×C, dense B×C×h×w). `points` is (coordinates B×N×2, labels B×N); when there is
    /// no box a padding point is appended to the points, as the reference does.
    pub fn forward(&self, points: Option<(&Tensor, &Tensor)>, boxes: Option<&Tensor>, masks: Option<&Tensor>) -> (Tensor, Tensor) {
        let bs = match (points, boxes, masks) {
            (Some((p, _)), _, _) => p.size()[0],
            (None, Some(b), _) => b.size()[0],
            (None, None, Some(m)) => m.size()[0],
            _ => 1,
        };
        let device = self.no_mask_embed.device();
        let mut sparse = vec![Tensor::zeros([bs, 0, self.config.embed_dim], (Kind::Float, device))];
        if let Some((coords, labels)) = points {
            sparse.push(self.embed_points(coords, labels, boxes.is_none()));
        }
        if let Some(b) = boxes {
            sparse.push(self.embed_boxes(b));
        }
        let sparse = Tensor::cat(&sparse, 1);
        let dense = match masks {
            Some(m) => self.embed_masks(m),
            None => {
                let (h, w) = self.config.image_embedding_size;
                self.no_mask_embed.view([1, -1, 1, 1]).expand([bs, -1, h, w], false)
            }
        };
        (sparse, dense)
    }
}
