//! Pose overlays: the model's silhouette outline drawn over the colour image, one colour per
//! instance, so a person can judge a result at a glance.
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;
use image::{Rgb, RgbImage};

/// Distinct colours for instances, best first (red, green, blue, ...).
pub const PALETTE: [[u8; 3]; 6] = [[255, 40, 40], [40, 220, 40], [60, 120, 255], [255, 200, 0], [255, 0, 255], [0, 230, 230]];

/// Draws the outline (2 px) of each pose's rendered silhouette on a copy of `rgb`.
pub fn draw_outlines(rgb: &RgbImage, mesh: &Mesh, cam: &Camera, poses: &[Pose]) -> RgbImage {
    let mut out = rgb.clone();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    // Draw worst first so the best pose ends on top.
    for (k, pose) in poses.iter().enumerate().rev() {
        let depth = super::raster::render_depth(mesh, cam, pose, w, h);
        let inside = |u: isize, v: isize| u >= 0 && v >= 0 && (u as usize) < w && (v as usize) < h && depth[v as usize * w + u as usize] > 0.0;
        let color = Rgb(PALETTE[k % PALETTE.len()]);
        for v in 0..h as isize {
            for u in 0..w as isize {
                if !inside(u, v) {
                    continue;
                }
                let edge = [(-1, 0), (1, 0), (0, -1), (0, 1), (-2, 0), (2, 0), (0, -2), (0, 2)].iter().any(|(du, dv)| !inside(u + du, v + dv));
                if edge {
                    out.put_pixel(u as u32, v as u32, color);
                }
            }
        }
    }
    out
}
