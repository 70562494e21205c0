//! A z-buffered, perspective-correct triangle rasteriser.
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;

/// One rendered view. Pixel (u, v) samples the image plane at integer coordinates (u, v),
/// the same convention as `Camera::project`.
#[derive(Clone, Debug)]
pub struct Render {
    pub width: usize,
    pub height: usize,
    /// Camera-frame z in mm of the nearest surface; 0.0 where nothing was hit.
    pub depth: Vec<f32>,
    /// Model-frame coordinates of the visible surface point (valid where depth > 0).
    pub xyz: Vec<[f32; 3]>,
}

pub fn render(mesh: &Mesh, cam: &Camera, pose: &Pose, width: usize, height: usize) -> Render {
    todo!("helper")
}

/// Depth only (no xyz), for verification inner loops.
pub fn render_depth(mesh: &Mesh, cam: &Camera, pose: &Pose, width: usize, height: usize) -> Vec<f32> {
    todo!("helper")
}
