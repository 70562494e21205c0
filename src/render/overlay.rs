//! Pose overlays in the style of SAM-6D's `vis_pem.png`: the colour image on the left and, on
//! the right, per instance its visible model points, its oriented 3D bounding box and its
//! score, one colour per instance (best first: red, green, blue, ...). Drawn by our own
//! rasteriser, so it needs no display or GPU.
use super::font;
use super::raster::{self, NEAR_MM};
use crate::geometry::{Mesh, Pose, Vec3};
use crate::io::Camera;
use image::{GenericImage, Rgb, RgbImage};
use nalgebra::Vector3;

/// Distinct colours for instances, best first (red, green, blue, ...).
pub const PALETTE: [[u8; 3]; 6] = [[255, 40, 40], [40, 220, 40], [60, 120, 255], [255, 200, 0], [255, 0, 255], [0, 230, 230]];

/// Surface samples per instance; about half are visible at any pose: enough dots to read a
/// 100-pixel object's shape, few enough to still see the object under them (SAM-6D's density).
pub const MODEL_POINTS: usize = 1024;
/// Fixed so that the same result always gives the same picture.
const SAMPLE_SEED: u64 = 0x5a6d_0e1a;
/// The far end of the box fades to this fraction of the colour (SAM-6D darkens its bottom face
/// to 0.3), so the box reads in depth.
const BACK_SHADE: f64 = 0.35;
const LABEL_SCALE: u32 = 2;
const LABEL_PAD: i64 = 3;

/// One instance to draw: its pose and, when known, its score (drawn as a label).
pub trait ScoredPose {
    fn pose(&self) -> Pose;
    fn score(&self) -> Option<f32>;
}

impl ScoredPose for Pose {
    fn pose(&self) -> Pose {
        *self
    }
    fn score(&self) -> Option<f32> {
        None
    }
}

impl ScoredPose for (Pose, f32) {
    fn pose(&self) -> Pose {
        self.0
    }
    fn score(&self) -> Option<f32> {
        Some(self.1)
    }
}

impl ScoredPose for (Pose, Option<f32>) {
    fn pose(&self) -> Pose {
        self.0
    }
    fn score(&self) -> Option<f32> {
        self.1
    }
}

/// The colour of instance `k` (0 = best).
pub fn instance_color(k: usize) -> [u8; 3] {
    PALETTE[k % PALETTE.len()]
}

/// SAM-6D's `vis_pem.png` layout: `rgb` unchanged on the left, [`draw_poses`] on the right.
pub fn vis_pem<P: ScoredPose>(rgb: &RgbImage, mesh: &Mesh, cam: &Camera, poses: &[P]) -> RgbImage {
    let (w, h) = rgb.dimensions();
    let mut out = RgbImage::new(2 * w, h);
    let right = draw_poses(rgb, mesh, cam, poses);
    // copy_from cannot fail here: both halves fit by construction.
    out.copy_from(rgb, 0, 0).expect("left half fits");
    out.copy_from(&right, w, 0).expect("right half fits");
    out
}

/// A copy of `rgb` with every instance drawn on it, best (first) on top. Poses behind the
/// camera or outside the image draw only what is in front of the camera and in the image.
pub fn draw_poses<P: ScoredPose>(rgb: &RgbImage, mesh: &Mesh, cam: &Camera, poses: &[P]) -> RgbImage {
    let mut out = rgb.clone();
    if poses.is_empty() || mesh.vertices.is_empty() {
        return out;
    }
    let samples = model_points(mesh);
    let corners = box_corners(mesh);
    let mut labels = Vec::new();
    // Worst first, so that the best instance ends on top.
    for (k, inst) in poses.iter().enumerate().rev() {
        let pose = inst.pose();
        let color = instance_color(k);
        draw_box(&mut out, cam, &pose, &corners, color);
        draw_points(&mut out, mesh, cam, &pose, &samples, color);
        if let Some(score) = inst.score() {
            labels.push((k, score, box_extent(cam, &pose, &corners, out.dimensions())));
        }
    }
    // Labels last, so that no instance's drawing covers another's score.
    for (k, score, extent) in labels {
        if let Some(extent) = extent {
            draw_label(&mut out, &format!("{score:.2}"), extent, instance_color(k));
        }
    }
    out
}

/// Surface samples in model coordinates; the vertices themselves for a point cloud.
fn model_points(mesh: &Mesh) -> Vec<Vec3> {
    let (pts, _) = mesh.sample_surface(MODEL_POINTS, SAMPLE_SEED);
    if !pts.is_empty() {
        return pts;
    }
    let step = (mesh.vertices.len() / MODEL_POINTS).max(1);
    mesh.vertices.iter().step_by(step).copied().collect()
}

/// The 8 corners of the model's bounding box in model coordinates; corner i has bit 0 = x max,
/// bit 1 = y max, bit 2 = z max.
pub fn box_corners(mesh: &Mesh) -> [Vector3<f64>; 8] {
    let (lo, hi) = mesh.bounds();
    std::array::from_fn(|i| {
        let pick = |bit: usize, a: f32, b: f32| if i & bit == 0 { a as f64 } else { b as f64 };
        Vector3::new(pick(1, lo.x, hi.x), pick(2, lo.y, hi.y), pick(4, lo.z, hi.z))
    })
}

/// The 12 edges of the box, as pairs of corner indices (corners differing in one bit).
pub const BOX_EDGES: [(usize, usize); 12] = [(0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7)];

/// Pixels (u, v) of the samples visible at `pose`, with the samples' indices: a sample counts as
/// visible when it is in the image and no farther than the rendered depth at its pixel, within
/// a tolerance for the sampling.
pub fn visible_samples(mesh: &Mesh, cam: &Camera, pose: &Pose, samples: &[Vec3], (w, h): (usize, usize)) -> Vec<(usize, usize, usize)> {
    // A point cloud has no surface to hide anything: all its points count.
    let depth = if mesh.faces.is_empty() { None } else { Some(raster::render_depth(mesh, cam, pose, w, h)) };
    let (lo, hi) = mesh.bounds();
    // Samples sit between pixel centres: on a slanted face the rendered depth at the nearest
    // centre differs by a few mm. 2 % of the box diagonal absorbs that and is still far
    // thinner than any back wall.
    let tol = (1.0 + 0.02 * (hi - lo).norm()) as f64;
    let mut out = Vec::new();
    for (i, p) in samples.iter().enumerate() {
        let q = pose.apply(&p.cast::<f64>());
        if q.z.is_nan() || q.z <= NEAR_MM {
            continue; // behind the camera (or NaN)
        }
        let [u, v] = cam.project([q.x, q.y, q.z]);
        let (u, v) = (u.round(), v.round());
        if !(u >= 0.0 && v >= 0.0 && u < w as f64 && v < h as f64) {
            continue; // off-image (or NaN)
        }
        let (u, v) = (u as usize, v as usize);
        if let Some(depth) = &depth {
            let d = depth[v * w + u] as f64;
            // d == 0: the point projects just past the silhouette's pixel centres, on its rim.
            if d > 0.0 && q.z > d + tol {
                continue;
            }
        }
        out.push((i, u, v));
    }
    out
}

/// Draws the visible samples as small dots.
fn draw_points(img: &mut RgbImage, mesh: &Mesh, cam: &Camera, pose: &Pose, samples: &[Vec3], color: [u8; 3]) {
    let (w, h) = (img.width() as i64, img.height() as i64);
    for (_, u, v) in visible_samples(mesh, cam, pose, samples, (w as usize, h as usize)) {
        // A plus-shaped dot, like cv2.circle with radius 1.
        for (du, dv) in [(0i64, 0i64), (-1, 0), (1, 0), (0, -1), (0, 1)] {
            let (x, y) = (u as i64 + du, v as i64 + dv);
            if x >= 0 && y >= 0 && x < w && y < h {
                img.put_pixel(x as u32, y as u32, Rgb(color));
            }
        }
    }
}

/// Draws the 12 box edges, each pixel shaded by its depth (front: full colour, back: darker),
/// back edges first so that front edges stay on top.
fn draw_box(img: &mut RgbImage, cam: &Camera, pose: &Pose, corners: &[Vector3<f64>; 8], color: [u8; 3]) {
    let cam_pts: Vec<Vector3<f64>> = corners.iter().map(|c| pose.apply(c)).collect();
    let (z_near, z_far) = cam_pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| (a.min(p.z), b.max(p.z)));
    let mut edges: Vec<(Vector3<f64>, Vector3<f64>)> = BOX_EDGES.iter().filter_map(|&(i, j)| clip_near(cam_pts[i], cam_pts[j])).collect();
    edges.sort_by(|a, b| (b.0.z + b.1.z).total_cmp(&(a.0.z + a.1.z)));
    for (a, b) in edges {
        let shade = |z: f64| {
            let f = if z_far > z_near { (z - z_near) / (z_far - z_near) } else { 0.0 };
            let k = 1.0 - (1.0 - BACK_SHADE) * f.clamp(0.0, 1.0);
            Rgb(color.map(|c| (c as f64 * k).round() as u8))
        };
        draw_segment(img, cam, a, b, shade);
    }
}

/// The part of segment a–b in front of the near plane, if any.
fn clip_near(a: Vector3<f64>, b: Vector3<f64>) -> Option<(Vector3<f64>, Vector3<f64>)> {
    let near = NEAR_MM + 1e-6;
    match (a.z >= near, b.z >= near) {
        (true, true) => Some((a, b)),
        (false, false) => None,
        (a_in, _) => {
            let t = (near - a.z) / (b.z - a.z);
            let m = a + (b - a) * t;
            Some(if a_in { (a, m) } else { (m, b) })
        }
    }
}

/// Projects a 3D segment (in front of the camera) and draws it 3 px wide, clipped to the image.
fn draw_segment(img: &mut RgbImage, cam: &Camera, a: Vector3<f64>, b: Vector3<f64>, shade: impl Fn(f64) -> Rgb<u8>) {
    let (w, h) = (img.width() as f64, img.height() as f64);
    let (pa, pb) = (cam.project([a.x, a.y, a.z]), cam.project([b.x, b.y, b.z]));
    // Clip in 2D (Liang–Barsky) to one pixel beyond the image: the walk below then stays short
    // however far off-image the projection lands.
    let Some((t0, t1)) = clip_to_rect(pa, pb, [-1.0, -1.0], [w, h]) else { return };
    let at = |t: f64| [pa[0] + (pb[0] - pa[0]) * t, pa[1] + (pb[1] - pa[1]) * t];
    let (s, e) = (at(t0), at(t1));
    let steps = (e[0] - s[0]).abs().max((e[1] - s[1]).abs()).ceil().max(1.0) as usize;
    for i in 0..=steps {
        let f = i as f64 / steps as f64;
        let t = t0 + (t1 - t0) * f;
        let [u, v] = at(t);
        // Depth along the projected segment: 1/z is affine in screen space.
        let z = 1.0 / ((1.0 - t) / a.z + t / b.z);
        let color = shade(z);
        // A 3 × 3 stamp around the nearest pixel: a 3 px wide line, as SAM-6D draws.
        let (x, y) = (u.round() as i64, v.round() as i64);
        for (px, py) in (-1i64..=1).flat_map(|dy| (-1..=1).map(move |dx| (x + dx, y + dy))) {
            if px >= 0 && py >= 0 && (px as u32) < img.width() && (py as u32) < img.height() {
                img.put_pixel(px as u32, py as u32, color);
            }
        }
    }
}

/// Parameter range [t0, t1] ⊆ [0, 1] of segment p–q inside the rectangle lo..hi, if any.
fn clip_to_rect(p: [f64; 2], q: [f64; 2], lo: [f64; 2], hi: [f64; 2]) -> Option<(f64, f64)> {
    if !(p.iter().chain(&q).all(|x| x.is_finite())) {
        return None;
    }
    let (mut t0, mut t1) = (0.0f64, 1.0f64);
    for k in 0..2 {
        let d = q[k] - p[k];
        for (num, den) in [(p[k] - lo[k], -d), (hi[k] - p[k], d)] {
            // Inside half-plane: num + den·t ≥ 0.
            if den == 0.0 {
                if num < 0.0 {
                    return None;
                }
            } else {
                let t = -num / den;
                if den > 0.0 {
                    t0 = t0.max(t);
                } else {
                    t1 = t1.min(t);
                }
            }
        }
    }
    (t0 <= t1).then_some((t0, t1))
}

/// Image-space bounding rectangle (x0, y0, x1, y1) of the box corners in front of the camera,
/// clipped to the image; None when nothing of the box is in view.
fn box_extent(cam: &Camera, pose: &Pose, corners: &[Vector3<f64>; 8], (w, h): (u32, u32)) -> Option<(i64, i64, i64, i64)> {
    let mut r = (f64::INFINITY, f64::INFINITY, f64::NEG_INFINITY, f64::NEG_INFINITY);
    for &(i, j) in &BOX_EDGES {
        let Some((a, b)) = clip_near(pose.apply(&corners[i]), pose.apply(&corners[j])) else { continue };
        for p in [a, b] {
            let [u, v] = cam.project([p.x, p.y, p.z]);
            r = (r.0.min(u), r.1.min(v), r.2.max(u), r.3.max(v));
        }
    }
    let (x0, y0, x1, y1) = (r.0.max(0.0), r.1.max(0.0), r.2.min(w as f64 - 1.0), r.3.min(h as f64 - 1.0));
    (x0 <= x1 && y0 <= y1).then_some((x0 as i64, y0 as i64, x1 as i64, y1 as i64))
}

/// The score in white on a dark patch of the instance's colour, just above the box's top-left
/// corner (inside the image whatever the box does).
fn draw_label(img: &mut RgbImage, text: &str, (x0, y0, _, _): (i64, i64, i64, i64), color: [u8; 3]) {
    let (tw, th) = font::text_size(text, LABEL_SCALE);
    let (pw, ph) = (tw as i64 + 2 * LABEL_PAD, th as i64 + 2 * LABEL_PAD);
    let (w, h) = (img.width() as i64, img.height() as i64);
    let x = x0.min(w - pw).max(0);
    // Above the box when there is room, else just inside its top.
    let y = if y0 - ph - 2 >= 0 { y0 - ph - 2 } else { y0.min(h - ph).max(0) };
    let bg = Rgb(color.map(|c| (c as f64 * 0.3) as u8));
    for py in y.max(0)..(y + ph).min(h) {
        for px in x.max(0)..(x + pw).min(w) {
            img.put_pixel(px as u32, py as u32, bg);
        }
    }
    font::draw_text(img, x + LABEL_PAD, y + LABEL_PAD, text, LABEL_SCALE, Rgb([255, 255, 255]));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam() -> Camera {
        Camera::new(500.0, 500.0, 160.0, 120.0, 1.0).unwrap()
    }

    /// A closed 60 × 40 × 20 mm box mesh centred on the origin.
    fn cuboid() -> Mesh {
        let (a, b, c) = (30.0f32, 20.0f32, 10.0f32);
        let vertices: Vec<Vec3> = (0..8).map(|i| Vec3::new(if i & 1 == 0 { -a } else { a }, if i & 2 == 0 { -b } else { b }, if i & 4 == 0 { -c } else { c })).collect();
        // Two triangles per face; winding does not matter to the rasteriser.
        let quads = [[0, 1, 3, 2], [4, 5, 7, 6], [0, 1, 5, 4], [2, 3, 7, 6], [0, 2, 6, 4], [1, 3, 7, 5]];
        let faces = quads.iter().flat_map(|q| [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]).collect();
        Mesh { vertices, faces, ..Default::default() }
    }

    fn tilted(t: [f64; 3]) -> Pose {
        Pose::from_axis_angle(Vector3::new(0.5, -0.4, 0.2), Vector3::new(t[0], t[1], t[2]))
    }

    fn grey(w: u32, h: u32) -> RgbImage {
        RgbImage::from_pixel(w, h, Rgb([90, 90, 90]))
    }

    #[test]
    fn side_by_side_keeps_the_input_on_the_left() {
        let rgb = RgbImage::from_fn(320, 240, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 7]));
        let out = vis_pem(&rgb, &cuboid(), &cam(), &[(tilted([0.0, 0.0, 400.0]), 0.5)]);
        assert_eq!(out.dimensions(), (640, 240));
        assert!((0..240).all(|y| (0..320).all(|x| out.get_pixel(x, y) == rgb.get_pixel(x, y))));
        assert!((0..240).any(|y| (0..320).any(|x| out.get_pixel(x + 320, y) != rgb.get_pixel(x, y))));
    }

    #[test]
    fn points_fall_on_the_rendered_silhouette_and_only_on_visible_surface() {
        let (mesh, cam, pose) = (cuboid(), cam(), tilted([10.0, -5.0, 400.0]));
        let out = draw_poses(&grey(320, 240), &mesh, &cam, &[pose]);
        let depth = raster::render_depth(&mesh, &cam, &pose, 320, 240);
        let red = Rgb(PALETTE[0]);
        // Box edges share the colour at the front: leave out pixels near any projected edge.
        let near_edge = |x: f64, y: f64| {
            BOX_EDGES.iter().any(|&(i, j)| {
                let c = box_corners(&mesh);
                let (a, b) = (pose.apply(&c[i]), pose.apply(&c[j]));
                let (pa, pb) = (cam.project([a.x, a.y, a.z]), cam.project([b.x, b.y, b.z]));
                seg_dist([x, y], pa, pb) < 2.5
            })
        };
        let (mut dots, mut inside) = (0, 0);
        for (x, y, p) in out.enumerate_pixels() {
            if *p != red || near_edge(x as f64, y as f64) {
                continue;
            }
            dots += 1;
            // A dot is a 1 px plus around the pixel nearest a point on the surface: allow 2 px.
            let hit = (-2i64..=2).any(|dy| (-2i64..=2).any(|dx| {
                let (u, v) = (x as i64 + dx, y as i64 + dy);
                u >= 0 && v >= 0 && u < 320 && v < 240 && depth[(v * 320 + u) as usize] > 0.0
            }));
            inside += hit as usize;
        }
        assert!(dots > 300, "only {dots} point pixels drawn");
        assert_eq!(inside, dots, "point pixels off the silhouette");

    }

    #[test]
    fn hidden_samples_are_not_drawn() {
        // Face-on: only the front face (model z = -10) is visible; the sides are edge-on and the
        // back face is right behind the front one.
        let (mesh, cam) = (cuboid(), cam());
        let pose = Pose::from_axis_angle(Vector3::zeros(), Vector3::new(0.0, 0.0, 400.0));
        let samples = model_points(&mesh);
        let vis = visible_samples(&mesh, &cam, &pose, &samples, (320, 240));
        let tol = 1.0 + 0.02 * 74.84;
        assert!(vis.iter().all(|&(i, _, _)| samples[i].z < -10.0 + tol + 1e-3), "a hidden sample counted as visible");
        // The front face holds 2400 of the 8800 mm² of surface (plus a sliver of the sides).
        let frac = vis.len() as f64 / samples.len() as f64;
        assert!((0.25..0.38).contains(&frac), "visible fraction {frac}");
        // Turned around, the other face shows.
        let back = Pose::from_axis_angle(Vector3::new(0.0, std::f64::consts::PI, 0.0), Vector3::new(0.0, 0.0, 400.0));
        let vis = visible_samples(&mesh, &cam, &back, &samples, (320, 240));
        assert!(vis.iter().all(|&(i, _, _)| samples[i].z > 10.0 - tol - 1e-3));
        // Each visible sample's pixel is where the camera projects it.
        for &(i, u, v) in &vis {
            let q = back.apply(&samples[i].cast::<f64>());
            let [pu, pv] = cam.project([q.x, q.y, q.z]);
            assert!((pu - u as f64).abs() <= 0.5 && (pv - v as f64).abs() <= 0.5);
        }
    }

    fn seg_dist(p: [f64; 2], a: [f64; 2], b: [f64; 2]) -> f64 {
        let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
        let l2 = dx * dx + dy * dy;
        let t = if l2 > 0.0 { (((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / l2).clamp(0.0, 1.0) } else { 0.0 };
        ((p[0] - a[0] - t * dx).powi(2) + (p[1] - a[1] - t * dy).powi(2)).sqrt()
    }

    #[test]
    fn box_corners_and_edges_land_where_the_projection_says() {
        let (mesh, cam, pose) = (cuboid(), cam(), tilted([0.0, 0.0, 500.0]));
        let out = draw_poses(&grey(320, 240), &mesh, &cam, &[pose]);
        let drawn = |x: f64, y: f64| {
            let (x, y) = (x.round() as i64, y.round() as i64);
            (-1..=1).any(|dy| (-1..=1).any(|dx| out.get_pixel((x + dx) as u32, (y + dy) as u32).0 != [90, 90, 90]))
        };
        let corners = box_corners(&mesh);
        let proj: Vec<[f64; 2]> = corners.iter().map(|c| pose.apply(c)).map(|p| cam.project([p.x, p.y, p.z])).collect();
        for (i, p) in proj.iter().enumerate() {
            assert!(drawn(p[0], p[1]), "corner {i} at {p:?} not drawn");
        }
        // Every point along every edge is drawn, in a shade of the instance colour.
        for &(i, j) in &BOX_EDGES {
            for k in 0..=20 {
                let t = k as f64 / 20.0;
                let (x, y) = (proj[i][0] + (proj[j][0] - proj[i][0]) * t, proj[i][1] + (proj[j][1] - proj[i][1]) * t);
                assert!(drawn(x, y), "edge {i}-{j} missing at t={t}");
            }
        }
        // Far from the box and its dots nothing changes.
        let (x0, x1) = (proj.iter().map(|p| p[0]).fold(f64::INFINITY, f64::min), proj.iter().map(|p| p[0]).fold(f64::NEG_INFINITY, f64::max));
        let (y0, y1) = (proj.iter().map(|p| p[1]).fold(f64::INFINITY, f64::min), proj.iter().map(|p| p[1]).fold(f64::NEG_INFINITY, f64::max));
        for (x, y, p) in out.enumerate_pixels() {
            let (x, y) = (x as f64, y as f64);
            if x < x0 - 3.0 || x > x1 + 3.0 || y < y0 - 3.0 || y > y1 + 3.0 {
                assert_eq!(p.0, [90, 90, 90], "pixel ({x}, {y}) outside the box drawn");
            }
        }
        // Front edges are brighter than back edges.
        let nearest = (0..8).min_by(|&a, &b| pose.apply(&corners[a]).z.total_cmp(&pose.apply(&corners[b]).z)).unwrap();
        let farthest = (0..8).max_by(|&a, &b| pose.apply(&corners[a]).z.total_cmp(&pose.apply(&corners[b]).z)).unwrap();
        let red_at = |p: [f64; 2]| {
            let (x, y) = (p[0].round() as i64, p[1].round() as i64);
            (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dx, dy))).map(|(dx, dy)| out.get_pixel((x + dx) as u32, (y + dy) as u32).0[0]).max().unwrap()
        };
        assert!(red_at(proj[nearest]) > red_at(proj[farthest]) + 50, "front {} back {}", red_at(proj[nearest]), red_at(proj[farthest]));
    }

    #[test]
    fn score_label_is_drawn_in_white_near_the_box() {
        let (mesh, cam, pose) = (cuboid(), cam(), tilted([0.0, 20.0, 500.0]));
        let out = draw_poses(&grey(320, 240), &mesh, &cam, &[(pose, 0.67f32)]);
        let (x0, y0, _, _) = box_extent(&cam, &pose, &box_corners(&mesh), (320, 240)).unwrap();
        let white: Vec<(u32, u32)> = out.enumerate_pixels().filter(|(_, _, p)| p.0 == [255, 255, 255]).map(|(x, y, _)| (x, y)).collect();
        // "0.67" at scale 2: the font test pins the glyphs; here count and place them.
        let mut glyphs = RgbImage::new(23, 7);
        font::draw_text(&mut glyphs, 0, 0, "0.67", 1, Rgb([255, 255, 255]));
        let ink = glyphs.pixels().filter(|p| p.0 == [255, 255, 255]).count();
        assert_eq!(white.len(), 4 * ink);
        let (lx, ly) = (white.iter().map(|p| p.0).min().unwrap() as i64, white.iter().map(|p| p.1).max().unwrap() as i64);
        assert!((lx - x0).abs() <= 5 && ly < y0 && y0 - ly < 12, "label at ({lx}, {ly}), box top-left ({x0}, {y0})");
        // No label without a score.
        let bare = draw_poses(&grey(320, 240), &mesh, &cam, &[pose]);
        assert!(!bare.pixels().any(|p| p.0 == [255, 255, 255]));
    }

    #[test]
    fn later_instances_use_the_next_colours() {
        let (mesh, cam) = (cuboid(), cam());
        let poses = [(tilted([-60.0, 0.0, 500.0]), 0.9f32), (tilted([60.0, 0.0, 500.0]), 0.5)];
        let out = draw_poses(&grey(320, 240), &mesh, &cam, &poses);
        let count = |c: [u8; 3]| out.pixels().filter(|p| p.0 == c).count();
        assert!(count(PALETTE[0]) > 100 && count(PALETTE[1]) > 100);
        // The best (red) is left of the second (green).
        let mean_x = |c: [u8; 3]| {
            let xs: Vec<u32> = out.enumerate_pixels().filter(|(_, _, p)| p.0 == c).map(|(x, _, _)| x).collect();
            xs.iter().sum::<u32>() as f64 / xs.len() as f64
        };
        assert!(mean_x(PALETTE[0]) < 160.0 && mean_x(PALETTE[1]) > 160.0);
    }

    #[test]
    fn poses_behind_the_camera_or_far_off_image_do_not_panic() {
        let (mesh, cam) = (cuboid(), cam());
        let rgb = grey(320, 240);
        let poses = [
            (tilted([0.0, 0.0, -400.0]), 0.1f32),       // behind the camera
            (tilted([0.0, 0.0, 5.0]), 0.2),             // straddles the camera plane
            (tilted([0.0, 0.0, 0.0]), 0.3),             // camera inside the box
            (tilted([1e7, -1e7, 300.0]), 0.4),          // far off-image
            (tilted([200.0, 0.0, 300.0]), 0.5),         // partly outside the right edge
            (tilted([f64::NAN, 0.0, 300.0]), f32::NAN), // garbage in
            (tilted([0.0, 0.0, 1e12]), 1.0),            // a dot at infinity
        ];
        let out = vis_pem(&rgb, &mesh, &cam, &poses);
        assert_eq!(out.dimensions(), (640, 240));
        // Behind the camera alone: nothing at all to draw.
        let behind = draw_poses(&rgb, &mesh, &cam, &[(Pose::from_axis_angle(Vector3::zeros(), Vector3::new(0.0, 0.0, -400.0)), 0.9f32)]);
        assert_eq!(behind, rgb);
        // Empty inputs.
        assert_eq!(draw_poses(&rgb, &Mesh::default(), &cam, &poses), rgb);
        assert_eq!(vis_pem(&RgbImage::new(0, 0), &mesh, &cam, &poses).dimensions(), (0, 0));
    }
}
