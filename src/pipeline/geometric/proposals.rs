//! Which of the segmenter's class-agnostic mask proposals could be the object, judged by size
//! alone (no appearance model yet: that is the ISM's job), and the pixels the pose search then
//! votes from.
//!
//! A proposal is kept when its depth says it is an object-sized thing: its box, converted to
//! millimetres at the mask's median depth, fits the object's diameter, its depth range does
//! too, and it has enough measured pixels to vote from. The table, the wall and a whole cluttered
//! pile fail the first tests; specks fail the last. The union of the kept masks, slightly
//! dilated so that edge pixels keep their neighbours for normal estimation, is the region the
//! pose search looks at; render-and-compare verification still sees the whole depth image.
use crate::io::{Camera, DepthMm};
use crate::geometry::Proposal;

/// A box side may exceed the diameter by this factor: perspective and the median depth (the
/// middle of the object, not its front) both stretch it.
const MAX_EXTENT: f32 = 1.3;
/// Depth range (10th–90th percentile) allowed inside a mask, × diameter.
const MAX_DEPTH_SPREAD: f32 = 1.0;
/// Fewer measured pixels than this cannot support a pose.
const MIN_PIXELS: usize = 50;
/// Pixels added around the union of kept masks.
const DILATE_PX: usize = 3;

/// The outcome of [`select`]: indices of kept proposals (in the given order) and the
/// row-major pixel region (`width × height`) to search.
#[derive(Clone, Debug)]
pub struct Selection {
    pub kept: Vec<usize>,
    pub region: Vec<bool>,
}

/// Keeps the proposals an object of `diameter` mm could fill; `None` when none fits (then the
/// caller searches the whole image rather than nothing).
pub fn select(proposals: &[Proposal], depth: &DepthMm, cam: &Camera, diameter: f32, z_range: (f32, f32)) -> Option<Selection> {
    let (w, h) = (depth.width, depth.height);
    let kept: Vec<usize> = proposals
        .iter()
        .enumerate()
        .filter(|(_, p)| p.width == w && p.height == h && fits(p, depth, cam, diameter, z_range))
        .map(|(i, _)| i)
        .collect();
    if kept.is_empty() {
        return None;
    }
    Some(region(proposals, kept, w, h))
}

/// The search region of proposals chosen by other means (the ISM): the union of their masks,
/// dilated like [`select`]'s. Proposals of another size than `w × h` add nothing.
pub fn region(proposals: &[Proposal], kept: Vec<usize>, w: usize, h: usize) -> Selection {
    let mut union = vec![false; w * h];
    for &i in &kept {
        if proposals[i].width == w && proposals[i].height == h {
            for (u, &m) in union.iter_mut().zip(&proposals[i].mask) {
                *u |= m;
            }
        }
    }
    Selection { kept, region: dilate(&union, w, h, DILATE_PX) }
}

fn fits(p: &Proposal, depth: &DepthMm, cam: &Camera, diameter: f32, (z_min, z_max): (f32, f32)) -> bool {
    let mut z: Vec<f32> = p.mask.iter().zip(&depth.mm).filter(|(&m, &z)| m && z >= z_min && z <= z_max).map(|(_, &z)| z).collect();
    if z.len() < MIN_PIXELS {
        return false;
    }
    z.sort_by(f32::total_cmp);
    let at = |q: f32| z[((z.len() - 1) as f32 * q) as usize];
    let median = at(0.5);
    let [x0, y0, x1, y1] = p.bbox;
    let width_mm = (x1 - x0 + 1.0) * median / cam.fx as f32;
    let height_mm = (y1 - y0 + 1.0) * median / cam.fy as f32;
    width_mm <= MAX_EXTENT * diameter && height_mm <= MAX_EXTENT * diameter && at(0.9) - at(0.1) <= MAX_DEPTH_SPREAD * diameter
}

/// Square dilation by `r` pixels, as two separable passes.
fn dilate(m: &[bool], w: usize, h: usize, r: usize) -> Vec<bool> {
    let mut rows = vec![false; w * h];
    for y in 0..h {
        let row = &m[y * w..(y + 1) * w];
        for x in 0..w {
            rows[y * w + x] = row[x.saturating_sub(r)..(x + r + 1).min(w)].iter().any(|&v| v);
        }
    }
    let mut out = vec![false; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = (y.saturating_sub(r)..(y + r + 1).min(h)).any(|yy| rows[yy * w + x]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam() -> Camera {
        Camera::new(500.0, 500.0, 50.0, 50.0, 1.0).unwrap()
    }

    /// A proposal covering the rectangle [x0, x1] × [y0, y1] (inclusive) of a 100×100 frame.
    fn rect(x0: usize, y0: usize, x1: usize, y1: usize) -> Proposal {
        let mut mask = vec![false; 100 * 100];
        for y in y0..=y1 {
            for x in x0..=x1 {
                mask[y * 100 + x] = true;
            }
        }
        Proposal { width: 100, height: 100, mask, bbox: [x0 as f32, y0 as f32, x1 as f32, y1 as f32], predicted_iou: 0.9, stability_score: 0.98 }
    }

    fn flat(z: f32) -> DepthMm {
        DepthMm { width: 100, height: 100, mm: vec![z; 100 * 100] }
    }

    #[test]
    fn keeps_object_sized_masks_and_drops_big_small_and_deep_ones() {
        // At 1000 mm and f = 500 px, 1 px = 2 mm: a 100 mm object spans ~50 px.
        let object = rect(10, 10, 49, 49); // 80 mm square
        let table = rect(0, 0, 99, 99); // 200 mm
        let speck = rect(60, 60, 64, 64); // 25 px: too few to vote from
        let mut deep = rect(55, 10, 94, 49);
        deep.bbox = [55.0, 10.0, 94.0, 49.0];
        let mut depth = flat(1000.0);
        // The "deep" mask spans 1000..1400 mm: a 400 mm range cannot be a 100 mm object.
        for y in 10..=49 {
            for x in 55..=94 {
                depth.mm[y * 100 + x] = 1000.0 + (x - 55) as f32 * 10.0;
            }
        }
        let s = select(&[table, object, speck, deep], &depth, &cam(), 100.0, (100.0, 6000.0)).unwrap();
        assert_eq!(s.kept, vec![1]);
        // The region is the object's square grown by 3 px, nothing else.
        assert!(s.region[7 * 100 + 7] && s.region[52 * 100 + 52]);
        assert!(!s.region[6 * 100 + 6] && !s.region[53 * 100 + 30] && !s.region[62 * 100 + 62]);
    }

    #[test]
    fn nothing_fits_means_no_selection() {
        let s = select(&[rect(0, 0, 99, 99)], &flat(1000.0), &cam(), 100.0, (100.0, 6000.0));
        assert!(s.is_none());
        // Masks over missing depth cannot be judged: they do not fit either.
        assert!(select(&[rect(10, 10, 49, 49)], &flat(0.0), &cam(), 100.0, (100.0, 6000.0)).is_none());
    }
}
