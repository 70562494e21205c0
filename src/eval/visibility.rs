//! BOP's visibility rule (bop_toolkit `visibility.py`, `bop19` mode): a pixel of a model rendered
//! at a pose is visible when the measured surface there is not more than `delta` in front of it,
//! or nothing was measured. Both are compared as distances from the camera centre (not z), as
//! the toolkit does. `visib_fract` (for `scene_gt_info.json`) is the visible share of the pixels
//! the object covers; VSD compares such masks of an estimate and the ground truth.
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;

/// BOP's visibility tolerance for `scene_gt_info.json` (`calc_gt_info.py`), mm.
pub const GT_INFO_DELTA_MM: f32 = 15.0;

/// Distance from the camera centre of each pixel's surface point (0 stays 0): z · |K⁻¹ (u, v, 1)|.
pub fn distance_image(depth: &[f32], cam: &Camera, width: usize) -> Vec<f32> {
    depth
        .iter()
        .enumerate()
        .map(|(i, &z)| {
            if z <= 0.0 {
                return 0.0;
            }
            let x = ((i % width) as f64 - cam.cx) / cam.fx;
            let y = ((i / width) as f64 - cam.cy) / cam.fy;
            (z as f64 * (x * x + y * y + 1.0).sqrt()) as f32
        })
        .collect()
}

/// `bop19` visibility of a rendered distance image `model` against the measured `test`.
pub fn visible_mask(test: &[f32], model: &[f32], delta: f32) -> Vec<bool> {
    test.iter().zip(model).map(|(&t, &m)| m > 0.0 && (t == 0.0 || m - t <= delta)).collect()
}

/// The share of the pixels `mesh` covers at `pose` (inside the image) that are visible in the
/// measured depth `depth_mm` (`width`-wide, row-major), by BOP's rule with `delta` mm. 0 when the
/// object covers no pixel. (The toolkit also counts covered pixels beyond the image border;
/// this does not, so an object cut by the border reads more visible here.)
pub fn visib_fract(mesh: &Mesh, pose: &Pose, cam: &Camera, depth_mm: &[f32], width: usize, height: usize, delta: f32) -> f64 {
    let rendered = crate::render::raster::render_depth(mesh, cam, pose, width, height);
    let model = distance_image(&rendered, cam, width);
    let test = distance_image(depth_mm, cam, width);
    let all = model.iter().filter(|&&m| m > 0.0).count();
    if all == 0 {
        return 0.0;
    }
    let visible = visible_mask(&test, &model, delta).iter().filter(|&&v| v).count();
    visible as f64 / all as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Vec3;

    /// A 40 mm square facing the camera at 500 mm, measured depth a wall at `wall` mm.
    fn square() -> Mesh {
        let v = |x: f32, y: f32| Vec3::new(x, y, 0.0);
        Mesh { vertices: vec![v(-20.0, -20.0), v(20.0, -20.0), v(20.0, 20.0), v(-20.0, 20.0)], faces: vec![[0, 1, 2], [0, 2, 3]], ..Default::default() }
    }

    #[test]
    fn visible_unless_something_is_measured_in_front() {
        let cam = Camera::new(500.0, 500.0, 50.0, 50.0, 1.0).unwrap();
        let pose = Pose::new(nalgebra::Matrix3::identity(), nalgebra::Vector3::new(0.0, 0.0, 500.0));
        let (w, h) = (100, 100);
        // Measured surface 5 mm in front of the square: within delta, so visible.
        assert_eq!(visib_fract(&square(), &pose, &cam, &vec![495.0; w * h], w, h, 15.0), 1.0);
        // 30 mm in front: an occluder.
        assert_eq!(visib_fract(&square(), &pose, &cam, &vec![470.0; w * h], w, h, 15.0), 0.0);
        // Nothing measured counts as visible; behind counts as visible.
        assert_eq!(visib_fract(&square(), &pose, &cam, &vec![0.0; w * h], w, h, 15.0), 1.0);
        assert_eq!(visib_fract(&square(), &pose, &cam, &vec![800.0; w * h], w, h, 15.0), 1.0);
        // Left half occluded: half visible (the square spans columns 30..=70).
        let mut half = vec![800.0f32; w * h];
        for y in 0..h {
            for x in 0..50 {
                half[y * w + x] = 400.0;
            }
        }
        let f = visib_fract(&square(), &pose, &cam, &half, w, h, 15.0);
        assert!((f - 20.0 / 41.0).abs() < 0.03, "{f}");
    }

    #[test]
    fn distances_grow_off_axis() {
        let cam = Camera::new(100.0, 100.0, 1.0, 0.0, 1.0).unwrap();
        let d = distance_image(&[1000.0, 0.0, 1000.0], &cam, 3);
        // Pixels 0 and 2 are one pixel either side of cx: the ray is 1 % off axis.
        let off = (1000.0f64 * (1.0f64 + 1e-4).sqrt()) as f32;
        assert_eq!((d[0], d[1], d[2]), (off, 0.0, off));
    }
}
