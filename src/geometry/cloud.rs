//! Point clouds: back-projection of depth images and voxel down-sampling with normals.
use rayon::prelude::*;
use super::Vec3;
use crate::io::{Camera, DepthMm};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Points with unit normals (same length).
#[derive(Clone, Debug, Default)]
pub struct Cloud {
    pub points: Vec<Vec3>,
    pub normals: Vec<Vec3>,
}

impl Cloud {
    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The points (and normals) at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Cloud {
        Cloud { points: indices.iter().map(|&i| self.points[i]).collect(), normals: indices.iter().map(|&i| self.normals[i]).collect() }
    }
}

/// Camera-frame point (mm) of every pixel, row-major, zero where the depth is missing or
/// outside [z_min, z_max]: an organised cloud, indexable by pixel.
pub fn organized(depth: &DepthMm, cam: &Camera, z_min: f32, z_max: f32) -> Vec<Vec3> {
    let (fx, fy, cx, cy) = (cam.fx as f32, cam.fy as f32, cam.cx as f32, cam.cy as f32);
    let w = depth.width;
    depth
        .mm
        .iter()
        .enumerate()
        .map(|(i, &z)| {
            if z >= z_min && z <= z_max {
                Vec3::new(((i % w) as f32 - cx) * z / fx, ((i / w) as f32 - cy) * z / fy, z)
            } else {
                Vec3::zeros()
            }
        })
        .collect()
}

/// Integer voxel coordinates packed into one key (21 bits each, offset to stay positive).
#[inline]
fn voxel_key(p: &Vec3, inv: f32) -> u64 {
    let c = |x: f32| ((x * inv).floor() as i64 + (1 << 20)).clamp(0, (1 << 21) - 1) as u64;
    c(p.x) | (c(p.y) << 21) | (c(p.z) << 42)
}

/// Fast hasher for the packed voxel keys (multiply-shift; keys are already well spread).
#[derive(Default)]
pub struct KeyHasher(u64);
impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, _: &[u8]) {
        unreachable!("only u64 keys")
    }
    fn write_u64(&mut self, k: u64) {
        self.0 = k.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29);
    }
}
pub type KeyMap<V> = HashMap<u64, V, BuildHasherDefault<KeyHasher>>;

/// Per-voxel moments: enough for the centroid and a PCA normal.
#[derive(Clone, Copy, Default)]
struct Moments {
    n: f32,
    s: [f32; 3],
    ss: [f32; 6], // xx xy xz yy yz zz, about the voxel's first point (numerical stability)
    anchor: [f32; 3],
}

impl Moments {
    fn add(&mut self, p: &Vec3) {
        if self.n == 0.0 {
            self.anchor = [p.x, p.y, p.z];
        }
        let d = [p.x - self.anchor[0], p.y - self.anchor[1], p.z - self.anchor[2]];
        self.n += 1.0;
        for (s, dk) in self.s.iter_mut().zip(d) {
            *s += dk;
        }
        self.ss[0] += d[0] * d[0];
        self.ss[1] += d[0] * d[1];
        self.ss[2] += d[0] * d[2];
        self.ss[3] += d[1] * d[1];
        self.ss[4] += d[1] * d[2];
        self.ss[5] += d[2] * d[2];
    }

    fn centroid(&self) -> Vec3 {
        Vec3::new(self.anchor[0], self.anchor[1], self.anchor[2]) + Vec3::new(self.s[0], self.s[1], self.s[2]) / self.n
    }
}

/// Down-samples a camera-frame cloud to one point per voxel (the centroid) with a normal from
/// PCA of the points in the voxel and its 26 neighbours, oriented towards the camera (origin).
/// Voxels with fewer than `min_points` points (isolated noise) are dropped. Also returns the
/// surface variation λ0/(λ0+λ1+λ2) of each kept point (0 = flat, 1/3 = isotropic noise).
pub fn downsample_with_normals(points: &[Vec3], voxel: f32, min_points: usize) -> (Cloud, Vec<f32>) {
    let inv = 1.0 / voxel;
    let mut index: KeyMap<u32> = KeyMap::default();
    let mut moments: Vec<Moments> = Vec::new();
    let mut keys: Vec<u64> = Vec::new();
    // Points of a depth image come in rows, and neighbours mostly share a voxel: remembering
    // the last voxel skips most hash lookups.
    let mut last: Option<(u64, u32)> = None;
    for p in points {
        let k = voxel_key(p, inv);
        let id = match last {
            Some((lk, id)) if lk == k => id,
            _ => *index.entry(k).or_insert_with(|| {
                moments.push(Moments::default());
                keys.push(k);
                (moments.len() - 1) as u32
            }),
        };
        last = Some((k, id));
        moments[id as usize].add(p);
    }
    const M: u64 = (1 << 21) - 1;
    // One PCA per voxel, independent of the others: in parallel, results kept in voxel order.
    let oriented: Vec<Option<(Vec3, Vec3, f32)>> = (0..moments.len())
        .into_par_iter()
        .map(|i| {
            let m = &moments[i];
            if (m.n as usize) < min_points {
                return None;
            }
            let c = m.centroid();
            // Covariance about c over the 27-neighbourhood, from each voxel's moments.
            let mut cov = nalgebra::Matrix3::<f64>::zeros();
            let mut total = 0.0f64;
            let k = keys[i];
            let (kx, ky, kz) = ((k & M) as i64, ((k >> 21) & M) as i64, ((k >> 42) & M) as i64);
            for dz in -1..=1i64 {
                for dy in -1..=1i64 {
                    for dx in -1..=1i64 {
                        let nk = ((kx + dx) as u64 & M) | (((ky + dy) as u64 & M) << 21) | (((kz + dz) as u64 & M) << 42);
                        let Some(&j) = index.get(&nk) else { continue };
                        let o = &moments[j as usize];
                        // Σ (p - c)(p - c)ᵀ = Σ (d + a - c)(d + a - c)ᵀ with d = p - anchor.
                        let e = Vec3::new(o.anchor[0] - c.x, o.anchor[1] - c.y, o.anchor[2] - c.z).cast::<f64>();
                        let s = nalgebra::Vector3::new(o.s[0], o.s[1], o.s[2]).cast::<f64>();
                        let ss = o.ss.map(|v| v as f64);
                        let sm = nalgebra::Matrix3::new(ss[0], ss[1], ss[2], ss[1], ss[3], ss[4], ss[2], ss[4], ss[5]);
                        cov += sm + s * e.transpose() + e * s.transpose() + e * e.transpose() * o.n as f64;
                        total += o.n as f64;
                    }
                }
            }
            if total < 3.0 {
                return None;
            }
            let (lambda, normal) = smallest_eigen(&(cov / total));
            let sum = cov.trace() / total;
            let mut n: Vec3 = normal.cast::<f32>();
            if n.dot(&c) > 0.0 {
                n = -n;
            }
            Some((c, n, if sum > 0.0 { (lambda.max(0.0) / sum) as f32 } else { 0.0 }))
        })
        .collect();
    let mut cloud = Cloud::default();
    let mut variation = Vec::new();
    for (c, n, var) in oriented.into_iter().flatten() {
        cloud.points.push(c);
        cloud.normals.push(n);
        variation.push(var);
    }
    (cloud, variation)
}

/// The smallest eigenvalue of a symmetric 3×3 matrix and a unit eigenvector of it, in closed
/// form (the trigonometric solution of the characteristic cubic): one per scene voxel, where an
/// iterative solver cost most of the down-sampling time.
fn smallest_eigen(a: &nalgebra::Matrix3<f64>) -> (f64, nalgebra::Vector3<f64>) {
    use nalgebra::{Matrix3, Vector3};
    let p1 = a[(0, 1)].powi(2) + a[(0, 2)].powi(2) + a[(1, 2)].powi(2);
    let q = a.trace() / 3.0;
    let p2 = (a[(0, 0)] - q).powi(2) + (a[(1, 1)] - q).powi(2) + (a[(2, 2)] - q).powi(2) + 2.0 * p1;
    let p = (p2 / 6.0).sqrt();
    if p < 1e-12 * q.abs().max(1e-30) {
        // A multiple of the identity: every direction is an eigenvector.
        return (q, Vector3::z());
    }
    let b = (a - Matrix3::identity() * q) / p;
    let r = (b.determinant() / 2.0).clamp(-1.0, 1.0);
    // Eigenvalues q + 2p·cos(φ + 2πk/3); the smallest is k = 1.
    let phi = r.acos() / 3.0;
    let lambda = q + 2.0 * p * (phi + 2.0 * std::f64::consts::PI / 3.0).cos();
    // The eigenvector is orthogonal to the rows of A − λI: the longest cross product of two of
    // them is the best conditioned.
    let m = a - Matrix3::identity() * lambda;
    let (r0, r1, r2) = (m.row(0).transpose(), m.row(1).transpose(), m.row(2).transpose());
    let candidates = [r0.cross(&r1), r0.cross(&r2), r1.cross(&r2)];
    let best = candidates.iter().max_by(|x, y| x.norm_squared().total_cmp(&y.norm_squared())).unwrap();
    match best.try_normalize(1e-300) {
        Some(v) => (lambda, v),
        // Rank ≤ 1 after the shift (two equal smallest eigenvalues): any vector orthogonal to
        // the remaining row is an eigenvector.
        None => {
            let row = [r0, r1, r2].into_iter().max_by(|x, y| x.norm_squared().total_cmp(&y.norm_squared())).unwrap();
            let any = if row.x.abs() < 0.9 * row.norm() { Vector3::x() } else { Vector3::y() };
            (lambda, row.cross(&any).try_normalize(1e-300).unwrap_or(Vector3::z()))
        }
    }
}

/// Down-samples points that already have normals (model surface samples): per voxel, points are
/// grouped by normal direction (within `max_angle` radians) so that both sides of a thin part
/// or an edge keep their own normal; each group becomes one averaged point.
pub fn downsample_oriented(points: &[Vec3], normals: &[Vec3], voxel: f32, max_angle: f32) -> Cloud {
    let inv = 1.0 / voxel;
    let cos_max = max_angle.cos();
    let mut index: KeyMap<Vec<u32>> = KeyMap::default();
    let mut groups: Vec<(Vec3, Vec3, f32)> = Vec::new(); // sum of points, sum of normals, count
    for (p, n) in points.iter().zip(normals) {
        let ids = index.entry(voxel_key(p, inv)).or_default();
        let hit = ids.iter().copied().find(|&g| {
            let gn = groups[g as usize].1;
            gn.dot(n) >= cos_max * gn.norm()
        });
        match hit {
            Some(g) => {
                let e = &mut groups[g as usize];
                e.0 += p;
                e.1 += n;
                e.2 += 1.0;
            }
            None => {
                ids.push(groups.len() as u32);
                groups.push((*p, *n, 1.0));
            }
        }
    }
    let mut cloud = Cloud::default();
    for (sp, sn, c) in groups {
        if let Some(n) = sn.try_normalize(1e-6) {
            cloud.points.push(sp / c);
            cloud.normals.push(n);
        }
    }
    cloud
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smallest_eigen_matches_the_iterative_solver() {
        let mut rng = crate::geometry::SplitMix64(9);
        for i in 0..200 {
            let m = nalgebra::Matrix3::<f64>::from_fn(|_, _| rng.next_f64() * 2.0 - 1.0);
            // Flat, elongated and near-isotropic spreads, as voxel neighbourhoods are.
            let scale = nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(1.0, [1.0, 0.05, 1.0][i % 3], [0.01, 0.01, 0.9][i % 3]));
            let a = m * scale * m.transpose();
            let (lambda, v) = smallest_eigen(&a);
            let eig = nalgebra::SymmetricEigen::new(a);
            let k = eig.eigenvalues.imin();
            assert!((lambda - eig.eigenvalues[k]).abs() < 1e-9 * a.norm().max(1.0), "{i}: {lambda} vs {}", eig.eigenvalues[k]);
            assert!((a * v - v * lambda).norm() < 1e-7 * a.norm().max(1.0), "{i}: not an eigenvector");
            assert!((v.norm() - 1.0).abs() < 1e-9);
        }
        assert_eq!(smallest_eigen(&nalgebra::Matrix3::identity()).0, 1.0);
        let (l, v) = smallest_eigen(&nalgebra::Matrix3::from_diagonal(&nalgebra::Vector3::new(3.0, 1.0, 1.0)));
        // A double eigenvalue is where acos is worst conditioned: 1e-8 of the spread.
        assert!((l - 1.0).abs() < 1e-7 && v.x.abs() < 1e-9, "{l} {v:?}");
    }

    #[test]
    fn backprojects_and_fits_plane_normals() {
        // A plane z = 800 + 0.5 x seen by a 100x80 camera.
        let cam = Camera::new(500.0, 500.0, 50.0, 40.0, 1.0).unwrap();
        let (w, h) = (100, 80);
        let mut mm = vec![0.0f32; w * h];
        for v in 0..h {
            for u in 0..w {
                // Ray (x/z, y/z, 1) hits z = 800 + 0.5 x → z = 800 / (1 - 0.5 (u-cx)/fx).
                mm[v * w + u] = 800.0 / (1.0 - 0.5 * (u as f32 - 50.0) / 500.0);
            }
        }
        mm[0] = 0.0; // missing pixel is skipped
        let depth = DepthMm { width: w, height: h, mm };
        let pts: Vec<Vec3> = organized(&depth, &cam, 100.0, 5000.0).into_iter().filter(|p| p.z > 0.0).collect();
        assert_eq!(pts.len(), w * h - 1);
        for p in &pts {
            assert!((p.z - (800.0 + 0.5 * p.x)).abs() < 1e-2);
        }
        let (cloud, var) = downsample_with_normals(&pts, 10.0, 3);
        assert!(!cloud.is_empty());
        let want = Vec3::new(0.5, 0.0, -1.0).normalize(); // faces the camera
        for (n, v) in cloud.normals.iter().zip(&var) {
            assert!(n.dot(&want) > 0.999, "{n:?}");
            assert!(*v < 1e-3);
        }
    }

    #[test]
    fn oriented_downsample_keeps_both_sides() {
        let pts = vec![Vec3::new(1.0, 1.0, 1.0), Vec3::new(1.5, 1.0, 1.0), Vec3::new(1.2, 1.0, 1.0)];
        let nrm = vec![Vec3::z(), Vec3::z(), -Vec3::z()];
        let c = downsample_oriented(&pts, &nrm, 10.0, 0.5);
        assert_eq!(c.len(), 2);
        assert!((c.points[0].x - 1.25).abs() < 1e-6);
    }
}
