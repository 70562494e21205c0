//! Mask overlays in the style of SAM-6D's `vis_ism.png`: the colour image on the left; on the
//! right the image in grey with the masks the pose search used filled in colour (one colour
//! each, best predicted IoU first) and every other proposal outlined, so a user sees both what
//! the segmenter proposed and what was kept.
use super::font;
use super::overlay::instance_color;
use crate::geometry::Proposal;
use image::{GenericImage, Rgb, RgbImage};

/// Weight of the mask colour over the grey image (SAM-6D blends its masks at one half).
const FILL_ALPHA: f32 = 0.5;
const OUTLINE: [u8; 3] = [255, 255, 255];

/// Left: `rgb`; right: [`draw_masks`]. `selected` indexes `proposals`.
pub fn vis_ism(rgb: &RgbImage, proposals: &[Proposal], selected: &[usize]) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let mut out = RgbImage::new(2 * w, h);
    out.copy_from(rgb, 0, 0).expect("left half fits");
    out.copy_from(&draw_masks(rgb, proposals, selected), w, 0).expect("right half fits");
    out
}

/// `rgb` in grey, unselected proposals outlined in white, selected ones filled and outlined
/// in their colour and labelled with their predicted IoU. Proposals of another size than the
/// image are skipped.
pub fn draw_masks(rgb: &RgbImage, proposals: &[Proposal], selected: &[usize]) -> RgbImage {
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let mut out = RgbImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let [r, g, b] = rgb.get_pixel(x, y).0;
        let l = (0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32).round() as u8;
        Rgb([l, l, l])
    });
    let fits = |p: &Proposal| p.width == w && p.height == h;
    for (i, p) in proposals.iter().enumerate() {
        if fits(p) && !selected.contains(&i) {
            outline(&mut out, p, OUTLINE);
        }
    }
    // Worst first, so the best selected mask ends on top.
    for (k, &i) in selected.iter().enumerate().rev() {
        let Some(p) = proposals.get(i).filter(|p| fits(p)) else { continue };
        let c = instance_color(k);
        for (px, &m) in out.pixels_mut().zip(&p.mask) {
            if m {
                for ch in 0..3 {
                    px.0[ch] = ((1.0 - FILL_ALPHA) * px.0[ch] as f32 + FILL_ALPHA * c[ch] as f32).round() as u8;
                }
            }
        }
        outline(&mut out, p, c);
        let text = format!("{:.2}", p.predicted_iou);
        let (x0, y0) = (p.bbox[0].max(0.0) as i64, p.bbox[1].max(0.0) as i64);
        let (_, th) = font::text_size(&text, 1);
        font::draw_text(&mut out, x0 + 2, (y0 - th as i64 - 2).max(0), &text, 1, Rgb(c));
    }
    out
}

/// Marks the mask pixels that have a 4-neighbour outside the mask.
fn outline(img: &mut RgbImage, p: &Proposal, color: [u8; 3]) {
    let (w, h) = (p.width, p.height);
    for y in 0..h {
        for x in 0..w {
            let inside = |x: usize, y: usize| p.mask[y * w + x];
            if inside(x, y) && (x == 0 || y == 0 || x + 1 == w || y + 1 == h || !inside(x - 1, y) || !inside(x + 1, y) || !inside(x, y - 1) || !inside(x, y + 1)) {
                img.put_pixel(x as u32, y as u32, Rgb(color));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(x0: usize, x1: usize) -> Proposal {
        let mut mask = vec![false; 40 * 30];
        for y in 5..=20 {
            for x in x0..=x1 {
                mask[y * 40 + x] = true;
            }
        }
        Proposal { width: 40, height: 30, mask, bbox: [x0 as f32, 5.0, x1 as f32, 20.0], predicted_iou: 0.95, stability_score: 0.98 }
    }

    #[test]
    fn selected_masks_are_filled_others_outlined_background_grey() {
        let rgb = RgbImage::from_pixel(40, 30, Rgb([200, 100, 50]));
        let img = vis_ism(&rgb, &[square(2, 15), square(22, 35)], &[1]);
        assert_eq!(img.dimensions(), (80, 30));
        assert_eq!(img.get_pixel(10, 10).0, [200, 100, 50], "left half is the input");
        let right = |x: u32, y: u32| img.get_pixel(40 + x, y).0;
        let grey = right(0, 29);
        assert!(grey[0] == grey[1] && grey[1] == grey[2], "background is grey: {grey:?}");
        assert_eq!(right(8, 12), grey, "inside an unselected mask stays grey");
        assert_eq!(right(2, 12), OUTLINE, "an unselected mask is outlined");
        let c = instance_color(0);
        assert_eq!(right(22, 12), c, "the selected mask's outline has its colour");
        let fill = right(28, 14);
        assert!(fill != grey && fill != c, "the selected mask is filled with a blend: {fill:?}");
    }
}
