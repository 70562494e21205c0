//! Triangle meshes (CAD models), in model units (millimetres once loaded).
use super::Vec3;

#[derive(Clone, Debug, Default)]
pub struct Mesh {
    pub vertices: Vec<Vec3>,
    /// Per-vertex normals as stored in the file (unit length), if any.
    pub normals: Option<Vec<Vec3>>,
    /// Per-vertex RGB colours, if any.
    pub colors: Option<Vec<[u8; 3]>>,
    /// Triangles (polygons from the file are fan-triangulated). Empty for point clouds.
    pub faces: Vec<[u32; 3]>,
}

impl Mesh {
    /// Largest vertex-to-vertex distance. Exact up to the direction sampling: the farthest pair
    /// is always a pair of extreme points along some direction, so we only compare those.
    pub fn diameter(&self) -> f32 {
        let dirs = fibonacci_sphere(256);
        let mut extremes: Vec<usize> = Vec::with_capacity(2 * dirs.len());
        for d in &dirs {
            let (mut lo, mut hi) = ((f32::INFINITY, 0), (f32::NEG_INFINITY, 0));
            for (i, v) in self.vertices.iter().enumerate() {
                let s = v.dot(d);
                if s < lo.0 {
                    lo = (s, i);
                }
                if s > hi.0 {
                    hi = (s, i);
                }
            }
            extremes.push(lo.1);
            extremes.push(hi.1);
        }
        extremes.sort_unstable();
        extremes.dedup();
        let mut best = 0.0f32;
        for (a, &i) in extremes.iter().enumerate() {
            for &j in &extremes[a + 1..] {
                best = best.max((self.vertices[i] - self.vertices[j]).norm());
            }
        }
        best
    }

    /// Axis-aligned bounding box (min, max).
    pub fn bounds(&self) -> (Vec3, Vec3) {
        let mut lo = Vec3::repeat(f32::INFINITY);
        let mut hi = Vec3::repeat(f32::NEG_INFINITY);
        for v in &self.vertices {
            lo = lo.inf(v);
            hi = hi.sup(v);
        }
        (lo, hi)
    }

    /// Unit normal of each face (zero for degenerate faces), following the winding.
    pub fn face_normals(&self) -> Vec<Vec3> {
        self.faces
            .iter()
            .map(|f| {
                let [a, b, c] = f.map(|i| self.vertices[i as usize]);
                (b - a).cross(&(c - a)).try_normalize(1e-12).unwrap_or_else(Vec3::zeros)
            })
            .collect()
    }

    /// Signed volume (positive when faces wind counter-clockwise seen from outside, i.e. face
    /// normals point outwards). Meaningful for closed meshes.
    pub fn signed_volume(&self) -> f64 {
        self.faces
            .iter()
            .map(|f| {
                let [a, b, c] = f.map(|i| self.vertices[i as usize].cast::<f64>());
                a.dot(&b.cross(&c)) / 6.0
            })
            .sum()
    }

    /// `n` points spread over the surface with probability proportional to area, each with an
    /// outward unit normal (from the file's vertex normals when present, else the face normal,
    /// flipped when the mesh winds inwards). Deterministic for a given seed.
    pub fn sample_surface(&self, n: usize, seed: u64) -> (Vec<Vec3>, Vec<Vec3>) {
        let face_n = self.face_normals();
        let flip = if self.normals.is_none() && self.signed_volume() < 0.0 { -1.0 } else { 1.0 };
        let mut cdf = Vec::with_capacity(self.faces.len());
        let mut total = 0.0f64;
        for f in &self.faces {
            let [a, b, c] = f.map(|i| self.vertices[i as usize]);
            total += 0.5 * (b - a).cross(&(c - a)).norm() as f64;
            cdf.push(total);
        }
        let mut rng = crate::geometry::SplitMix64(seed);
        let (mut pts, mut nrm) = (Vec::with_capacity(n), Vec::with_capacity(n));
        if total <= 0.0 {
            return (pts, nrm);
        }
        for _ in 0..n {
            let x = rng.next_f64() * total;
            let fi = cdf.partition_point(|&c| c < x).min(self.faces.len() - 1);
            let f = self.faces[fi];
            let (mut r1, mut r2) = (rng.next_f64() as f32, rng.next_f64() as f32);
            if r1 + r2 > 1.0 {
                r1 = 1.0 - r1;
                r2 = 1.0 - r2;
            }
            let [a, b, c] = f.map(|i| self.vertices[i as usize]);
            pts.push(a + (b - a) * r1 + (c - a) * r2);
            let normal = match &self.normals {
                Some(vn) => {
                    let [na, nb, nc] = f.map(|i| vn[i as usize]);
                    (na * (1.0 - r1 - r2) + nb * r1 + nc * r2).try_normalize(1e-9).unwrap_or(face_n[fi])
                }
                None => face_n[fi] * flip,
            };
            nrm.push(normal);
        }
        (pts, nrm)
    }

    /// A lighter copy for rendering in inner loops: vertices snapped to a grid of `cell` mm and
    /// merged, faces that collapse dropped (vertex clustering).
    pub fn decimated(&self, cell: f32) -> Mesh {
        use std::collections::HashMap;
        let mut index: HashMap<(i32, i32, i32), u32> = HashMap::new();
        let mut sums: Vec<(Vec3, u32)> = Vec::new();
        let remap: Vec<u32> = self
            .vertices
            .iter()
            .map(|v| {
                let key = ((v.x / cell).floor() as i32, (v.y / cell).floor() as i32, (v.z / cell).floor() as i32);
                let id = *index.entry(key).or_insert_with(|| {
                    sums.push((Vec3::zeros(), 0));
                    (sums.len() - 1) as u32
                });
                sums[id as usize].0 += v;
                sums[id as usize].1 += 1;
                id
            })
            .collect();
        let vertices = sums.iter().map(|(s, c)| s / *c as f32).collect();
        let mut faces: Vec<[u32; 3]> = self
            .faces
            .iter()
            .map(|f| f.map(|i| remap[i as usize]))
            .filter(|[a, b, c]| a != b && b != c && a != c)
            .collect();
        faces.sort_unstable();
        faces.dedup();
        Mesh { vertices, normals: None, colors: None, faces }
    }
}

/// Roughly uniform unit directions.
pub fn fibonacci_sphere(n: usize) -> Vec<Vec3> {
    let golden = std::f32::consts::PI * (3.0 - 5f32.sqrt());
    (0..n)
        .map(|i| {
            let y = 1.0 - 2.0 * (i as f32 + 0.5) / n as f32;
            let r = (1.0 - y * y).sqrt();
            let th = golden * i as f32;
            Vec3::new(r * th.cos(), y, r * th.sin())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(s: f32) -> Mesh {
        let v = |x: f32, y: f32, z: f32| Vec3::new(x * s, y * s, z * s);
        let vertices = vec![
            v(-1., -1., -1.), v(1., -1., -1.), v(1., 1., -1.), v(-1., 1., -1.),
            v(-1., -1., 1.), v(1., -1., 1.), v(1., 1., 1.), v(-1., 1., 1.),
        ];
        // Counter-clockwise seen from outside.
        let faces = vec![
            [0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
            [2, 3, 7], [2, 7, 6], [1, 2, 6], [1, 6, 5], [0, 4, 7], [0, 7, 3],
        ];
        Mesh { vertices, normals: None, colors: None, faces }
    }

    #[test]
    fn cube_diameter_volume_and_samples() {
        let m = cube(10.0);
        assert!((m.diameter() - 20.0 * 3f32.sqrt()).abs() < 1e-3);
        assert!((m.signed_volume() - 8000.0).abs() < 1e-6);
        let (p, n) = m.sample_surface(2000, 7);
        assert_eq!(p.len(), 2000);
        for (p, n) in p.iter().zip(&n) {
            // On the surface, normal outward along the axis of the face it lies on.
            assert!((p.amax() - 10.0).abs() < 1e-3);
            assert!(n.dot(p) > 0.0);
        }
        // Same seed, same samples.
        assert_eq!(m.sample_surface(10, 3).0, m.sample_surface(10, 3).0);
        // Inverted winding is detected and normals still point out.
        let mut inv = m.clone();
        for f in &mut inv.faces {
            f.swap(1, 2);
        }
        let (p, n) = inv.sample_surface(100, 1);
        assert!(p.iter().zip(&n).all(|(p, n)| n.dot(p) > 0.0));
    }

    #[test]
    fn decimation_keeps_shape() {
        let (p, _) = cube(10.0).sample_surface(10, 1);
        assert_eq!(p.len(), 10);
        let m = cube(10.0).decimated(1.0);
        assert_eq!(m.faces.len(), 12);
        // Everything in one cell: every face collapses.
        let mut far = cube(10.0);
        for v in &mut far.vertices {
            *v += Vec3::repeat(50.0);
        }
        assert!(far.decimated(100.0).faces.is_empty());
    }
}
