//! Render-and-compare verification: the model is rendered at a hypothesis and its depth is
//! compared pixel by pixel with the measurement. This is what turns "many votes" into "the
//! object is really there": a right pose explains the visible surface, a wrong one either
//! floats in front of measured surfaces (free-space violation) or hides behind them.
use crate::geometry::{Mesh, Pose};
use crate::io::{Camera, DepthMm};
use crate::render::raster::render_depth;

#[derive(Clone, Copy, Debug, Default)]
pub struct Verdict {
    /// inliers / (model pixels with a measurement), in [0, 1].
    pub score: f32,
    /// Rendered model pixels inside the image.
    pub pixels: usize,
    /// Measured within the tolerance of the rendered surface.
    pub inliers: usize,
    /// Measured surface behind the model: the model would block what the sensor saw.
    pub violations: usize,
    /// Measured surface in front of the model (occluders).
    pub occluded: usize,
    /// No measurement.
    pub missing: usize,
}

/// Scores `pose`. `tolerance` (mm) is the agreement band around the rendered depth.
pub fn verify(mesh: &Mesh, pose: &Pose, cam: &Camera, depth: &DepthMm, tolerance: f32) -> Verdict {
    let rendered = render_depth(mesh, cam, pose, depth.width, depth.height);
    score_depth(&rendered, depth, tolerance)
}

pub fn score_depth(rendered: &[f32], depth: &DepthMm, tolerance: f32) -> Verdict {
    let mut v = Verdict::default();
    for (&r, &m) in rendered.iter().zip(&depth.mm) {
        if r <= 0.0 {
            continue;
        }
        v.pixels += 1;
        if m <= 0.0 {
            v.missing += 1;
        } else if m > r + tolerance {
            v.violations += 1;
        } else if m < r - tolerance {
            v.occluded += 1;
        } else {
            v.inliers += 1;
        }
    }
    let measured = v.pixels - v.missing;
    // A violation is stronger evidence against the pose than an occlusion is (occluders are
    // common, seeing through an object is not), so it weighs double.
    let denom = v.inliers + 2 * v.violations + v.occluded;
    v.score = if measured < 20 || denom == 0 { 0.0 } else { v.inliers as f32 / denom as f32 };
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_agreement_violation_and_occlusion() {
        let depth = DepthMm { width: 10, height: 10, mm: vec![500.0; 100] };
        let mut rendered = vec![0.0f32; 100];
        for r in rendered.iter_mut().take(50) {
            *r = 502.0;
        }
        let v = score_depth(&rendered, &depth, 5.0);
        assert_eq!((v.pixels, v.inliers), (50, 50));
        assert_eq!(v.score, 1.0);
        // Model 20 mm in front of the measured surface: the sensor saw through it.
        let front: Vec<f32> = rendered.iter().map(|&r| if r > 0.0 { 480.0 } else { 0.0 }).collect();
        let v = score_depth(&front, &depth, 5.0);
        assert_eq!((v.violations, v.score), (50, 0.0));
        // Model behind the surface: occluded, also no support.
        let behind: Vec<f32> = rendered.iter().map(|&r| if r > 0.0 { 530.0 } else { 0.0 }).collect();
        assert_eq!(score_depth(&behind, &depth, 5.0).occluded, 50);
        // Half the model occluded: score halves.
        let mut half = rendered.clone();
        for r in half.iter_mut().take(25) {
            *r = 530.0;
        }
        assert!((score_depth(&half, &depth, 5.0).score - 0.5).abs() < 1e-6);
    }
}
