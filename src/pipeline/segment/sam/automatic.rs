//! Segment Anything's automatic mask generator with SAM-6D's settings
//! (`SamAutomaticMaskGenerator` + SAM-6D's `CustomSamAutomaticMaskGenerator`, see
//! `shared/reference/sam6d-pipeline.md` §4.3): the frame is resized to width 640, encoded once,
//! a 32×32 grid of single positive clicks is decoded in batches (3 masks each), masks are kept
//! when their predicted IoU is > 0.88 and their stability score ≥ 0.97, duplicates are removed by
//! box NMS (0.7), and the survivors come back at the original frame size, best predicted IoU
//! first. One crop layer (the whole image), no small-region cleanup (`min_mask_region_area` 0),
//! as SAM-6D runs it.
use super::amg;
use super::model::{Embedding, Sam};
use crate::geometry::Proposal;
use image::RgbImage;
use std::borrow::Cow;
use std::time::Instant;
use tch::{Device, Kind, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct AmgConfig {
    /// Grid of `points_per_side²` click prompts.
    pub points_per_side: usize,
    /// Prompts decoded together (one decoder batch).
    pub points_per_batch: usize,
    /// Keep masks whose predicted IoU is strictly greater (filter off when ≤ 0, as SAM).
    pub pred_iou_thresh: f64,
    /// Keep masks whose stability score is ≥ this (filter off when ≤ 0, as SAM).
    pub stability_score_thresh: f64,
    pub stability_score_offset: f64,
    /// Logit above which a pixel is in the mask.
    pub mask_threshold: f64,
    /// Box IoU above which the lower-scored of two masks is dropped.
    pub box_nms_thresh: f64,
    /// SAM-6D first resizes the frame to this width (height `int(width·H/W)`, OpenCV bilinear)
    /// and maps the masks and boxes back; `None` segments the frame as it is.
    pub segmentor_width: Option<u32>,
}

impl Default for AmgConfig {
    /// SAM-6D's settings (its `sam.yaml` and the CLI's `--stability_score_thresh 0.97`).
    fn default() -> Self {
        AmgConfig {
            points_per_side: 32,
            points_per_batch: 64,
            pred_iou_thresh: 0.88,
            stability_score_thresh: 0.97,
            stability_score_offset: 1.0,
            mask_threshold: 0.0,
            box_nms_thresh: 0.7,
            segmentor_width: Some(640),
        }
    }
}

/// Milliseconds spent in one [`generate`]: image encoder, mask decoder batches, and everything
/// else (resizing, filters, boxes, NMS, masks back to the host and to the frame size).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AmgTimings {
    pub encoder_ms: f64,
    pub decoder_ms: f64,
    pub postprocess_ms: f64,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Mask proposals for `rgb` (in its pixels), best predicted IoU first. No surviving mask gives
/// an empty list (the reference crashes there).
pub fn generate(sam: &Sam, rgb: &RgbImage, cfg: &AmgConfig) -> anyhow::Result<(Vec<Proposal>, AmgTimings)> {
    anyhow::ensure!(rgb.width() > 0 && rgb.height() > 0, "empty image");
    let mut timings = AmgTimings::default();
    let t = Instant::now();
    let frame = match cfg.segmentor_width {
        Some(w) if w != rgb.width() => {
            anyhow::ensure!(w > 0, "segmentor width 0");
            let h = (w as u64 * rgb.height() as u64 / rgb.width() as u64) as u32;
            anyhow::ensure!(h > 0, "a {}×{} image is too flat to resize to width {w}", rgb.width(), rgb.height());
            Cow::Owned(resize_bilinear_cv(rgb, w, h))
        }
        _ => Cow::Borrowed(rgb),
    };
    timings.postprocess_ms += ms(t);

    let t = Instant::now();
    let emb = sam.encode(&frame);
    sync(sam.device());
    timings.encoder_ms = ms(t);

    let mut proposals = proposals_from_embedding(sam, &emb, cfg, &mut timings)?;
    let t = Instant::now();
    if frame.dimensions() != rgb.dimensions() {
        proposals = proposals.iter().map(|p| resize_proposal(p, rgb.width() as usize, rgb.height() as usize)).collect();
    }
    timings.postprocess_ms += ms(t);
    Ok((proposals, timings))
}

/// Everything after the encoder, on the frame the embedding was computed from: the point grid
/// over that frame, decoder batches, the predicted-IoU and stability filters, boxes, and box NMS
/// over all batches' survivors. Proposals are in the frame's pixels. Adds to `timings`'
/// decoder and postprocess times.
pub fn proposals_from_embedding(sam: &Sam, emb: &Embedding, cfg: &AmgConfig, timings: &mut AmgTimings) -> anyhow::Result<Vec<Proposal>> {
    anyhow::ensure!(cfg.points_per_side > 0 && cfg.points_per_batch > 0, "points_per_side and points_per_batch must be positive");
    let dev = sam.device();
    let (h, w) = emb.original_size;
    let points: Vec<f64> = amg::build_point_grid(cfg.points_per_side).iter().flat_map(|p| [p[0] * w as f64, p[1] * h as f64]).collect();

    let (mut masks, mut ious, mut stabs, mut boxes) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for chunk in points.chunks(2 * cfg.points_per_batch) {
        let b = (chunk.len() / 2) as i64;
        let t = Instant::now();
        let coords = Tensor::from_slice(chunk).view([b, 1, 2]);
        let labels = Tensor::ones([b, 1], (Kind::Int64, dev));
        let (low_res, iou) = sam.predict(emb, &coords, &labels, true);
        sync(dev);
        timings.decoder_ms += ms(t);

        let t = Instant::now();
        tch::no_grad(|| {
            // Point-major, then the 3 masks of each point: the reference's flatten(0, 1).
            let low_res = low_res.flatten(0, 1);
            let iou = iou.flatten(0, 1);
            // The predicted-IoU filter needs no pixels: apply it before upsampling.
            let keep = if cfg.pred_iou_thresh > 0.0 { iou.gt(cfg.pred_iou_thresh).nonzero().squeeze_dim(1) } else { Tensor::arange(iou.size()[0], (Kind::Int64, dev)) };
            if keep.size()[0] > 0 {
                let logits = sam.postprocess_masks(&low_res.index_select(0, &keep).unsqueeze(1), emb.input_size, emb.original_size).squeeze_dim(1);
                let iou = iou.index_select(0, &keep);
                let stab = amg::stability_score(&logits, cfg.mask_threshold, cfg.stability_score_offset);
                let keep = if cfg.stability_score_thresh > 0.0 { stab.ge(cfg.stability_score_thresh).nonzero().squeeze_dim(1) } else { Tensor::arange(stab.size()[0], (Kind::Int64, dev)) };
                let m = logits.index_select(0, &keep).gt(cfg.mask_threshold);
                boxes.push(amg::masks_to_boxes(&m));
                masks.push(m);
                ious.push(iou.index_select(0, &keep));
                stabs.push(stab.index_select(0, &keep));
            }
        });
        sync(dev);
        timings.postprocess_ms += ms(t);
    }

    let t = Instant::now();
    if masks.is_empty() {
        timings.postprocess_ms += ms(t);
        return Ok(Vec::new());
    }
    let to_vec = |ts: &[Tensor]| Vec::<f32>::try_from(Tensor::cat(ts, 0).to_device(Device::Cpu).to_kind(Kind::Float).flatten(0, -1)).expect("f32 vector");
    let (ious, stabs) = (to_vec(&ious), to_vec(&stabs));
    let flat_boxes = to_vec(&boxes);
    let box_list: Vec<[f32; 4]> = flat_boxes.chunks(4).map(|b| [b[0], b[1], b[2], b[3]]).collect();
    let keep = amg::box_nms(&box_list, &ious, cfg.box_nms_thresh);
    let keep_t = Tensor::from_slice(&keep.iter().map(|&i| i as i64).collect::<Vec<_>>()).to_device(dev);
    let kept = Tensor::cat(&masks, 0).index_select(0, &keep_t).to_device(Device::Cpu);
    let pixels = (h * w) as usize;
    let bytes = Vec::<u8>::try_from(kept.to_kind(Kind::Uint8).flatten(0, -1)).expect("mask bytes");
    let proposals = keep
        .iter()
        .enumerate()
        .map(|(k, &i)| Proposal {
            width: w as usize,
            height: h as usize,
            mask: bytes[k * pixels..(k + 1) * pixels].iter().map(|&b| b != 0).collect(),
            bbox: box_list[i],
            predicted_iou: ious[i],
            stability_score: stabs[i],
        })
        .collect();
    timings.postprocess_ms += ms(t);
    Ok(proposals)
}

/// A proposal on the segmentor's frame brought to a `width × height` frame as SAM-6D does: the
/// 0/1 mask resized bilinearly (align_corners false) — binarised at 0.5 here, where the reference
/// keeps the fractional values — and the box scaled by width/frame width, clamped to the image.
fn resize_proposal(p: &Proposal, width: usize, height: usize) -> Proposal {
    let m: Vec<f32> = p.mask.iter().map(|&b| b as u8 as f32).collect();
    let t = Tensor::from_slice(&m).view([1, 1, p.height as i64, p.width as i64]);
    let r = t.upsample_bilinear2d([height as i64, width as i64], false, None, None).gt(0.5).flatten(0, -1);
    let mask: Vec<bool> = Vec::<u8>::try_from(r.to_kind(Kind::Uint8)).expect("mask").into_iter().map(|b| b != 0).collect();
    let s = width as f32 / p.width as f32;
    let (xmax, ymax) = ((width - 1) as f32, (height - 1) as f32);
    let b = p.bbox;
    Proposal {
        width,
        height,
        mask,
        bbox: [(b[0] * s).clamp(0.0, xmax), (b[1] * s).clamp(0.0, ymax), (b[2] * s).clamp(0.0, xmax), (b[3] * s).clamp(0.0, ymax)],
        predicted_iou: p.predicted_iou,
        stability_score: p.stability_score,
    }
}

/// OpenCV's `cv2.resize(…, INTER_LINEAR)` on 8-bit RGB, what SAM-6D's pre-resize calls (see
/// [`crate::io::image::resize_linear_cv`]). Only used for frames not 640 pixels wide.
pub fn resize_bilinear_cv(rgb: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let out = crate::io::image::resize_linear_cv(rgb.as_raw(), w, h, 3, width as usize, height as usize);
    RgbImage::from_raw(width, height, out).expect("buffer of the right size")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sam6d_defaults() {
        let c = AmgConfig::default();
        assert_eq!((c.points_per_side, c.points_per_batch, c.segmentor_width), (32, 64, Some(640)));
        assert_eq!((c.pred_iou_thresh, c.stability_score_thresh, c.stability_score_offset, c.box_nms_thresh, c.mask_threshold), (0.88, 0.97, 1.0, 0.7, 0.0));
    }

    #[test]
    fn opencv_bilinear_upscale_and_downscale_by_hand() {
        // 2 → 4: centres map to −0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to the last).
        let img = RgbImage::from_raw(2, 1, vec![0, 0, 0, 100, 200, 255]).unwrap();
        let up = resize_bilinear_cv(&img, 4, 1);
        assert_eq!(up.as_raw(), &vec![0, 0, 0, 25, 50, 64, 75, 150, 191, 100, 200, 255]);
        // 4 → 2: centres map to 0.5 and 2.5: means of neighbours, no antialiasing.
        let img = RgbImage::from_raw(4, 1, vec![0, 0, 0, 10, 10, 10, 20, 20, 20, 31, 31, 31]).unwrap();
        assert_eq!(resize_bilinear_cv(&img, 2, 1).as_raw(), &vec![5, 5, 5, 26, 26, 26]);
        // Same size: identity.
        let img = RgbImage::from_fn(5, 3, |x, y| image::Rgb([x as u8 * 40, y as u8 * 90, 7]));
        assert_eq!(resize_bilinear_cv(&img, 5, 3), img);
    }

    #[test]
    fn proposals_resize_back_with_scaled_clamped_boxes() {
        // A 4×2 frame mask covering the right half, back to 8×4.
        let p = Proposal { width: 4, height: 2, mask: vec![false, false, true, true, false, false, true, true], bbox: [2.0, 0.0, 3.0, 1.0], predicted_iou: 0.9, stability_score: 0.98 };
        let r = resize_proposal(&p, 8, 4);
        assert_eq!((r.width, r.height), (8, 4));
        // Column centres x → (x + 0.5)/2 − 0.5 in the source: columns 4.. sample ≥ 1.75 → value
        // ≥ 0.75; column 3 samples 1.25 → 0.25; so the right half stays the right half.
        let row: Vec<bool> = (0..8).map(|x| x >= 4).collect();
        assert_eq!(r.mask, [row.clone(), row.clone(), row.clone(), row].concat());
        assert_eq!(r.bbox, [4.0, 0.0, 6.0, 2.0]);
        let r = resize_proposal(&Proposal { bbox: [0.0, 0.0, 3.9, 1.9], ..p.clone() }, 8, 4);
        assert_eq!(r.bbox, [0.0, 0.0, 7.0, 3.0], "clamped to the last pixel");
        assert_eq!((r.predicted_iou, r.stability_score), (0.9, 0.98));
    }
}
