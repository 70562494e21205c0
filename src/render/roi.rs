//! Rendering only where the object can be: a posed model covers a small part of the frame,
//! and clearing and scanning a full 640×480 buffer for every hypothesis would cost more than
//! drawing it.
use super::raster::render_depth;
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;

/// Pixel rectangle [u0, u1) × [v0, v1).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roi {
    pub u0: usize,
    pub v0: usize,
    pub u1: usize,
    pub v1: usize,
}

impl Roi {
    pub fn full(w: usize, h: usize) -> Roi {
        Roi { u0: 0, v0: 0, u1: w, v1: h }
    }

    /// Where the posed mesh can appear (its projected bounding box) plus `margin` pixels;
    /// the whole frame when part of it is behind the camera.
    pub fn of(mesh: &Mesh, pose: &Pose, cam: &Camera, w: usize, h: usize, margin: usize) -> Roi {
        let (lo, hi) = mesh.bounds();
        let (mut umin, mut vmin, mut umax, mut vmax) = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
        for k in 0..8 {
            let c = nalgebra::Vector3::new(
                if k & 1 == 0 { lo.x } else { hi.x },
                if k & 2 == 0 { lo.y } else { hi.y },
                if k & 4 == 0 { lo.z } else { hi.z },
            );
            let p = pose.apply(&c.cast::<f64>());
            if p.z <= 1.0 {
                return Roi::full(w, h);
            }
            let [u, v] = cam.project([p.x, p.y, p.z]);
            umin = umin.min(u);
            vmin = vmin.min(v);
            umax = umax.max(u);
            vmax = vmax.max(v);
        }
        let m = margin as f64;
        let clamp = |x: f64, n: usize| x.clamp(0.0, n as f64) as usize;
        Roi { u0: clamp(umin - m, w), v0: clamp(vmin - m, h), u1: clamp(umax + m + 1.0, w), v1: clamp(vmax + m + 1.0, h) }
    }
}

impl Roi {
    pub fn width(&self) -> usize {
        self.u1 - self.u0
    }

    pub fn height(&self) -> usize {
        self.v1 - self.v0
    }

    pub fn is_empty(&self) -> bool {
        self.u1 <= self.u0 || self.v1 <= self.v0
    }
}

/// A depth rendering of one window of the frame (0 = no surface, also outside the window).
#[derive(Clone, Debug)]
pub struct RoiDepth {
    pub roi: Roi,
    pub depth: Vec<f32>,
}

impl RoiDepth {
    /// Renders `mesh` at `pose` inside its projected bounding box (+ `margin` px) of a
    /// `w`×`h` frame: the same pixels as a full-frame render, through a camera whose principal
    /// point is shifted by the window's corner.
    pub fn render(mesh: &Mesh, cam: &Camera, pose: &Pose, w: usize, h: usize, margin: usize) -> RoiDepth {
        let roi = Roi::of(mesh, pose, cam, w, h, margin);
        if roi.is_empty() {
            return RoiDepth { roi, depth: Vec::new() };
        }
        let shifted = Camera { cx: cam.cx - roi.u0 as f64, cy: cam.cy - roi.v0 as f64, ..*cam };
        let depth = render_depth(mesh, &shifted, pose, roi.width(), roi.height());
        RoiDepth { roi, depth }
    }

    /// Depth at frame pixel (u, v); 0 outside the window.
    #[inline]
    pub fn at(&self, u: isize, v: isize) -> f32 {
        let r = &self.roi;
        if u < r.u0 as isize || v < r.v0 as isize || u >= r.u1 as isize || v >= r.v1 as isize {
            return 0.0;
        }
        self.depth[(v as usize - r.v0) * r.width() + (u as usize - r.u0)]
    }

    /// Rendered pixels.
    pub fn area(&self) -> usize {
        self.depth.iter().filter(|&&z| z > 0.0).count()
    }

    /// Fraction of the smaller silhouette covered by the other.
    pub fn overlap(&self, other: &RoiDepth) -> f32 {
        let (a, b) = (&self.roi, &other.roi);
        let (u0, v0, u1, v1) = (a.u0.max(b.u0), a.v0.max(b.v0), a.u1.min(b.u1), a.v1.min(b.v1));
        let mut inter = 0usize;
        for v in v0..v1 {
            for u in u0..u1 {
                inter += (self.at(u as isize, v as isize) > 0.0 && other.at(u as isize, v as isize) > 0.0) as usize;
            }
        }
        let small = self.area().min(other.area());
        if small == 0 { 0.0 } else { inter as f32 / small as f32 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Vec3;

    #[test]
    fn window_render_equals_full_render() {
        let mesh = Mesh {
            vertices: vec![Vec3::new(-30.0, -20.0, 0.0), Vec3::new(40.0, -25.0, 10.0), Vec3::new(0.0, 35.0, -5.0)],
            normals: None,
            colors: None,
            faces: vec![[0, 1, 2]],
        };
        let cam = Camera::new(570.0, 571.0, 321.3, 239.7, 1.0).unwrap();
        let pose = Pose::from_axis_angle(nalgebra::Vector3::new(0.3, 0.2, 0.1), nalgebra::Vector3::new(60.0, -40.0, 700.0));
        let full = render_depth(&mesh, &cam, &pose, 640, 480);
        let win = RoiDepth::render(&mesh, &cam, &pose, 640, 480, 3);
        assert!(win.roi.width() < 200 && win.roi.height() < 200);
        let mut n = 0;
        for v in 0..480isize {
            for u in 0..640isize {
                let f = full[v as usize * 640 + u as usize];
                assert!((f - win.at(u, v)).abs() < 1e-3, "({u}, {v}): {f} vs {}", win.at(u, v));
                n += (f > 0.0) as usize;
            }
        }
        assert!(n > 1000);
        assert_eq!(win.area(), n);
        assert!((win.overlap(&win) - 1.0).abs() < 1e-6);
    }
}
