//! Procedural meshes in millimetres, each centred on its bounding box with outward-wound
//! triangles (counter-clockwise seen from outside) and per-vertex unit normals.
//!
//! Surfaces of revolution (cylinder, cone, mug body) come from one [`lathe`]; flat parts get
//! their own vertices so that normals stay sharp across edges.
use super::{Mesh, Vec3};
use std::f32::consts::{PI, TAU};

/// Builder: appends vertices with normals and faces.
#[derive(Default)]
struct Builder {
    v: Vec<Vec3>,
    n: Vec<Vec3>,
    f: Vec<[u32; 3]>,
}

impl Builder {
    fn vertex(&mut self, p: Vec3, n: Vec3) -> u32 {
        self.v.push(p);
        self.n.push(n.try_normalize(1e-12).unwrap_or_else(Vec3::z));
        (self.v.len() - 1) as u32
    }

    fn tri(&mut self, a: u32, b: u32, c: u32) {
        self.f.push([a, b, c]);
    }

    /// Quad a-b-c-d, counter-clockwise seen from the side the normal points to.
    fn quad(&mut self, a: u32, b: u32, c: u32, d: u32) {
        self.tri(a, b, c);
        self.tri(a, c, d);
    }

    fn append(&mut self, m: &Mesh) {
        let base = self.v.len() as u32;
        self.v.extend_from_slice(&m.vertices);
        match &m.normals {
            Some(n) => self.n.extend_from_slice(n),
            None => self.n.extend(std::iter::repeat_n(Vec3::z(), m.vertices.len())),
        }
        self.f.extend(m.faces.iter().map(|f| f.map(|i| i + base)));
    }

    fn build(self) -> Mesh {
        Mesh { vertices: self.v, normals: Some(self.n), colors: None, faces: self.f }
    }
}

/// Moves the mesh so its axis-aligned bounding box is centred on the origin (the model frame
/// BOP-style CAD models usually have).
pub fn centred(mut m: Mesh) -> Mesh {
    let (lo, hi) = m.bounds();
    let c = (lo + hi) * 0.5;
    for v in &mut m.vertices {
        *v -= c;
    }
    m
}

/// Box with edge lengths (sx, sy, sz), 24 vertices (sharp normals), 12 triangles.
pub fn cuboid(sx: f32, sy: f32, sz: f32) -> Mesh {
    let h = Vec3::new(sx, sy, sz) * 0.5;
    let mut b = Builder::default();
    // For each axis and side: the face normal and two in-plane axes with u × v = normal.
    for axis in 0..3 {
        for sign in [1.0f32, -1.0] {
            let mut n = Vec3::zeros();
            n[axis] = sign;
            let mut u = Vec3::zeros();
            u[(axis + 1) % 3] = 1.0;
            let v = n.cross(&u);
            let centre = n.component_mul(&h);
            let (hu, hv) = (u.component_mul(&h).norm(), v.component_mul(&h).norm());
            let corner = |su: f32, sv: f32| centre + u * (su * hu) + v * (sv * hv);
            let ids = [(-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)].map(|(su, sv)| b.vertex(corner(su, sv), n));
            b.quad(ids[0], ids[1], ids[2], ids[3]);
        }
    }
    b.build()
}

/// Box like [`cuboid`] with each face split into a grid of squares of about `cell` mm: enough
/// vertices to carry a printed pattern as vertex colours.
pub fn tessellated_cuboid(sx: f32, sy: f32, sz: f32, cell: f32) -> Mesh {
    let h = Vec3::new(sx, sy, sz) * 0.5;
    let mut b = Builder::default();
    for axis in 0..3 {
        for sign in [1.0f32, -1.0] {
            let mut n = Vec3::zeros();
            n[axis] = sign;
            let mut u = Vec3::zeros();
            u[(axis + 1) % 3] = 1.0;
            let v = n.cross(&u);
            let centre = n.component_mul(&h);
            let (hu, hv) = (u.component_mul(&h).norm(), v.component_mul(&h).norm());
            let (nu, nv) = (((2.0 * hu / cell).ceil() as usize).max(1), ((2.0 * hv / cell).ceil() as usize).max(1));
            let base = b.v.len() as u32;
            for j in 0..=nv {
                for i in 0..=nu {
                    let (su, sv) = (2.0 * i as f32 / nu as f32 - 1.0, 2.0 * j as f32 / nv as f32 - 1.0);
                    b.vertex(centre + u * (su * hu) + v * (sv * hv), n);
                }
            }
            let at = |i: usize, j: usize| base + (j * (nu + 1) + i) as u32;
            for j in 0..nv {
                for i in 0..nu {
                    b.quad(at(i, j), at(i + 1, j), at(i + 1, j + 1), at(i, j + 1));
                }
            }
        }
    }
    b.build()
}

/// Surface of revolution about z of a closed or open profile in the (r, z) half-plane.
/// The profile runs counter-clockwise (r right, z up: e.g. bottom centre → outer bottom →
/// outer top → top centre), so each segment's outward normal is (dz, −dr). Every segment gets
/// its own ring of vertices (sharp creases between segments, smooth around the axis);
/// points on the axis (r = 0) make triangles instead of quads.
pub fn lathe(profile: &[(f32, f32)], segments: usize) -> Mesh {
    let mut b = Builder::default();
    let segments = segments.max(3);
    for w in profile.windows(2) {
        let ((r0, z0), (r1, z1)) = (w[0], w[1]);
        let (dr, dz) = (r1 - r0, z1 - z0);
        let ring = |b: &mut Builder, r: f32, z: f32| -> Vec<u32> {
            (0..segments)
                .map(|j| {
                    let th = TAU * j as f32 / segments as f32;
                    let (s, c) = th.sin_cos();
                    b.vertex(Vec3::new(r * c, r * s, z), Vec3::new(dz * c, dz * s, -dr))
                })
                .collect()
        };
        let lower = ring(&mut b, r0, z0);
        let upper = ring(&mut b, r1, z1);
        for j in 0..segments {
            let k = (j + 1) % segments;
            let (a, bb, c, d) = (lower[j], lower[k], upper[k], upper[j]);
            if r0 > 0.0 {
                b.tri(a, bb, c);
            }
            if r1 > 0.0 {
                b.tri(a, c, d);
            }
        }
    }
    b.build()
}

/// Closed cylinder of radius r and height h along z.
pub fn cylinder(r: f32, h: f32, segments: usize) -> Mesh {
    centred(lathe(&[(0.0, 0.0), (r, 0.0), (r, h), (0.0, h)], segments))
}

/// Closed cone: base radius r at the bottom, apex h above, along z.
pub fn cone(r: f32, h: f32, segments: usize) -> Mesh {
    centred(lathe(&[(0.0, 0.0), (r, 0.0), (0.0, h)], segments))
}

/// Sphere from a subdivided icosahedron (20·4^subdivisions triangles).
pub fn icosphere(r: f32, subdivisions: usize) -> Mesh {
    let t = (1.0 + 5f32.sqrt()) / 2.0;
    let mut v: Vec<Vec3> = [
        (-1.0, t, 0.0), (1.0, t, 0.0), (-1.0, -t, 0.0), (1.0, -t, 0.0),
        (0.0, -1.0, t), (0.0, 1.0, t), (0.0, -1.0, -t), (0.0, 1.0, -t),
        (t, 0.0, -1.0), (t, 0.0, 1.0), (-t, 0.0, -1.0), (-t, 0.0, 1.0),
    ]
    .iter()
    .map(|&(x, y, z)| Vec3::new(x, y, z).normalize())
    .collect();
    let mut faces: Vec<[u32; 3]> = vec![
        [0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11],
        [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6], [7, 1, 8],
        [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9],
        [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1],
    ];
    for _ in 0..subdivisions {
        // Each edge's midpoint is created once and shared by both faces (watertight).
        let mut mid = std::collections::HashMap::new();
        let mut midpoint = |a: u32, b: u32, v: &mut Vec<Vec3>| -> u32 {
            *mid.entry((a.min(b), a.max(b))).or_insert_with(|| {
                v.push(((v[a as usize] + v[b as usize]) * 0.5).normalize());
                (v.len() - 1) as u32
            })
        };
        let mut next = Vec::with_capacity(faces.len() * 4);
        for [a, b, c] in faces {
            let ab = midpoint(a, b, &mut v);
            let bc = midpoint(b, c, &mut v);
            let ca = midpoint(c, a, &mut v);
            next.extend([[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]);
        }
        faces = next;
    }
    let normals = v.clone();
    Mesh { vertices: v.iter().map(|p| p * r).collect(), normals: Some(normals), colors: None, faces }
}

/// Tube of radius `minor` around an arc of radius `major` in the xy-plane, from angle a0 to a1
/// (radians). A full turn (a1 − a0 = 2π) closes into a torus; otherwise the ends are open.
fn tube(major: f32, minor: f32, a0: f32, a1: f32, seg_major: usize, seg_minor: usize) -> Mesh {
    let full = (a1 - a0 - TAU).abs() < 1e-6;
    let rings = if full { seg_major } else { seg_major + 1 };
    let mut b = Builder::default();
    for i in 0..rings {
        let th = a0 + (a1 - a0) * i as f32 / seg_major as f32;
        let (s, c) = th.sin_cos();
        for j in 0..seg_minor {
            let ph = TAU * j as f32 / seg_minor as f32;
            let (sp, cp) = ph.sin_cos();
            let n = Vec3::new(cp * c, cp * s, sp);
            b.vertex(Vec3::new(major * c, major * s, 0.0) + n * minor, n);
        }
    }
    for i in 0..seg_major {
        let i1 = (i + 1) % rings;
        for j in 0..seg_minor {
            let j1 = (j + 1) % seg_minor;
            let at = |i: usize, j: usize| (i * seg_minor + j) as u32;
            // Around the tube φ grows from outward to +z; along the arc θ grows: θ × φ points out.
            b.quad(at(i, j), at(i1, j), at(i1, j1), at(i, j1));
        }
    }
    b.build()
}

/// Torus in the xy-plane: ring radius `major`, tube radius `minor`.
pub fn torus(major: f32, minor: f32, seg_major: usize, seg_minor: usize) -> Mesh {
    tube(major, minor, 0.0, TAU, seg_major, seg_minor)
}

/// L-shaped bracket: a plate `length` long (x) and an upright `height` high (z), both
/// `thickness` thick, extruded `width` along y.
pub fn bracket(length: f32, height: f32, thickness: f32, width: f32) -> Mesh {
    // The L outline in the xz-plane, counter-clockwise seen from −y... we want the outline
    // counter-clockwise in (x, z) so that with y as the extrusion axis the caps face ±y.
    let outline = [(0.0, 0.0), (length, 0.0), (length, thickness), (thickness, thickness), (thickness, height), (0.0, height)];
    let mut b = Builder::default();
    let n_out = outline.len();
    let p = |(x, z): (f32, f32), y: f32| Vec3::new(x, y, z);
    // Caps: the L is star-shaped from its outer corner (0, 0), so a fan from it is valid.
    // Outline CCW in (x, z) means its normal (x × z) points to −y.
    let front: Vec<u32> = outline.iter().map(|&q| b.vertex(p(q, 0.0), -Vec3::y())).collect();
    let back: Vec<u32> = outline.iter().map(|&q| b.vertex(p(q, width), Vec3::y())).collect();
    for k in 1..n_out - 1 {
        b.tri(front[0], front[k], front[k + 1]);
        b.tri(back[0], back[k + 1], back[k]);
    }
    // Sides: one quad per outline edge, outward normal (dz, −dx) in (x, z).
    for k in 0..n_out {
        let (a, c) = (outline[k], outline[(k + 1) % n_out]);
        let n = Vec3::new(c.1 - a.1, 0.0, -(c.0 - a.0));
        let ids = [p(a, 0.0), p(c, 0.0), p(c, width), p(a, width)].map(|q| b.vertex(q, n));
        b.quad(ids[0], ids[3], ids[2], ids[1]);
    }
    centred(b.build())
}

/// A mug: open-topped body of revolution (outer radius r, wall and floor `wall` thick,
/// height h) with a handle — half a torus standing in the xz-plane whose ends sink into the
/// wall. Not watertight where the handle meets the body (hidden inside the wall).
pub fn mug(r: f32, h: f32, wall: f32, segments: usize) -> Mesh {
    let ri = r - wall;
    let body = lathe(&[(0.0, 0.0), (r, 0.0), (r, h), (ri, h), (ri, wall), (0.0, wall)], segments);
    let (major, minor) = (0.3 * h, 0.06 * h);
    // Arc in its own xy-plane, then rotated to the xz-plane (y → z) and pushed out to +x.
    let span = 0.62 * PI;
    let handle = tube(major, minor, -span, span, segments / 2, 12);
    let cx = r + major * 0.25;
    let to_xz = |v: &Vec3| Vec3::new(v.x, -v.z, v.y);
    let handle = Mesh {
        vertices: handle.vertices.iter().map(|v| to_xz(v) + Vec3::new(cx, 0.0, 0.5 * h)).collect(),
        normals: handle.normals.as_ref().map(|n| n.iter().map(to_xz).collect()),
        colors: None,
        faces: handle.faces,
    };
    let mut b = Builder::default();
    b.append(&body);
    b.append(&handle);
    centred(b.build())
}

/// A square table top of side `size`, facing +z at z = 0 (two triangles).
pub fn table(size: f32) -> Mesh {
    let h = size * 0.5;
    let mut b = Builder::default();
    let ids = [(-h, -h), (h, -h), (h, h), (-h, h)].map(|(x, y)| b.vertex(Vec3::new(x, y, 0.0), Vec3::z()));
    b.quad(ids[0], ids[1], ids[2], ids[3]);
    b.build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Every undirected edge (by vertex position) is used exactly once in each direction.
    fn is_watertight(m: &Mesh) -> bool {
        let key = |v: &Vec3| ((v.x * 1e3).round() as i64, (v.y * 1e3).round() as i64, (v.z * 1e3).round() as i64);
        let mut count: HashMap<_, i32> = HashMap::new();
        for f in &m.faces {
            for k in 0..3 {
                let (a, b) = (key(&m.vertices[f[k] as usize]), key(&m.vertices[f[(k + 1) % 3] as usize]));
                *count.entry((a, b)).or_default() += 1;
            }
        }
        count.iter().all(|(&(a, b), &n)| n == 1 && count.get(&(b, a)) == Some(&1))
    }

    fn volume(m: &Mesh) -> f64 {
        m.signed_volume()
    }

    /// Face normals agree with the stored vertex normals (outward winding everywhere).
    fn normals_agree(m: &Mesh) -> bool {
        let n = m.normals.as_ref().unwrap();
        m.faces.iter().all(|f| {
            let [a, b, c] = f.map(|i| m.vertices[i as usize]);
            let fn_ = (b - a).cross(&(c - a));
            fn_.norm() < 1e-9 || f.iter().all(|&i| n[i as usize].dot(&fn_) > 0.0)
        })
    }

    fn no_degenerate(m: &Mesh) -> bool {
        m.faces.iter().all(|f| {
            let [a, b, c] = f.map(|i| m.vertices[i as usize]);
            (b - a).cross(&(c - a)).norm() > 1e-6
        })
    }

    #[test]
    fn closed_shapes_are_watertight_outward_with_right_volume() {
        let pi = std::f64::consts::PI;
        let poly = |n: f64| 0.5 * n * (2.0 * pi / n).sin() / pi; // polygon area / circle area
        let cases: Vec<(&str, Mesh, f64, f64)> = vec![
            ("cuboid", cuboid(40.0, 60.0, 80.0), 40.0 * 60.0 * 80.0, 1e-9),
            ("cylinder", cylinder(30.0, 100.0, 48), pi * 900.0 * 100.0 * poly(48.0), 1e-6),
            ("cone", cone(30.0, 90.0, 48), pi * 900.0 * 90.0 / 3.0 * poly(48.0), 1e-6),
            ("sphere", icosphere(50.0, 3), 4.0 / 3.0 * pi * 125_000.0, 0.02),
            ("torus", torus(60.0, 15.0, 64, 24), 2.0 * pi * pi * 60.0 * 225.0, 0.02),
            ("bracket", bracket(80.0, 50.0, 6.0, 30.0), (80.0 * 6.0 + 44.0 * 6.0) * 30.0, 1e-6),
        ];
        for (name, m, want, tol) in cases {
            assert!(is_watertight(&m), "{name} not watertight");
            assert!(normals_agree(&m), "{name} normals disagree with winding");
            assert!(no_degenerate(&m), "{name} has degenerate faces");
            let v = volume(&m);
            assert!((v - want).abs() <= tol * want, "{name}: volume {v} vs {want}");
            let (lo, hi) = m.bounds();
            assert!((lo + hi).norm() < 1e-3, "{name} not centred");
        }
    }

    #[test]
    fn mug_and_table() {
        let m = mug(40.0, 95.0, 4.0, 48);
        assert!(normals_agree(&m) && no_degenerate(&m));
        let (lo, hi) = m.bounds();
        // Body 80 mm across, the handle sticks out on +x; 95 mm tall.
        assert!((hi.z - lo.z - 95.0).abs() < 1e-3);
        assert!((hi.y - lo.y - 80.0).abs() < 0.5);
        assert!(hi.x - lo.x > 100.0 && hi.x - lo.x < 130.0, "{lo} {hi}");
        // The body alone is watertight with volume = outer cylinder − cavity.
        let body = lathe(&[(0.0, 0.0), (40.0, 0.0), (40.0, 95.0), (36.0, 95.0), (36.0, 4.0), (0.0, 4.0)], 64);
        assert!(is_watertight(&body));
        let pi = std::f64::consts::PI;
        let poly = 0.5 * 64.0 * (2.0 * pi / 64.0).sin() / pi;
        let want = pi * poly * (1600.0 * 95.0 - 1296.0 * 91.0);
        assert!((volume(&body) - want).abs() < 1e-6 * want);

        let t = table(1000.0);
        assert_eq!(t.faces.len(), 2);
        assert!((volume(&t)).abs() < 1e-9);
        assert!(normals_agree(&t));
    }
}
