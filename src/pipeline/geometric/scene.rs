//! Scene preparation: depth → points → down-sampled cloud with normals, minus the dominant
//! support plane (table, floor) when there is one.
use crate::geometry::{cloud, Vec3, SplitMix64};

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
}
