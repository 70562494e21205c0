//! What DINOv2 sees of a proposal or a template, and what SAM-6D keeps of what it says.
//!
//! The ISM compares proposals with templates through DINOv2 features of 224×224 crops. The crop
//! geometry decides which pixels DINOv2 sees, so it follows the reference's `CropResizePad`
//! (`utils/bbox_utils.py`) index for index, including its float32 quirks (Q4, Q5); the tests
//! compare against crops made by the reference code itself (`scripts/gen_ism_fixtures.py`).
//! Every crop is one gather: the source pixel of each of the 224×224 outputs is worked out
//! here, and a tensor gathers them (on the CPU or the GPU) in one operation.
use crate::geometry::Proposal;
use anyhow::{ensure, Result};
use tch::{Device, Kind, Tensor};

/// Side of the square crops DINOv2 describes.
pub const CROP: i64 = 224;
/// DINOv2's patch size: the validity grid is 16×16 at 224 px.
pub const PATCH: i64 = 14;
/// A patch vector is kept when more than this fraction of its pixels are in the mask
/// (`validpatch_thresh`).
pub const VALID_PATCH: f64 = 0.5;
/// ImageNet statistics, as the reference's `rgb_normalize` applies them to queries.
pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The box the reference crops a SAM proposal with: SAM's XYXY with the max **inclusive**, used
/// as if it were exclusive (Q4 reproduced: the last row and column of the object are dropped).
pub fn sam_box(p: &Proposal) -> [i64; 4] {
    p.bbox.map(|v| v as i64)
}

/// libtorch's nearest-neighbour rule when `interpolate` is given a scale factor (checked against
/// the CPU kernel for every box size up to 640; the CUDA kernel uses the same float32 rule): the
/// reciprocal of the scale rounded to float32, source = floor(dst · that) in float32, clamped to
/// the last index. No shortcut for out = in or out = 2·in (unlike some other libtorch paths).
fn nearest(in_len: i64, out_len: i64, scale: f64) -> Vec<i64> {
    let r = (1.0 / scale) as f32;
    (0..out_len).map(|d| ((d as f32 * r).floor() as i64).min(in_len - 1)).collect()
}

/// The reference's scale `224 / max(size)`: a Python int divided by an int64 tensor, which torch
/// computes as `reciprocal(size) * 224` in float32 (two roundings: for 1 ≤ L ≤ 640 the long side
/// then comes out 223, not 224, for 282 sizes; Q5). Used as a double afterwards (`.item()`).
fn crop_scale(long_side: i64) -> f64 {
    ((1.0f32 / long_side as f32) * CROP as f32) as f64
}

/// Centre `v` in `target` slots the way the reference pads (`top = max((224 − n) // 2, 0)`, the
/// rest after); padding slots are −1.
fn pad(v: Vec<i64>, target: i64) -> Vec<i64> {
    let n = v.len() as i64;
    let before = ((target - n).div_euclid(2)).max(0);
    let after = (target - n - before).max(0);
    let mut out = vec![-1; before as usize];
    out.extend(v);
    out.extend(std::iter::repeat_n(-1, after as usize));
    out
}

/// Where each row and column of the 224×224 crop of `bbox` comes from in a `width × height`
/// image (absolute indices; −1 = zero padding), as `CropResizePad`:
/// - size = (x1 − x0, y1 − y0); scale = 224 / max(size) in float32 as torch computes it (Q5,
///   `crop_scale`);
/// - nearest resize of rows y0..y1−1, columns x0..x1−1 by that scale: out = floor(in · scale), so
///   the long side is 223 for many sizes (Q5);
/// - zero padding to 224×224, centred, when the resized crop is not square;
/// - a final nearest resize by 224 / side (only changes a square crop that came out 223).
///
/// `None` for a box that the reference crashes on (Q10, fixed by skipping it: an empty box or
/// one whose short side scales below one pixel) and for a box outside the image.
pub fn crop_map(bbox: [i64; 4], width: i64, height: i64) -> Option<(Vec<i64>, Vec<i64>)> {
    let [x0, y0, x1, y1] = bbox;
    if x0 < 0 || y0 < 0 || x1 > width || y1 > height {
        return None;
    }
    let (w, h) = (x1 - x0, y1 - y0);
    if w <= 0 || h <= 0 {
        return None;
    }
    let scale = crop_scale(w.max(h));
    let (out_w, out_h) = ((w as f64 * scale).floor() as i64, (h as f64 * scale).floor() as i64);
    if out_w < 1 || out_h < 1 {
        return None;
    }
    let mut rows: Vec<i64> = nearest(h, out_h, scale).into_iter().map(|r| r + y0).collect();
    let mut cols: Vec<i64> = nearest(w, out_w, scale).into_iter().map(|c| c + x0).collect();
    // The reference pads when the aspect ratio differs from the target's (1), i.e. w ≠ h.
    if out_w != out_h {
        rows = pad(rows, CROP);
        cols = pad(cols, CROP);
    }
    let side = rows.len() as i64;
    let final_scale = CROP as f64 / side as f64;
    if (side as f64 * final_scale).floor() as i64 != CROP {
        return None; // never happens for sides 223 and 224, the only ones that reach here
    }
    let idx = nearest(side, CROP, final_scale);
    Some((idx.iter().map(|&i| rows[i as usize]).collect(), idx.iter().map(|&i| cols[i as usize]).collect()))
}

/// Gathers the crops `maps` (absolute indices, −1 = pad) from `img` (C,H,W) → (K,C,224,224).
fn gather(img: &Tensor, maps: &[(Vec<i64>, Vec<i64>)]) -> Tensor {
    let (c, h, w) = img.size3().expect("a (C,H,W) image");
    let k = maps.len() as i64;
    if k == 0 {
        return Tensor::zeros([0, c, CROP, CROP], (img.kind(), img.device()));
    }
    // One zero row and column past the image stand for the padding.
    let padded = img.constant_pad_nd([0, 1, 0, 1]);
    let fix = |v: &[i64], pad_at: i64| v.iter().map(|&i| if i < 0 { pad_at } else { i }).collect::<Vec<i64>>();
    let rows: Vec<i64> = maps.iter().flat_map(|(r, _)| fix(r, h)).collect();
    let cols: Vec<i64> = maps.iter().flat_map(|(_, c)| fix(c, w)).collect();
    let rows = Tensor::from_slice(&rows).view([k, CROP, 1]).to_device(img.device());
    let cols = Tensor::from_slice(&cols).view([k, 1, CROP]).to_device(img.device());
    // (C, K, 224, 224) → (K, C, 224, 224)
    padded.index(&[None, Some(rows), Some(cols)]).permute([1, 0, 2, 3]).contiguous()
}

/// `CropResizePad(224)` of one (C,H,W) float image on the box `bbox` (x0, y0, x1, y1 used with
/// an exclusive end, as the reference uses SAM's inclusive boxes, Q4). `None` for a degenerate
/// box (Q10: the reference crashes; the fix is to skip it).
pub fn crop_resize_pad(img: &Tensor, bbox: [i64; 4]) -> Option<Tensor> {
    let (_, h, w) = img.size3().ok()?;
    let map = crop_map(bbox, w, h)?;
    Some(gather(img, &[map]).squeeze_dim(0))
}

/// RGB u8 → (3,H,W) float in [0,1] on `device`: float32(x) / 255 like torchvision's `ToTensor`
/// (the same float as the template path's float64 x / 255 rounded to float32).
fn unit_rgb(rgb: &image::RgbImage, device: Device) -> Tensor {
    let (w, h) = rgb.dimensions();
    Tensor::from_slice(rgb.as_raw()).view([h as i64, w as i64, 3]).to_device(device).permute([2, 0, 1]).to_kind(Kind::Float) / 255.0
}

/// ImageNet normalisation as torchvision's `Normalize` computes it: (x − mean) / std in float32.
fn imagenet(x: &Tensor) -> Tensor {
    let mean = Tensor::from_slice(&IMAGENET_MEAN).view([3, 1, 1]).to_device(x.device());
    let std = Tensor::from_slice(&IMAGENET_STD).view([3, 1, 1]).to_device(x.device());
    (x - mean) / std
}

/// Rows of a row-major bool mask, read through a crop map, as 0/1 bytes (224×224).
fn crop_mask(mask: &[bool], width: i64, map: &(Vec<i64>, Vec<i64>)) -> Vec<u8> {
    let (rows, cols) = map;
    let mut out = Vec::with_capacity((CROP * CROP) as usize);
    for &r in rows {
        for &c in cols {
            out.push(u8::from(r >= 0 && c >= 0 && mask[(r * width + c) as usize]));
        }
    }
    out
}

/// DINOv2's inputs for the proposals, in proposal order.
pub struct QueryBatch {
    /// (K,3,224,224): ImageNet-normalised, then multiplied by the mask (the reference masks in
    /// normalised space, so the background and the padding are the mean colour), then cropped.
    pub images: Tensor,
    /// (K,224,224) float 0/1: the cropped masks (for patch validity).
    pub masks: Tensor,
    /// Which proposals the K rows are (indices into the proposals given); degenerate boxes
    /// (Q10) and proposals of another image size are left out.
    pub kept: Vec<usize>,
}

/// The reference's `process_rgb_proposals` + `process_masks_proposals` for every proposal.
/// Cropping the masked image equals masking the cropped image pixel for pixel (the same float
/// product), so the image is normalised once and each proposal is one gather.
pub fn query_batch(rgb: &image::RgbImage, proposals: &[Proposal], device: Device) -> QueryBatch {
    let (w, h) = (rgb.width() as i64, rgb.height() as i64);
    let mut kept = Vec::new();
    let mut maps = Vec::new();
    let mut masks = Vec::new();
    for (i, p) in proposals.iter().enumerate() {
        if p.width as i64 != w || p.height as i64 != h || p.mask.len() != p.width * p.height {
            tracing::warn!("proposal {i} is {}×{}, the image {w}×{h}: skipped", p.width, p.height);
            continue;
        }
        // Q10 fixed: the reference crashes on these; they cannot be described, so skip them.
        let Some(map) = crop_map(sam_box(p), w, h) else {
            tracing::debug!("proposal {i}: degenerate box {:?} skipped", p.bbox);
            continue;
        };
        masks.extend(crop_mask(&p.mask, w, &map));
        maps.push(map);
        kept.push(i);
    }
    let k = kept.len() as i64;
    let masks = Tensor::from_slice(&masks).view([k, CROP, CROP]).to_device(device).to_kind(Kind::Float);
    let images = gather(&imagenet(&unit_rgb(rgb, device)), &maps) * masks.unsqueeze(1);
    QueryBatch { images, masks, kept }
}

/// The box of a mask's set pixels with an exclusive end, like PIL's `getbbox` that the
/// reference uses on template masks.
fn mask_box(mask: &[bool], width: usize) -> Option<[i64; 4]> {
    let mut b: Option<[i64; 4]> = None;
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let (x, y) = ((i % width) as i64, (i / width) as i64);
        b = Some(match b {
            None => [x, y, x + 1, y + 1],
            Some([x0, y0, x1, y1]) => [x0.min(x), y0.min(y), x1.max(x + 1), y1.max(y + 1)],
        });
    }
    b
}

/// DINOv2's inputs for the templates: rgb × mask, cropped on the mask's box → (T,3,224,224) and
/// the cropped masks (T,224,224). A view that shows nothing of the object (a flat part seen
/// edge-on: an empty or too thin mask) gets a blank image and an empty mask, so the indices
/// still follow the views; [`blank_views`] names them. The reference fails on such views.
///
/// `normalize == false` reproduces Q1: the reference's custom script feeds templates in `[0, 1]`
/// **without** ImageNet normalisation (black background and padding) while queries are
/// normalised. `normalize == true` is the fix: ImageNet-normalised, then masked, like the queries.
pub fn template_batch(rgbs: &[image::RgbImage], masks: &[Vec<bool>], normalize: bool, device: Device) -> Result<(Tensor, Tensor)> {
    ensure!(rgbs.len() == masks.len(), "{} template images but {} masks", rgbs.len(), masks.len());
    let mut images = Vec::with_capacity(rgbs.len());
    let mut crops = Vec::with_capacity(rgbs.len());
    for (t, (rgb, mask)) in rgbs.iter().zip(masks).enumerate() {
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        ensure!(mask.len() == w * h, "template {t}: the mask has {} pixels, the image {w}×{h}", mask.len());
        let Some(map) = mask_box(mask, w).and_then(|bbox| crop_map(bbox, w as i64, h as i64)) else {
            images.push(Tensor::zeros([1, 3, CROP, CROP], (Kind::Float, device)));
            crops.push(Tensor::zeros([1, CROP, CROP], (Kind::Uint8, Device::Cpu)));
            continue;
        };
        let m = Tensor::from_slice(&mask.iter().map(|&b| u8::from(b)).collect::<Vec<u8>>()).view([h as i64, w as i64]).to_device(device).to_kind(Kind::Float);
        let unit = unit_rgb(rgb, device);
        let img = (if normalize { imagenet(&unit) } else { unit }) * &m;
        images.push(gather(&img, std::slice::from_ref(&map)));
        crops.push(Tensor::from_slice(&crop_mask(mask, w as i64, &map)).view([1, CROP, CROP]));
    }
    if images.is_empty() {
        return Ok((Tensor::zeros([0, 3, CROP, CROP], (Kind::Float, device)), Tensor::zeros([0, CROP, CROP], (Kind::Float, device))));
    }
    Ok((Tensor::cat(&images, 0), Tensor::cat(&crops, 0).to_device(device).to_kind(Kind::Float)))
}

/// The views of a template batch whose crop mask is empty: they show nothing to describe.
pub fn blank_views(masks224: &Tensor) -> Tensor {
    masks224.flatten(1, -1).sum_dim_intlist(&[1i64][..], false, Kind::Float).eq(0.0)
}

/// SAM-6D's descriptors of a batch of crops.
pub struct Descriptors {
    /// (N,D): the final-normed class token (not re-normalised here; the similarity normalises).
    pub cls: Tensor,
    /// (N,P,D): patch tokens, zeroed where the patch is not in the mask, then L2-normalised
    /// (zero vectors stay zero).
    pub patches: Tensor,
}

/// From DINOv2's final-normed tokens (N,1+P,D) and the 224² crop masks (N,224,224), as the
/// reference's `compute_cls_and_patch_features`: a patch is valid when the mean of its
/// `patch`×`patch` mask pixels is > 0.5; invalid patch vectors are zeroed, then every patch
/// vector is divided by max(‖v‖, 1e-12) (`F.normalize`).
pub fn descriptors(tokens: &Tensor, masks224: &Tensor, patch: i64) -> Descriptors {
    let cls = tokens.select(1, 0);
    let n_tokens = tokens.size()[1];
    let patches = tokens.narrow(1, 1, n_tokens - 1);
    let valid = masks224
        .unsqueeze(1)
        .to_kind(Kind::Float)
        .avg_pool2d([patch, patch], [patch, patch], [0, 0], false, true, None)
        .flatten(1, -1)
        .gt(VALID_PATCH);
    let masked = patches * valid.unsqueeze(-1);
    let norm = masked.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12);
    Descriptors { cls, patches: masked / norm }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proposal(w: usize, h: usize, rect: [usize; 4]) -> Proposal {
        let mut mask = vec![false; w * h];
        for y in rect[1]..=rect[3] {
            for x in rect[0]..=rect[2] {
                mask[y * w + x] = true;
            }
        }
        Proposal { width: w, height: h, mask, bbox: rect.map(|v| v as f32), predicted_iou: 1.0, stability_score: 1.0 }
    }

    #[test]
    fn long_side_is_223_for_282_sizes() {
        // The reference notes count 282 of the 640 possible long sides that come out 223 (Q5).
        let n = (1..=640).filter(|&l| ((l as f64) * crop_scale(l)).floor() as i64 == 223).count();
        assert_eq!(n, 282);
        // A wide 223 box: one zero column at the end.
        let (_, cols) = crop_map([0, 0, 3, 1], 640, 480).unwrap();
        assert_eq!(cols.iter().filter(|&&c| c < 0).count(), 0, "L = 3 scales to 224");
        let (_, cols) = crop_map([0, 0, 41, 1], 640, 480).unwrap();
        assert_eq!(cols[223], -1, "L = 41 scales to 223");
        // Such a square box is stretched back to 224 by the final resize; a non-square one gets
        // a zero row/column at the end.
        let (rows, cols) = crop_map([0, 0, 300, 300], 640, 480).unwrap();
        assert_eq!((rows.len(), cols.len()), (224, 224));
        assert!(rows.iter().chain(&cols).all(|&i| i >= 0));
    }

    #[test]
    fn degenerate_boxes_are_skipped() {
        assert!(crop_map([5, 5, 5, 9], 64, 48).is_none()); // width 0 (a 1-px-wide SAM mask)
        assert!(crop_map([0, 0, 1, 479], 640, 480).is_none()); // short side scales to 0 px
        assert!(crop_map([0, 0, 2, 479], 640, 480).is_none());
        assert!(crop_map([0, 0, 3, 479], 640, 480).is_some());
        assert!(crop_map([0, 0, 65, 10], 64, 48).is_none()); // outside the image
        let rgb = image::RgbImage::new(64, 48);
        let props = vec![proposal(64, 48, [3, 4, 20, 30]), proposal(64, 48, [7, 2, 7, 40]), proposal(64, 48, [0, 0, 63, 47])];
        let q = query_batch(&rgb, &props, Device::Cpu);
        assert_eq!(q.kept, vec![0, 2]);
        assert_eq!(q.images.size(), [2, 3, CROP, CROP]);
        assert_eq!(q.masks.size(), [2, CROP, CROP]);
        let none = query_batch(&rgb, &[], Device::Cpu);
        assert_eq!(none.images.size(), [0, 3, CROP, CROP]);
    }

    #[test]
    fn normalised_templates_are_imagenet_then_masked() {
        let mut rgb = image::RgbImage::new(32, 24);
        for (x, y, p) in rgb.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 7) as u8, (y * 9) as u8, ((x + y) * 3) as u8]);
        }
        let mut mask = vec![false; 32 * 24];
        for y in 5..15 {
            for x in 4..28 {
                mask[y * 32 + x] = true;
            }
        }
        let (raw, m) = template_batch(std::slice::from_ref(&rgb), std::slice::from_ref(&mask), false, Device::Cpu).unwrap();
        let (norm, m2) = template_batch(&[rgb], &[mask], true, Device::Cpu).unwrap();
        assert_eq!(m.size(), [1, CROP, CROP]);
        assert!(m.equal(&m2));
        let mean = Tensor::from_slice(&IMAGENET_MEAN).view([1, 3, 1, 1]);
        let std = Tensor::from_slice(&IMAGENET_STD).view([1, 3, 1, 1]);
        let expect = (raw - &mean) / &std * m.unsqueeze(1);
        assert!((norm - expect).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn views_showing_nothing_stay_in_place_blank() {
        let rgb = image::RgbImage::from_pixel(32, 24, image::Rgb([200, 100, 50]));
        let square: Vec<bool> = (0..32 * 24).map(|i| (4..20).contains(&(i % 32)) && (3..19).contains(&(i / 32))).collect();
        // A 1-px column 480 px high scales to 0 px wide: too thin to crop.
        let tall = image::RgbImage::from_pixel(8, 480, image::Rgb([200, 100, 50]));
        let sliver: Vec<bool> = (0..8 * 480).map(|i| i % 8 == 3).collect();
        let empty = vec![false; 32 * 24];
        let (images, masks) = template_batch(&[rgb.clone(), rgb, tall], &[empty, square, sliver], true, Device::Cpu).unwrap();
        assert_eq!(images.size(), [3, 3, CROP, CROP]);
        assert_eq!(Vec::<bool>::try_from(blank_views(&masks)).unwrap(), [true, false, true]);
        assert_eq!(images.narrow(0, 0, 1).abs().sum(Kind::Float).double_value(&[]), 0.0);
        assert!(images.narrow(0, 1, 1).abs().sum(Kind::Float).double_value(&[]) > 0.0);
    }

    #[test]
    fn descriptors_zero_invalid_patches_and_normalise_the_rest() {
        let tokens = Tensor::randn([2, 257, 8], (Kind::Float, Device::Cpu));
        let masks = Tensor::zeros([2, CROP, CROP], (Kind::Float, Device::Cpu));
        // Patch (0,0) of item 0 fully in, patch (0,1) exactly half in (not valid: > 0.5 needed).
        let _ = masks.get(0).narrow(0, 0, 14).narrow(1, 0, 14).fill_(1.0);
        let _ = masks.get(0).narrow(0, 0, 7).narrow(1, 14, 14).fill_(1.0);
        let d = descriptors(&tokens, &masks, PATCH);
        assert_eq!(d.cls.size(), [2, 8]);
        assert_eq!(d.patches.size(), [2, 256, 8]);
        let norms = d.patches.norm_scalaropt_dim(2, [-1], false);
        assert!((norms.double_value(&[0, 0]) - 1.0).abs() < 1e-6);
        assert_eq!(norms.double_value(&[0, 1]), 0.0);
        assert_eq!(norms.get(1).sum(Kind::Float).double_value(&[]), 0.0);
    }
}
