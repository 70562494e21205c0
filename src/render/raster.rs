//! A z-buffered, perspective-correct triangle rasteriser.
//!
//! How a mesh becomes pixels:
//! * vertices go to the camera frame once per call (f64);
//! * triangles are drawn from both sides (CAD meshes are not always consistently wound);
//! * a triangle entirely behind the near plane (z ≤ [`NEAR_MM`]) is skipped; one that is
//!   partly behind it, or whose projection leaves a very large guard band, is **clipped**
//!   in 3D (Sutherland–Hodgman) and the remaining polygon drawn as a fan, so nothing is lost;
//! * projected vertices are snapped to 1/256 px and covered pixels found with integer edge
//!   functions and the top-left fill rule: a pixel centre on an edge shared by two triangles
//!   is drawn exactly once;
//! * pixel (u, v) samples the image plane at the integer point (u, v), as `Camera::project`;
//! * depth comes from the triangle's 3D plane: 1/z is affine in (u, v), so evaluating it per
//!   pixel is exactly perspective-correct interpolation;
//! * the model-frame point of a pixel is recovered from its depth (back-projection through
//!   the inverse pose), which equals perspective-correct interpolation of the vertices'
//!   model coordinates and costs nothing in the inner loop.
use crate::geometry::{Mesh, Pose};
use crate::io::Camera;
use nalgebra::Vector3;

/// Camera-frame depth (mm) below which geometry is clipped away.
pub const NEAR_MM: f64 = 1.0;

/// Sub-pixel precision of snapped vertex positions: 1/256 px.
const SUBPIXEL_BITS: u32 = 8;
const SUBPIXEL: f64 = (1u32 << SUBPIXEL_BITS) as f64;
/// Projected coordinates must stay within ±GUARD_PX so that the integer edge functions
/// (products of two differences of ≤ 2^29 sub-pixel units) cannot overflow an i64.
const GUARD_PX: f64 = (1u32 << 20) as f64;

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
    let depth = render_depth(mesh, cam, pose, width, height);
    let xyz = model_points(&depth, cam, pose, width);
    Render { width, height, depth, xyz }
}

/// Depth only (no xyz), for verification inner loops.
pub fn render_depth(mesh: &Mesh, cam: &Camera, pose: &Pose, width: usize, height: usize) -> Vec<f32> {
    // 0 marks "empty" during the pass as well: a zeroed buffer is the cheapest to allocate.
    let mut depth = vec![0.0f32; width * height];
    for_each_fragment(mesh, cam, pose, width, height, |i, z| {
        let d = depth[i];
        if d == 0.0 || z < d {
            depth[i] = z;
        }
    });
    depth
}

/// Z-composites several posed meshes. Returns (depth in mm, 0 = empty; index into
/// `meshes_and_poses` of the visible mesh per pixel, -1 = empty).
pub fn render_multi(meshes_and_poses: &[(&Mesh, Pose)], cam: &Camera, width: usize, height: usize) -> (Vec<f32>, Vec<i32>) {
    let mut depth = vec![0.0f32; width * height];
    let mut ids = vec![-1i32; width * height];
    for (id, (mesh, pose)) in meshes_and_poses.iter().enumerate() {
        for_each_fragment(mesh, cam, pose, width, height, |i, z| {
            let d = depth[i];
            if d == 0.0 || z < d {
                depth[i] = z;
                ids[i] = id as i32;
            }
        });
    }
    (depth, ids)
}

/// Model-frame point behind every non-empty depth pixel: x_model = Rᵀ(z·K⁻¹[u v 1]ᵀ − t).
pub fn model_points(depth: &[f32], cam: &Camera, pose: &Pose, width: usize) -> Vec<[f32; 3]> {
    let inv = pose.inverse();
    depth
        .iter()
        .enumerate()
        .map(|(i, &z)| {
            if z <= 0.0 {
                return [0.0; 3];
            }
            let p = cam.unproject((i % width) as f64, (i / width) as f64, z as f64);
            let m = inv.apply(&Vector3::new(p[0], p[1], p[2]));
            [m.x as f32, m.y as f32, m.z as f32]
        })
        .collect()
}

/// Depth plus, per pixel, the index into `mesh.faces` of the visible triangle (`u32::MAX` where
/// nothing was hit), for shading: the visible point's model coordinates ([`model_points`])
/// and its triangle give the barycentric weights. Same depth test as [`render_depth`].
pub fn render_depth_faces(mesh: &Mesh, cam: &Camera, pose: &Pose, width: usize, height: usize) -> (Vec<f32>, Vec<u32>) {
    let mut depth = vec![0.0f32; width * height];
    let mut faces = vec![u32::MAX; width * height];
    for_each_fragment_face(mesh, cam, pose, width, height, |i, z, f| {
        let d = depth[i];
        if d == 0.0 || z < d {
            depth[i] = z;
            faces[i] = f as u32;
        }
    });
    (depth, faces)
}

/// Calls `frag(pixel_index, z_mm)` for every pixel centre covered by every triangle of the
/// posed mesh (no depth test: the caller keeps the nearest). A pixel on an edge shared by two
/// triangles of the same surface is reported for exactly one of them.
pub fn for_each_fragment(mesh: &Mesh, cam: &Camera, pose: &Pose, width: usize, height: usize, mut frag: impl FnMut(usize, f32)) {
    for_each_fragment_face(mesh, cam, pose, width, height, |i, z, _| frag(i, z));
}

/// As [`for_each_fragment`], also passing the index into `mesh.faces` of the triangle that
/// produced the fragment: `frag(pixel_index, z_mm, face_index)`.
pub fn for_each_fragment_face(
    mesh: &Mesh,
    cam: &Camera,
    pose: &Pose,
    width: usize,
    height: usize,
    mut frag: impl FnMut(usize, f32, usize),
) {
    if width == 0 || height == 0 {
        return;
    }
    let vp = Viewport { cam: *cam, width: width as i64, height: height as i64 };
    // Camera-frame vertices and, where the fast path applies, their snapped projections.
    let cam_pts: Vec<[f64; 3]> = mesh
        .vertices
        .iter()
        .map(|v| {
            let p = pose.apply(&v.cast::<f64>());
            [p.x, p.y, p.z]
        })
        .collect();
    let screen: Vec<Option<[i64; 2]>> = cam_pts.iter().map(|p| vp.snap_if_in_guard(p)).collect();

    for (fi, f) in mesh.faces.iter().enumerate() {
        let mut tri_frag = |i: usize, z: f32| frag(i, z, fi);
        let idx = [f[0] as usize, f[1] as usize, f[2] as usize];
        if idx.iter().any(|&i| i >= cam_pts.len()) {
            continue;
        }
        let p = [cam_pts[idx[0]], cam_pts[idx[1]], cam_pts[idx[2]]];
        if p.iter().all(|q| q[2] <= NEAR_MM) {
            continue;
        }
        // Depth set-up is deferred until a triangle is known to cover some pixel centre:
        // most triangles of a dense mesh are tiny or off-screen.
        match (screen[idx[0]], screen[idx[1]], screen[idx[2]]) {
            (Some(a), Some(b), Some(c)) => {
                vp.fill_triangle([a, b, c], || InvDepthPlane::new(&p, cam).map(|pl| (pl, z_range(&p))), &mut tri_frag);
            }
            _ => {
                // Rare: partly behind the near plane or projecting far outside the image.
                let poly = vp.clip(&p);
                if poly.len() < 3 {
                    continue;
                }
                let snapped: Vec<[i64; 2]> = poly.iter().map(|q| vp.snap(q)).collect();
                for k in 1..snapped.len() - 1 {
                    let setup = || InvDepthPlane::new(&p, cam).map(|pl| (pl, z_range(&poly)));
                    vp.fill_triangle([snapped[0], snapped[k], snapped[k + 1]], setup, &mut tri_frag);
                }
            }
        }
    }
}

fn z_range(p: &[[f64; 3]]) -> (f64, f64) {
    p.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), q| (lo.min(q[2]), hi.max(q[2])))
}

/// 1/z = a·u + b·v + c over the image, from the triangle's plane n·X = d in the camera frame
/// (the ray through (u, v) is X = z·((u−cx)/fx, (v−cy)/fy, 1)).
struct InvDepthPlane {
    a: f64,
    b: f64,
    c: f64,
}

impl InvDepthPlane {
    fn new(p: &[[f64; 3]; 3], cam: &Camera) -> Option<InvDepthPlane> {
        let v = |q: &[f64; 3]| Vector3::new(q[0], q[1], q[2]);
        let (p0, p1, p2) = (v(&p[0]), v(&p[1]), v(&p[2]));
        let n = (p1 - p0).cross(&(p2 - p0));
        let d = n.dot(&p0);
        // A plane through the camera centre is seen edge-on; callers have already checked that
        // the projection has area, so this only catches round-off.
        if d == 0.0 || !d.is_finite() {
            return None;
        }
        let (a, b) = (n.x / (cam.fx * d), n.y / (cam.fy * d));
        let c = n.z / d - a * cam.cx - b * cam.cy;
        Some(InvDepthPlane { a, b, c })
    }
}

struct Viewport {
    cam: Camera,
    width: i64,
    height: i64,
}

impl Viewport {
    fn project(&self, p: &[f64; 3]) -> [f64; 2] {
        self.cam.project(*p)
    }

    fn snap(&self, p: &[f64; 3]) -> [i64; 2] {
        let uv = self.project(p);
        let s = |x: f64| (x.clamp(-GUARD_PX, GUARD_PX) * SUBPIXEL).round() as i64;
        [s(uv[0]), s(uv[1])]
    }

    /// Fast path: in front of the near plane and inside the guard band.
    fn snap_if_in_guard(&self, p: &[f64; 3]) -> Option<[i64; 2]> {
        if p[2] <= NEAR_MM {
            return None;
        }
        let uv = self.project(p);
        if uv[0].abs() < GUARD_PX && uv[1].abs() < GUARD_PX {
            Some([(uv[0] * SUBPIXEL).round() as i64, (uv[1] * SUBPIXEL).round() as i64])
        } else {
            None
        }
    }

    /// Clips a camera-frame triangle against z ≥ NEAR_MM and the guard band's four side planes.
    /// Clipping in 3D keeps every point on the original plane, so depth stays exact.
    fn clip(&self, tri: &[[f64; 3]; 3]) -> Vec<[f64; 3]> {
        let (fx, fy, cx, cy) = (self.cam.fx, self.cam.fy, self.cam.cx, self.cam.cy);
        let g = GUARD_PX * 0.999;
        // Each plane as (coefficients, offset): inside where k·X + off ≥ 0.
        let planes: [([f64; 3], f64); 5] = [
            ([0.0, 0.0, 1.0], -NEAR_MM),
            ([fx, 0.0, g + cx], 0.0),  // u ≥ −g
            ([-fx, 0.0, g - cx], 0.0), // u ≤ g
            ([0.0, fy, g + cy], 0.0),  // v ≥ −g
            ([0.0, -fy, g - cy], 0.0), // v ≤ g
        ];
        let mut poly: Vec<[f64; 3]> = tri.to_vec();
        for (k, off) in planes {
            let dist = |q: &[f64; 3]| k[0] * q[0] + k[1] * q[1] + k[2] * q[2] + off;
            let mut out = Vec::with_capacity(poly.len() + 2);
            for i in 0..poly.len() {
                let (a, b) = (poly[i], poly[(i + 1) % poly.len()]);
                let (da, db) = (dist(&a), dist(&b));
                if da >= 0.0 {
                    out.push(a);
                }
                if (da >= 0.0) != (db >= 0.0) {
                    // Always interpolate from the inside point so that a shared edge clipped by
                    // both of its triangles yields the same new vertex.
                    let (pi, po, di, dout) = if da >= 0.0 { (a, b, da, db) } else { (b, a, db, da) };
                    let t = di / (di - dout);
                    out.push([pi[0] + t * (po[0] - pi[0]), pi[1] + t * (po[1] - pi[1]), pi[2] + t * (po[2] - pi[2])]);
                }
            }
            poly = out;
            if poly.len() < 3 {
                break;
            }
        }
        poly
    }

    /// Rasterises one triangle given in 1/256-px units; calls `frag` per covered pixel centre.
    /// `setup` gives the depth plane and the z range to clamp to (None: seen edge-on).
    fn fill_triangle(
        &self,
        v: [[i64; 2]; 3],
        setup: impl FnOnce() -> Option<(InvDepthPlane, (f64, f64))>,
        frag: &mut impl FnMut(usize, f32),
    ) {
        let [a, mut b, mut c] = v;
        let area = edge(a, b, c);
        if area == 0 {
            return;
        }
        // Both-sided: orient every triangle the same way.
        if area < 0 {
            std::mem::swap(&mut b, &mut c);
        }
        // Bounding box in whole pixels, clipped to the image (skips off-screen triangles).
        let one = 1i64 << SUBPIXEL_BITS;
        let min_x = a[0].min(b[0]).min(c[0]);
        let max_x = a[0].max(b[0]).max(c[0]);
        let min_y = a[1].min(b[1]).min(c[1]);
        let max_y = a[1].max(b[1]).max(c[1]);
        let u0 = ceil_div(min_x, one).max(0);
        let u1 = max_x.div_euclid(one).min(self.width - 1);
        let v0 = ceil_div(min_y, one).max(0);
        let v1 = max_y.div_euclid(one).min(self.height - 1);
        if u0 > u1 || v0 > v1 {
            return;
        }
        let Some((plane, (z_lo, z_hi))) = setup() else { return };
        // Edge i is opposite vertex i. Top-left rule: pixels exactly on a non-top-left edge
        // are left to the neighbouring triangle (bias −1 turns `≥ 0` into `> 0`).
        let edges = [(b, c), (c, a), (a, b)];
        let mut e_row = [0i64; 3];
        let mut step_u = [0i64; 3];
        let mut step_v = [0i64; 3];
        let p0 = [u0 * one, v0 * one];
        for (k, &(s, t)) in edges.iter().enumerate() {
            let bias = if is_top_left(s, t) { 0 } else { -1 };
            e_row[k] = edge(s, t, p0) + bias;
            step_u[k] = -(t[1] - s[1]) * one;
            step_v[k] = (t[0] - s[0]) * one;
        }
        let w = self.width as usize;
        for vv in v0..=v1 {
            let mut e = e_row;
            let row_inv = plane.b * vv as f64 + plane.c;
            let row = vv as usize * w;
            for uu in u0..=u1 {
                if (e[0] | e[1] | e[2]) >= 0 {
                    let inv_z = plane.a * uu as f64 + row_inv;
                    if inv_z > 0.0 {
                        // Snapping can push 1/z slightly past the triangle near its edges.
                        let z = (1.0 / inv_z).clamp(z_lo, z_hi);
                        frag(row + uu as usize, z as f32);
                    }
                }
                e[0] += step_u[0];
                e[1] += step_u[1];
                e[2] += step_u[2];
            }
            e_row[0] += step_v[0];
            e_row[1] += step_v[1];
            e_row[2] += step_v[2];
        }
    }
}

/// Twice the signed area of (a, b, p); positive when p is on the inner side of a→b for a
/// positively oriented triangle.
#[inline]
fn edge(a: [i64; 2], b: [i64; 2], p: [i64; 2]) -> i64 {
    (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])
}

/// For positively oriented triangles (y down) this picks the top and left edges. Exactly one
/// of a→b and b→a qualifies, which is what makes shared edges drawn once.
#[inline]
fn is_top_left(a: [i64; 2], b: [i64; 2]) -> bool {
    let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
    dy < 0 || (dy == 0 && dx > 0)
}

#[inline]
fn ceil_div(a: i64, b: i64) -> i64 {
    -((-a).div_euclid(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::Vec3;

    fn cam() -> Camera {
        Camera { fx: 500.0, fy: 500.0, cx: 320.0, cy: 240.0, depth_scale: 1.0 }
    }

    fn mesh(vertices: Vec<[f32; 3]>, faces: Vec<[u32; 3]>) -> Mesh {
        Mesh { vertices: vertices.into_iter().map(|v| Vec3::new(v[0], v[1], v[2])).collect(), normals: None, colors: None, faces }
    }

    /// Square of half-size h in the model xy-plane, two triangles sharing the diagonal.
    fn quad(h: f32) -> Mesh {
        mesh(vec![[-h, -h, 0.0], [h, -h, 0.0], [h, h, 0.0], [-h, h, 0.0]], vec![[0, 1, 2], [0, 2, 3]])
    }

    fn at(t: [f64; 3]) -> Pose {
        Pose::new(nalgebra::Matrix3::identity(), Vector3::new(t[0], t[1], t[2]))
    }

    /// Axis-aligned cube of half-size h, 12 outward-wound triangles.
    fn cube(h: f32) -> Mesh {
        let v = (0..8).map(|i| [if i & 1 != 0 { h } else { -h }, if i & 2 != 0 { h } else { -h }, if i & 4 != 0 { h } else { -h }]).collect();
        let quads = [[0, 2, 3, 1], [4, 5, 7, 6], [0, 1, 5, 4], [2, 6, 7, 3], [0, 4, 6, 2], [1, 3, 7, 5]];
        let faces = quads.iter().flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]).collect();
        mesh(v, faces)
    }

    #[test]
    fn fronto_parallel_plane_exact_depth_and_edges() {
        // u = 500·x/500 + 320: the square spans u ∈ [220, 420], v ∈ [140, 340] exactly.
        let r = render(&quad(100.0), &cam(), &at([0.0, 0.0, 500.0]), 640, 480);
        let d = |u: usize, v: usize| r.depth[v * 640 + u];
        assert_eq!(d(320, 240), 500.0);
        assert_eq!(d(221, 141), 500.0);
        // Top-left rule: left and top edge columns/rows are drawn, right and bottom are not.
        assert_eq!(d(220, 240), 500.0);
        assert_eq!(d(419, 240), 500.0);
        assert_eq!(d(420, 240), 0.0);
        assert_eq!(d(320, 140), 500.0);
        assert_eq!(d(320, 339), 500.0);
        assert_eq!(d(320, 340), 0.0);
        assert_eq!(d(219, 240), 0.0);
        assert_eq!(d(10, 10), 0.0);
        // Exactly the area: 200 × 200 pixels.
        assert_eq!(r.depth.iter().filter(|&&z| z > 0.0).count(), 200 * 200);
        assert!(r.depth.iter().all(|&z| z == 0.0 || z == 500.0));

        // Non-integer edges: x = ±50 mm at 500 mm → u ∈ [270, 370]; shift by 0.3 px.
        let r = render(&quad(50.0), &cam(), &at([0.3, 0.0, 500.0]), 640, 480);
        let row: Vec<usize> = (0..640).filter(|&u| r.depth[240 * 640 + u] > 0.0).collect();
        assert_eq!((row[0], *row.last().unwrap()), (271, 370));
    }

    #[test]
    fn tilted_plane_matches_ray_plane_intersection() {
        // Plane rotated 50° about y and 20° about x, through (30, −20, 700).
        let pose = Pose::from_axis_angle(Vector3::new(0.35, 0.87, 0.0), Vector3::new(30.0, -20.0, 700.0));
        let r = render(&quad(150.0), &cam(), &pose, 640, 480);
        let n = pose.r * Vector3::new(0.0, 0.0, 1.0);
        let d = n.dot(&pose.t);
        let mut checked = 0;
        for (u, v) in [(320, 240), (300, 200), (350, 260), (290, 250), (340, 215), (325, 235)] {
            let z = r.depth[v * 640 + u] as f64;
            assert!(z > 0.0, "pixel ({u},{v}) empty");
            let ray = Vector3::new((u as f64 - 320.0) / 500.0, (v as f64 - 240.0) / 500.0, 1.0);
            let z_true = d / n.dot(&ray);
            assert!((z - z_true).abs() < 1e-3, "({u},{v}): {z} vs {z_true}");
            checked += 1;
        }
        assert_eq!(checked, 6);
        // And the model point lies on the quad's plane (z_model = 0) within its extent.
        let m = r.xyz[240 * 640 + 320];
        assert!(m[2].abs() < 1e-3 && m[0].abs() <= 150.0 && m[1].abs() <= 150.0, "{m:?}");
    }

    #[test]
    fn cube_face_on_depth_and_silhouette() {
        // Cube of side 100 mm centred at z = 600: front face at z = 550.
        // Silhouette = front face (the sides are seen edge-on): u = 320 ± 500·50/550.
        let r = render(&cube(50.0), &cam(), &at([0.0, 0.0, 600.0]), 640, 480);
        assert!((r.depth[240 * 640 + 320] - 550.0).abs() < 1e-4);
        let row: Vec<usize> = (0..640).filter(|&u| r.depth[240 * 640 + u] > 0.0).collect();
        let half: f64 = 500.0 * 50.0 / 550.0;
        let (lo, hi) = ((320.0 - half).ceil() as usize, (320.0 + half).floor() as usize);
        assert_eq!((row[0], *row.last().unwrap()), (lo, hi));
        assert_eq!(row.len(), hi - lo + 1);
        assert!(row.iter().all(|&u| (r.depth[240 * 640 + u] - 550.0).abs() < 1e-3));

        // Rotated 30° about y: the silhouette spans the projections of the extreme corners.
        let pose = Pose::from_axis_angle(Vector3::new(0.0, std::f64::consts::FRAC_PI_6, 0.0), Vector3::new(0.0, 0.0, 600.0));
        let r = render(&cube(50.0), &cam(), &pose, 640, 480);
        let row: Vec<usize> = (0..640).filter(|&u| r.depth[240 * 640 + u] > 0.0).collect();
        let us: Vec<f64> = cube(50.0).vertices.iter().map(|v| { let p = pose.apply(&v.cast::<f64>()); cam().project([p.x, p.y, p.z])[0] }).collect();
        // Every corner at v = 240 ± 50·500/z lies beyond row 240, so the extremes bound the row.
        let (umin, umax) = us.iter().fold((f64::MAX, f64::MIN), |(a, b), &u| (a.min(u), b.max(u)));
        assert!((row[0] as f64 - umin).abs() <= 1.0 && (*row.last().unwrap() as f64 - umax).abs() <= 1.0);
    }

    #[test]
    fn xyz_is_back_projection_through_inverse_pose() {
        let pose = Pose::from_axis_angle(Vector3::new(0.2, -0.4, 0.1), Vector3::new(-10.0, 15.0, 650.0));
        let c = cam();
        let r = render(&cube(60.0), &c, &pose, 640, 480);
        let mut n = 0;
        for (u, v) in [(320usize, 240usize), (300, 250), (340, 230), (310, 210)] {
            let i = v * 640 + u;
            assert!(r.depth[i] > 0.0);
            let m = r.xyz[i];
            // Projecting the model point gives back the pixel and its depth.
            let p = pose.apply(&Vector3::new(m[0] as f64, m[1] as f64, m[2] as f64));
            let uv = c.project([p.x, p.y, p.z]);
            assert!((uv[0] - u as f64).abs() < 1e-3 && (uv[1] - v as f64).abs() < 1e-3, "{uv:?}");
            assert!((p.z - r.depth[i] as f64).abs() < 1e-3);
            // And it lies on the cube's surface.
            let linf = m.iter().fold(0.0f32, |a, x| a.max(x.abs()));
            assert!((linf - 60.0).abs() < 1e-2, "{m:?}");
            n += 1;
        }
        assert_eq!(n, 4);
    }

    #[test]
    fn nearest_wins_regardless_of_order() {
        let near = mesh(vec![[-50.0, -50.0, 400.0], [50.0, -50.0, 400.0], [0.0, 50.0, 400.0]], vec![[0, 1, 2]]);
        let far = mesh(vec![[-300.0, -300.0, 600.0], [300.0, -300.0, 600.0], [0.0, 300.0, 600.0]], vec![[0, 1, 2]]);
        let id = Pose::identity();
        let c = cam();
        let (d1, i1) = render_multi(&[(&near, id), (&far, id)], &c, 640, 480);
        let (d2, i2) = render_multi(&[(&far, id), (&near, id)], &c, 640, 480);
        assert_eq!(d1, d2);
        let centre = 240 * 640 + 320;
        assert_eq!(d1[centre], 400.0);
        assert_eq!((i1[centre], i2[centre]), (0, 1));
        // Outside the near triangle but inside the far one.
        let side = 240 * 640 + (320 + 75);
        assert_eq!((d1[side], i1[side], i2[side]), (600.0, 1, 0));
        assert_eq!((d1[0], i1[0]), (0.0, -1));
        // The same with one mesh holding both triangles in either face order.
        let both = mesh(
            [near.vertices.clone(), far.vertices.clone()].concat().iter().map(|v| [v.x, v.y, v.z]).collect(),
            vec![[3, 4, 5], [0, 1, 2]],
        );
        assert_eq!(render_depth(&both, &c, &id, 640, 480), d1);
    }

    #[test]
    fn behind_camera_draws_nothing_and_straddling_is_clipped() {
        let c = cam();
        let behind = mesh(vec![[-50.0, -50.0, -400.0], [50.0, -50.0, -400.0], [0.0, 50.0, -400.0]], vec![[0, 1, 2]]);
        assert!(render_depth(&behind, &c, &Pose::identity(), 640, 480).iter().all(|&z| z == 0.0));
        // A floor plane running from behind the camera to far in front: the visible part is
        // drawn with the analytic depth, and rows above the horizon stay empty.
        let floor = mesh(
            vec![[-2000.0, 100.0, -1000.0], [2000.0, 100.0, -1000.0], [2000.0, 100.0, 5000.0], [-2000.0, 100.0, 5000.0]],
            vec![[0, 1, 2], [0, 2, 3]],
        );
        let d = render_depth(&floor, &c, &Pose::identity(), 640, 480);
        // y = 100 ⇒ z = 100·fy/(v − cy).
        for v in [260usize, 300, 400, 479] {
            let z = d[v * 640 + 320] as f64;
            assert!((z - 100.0 * 500.0 / (v as f64 - 240.0)).abs() < 1e-2, "row {v}: {z}");
        }
        assert_eq!(d[240 * 640 + 320], 0.0);
        assert_eq!(d[100 * 640 + 320], 0.0);
    }

    #[test]
    fn shared_diagonal_drawn_exactly_once() {
        // Count fragments (not depth writes) so a doubly drawn pixel would show.
        let c = cam();
        for (h, t) in [(100.0, [0.0, 0.0, 500.0]), (37.3, [1.7, -2.9, 431.0])] {
            let pose = Pose::from_axis_angle(Vector3::new(0.0, 0.0, 0.3), Vector3::new(t[0], t[1], t[2]));
            let q = quad(h);
            let mut hits = vec![0u8; 640 * 480];
            for_each_fragment(&q, &c, &pose, 640, 480, |i, _| hits[i] += 1);
            assert!(hits.iter().all(|&n| n <= 1), "a pixel was drawn twice");
            let count = hits.iter().filter(|&&n| n == 1).count() as f64;
            // Also no pixel inside the square missed: no hole in any row.
            for v in 0..480 {
                let row: Vec<usize> = (0..640).filter(|&u| hits[v * 640 + u] == 1).collect();
                if let (Some(a), Some(b)) = (row.first(), row.last()) {
                    assert_eq!(row.len(), b - a + 1, "hole in row {v}");
                }
            }
            let side = 2.0 * h as f64 * 500.0 / t[2];
            let area = side * side;
            assert!((count - area).abs() < 4.0 * side, "count {count} vs area {area}");
        }
        // Axis-aligned with integer corners the count is exact (diagonal crosses pixel centres).
        let mut hits = 0;
        for_each_fragment(&quad(100.0), &c, &at([0.0, 0.0, 500.0]), 640, 480, |_, _| hits += 1);
        assert_eq!(hits, 200 * 200);
    }

    #[test]
    fn face_ids_name_the_visible_triangle() {
        // Near triangle (face 1) over a far one (face 0) in one mesh; depth as render_depth.
        let both = mesh(
            vec![[-300.0, -300.0, 600.0], [300.0, -300.0, 600.0], [0.0, 300.0, 600.0], [-50.0, -50.0, 400.0], [50.0, -50.0, 400.0], [0.0, 50.0, 400.0]],
            vec![[0, 1, 2], [3, 4, 5]],
        );
        let (c, id) = (cam(), Pose::identity());
        let (depth, faces) = render_depth_faces(&both, &c, &id, 640, 480);
        assert_eq!(depth, render_depth(&both, &c, &id, 640, 480));
        assert_eq!(faces[240 * 640 + 320], 1);
        assert_eq!(faces[240 * 640 + 395], 0);
        assert_eq!(faces[0], u32::MAX);
        assert!(depth.iter().zip(&faces).all(|(&z, &f)| (z > 0.0) == (f != u32::MAX)));
    }

    #[test]
    fn off_screen_and_degenerate_are_skipped() {
        let c = cam();
        assert!(render_depth(&quad(10.0), &c, &at([5000.0, 0.0, 500.0]), 640, 480).iter().all(|&z| z == 0.0));
        let flat = mesh(vec![[0.0, 0.0, 500.0], [10.0, 0.0, 500.0], [20.0, 0.0, 500.0]], vec![[0, 1, 2]]);
        assert!(render_depth(&flat, &c, &Pose::identity(), 640, 480).iter().all(|&z| z == 0.0));
        // Edge-on plane through the camera centre.
        let edge_on = mesh(vec![[0.0, -50.0, 400.0], [0.0, 50.0, 400.0], [0.0, 0.0, 600.0]], vec![[0, 1, 2]]);
        assert!(render_depth(&edge_on, &c, &Pose::identity(), 640, 480).iter().all(|&z| z == 0.0));
    }
}
