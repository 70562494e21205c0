//! What the PEM network is fed, prepared as SAM-6D's `run_inference_custom.py` does
//! (`_get_template`, `get_test_data`; reference notes §5.2, §5.3): the square crop around a
//! mask, the masked colour crop resized to 224² exactly as OpenCV does it, the sampled pixels'
//! 3D points and where those pixels land in the 224² feature map.
//!
//! The reference draws its pixel samples with an unseeded `np.random.choice` (Q16); here the
//! draw goes through a [`PointSampler`], seeded in the product and replayable in parity tests.
use crate::geometry::SplitMix64;
use image::RgbImage;
use std::collections::VecDeque;
use tch::Tensor;

/// Side of the network's input image (`test_dataset.img_size`).
pub const IMG_SIZE: usize = 224;
/// Pixels sampled per template view (`n_sample_template_point`).
pub const TEMPLATE_POINTS: usize = 5000;
/// Pixels sampled per detection (`n_sample_observed_point`).
pub const OBSERVED_POINTS: usize = 2048;
/// A detection needs more than this many mask pixels with depth.
pub const MIN_MASK_PIXELS: usize = 32;
/// Observed points farther than this × the CAD radius from their mean are outliers.
pub const OUTLIER_RADIUS_FACTOR: f32 = 1.2;
/// A detection needs at least this many points left after the outlier gate.
pub const MIN_POINTS: usize = 4;
/// ImageNet statistics (torchvision `Normalize`), in RGB order.
pub const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// Draws `count` indices into `0..population`, the way the reference's `np.random.choice`
/// call does: with replacement when `population <= count`, else without.
pub trait PointSampler {
    fn choose(&mut self, population: usize, count: usize) -> Vec<usize>;
}

/// The product's sampler: seeded, so a run is repeatable (the reference's numpy RNG is not
/// seeded at all, Q16). Without replacement it is a partial Fisher–Yates shuffle.
#[derive(Clone, Debug)]
pub struct SeededSampler(SplitMix64);

impl SeededSampler {
    pub fn new(seed: u64) -> SeededSampler {
        SeededSampler(SplitMix64(seed))
    }

    fn below(&mut self, n: usize) -> usize {
        // Multiply-shift: unbiased enough for n ≪ 2^32 and cheap.
        ((self.0.next_u64() >> 32) * n as u64 >> 32) as usize
    }
}

impl PointSampler for SeededSampler {
    fn choose(&mut self, population: usize, count: usize) -> Vec<usize> {
        if population == 0 {
            return Vec::new();
        }
        if population <= count {
            return (0..count).map(|_| self.below(population)).collect();
        }
        let mut perm: Vec<usize> = (0..population).collect();
        for i in 0..count {
            let j = i + self.below(population - i);
            perm.swap(i, j);
        }
        perm.truncate(count);
        perm
    }
}

/// Replays recorded draws in order (parity tests feed the reference's own indices). Panics
/// when a draw is missing or does not fit the population: that is a broken fixture.
#[derive(Clone, Debug, Default)]
pub struct ReplaySampler(pub VecDeque<Vec<usize>>);

impl PointSampler for ReplaySampler {
    fn choose(&mut self, population: usize, count: usize) -> Vec<usize> {
        let draw = self.0.pop_front().expect("ReplaySampler: no recorded draw left");
        assert_eq!(draw.len(), count, "ReplaySampler: recorded draw has {} indices, {count} wanted", draw.len());
        assert!(draw.iter().all(|&i| i < population), "ReplaySampler: an index is ≥ the population {population}");
        draw
    }
}

/// SAM-6D's `get_bbox`: a square box around the mask's tight box, shifted (not shrunk) into
/// the image. Returns `[rmin, rmax, cmin, cmax]` with exclusive max, or None for an empty mask.
/// The side is 2·⌊b/2⌋ with b = min(max(box height, box width), min(H, W)), so an odd b loses
/// a pixel, as in the reference.
pub fn get_bbox(mask: &[bool], width: usize, height: usize) -> Option<[usize; 4]> {
    assert_eq!(mask.len(), width * height, "mask size");
    let (mut rmin, mut rmax, mut cmin, mut cmax) = (usize::MAX, 0, usize::MAX, 0);
    for (i, _) in mask.iter().enumerate().filter(|(_, &m)| m) {
        let (r, c) = (i / width, i % width);
        rmin = rmin.min(r);
        rmax = rmax.max(r);
        cmin = cmin.min(c);
        cmax = cmax.max(c);
    }
    if rmin == usize::MAX {
        return None;
    }
    let (rmax, cmax) = (rmax as i64 + 1, cmax as i64 + 1);
    let (rmin, cmin) = (rmin as i64, cmin as i64);
    let (h, w) = (height as i64, width as i64);
    let b = (rmax - rmin).max(cmax - cmin).min(h.min(w));
    let (cr, cc) = ((rmin + rmax) / 2, (cmin + cmax) / 2);
    let half = b / 2;
    let (mut r0, mut r1, mut c0, mut c1) = (cr - half, cr + half, cc - half, cc + half);
    if r0 < 0 {
        r1 -= r0;
        r0 = 0;
    }
    if c0 < 0 {
        c1 -= c0;
        c0 = 0;
    }
    if r1 > h {
        r0 -= r1 - h;
        r1 = h;
    }
    if c1 > w {
        c0 -= c1 - w;
        c1 = w;
    }
    Some([r0 as usize, r1 as usize, c0 as usize, c1 as usize])
}

/// The masked square crop as the network's image: BGR channel order (Q12, reproduced: the
/// weights were trained on it) × mask → 224² bilinear (OpenCV) → /255 → (x − mean)/std with
/// the RGB statistics applied to the B, G, R planes in that order. Returns (3, 224, 224) f32.
fn network_image(rgb: &RgbImage, mask: &[bool], bbox: [usize; 4]) -> Tensor {
    let [r0, r1, c0, c1] = bbox;
    let (cw, ch) = (c1 - c0, r1 - r0);
    let width = rgb.width() as usize;
    let raw = rgb.as_raw();
    let mut crop = vec![0u8; cw * ch * 3];
    for r in 0..ch {
        for c in 0..cw {
            let i = (r0 + r) * width + c0 + c;
            if mask[i] {
                for k in 0..3 {
                    crop[(r * cw + c) * 3 + k] = raw[i * 3 + 2 - k];
                }
            }
        }
    }
    let resized = crate::io::image::resize_linear_cv(&crop, cw, ch, 3, IMG_SIZE, IMG_SIZE);
    let n = IMG_SIZE * IMG_SIZE;
    let mut planes = vec![0f32; 3 * n];
    for (p, px) in resized.chunks_exact(3).enumerate() {
        for k in 0..3 {
            planes[k * n + p] = (f32::from(px[k]) / 255.0 - MEAN[k]) / STD[k];
        }
    }
    Tensor::from_slice(&planes).view([3, IMG_SIZE as i64, IMG_SIZE as i64])
}

/// `get_resize_rgb_choose`: a crop pixel's flat index (row-major in the crop) → its flat index
/// in the 224² map, floor(r·224/S)·224 + floor(c·224/S) with the ratio in f64 as numpy has it.
pub fn resize_choose(crop_index: usize, bbox: [usize; 4]) -> i64 {
    let [r0, r1, c0, c1] = bbox;
    let (ch, cw) = ((r1 - r0) as f64, (c1 - c0) as f64);
    let (ratio_h, ratio_w) = (IMG_SIZE as f64 / ch, IMG_SIZE as f64 / cw);
    let (r, c) = ((crop_index / (c1 - c0)) as f64, (crop_index % (c1 - c0)) as f64);
    ((r * ratio_h).floor() * IMG_SIZE as f64 + (c * ratio_w).floor()) as i64
}

/// One prepared point set with its image: a template view or a detection.
#[derive(Debug)]
pub struct PreparedInput {
    /// (3, 224, 224) f32, normalised BGR (see `network_image`).
    pub rgb: Tensor,
    /// Sampled points, metres (template: model frame; detection: camera frame).
    pub pts: Vec<[f32; 3]>,
    /// Where each sampled pixel lies in the 224² feature map (row·224 + col).
    pub rgb_choose: Vec<i64>,
    /// The square crop, `[rmin, rmax, cmin, cmax)`.
    pub bbox: [usize; 4],
}

/// The observed instance of one detection.
pub type ObservedInput = PreparedInput;
/// One template view.
pub type TemplateInput = PreparedInput;

/// Crop-local flat indices of the mask's pixels inside `bbox` (row-major, as numpy's
/// `mask[y1:y2, x1:x2].flatten().nonzero()`), with their full-frame indices.
fn crop_pixels(mask: &[bool], width: usize, bbox: [usize; 4]) -> Vec<(usize, usize)> {
    let [r0, r1, c0, c1] = bbox;
    let cw = c1 - c0;
    let mut out = Vec::new();
    for r in r0..r1 {
        for c in c0..c1 {
            let i = r * width + c;
            if mask[i] {
                out.push(((r - r0) * cw + (c - c0), i));
            }
        }
    }
    out
}

/// One template view (512² rgb, mask, model coordinates in mm) → the network's image, `count`
/// sampled points in metres (model frame) and their feature-map indices (§5.2). None when the
/// mask is empty.
pub fn template_input(rgb: &RgbImage, mask: &[bool], xyz_mm: &[[f32; 3]], count: usize, sampler: &mut dyn PointSampler) -> Option<TemplateInput> {
    let (width, height) = (rgb.width() as usize, rgb.height() as usize);
    assert_eq!(xyz_mm.len(), width * height, "template xyz size");
    let bbox = get_bbox(mask, width, height)?;
    let pixels = crop_pixels(mask, width, bbox);
    let picks = sampler.choose(pixels.len(), count);
    // The reference divides the float32 array by 1000.0 in float32.
    let pts = picks.iter().map(|&k| xyz_mm[pixels[k].1].map(|v| v / 1000.0)).collect();
    let rgb_choose = picks.iter().map(|&k| resize_choose(pixels[k].0, bbox)).collect();
    Some(PreparedInput { rgb: network_image(rgb, mask, bbox), pts, rgb_choose, bbox })
}

/// One detection's observed instance (§5.3): `mask` (row-major, frame-sized) ∧ depth > 0;
/// None when it has ≤ [`MIN_MASK_PIXELS`] pixels, or fewer than [`MIN_POINTS`] points lie
/// within 1.2·`radius_cad_m` of their mean. Points are back-projected in f64 and rounded to f32,
/// as numpy ≥ 2 computes `(u − cx)·Z/fx` against the float64 intrinsics (numpy 1.x computed in
/// float32: at most an ulp apart).
pub fn observed_input(frame: &crate::pipeline::Frame, mask: &[bool], radius_cad_m: f32, count: usize, sampler: &mut dyn PointSampler) -> Option<ObservedInput> {
    let (width, height) = (frame.width(), frame.height());
    assert_eq!(mask.len(), width * height, "mask size");
    // The reference: depth.astype(float32) · depth_scale / 1000 in float32.
    let depth_m = |i: usize| frame.depth.mm[i] / 1000.0;
    let mask: Vec<bool> = mask.iter().enumerate().map(|(i, &m)| m && depth_m(i) > 0.0).collect();
    if mask.iter().filter(|&&m| m).count() <= MIN_MASK_PIXELS {
        return None;
    }
    let bbox = get_bbox(&mask, width, height)?;
    let pixels = crop_pixels(&mask, width, bbox);
    let cam = &frame.camera;
    let cloud: Vec<[f64; 3]> = pixels
        .iter()
        .map(|&(_, i)| {
            let z = f64::from(depth_m(i));
            let (u, v) = ((i % width) as f32, (i / width) as f32);
            [(f64::from(u) - cam.cx) * z / cam.fx, (f64::from(v) - cam.cy) * z / cam.fy, z]
        })
        .collect();
    let n = cloud.len() as f64;
    let mut centre = [0f64; 3];
    for p in &cloud {
        for k in 0..3 {
            centre[k] += p[k];
        }
    }
    let centre = centre.map(|s| s / n);
    // float32 radius × 1.2 in float32 (numpy keeps the float32 scalar), compared in f64.
    let gate = f64::from(radius_cad_m * OUTLIER_RADIUS_FACTOR);
    let kept: Vec<usize> = (0..cloud.len())
        .filter(|&j| {
            let p = cloud[j];
            let d = ((p[0] - centre[0]).powi(2) + (p[1] - centre[1]).powi(2) + (p[2] - centre[2]).powi(2)).sqrt();
            d < gate
        })
        .collect();
    if kept.len() < MIN_POINTS {
        return None;
    }
    let picks = sampler.choose(kept.len(), count);
    let pts = picks.iter().map(|&k| cloud[kept[k]].map(|v| v as f32)).collect();
    let rgb_choose = picks.iter().map(|&k| resize_choose(pixels[kept[k]].0, bbox)).collect();
    // The colour crop is masked with the depth-filtered mask (not the outlier-gated one).
    Some(PreparedInput { rgb: network_image(&frame.rgb, &mask, bbox), pts, rgb_choose, bbox })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask_from(w: usize, h: usize, on: &[(usize, usize)]) -> Vec<bool> {
        let mut m = vec![false; w * h];
        for &(r, c) in on {
            m[r * w + c] = true;
        }
        m
    }

    #[test]
    fn bbox_is_square_and_shifted_into_the_image() {
        // Tight box rows 2..=4, cols 3..=8 (6 wide): centre (3, 6), side 6.
        let m = mask_from(20, 10, &[(2, 3), (4, 8)]);
        assert_eq!(get_bbox(&m, 20, 10), Some([0, 6, 3, 9]));
        // Odd side loses a pixel: 5 → 4.
        let m = mask_from(20, 10, &[(5, 5), (5, 9)]);
        assert_eq!(get_bbox(&m, 20, 10), Some([3, 7, 5, 9]));
        // Odd side 5 → 4 around centre col 17.
        let m = mask_from(20, 10, &[(4, 19), (6, 15)]);
        assert_eq!(get_bbox(&m, 20, 10), Some([3, 7, 15, 19]));
        // A wide box at the bottom: the square is shifted up.
        let m = mask_from(20, 10, &[(9, 10), (9, 19)]);
        assert_eq!(get_bbox(&m, 20, 10), Some([0, 10, 10, 20]));
        // Larger than the short side: limited to it.
        let m = mask_from(20, 10, &[(0, 0), (9, 19)]);
        assert_eq!(get_bbox(&m, 20, 10), Some([0, 10, 5, 15]));
        assert_eq!(get_bbox(&vec![false; 200], 20, 10), None);
    }

    #[test]
    fn sampler_follows_the_replacement_rule() {
        let mut s = SeededSampler::new(3);
        let a = s.choose(10, 4);
        let mut sorted = a.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 4, "without replacement: {a:?}");
        let b = s.choose(3, 50);
        assert_eq!(b.len(), 50);
        assert!(b.iter().all(|&i| i < 3) && (0..3).all(|k| b.contains(&k)));
        assert_eq!(SeededSampler::new(3).choose(10, 4), a, "seeded");
    }

    #[test]
    fn resize_choose_maps_crop_pixels() {
        // 448-pixel crop: every other pixel lands on the same map pixel.
        assert_eq!(resize_choose(0, [0, 448, 0, 448]), 0);
        assert_eq!(resize_choose(448 * 3 + 5, [0, 448, 0, 448]), 224 + 2);
        // 100-pixel crop: ratio 2.24.
        assert_eq!(resize_choose(100 * 99 + 99, [10, 110, 20, 120]), 221 * 224 + 221);
    }
}
