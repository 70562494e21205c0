//! Colour evidence for verification, when the CAD model carries vertex colours (LINEMOD, YCB,
//! most scanned models): depth says "something of this shape is here", colour says "and it
//! looks like our object". Compared in a lighting-tolerant way: hue for coloured surfaces,
//! low saturation and a loose brightness ratio for white, grey and black ones.
use crate::geometry::{grid::Grid, Mesh, Pose, Vec3};
use crate::io::Camera;
use image::RgbImage;

pub struct ColorModel {
    vertices: Vec<Vec3>,
    colors: Vec<[u8; 3]>,
    grid: Grid,
    radius: f32,
}

impl ColorModel {
    /// None when the mesh has no colours or a single flat colour (nothing to compare).
    pub fn new(mesh: &Mesh, diameter: f32) -> Option<ColorModel> {
        let colors = mesh.colors.as_ref()?;
        let first = colors.first()?;
        if colors.iter().all(|c| c == first) {
            return None;
        }
        let radius = (0.03 * diameter).max(1.0);
        Some(ColorModel { vertices: mesh.vertices.clone(), colors: colors.clone(), grid: Grid::new(&mesh.vertices, radius), radius })
    }

    /// The colour of the model vertex nearest to `p` (model frame), if one is within 3 % of the
    /// diameter.
    pub fn color_at(&self, p: &Vec3) -> Option<[u8; 3]> {
        self.grid.nearest_within(&self.vertices, p, self.radius).map(|(i, _)| self.colors[i as usize])
    }

    /// Fraction of sampled `pixels` (frame index, rendered depth of `pose` there; inside the
    /// model and depth-consistent) whose observed colour matches the model's colour there.
    pub fn agreement(&self, rgb: &RgbImage, pixels: &[(usize, f32)], cam: &Camera, pose: &Pose) -> Option<f32> {
        let w = rgb.width() as usize;
        let inv = pose.inverse();
        let (mut matched, mut compared) = (0usize, 0usize);
        for &(i, z) in pixels {
            let p = cam.unproject((i % w) as f64, (i / w) as f64, z as f64);
            let m = inv.apply(&nalgebra::Vector3::new(p[0], p[1], p[2])).cast::<f32>();
            let Some(model) = self.color_at(&m) else { continue };
            let seen = rgb.get_pixel((i % w) as u32, (i / w) as u32).0;
            compared += 1;
            matched += colors_match(model, seen) as usize;
        }
        (compared >= 20).then(|| matched as f32 / compared as f32)
    }
}

/// (hue in degrees, saturation, value) with value in [0, 1].
fn hsv(c: [u8; 3]) -> (f32, f32, f32) {
    let [r, g, b] = c.map(|x| x as f32 / 255.0);
    let max = r.max(g).max(b);
    let min = r.min(g).min(b);
    let delta = max - min;
    let s = if max > 0.0 { delta / max } else { 0.0 };
    let h = if delta <= 0.0 {
        0.0
    } else if max == r {
        60.0 * ((g - b) / delta).rem_euclid(6.0)
    } else if max == g {
        60.0 * ((b - r) / delta + 2.0)
    } else {
        60.0 * ((r - g) / delta + 4.0)
    };
    (h, s, max)
}

pub fn colors_match(model: [u8; 3], seen: [u8; 3]) -> bool {
    let (hm, sm, vm) = hsv(model);
    let (hs, ss, vs) = hsv(seen);
    // Too dark to tell colours apart: only brightness can disagree.
    if vs < 0.12 {
        return vm < 0.45;
    }
    if sm > 0.25 {
        // A coloured surface must look coloured, with a similar hue.
        let dh = (hm - hs).abs();
        return ss > 0.15 && dh.min(360.0 - dh) < 30.0;
    }
    // White, grey or black: little saturation, brightness within a factor of ~3.
    ss < 0.35 && (vs / vm.max(0.05)).ln().abs() < 1.1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_rules() {
        assert!(colors_match([200, 30, 30], [150, 40, 20])); // red under dimmer light
        assert!(!colors_match([200, 30, 30], [30, 40, 200])); // red vs blue
        assert!(!colors_match([200, 30, 30], [180, 180, 180])); // red vs grey
        assert!(colors_match([230, 230, 225], [170, 165, 160])); // white in shadow
        assert!(!colors_match([230, 230, 225], [40, 60, 200])); // white vs blue
        assert!(!colors_match([230, 230, 225], [30, 30, 30])); // white vs black
        assert!(colors_match([20, 20, 20], [10, 12, 10])); // black vs black
        assert!(!colors_match([240, 220, 20], [30, 200, 40])); // yellow vs green
    }
}
