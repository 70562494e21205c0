//! Scene preparation: depth → points → down-sampled cloud with normals, minus the dominant
//! support plane (table, floor) when there is one. What does not depend on the object is made
//! once per frame and shared by every object asked for in it ([`FrameScene`]).
use crate::geometry::{cloud, Vec3, SplitMix64};
use crate::io::{Camera, DepthMm};
use std::sync::{Arc, Mutex};

/// A frame's points, made once for all the objects estimated in it: the organised cloud (for
/// ICP) and, per sampling step, the down-sampled cloud with normals above the support plane
/// (for voting). Objects of similar size share a step (it is clamped below at `step_min`), so
/// they share the voting cloud too.
pub struct FrameScene {
    /// What the scene was made from, compared exactly when it is offered for another call.
    depth: Vec<u32>,
    size: (usize, usize),
    camera: Camera,
    z_range: (f32, f32),
    /// Camera-frame point per pixel, row-major; zero where depth is missing or out of range.
    pub organized: Vec<Vec3>,
    /// The valid points of `organized`, in pixel order.
    valid: Vec<Vec3>,
    clouds: Mutex<Vec<((u32, bool), Arc<VotingCloud>)>>,
}

/// The cloud voting runs on, at one sampling step.
pub struct VotingCloud {
    pub cloud: cloud::Cloud,
    /// The support plane removed from it, if one was found.
    pub plane: Option<Plane>,
}

impl FrameScene {
    pub fn new(depth: &DepthMm, cam: &Camera, z_min: f32, z_max: f32) -> FrameScene {
        let organized = cloud::organized(depth, cam, z_min, z_max);
        let valid = organized.iter().copied().filter(|p| p.z > 0.0).collect();
        FrameScene {
            depth: depth.mm.iter().map(|z| z.to_bits()).collect(),
            size: (depth.width, depth.height),
            camera: *cam,
            z_range: (z_min, z_max),
            organized,
            valid,
            clouds: Mutex::new(Vec::new()),
        }
    }

    /// Whether this is the scene of `depth` seen by `cam` over [z_min, z_max] (a plain
    /// comparison of the images: about a millisecond, far below what sharing saves).
    pub fn is_of(&self, depth: &DepthMm, cam: &Camera, z_min: f32, z_max: f32) -> bool {
        self.z_range == (z_min, z_max)
            && self.size == (depth.width, depth.height)
            && self.camera == *cam
            && self.depth.iter().zip(&depth.mm).all(|(a, b)| *a == b.to_bits())
    }

    pub fn valid_points(&self) -> usize {
        self.valid.len()
    }

    /// The voting cloud at `step` mm, made on first request. Two threads asking at once may
    /// both make it; the result is the same.
    pub fn voting_cloud(&self, step: f32, remove_plane: bool) -> Arc<VotingCloud> {
        let key = (step.to_bits(), remove_plane);
        if let Some((_, c)) = self.clouds.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|(k, _)| *k == key) {
            return c.clone();
        }
        let (mut cloud, _) = cloud::downsample_with_normals(&self.valid, step, 3);
        tracing::debug!("{} points before plane removal", cloud.len());
        let mut plane = None;
        if remove_plane {
            // Sensor noise on a table at 1 m is a few mm; a voxel centroid adds up to half a step.
            let tol = (0.5 * step).clamp(5.0, 10.0);
            plane = dominant_plane(&cloud, tol, 0.1, 17);
            if let Some(plane) = &plane {
                tracing::debug!("support plane {:?} removed", plane);
                let kept = above_plane(&cloud, plane, tol);
                cloud = cloud.select(&kept);
            }
        }
        let made = Arc::new(VotingCloud { cloud, plane });
        self.clouds.lock().unwrap_or_else(|e| e.into_inner()).push((key, made.clone()));
        made
    }
}


/// A plane n·x + d = 0 with n pointing towards the camera.
#[derive(Clone, Copy, Debug)]
pub struct Plane {
    pub n: Vec3,
    pub d: f32,
}

impl Plane {
    #[inline]
    pub fn signed_distance(&self, p: &Vec3) -> f32 {
        self.n.dot(p) + self.d
    }
}

/// RANSAC for the plane with most support within `tol` mm, accepted only when it carries at
/// least `min_fraction` of the points and agrees with their normals.
pub fn dominant_plane(c: &cloud::Cloud, tol: f32, min_fraction: f32, seed: u64) -> Option<Plane> {
    let n = c.len();
    if n < 50 {
        return None;
    }
    let mut rng = SplitMix64(seed);
    let probe: Vec<usize> = (0..n).step_by((n / 1500).max(1)).collect();
    let mut best: Option<(usize, Plane)> = None;
    for _ in 0..200 {
        let pick = |rng: &mut SplitMix64| (rng.next_u64() % n as u64) as usize;
        let (a, b, cc) = (c.points[pick(&mut rng)], c.points[pick(&mut rng)], c.points[pick(&mut rng)]);
        let Some(mut nrm) = (b - a).cross(&(cc - a)).try_normalize(1e-6) else { continue };
        if nrm.dot(&a) > 0.0 {
            nrm = -nrm;
        }
        let plane = Plane { n: nrm, d: -nrm.dot(&a) };
        // Normals of a noisy down-sampled table scatter: only reject the clearly different.
        let cos_ok = 0.8f32;
        let count = probe
            .iter()
            .filter(|&&i| plane.signed_distance(&c.points[i]).abs() < tol && c.normals[i].dot(&nrm) > cos_ok)
            .count();
        if best.as_ref().is_none_or(|(bc, _)| count > *bc) {
            best = Some((count, plane));
        }
    }
    let (count, plane) = best?;
    tracing::debug!("plane candidate: {:.1}% of {} probe points", 100.0 * count as f32 / probe.len() as f32, probe.len());
    if (count as f32) < min_fraction * probe.len() as f32 {
        return None;
    }
    // Least-squares refit on the inliers.
    let inl: Vec<Vec3> = c.points.iter().copied().filter(|p| plane.signed_distance(p).abs() < tol).collect();
    let mean = inl.iter().fold(Vec3::zeros(), |a, p| a + p) / inl.len() as f32;
    let mut cov = nalgebra::Matrix3::<f32>::zeros();
    for p in &inl {
        let d = p - mean;
        cov += d * d.transpose();
    }
    let eig = nalgebra::SymmetricEigen::new(cov);
    let imin = eig.eigenvalues.imin();
    let mut nrm: Vec3 = eig.eigenvectors.column(imin).into_owned();
    if nrm.dot(&mean) > 0.0 {
        nrm = -nrm;
    }
    Some(Plane { n: nrm, d: -nrm.dot(&mean) })
}

/// Indices of the points above the plane: those on it (within `tol`) and behind it (seen
/// through it means noise or outside the workspace) are dropped.
pub fn above_plane(c: &cloud::Cloud, plane: &Plane, tol: f32) -> Vec<usize> {
    (0..c.len()).filter(|&i| plane.signed_distance(&c.points[i]) > tol).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_table_and_keeps_object() {
        let mut c = cloud::Cloud::default();
        // Table: z = 900 tilted, normal towards camera.
        let n = Vec3::new(0.0, -0.5, -1.0).normalize();
        let mut rng = SplitMix64(1);
        for _ in 0..3000 {
            let (x, y) = (rng.next_f64() as f32 * 600.0 - 300.0, rng.next_f64() as f32 * 400.0 - 200.0);
            let z = 900.0 - 0.5 * y;
            c.points.push(Vec3::new(x, y, z));
            c.normals.push(n);
        }
        // A box on it, 50 mm towards the camera.
        for i in 0..400 {
            let p = Vec3::new((i % 20) as f32 * 3.0, (i / 20) as f32 * 3.0, 0.0);
            let z = 900.0 - 0.5 * p.y;
            c.points.push(Vec3::new(p.x, p.y, z) + n * 50.0);
            c.normals.push(n);
        }
        let plane = dominant_plane(&c, 5.0, 0.2, 3).expect("plane");
        assert!(plane.n.dot(&n) > 0.999);
        let kept = above_plane(&c, &plane, 5.0);
        assert_eq!(kept, (3000..3400).collect::<Vec<_>>());
    }

    /// One frame's clouds are made once per sampling step and found again; another frame (one
    /// pixel differs) or another depth range is not taken for this one.
    #[test]
    fn frame_scene_is_shared_per_step_and_only_for_its_frame() {
        let (w, h) = (32, 24);
        let mut depth = DepthMm { width: w, height: h, mm: (0..w * h).map(|i| 800.0 + (i % w) as f32).collect() };
        let cam = Camera { fx: 500.0, fy: 500.0, cx: 16.0, cy: 12.0, depth_scale: 1.0 };
        let scene = FrameScene::new(&depth, &cam, 100.0, 6000.0);
        assert_eq!(scene.valid_points(), w * h);
        let a = scene.voting_cloud(5.0, false);
        assert!(Arc::ptr_eq(&a, &scene.voting_cloud(5.0, false)));
        assert!(!Arc::ptr_eq(&a, &scene.voting_cloud(6.0, false)));
        assert!(scene.is_of(&depth, &cam, 100.0, 6000.0));
        assert!(!scene.is_of(&depth, &cam, 100.0, 5000.0));
        depth.mm[100] += 1.0;
        assert!(!scene.is_of(&depth, &cam, 100.0, 6000.0));
    }
}
