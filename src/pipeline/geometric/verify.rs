//! Render-and-compare verification: the model is rendered at a hypothesis and its depth is
//! compared pixel by pixel with the measurement. This is what turns "many votes" into "the
//! object is really there": a right pose explains the visible surface, a wrong one either
//! floats in front of measured surfaces (free-space violation) or hides behind them.
use crate::geometry::{Mesh, Pose};
use crate::io::{Camera, DepthMm};
use crate::render::roi::RoiDepth;
use super::color::ColorModel;
use super::scene::Plane;
use image::RgbImage;

#[derive(Clone, Copy, Debug, Default)]
pub struct Verdict {
    /// The verdict in [0, 1]: `surface_score`, scaled down when the silhouette lacks depth
    /// edges and when colours disagree.
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
    /// Silhouette pixels where the measured depth just outside jumps away (the object really
    /// ends there), and where the measured surface continues flat across the silhouette.
    pub edge_support: usize,
    pub edge_contradiction: usize,
    /// Measured pixels just outside the silhouette at the object's depth (not the table): a
    /// part of the object the pose put elsewhere (a mug's handle), or clutter touching it.
    pub unexplained: usize,
    /// inliers / weighted (inliers, violations, occluded, missing, unexplained), before the
    /// edge term.
    pub surface_score: f32,
    /// Fraction of inlier pixels whose colour matches the model's (None: no colours).
    pub color_score: Option<f32>,
}

/// What a pose is checked against.
pub struct Observation<'a> {
    pub camera: &'a Camera,
    pub depth: &'a DepthMm,
    pub rgb: &'a RgbImage,
    /// The table the objects stand on, if one was found: an object's silhouette against it
    /// shows no depth jump where the object touches it (flat parts lying on it).
    pub support: Option<Plane>,
    /// Agreement band around the rendered depth, mm.
    pub tolerance: f32,
}

/// Scores `pose` against the frame: depth agreement, silhouette, and colour when the model has
/// colours. `tolerance` (mm) is the agreement band around the rendered depth. Also returns the
/// rendered depth (for overlap tests between instances).
pub fn verify(mesh: &Mesh, colors: Option<&ColorModel>, pose: &Pose, obs: &Observation) -> (Verdict, RoiDepth) {
    let (cam, depth, rgb, tolerance) = (obs.camera, obs.depth, obs.rgb, obs.tolerance);
    let rendered = RoiDepth::render(mesh, cam, pose, depth.width, depth.height, MARGIN);
    let roi = rendered.roi;
    let mut v = score_depth(&rendered, obs);
    if let Some(colors) = colors {
        if v.score > 0.0 {
            let w = depth.width;
            // Every other pixel of the depth inliers is plenty.
            let rendered = &rendered;
            let pixels: Vec<(usize, f32)> = (roi.v0..roi.v1)
                .step_by(2)
                .flat_map(|y| (roi.u0..roi.u1).step_by(2).map(move |x| (y * w + x, rendered.at(x as isize, y as isize))))
                .filter(|&(i, r)| r > 0.0 && depth.mm[i] > 0.0 && (depth.mm[i] - r).abs() <= tolerance)
                .collect();
            v.color_score = colors.agreement(rgb, &pixels, cam, pose);
            if let Some(c) = v.color_score {
                // Same idea for colour: lighting and registration cost a few percent, so
                // only agreement below 80 % counts against the pose.
                v.score *= (c / 0.8).min(1.0);
            }
        }
    }
    (v, rendered)
}

/// Pixels this close (px) to an edge of the rendering cannot testify against a pose: depth and
/// colour are often a pixel or two apart, sensors smear depth at edges, and a pose that is
/// right to a millimetre still moves edges by a pixel.
const BORDER: usize = 1;

/// Weight of an occluded pixel against a pose (an inlier counts 1).
const OCCLUDED_WEIGHT: f32 = 0.5;

/// Rendering margin: room for the silhouette test outside the object.
const MARGIN: usize = RING + 2;

/// Width (px) of the ring around the silhouette searched for surface the pose leaves
/// unexplained.
const RING: usize = 12;

/// Compares a rendered depth window (0 = no model) with the measurement.
pub fn score_depth(rendered: &RoiDepth, obs: &Observation) -> Verdict {
    let (depth, tolerance, roi) = (obs.depth, obs.tolerance, rendered.roi);
    let (w, h) = (depth.width, depth.height);
    let mut v = Verdict::default();
    // Edges are the silhouette and the model's own depth jumps (a mug's rim over its inside):
    // a pose a pixel off turns a band along every one of them into disagreement.
    let jump = 3.0 * tolerance;
    let near_edge = |u: usize, v: usize, r: f32| {
        u < BORDER
            || v < BORDER
            || u + BORDER >= w
            || v + BORDER >= h
            || (1..=BORDER as isize).any(|k| {
                let (u, v) = (u as isize, v as isize);
                [(-k, 0), (k, 0), (0, -k), (0, k), (-k, -k), (k, k), (-k, k), (k, -k)].iter().any(|(du, dv)| {
                    let n = rendered.at(u + du, v + dv);
                    n <= 0.0 || (n - r).abs() > jump
                })
            })
    };
    let mut edge_inliers = 0usize;
    for i in (roi.v0..roi.v1).flat_map(|v| (roi.u0..roi.u1).map(move |u| v * w + u)) {
        let (r, m) = (rendered.at((i % w) as isize, (i / w) as isize), depth.mm[i]);
        if r <= 0.0 {
            continue;
        }
        v.pixels += 1;
        let agrees = m > 0.0 && (m - r).abs() <= tolerance;
        if near_edge(i % w, i / w, r) {
            // Edge pixels may only support a pose: thin parts (handles, rims) are nearly all
            // edge, and where they agree they are what tells a pose from its near-twins.
            edge_inliers += agrees as usize;
            continue;
        }
        // On steep surfaces (seen at a grazing angle) a pixel of misalignment is many mm of
        // depth: the band widens with the rendered depth gradient, by 1.5 px worth.
        let (x, y) = ((i % w) as isize, (i / w) as isize);
        let gx = (rendered.at(x + 1, y) - rendered.at(x - 1, y)).abs() * 0.5;
        let gy = (rendered.at(x, y + 1) - rendered.at(x, y - 1)).abs() * 0.5;
        let band = tolerance + 1.5 * gx.max(gy);
        if m <= 0.0 {
            v.missing += 1;
        } else if m > r + band {
            v.violations += 1;
        } else if m < r - band {
            v.occluded += 1;
        } else {
            v.inliers += 1;
        }
    }
    // A violation is strong evidence against the pose (seeing through a solid object), so it
    // weighs double; an occlusion is common in clutter and weighs half, as does a missing
    // measurement (dark, shiny, or out of range): they neither support nor refute much.
    v.inliers += edge_inliers;
    v.unexplained = unexplained_ring(rendered, obs);
    let denom = v.inliers as f32
        + 2.0 * v.violations as f32
        + OCCLUDED_WEIGHT * v.occluded as f32
        + 0.5 * v.missing as f32
        + UNEXPLAINED_WEIGHT * v.unexplained as f32;
    v.surface_score = if v.inliers < 20 || denom <= 0.0 { 0.0 } else { (v.inliers as f32 / denom).min(1.0) };
    silhouette_evidence(rendered, obs, &mut v);
    // A shape "found" inside a larger smooth surface fits the depth but has no silhouette:
    // too little edge support scales the score down; beyond 70 % it costs nothing, so the
    // surface term alone ranks poses of one instance against each other.
    let edge = if v.edge_support + v.edge_contradiction < 10 {
        0.5
    } else {
        v.edge_support as f32 / (v.edge_support + v.edge_contradiction) as f32
    };
    v.score = v.surface_score * (edge / 0.7).min(1.0);
    v
}

/// Weight of an unexplained neighbour pixel against a pose (an inlier counts 1). It may be
/// clutter touching the object, which costs every pose of that instance alike; between poses
/// of one instance it picks the one that leaves less of the object unexplained (measured:
/// weights 0.25 / 0.5 / 1 gave top-1 0.70 / 0.73 / 0.77 on the 48-scene set).
const UNEXPLAINED_WEIGHT: f32 = 1.0;

/// Counts measured pixels in the ring of `RING` px around the rendered silhouette whose depth
/// lies within the rendered object's depth range (± tolerance) and that are not on the table.
fn unexplained_ring(rendered: &RoiDepth, obs: &Observation) -> usize {
    let roi = rendered.roi;
    let (rw, rh) = (roi.width(), roi.height());
    if rw == 0 || rh == 0 {
        return 0;
    }
    let mask: Vec<bool> = rendered.depth.iter().map(|&z| z > 0.0).collect();
    let (mut zmin, mut zmax) = (f32::INFINITY, 0.0f32);
    for &z in rendered.depth.iter().filter(|&&z| z > 0.0) {
        zmin = zmin.min(z);
        zmax = zmax.max(z);
    }
    if zmax <= 0.0 {
        return 0;
    }
    // Dilate the mask by RING with two running-count passes (rows, then columns).
    let dilate_1d = |get: &dyn Fn(usize) -> bool, n: usize| -> Vec<bool> {
        let mut prefix = vec![0usize; n + 1];
        for i in 0..n {
            prefix[i + 1] = prefix[i] + get(i) as usize;
        }
        (0..n).map(|i| prefix[(i + RING + 1).min(n)] > prefix[i.saturating_sub(RING)]).collect()
    };
    let mut rows = vec![false; rw * rh];
    for y in 0..rh {
        let line = dilate_1d(&|x| mask[y * rw + x], rw);
        rows[y * rw..(y + 1) * rw].copy_from_slice(&line);
    }
    let tol = obs.tolerance;
    let w = obs.depth.width;
    let mut count = 0;
    for x in 0..rw {
        let col = dilate_1d(&|y| rows[y * rw + x], rh);
        for (y, &near) in col.iter().enumerate() {
            if !near || mask[y * rw + x] {
                continue;
            }
            let (u, v) = (roi.u0 + x, roi.v0 + y);
            let m = obs.depth.mm[v * w + u];
            if m < zmin - tol || m > zmax + tol {
                continue;
            }
            let on_table = obs.support.is_some_and(|plane| {
                let p = obs.camera.unproject(u as f64, v as f64, m as f64);
                plane.signed_distance(&crate::geometry::Vec3::new(p[0] as f32, p[1] as f32, p[2] as f32)).abs() < 2.0 * tol
            });
            count += !on_table as usize;
        }
    }
    count
}

/// How far outside the silhouette (px) the background is sampled.
const OUTSIDE: isize = 3;

/// For each silhouette pixel, compares the rendered depth with the measurement a few pixels
/// outward: farther (or nothing) supports an object edge, the same depth contradicts it,
/// closer is an occluder and says nothing.
fn silhouette_evidence(rendered: &RoiDepth, obs: &Observation, v: &mut Verdict) {
    let (depth, tolerance, roi) = (obs.depth, obs.tolerance, rendered.roi);
    let (w, h) = (depth.width as isize, depth.height as isize);
    let on = |u: isize, v: isize| rendered.at(u, v) > 0.0;
    for y in roi.v0 as isize..roi.v1 as isize {
        for x in roi.u0 as isize..roi.u1 as isize {
            if !on(x, y) {
                continue;
            }
            for (dx, dy) in [(-1, 0), (1, 0), (0, -1), (0, 1)] {
                if on(x + dx, y + dy) {
                    continue;
                }
                let (ox, oy) = (x + dx * OUTSIDE, y + dy * OUTSIDE);
                if ox < 0 || oy < 0 || ox >= w || oy >= h || on(ox, oy) {
                    break;
                }
                let r = rendered.at(x, y);
                let m = depth.mm[(oy * w + ox) as usize];
                if m <= 0.0 {
                    // Sensors lose depth right behind object edges (shadowing): weak support.
                } else if m > r + 2.0 * tolerance {
                    v.edge_support += 1;
                } else if m > r - tolerance {
                    let on_support = obs.support.is_some_and(|plane| {
                        let p = obs.camera.unproject(ox as f64, oy as f64, m as f64);
                        plane.signed_distance(&crate::geometry::Vec3::new(p[0] as f32, p[1] as f32, p[2] as f32)).abs() < 2.0 * tolerance
                    });
                    // Touching the table is no evidence either way.
                    if !on_support {
                        v.edge_contradiction += 1;
                    }
                }
                break;
            }
        }
    }
}

/// Two poses of one instance (a near-symmetric box and its flip, a mug and the mug turned so
/// that its handle is elsewhere) render alike on most pixels, so their whole-silhouette scores
/// differ by noise. This compares them only where their renderings differ: each pixel with a
/// measurement there supports the pose whose surface it lies on (+1) and counts against a pose
/// it is seen through (−2). Returns (support of `a`, support of `b`, pixels compared).
pub fn duel(a: &RoiDepth, b: &RoiDepth, obs: &Observation) -> (i64, i64, usize) {
    let (depth, tol) = (obs.depth, obs.tolerance);
    let (ra, rb) = (a.roi, b.roi);
    let (u0, v0, u1, v1) = (ra.u0.min(rb.u0), ra.v0.min(rb.v0), ra.u1.max(rb.u1).min(depth.width), ra.v1.max(rb.v1).min(depth.height));
    let evidence = |r: f32, m: f32| -> i64 {
        if r <= 0.0 {
            0
        } else if (m - r).abs() <= tol {
            1
        } else if m > r + tol {
            -2
        } else {
            0
        }
    };
    let (mut sa, mut sb, mut n) = (0i64, 0i64, 0usize);
    for v in v0..v1 {
        for u in u0..u1 {
            let (za, zb) = (a.at(u as isize, v as isize), b.at(u as isize, v as isize));
            let differ = (za > 0.0) != (zb > 0.0) || (za > 0.0 && (za - zb).abs() > 2.0 * tol);
            let m = depth.mm[v * depth.width + u];
            if !differ || m <= 0.0 {
                continue;
            }
            n += 1;
            sa += evidence(za, m);
            sb += evidence(zb, m);
        }
    }
    (sa, sb, n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::roi::Roi;

    fn score(rendered: &[f32], depth: &DepthMm, roi: Roi) -> Verdict {
        let cam = Camera::new(500.0, 500.0, 20.0, 20.0, 1.0).unwrap();
        let rgb = RgbImage::new(depth.width as u32, depth.height as u32);
        // The window's own pixels of the full-frame rendering.
        let win: Vec<f32> = (roi.v0..roi.v1).flat_map(|v| (roi.u0..roi.u1).map(move |u| rendered[v * depth.width + u])).collect();
        let r = RoiDepth { roi, depth: win };
        score_depth(&r, &Observation { camera: &cam, depth, rgb: &rgb, support: None, tolerance: 5.0 })
    }

    #[test]
    fn scores_agreement_violation_and_occlusion() {
        // 40x40 frame; the model covers a 20x20 square: an 18x18 interior and a 76-pixel rim
        // (the 1-px edge band), whose pixels may only support.
        let (w, h) = (40, 40);
        let depth = DepthMm { width: w, height: h, mm: vec![500.0; w * h] };
        let full = Roi::full(w, h);

        let mut rendered = vec![0.0f32; w * h];
        for v in 10..30 {
            for u in 10..30 {
                rendered[v * w + u] = 502.0;
            }
        }
        // Flat background at the model's depth: the surface fits, but no edge is seen and the
        // whole 12-px ring around it (here the rest of the frame, 1200 px) is surface at the
        // object's depth that the pose leaves unexplained.
        let v = score(&rendered, &depth, full);
        assert_eq!((v.pixels, v.inliers, v.unexplained), (400, 400, 1200));
        assert_eq!(v.surface_score, 400.0 / (400.0 + 1200.0));
        assert_eq!(v.edge_support, 0);
        assert!(v.edge_contradiction >= 76);
        assert_eq!(v.score, 0.0);
        // The same with the background 100 mm behind: a real object.
        let mut stand = depth.clone();
        for (m, r) in stand.mm.iter_mut().zip(&rendered) {
            if *r == 0.0 {
                *m = 600.0;
            }
        }
        let v = score(&rendered, &stand, full);
        assert!(v.edge_support >= 76 && v.edge_contradiction == 0);
        assert_eq!(v.unexplained, 0);
        assert_eq!(v.score, 1.0);
        let depth = stand;
        // Model 20 mm in front of the measured surface: the sensor saw through it.
        let front: Vec<f32> = rendered.iter().map(|&r| if r > 0.0 { 480.0 } else { 0.0 }).collect();
        let v = score(&front, &depth, full);
        assert_eq!((v.violations, v.surface_score), (324, 0.0));
        // Model behind the surface: occluded, also no support.
        let behind: Vec<f32> = rendered.iter().map(|&r| if r > 0.0 { 530.0 } else { 0.0 }).collect();
        assert_eq!(score(&behind, &depth, full).occluded, 324);
        // Upper half of the square behind an occluder. The 28 mm step between the halves is a
        // rendered depth edge too, so rows 19 and 20 are edge band: interior 8x18 occluded
        // (rows 11..19, weighing half) and 8x18 agreeing (rows 21..29), plus 56 agreeing edge
        // pixels.
        let mut half = rendered.clone();
        for v in 10..20 {
            for u in 10..30 {
                half[v * w + u] = 530.0;
            }
        }
        assert!((score(&half, &depth, full).surface_score - 200.0 / (200.0 + 0.5 * 144.0)).abs() < 1e-6);
        // Missing measurements count half: 128 holes inside; 324 - 128 + 76 pixels agree.
        let mut holes = depth.clone();
        for v in 12..20 {
            for u in 12..28 {
                holes.mm[v * w + u] = 0.0;
            }
        }
        assert!((score(&rendered, &holes, Roi { u0: 5, v0: 5, u1: 35, v1: 35 }).surface_score - 272.0 / (272.0 + 64.0)).abs() < 1e-6);
    }

    #[test]
    fn a_duel_is_decided_where_two_poses_differ() {
        // A 40x40 frame: a body (u 15..25) at 500 mm, with a handle at u 26..29 seen; the rival
        // pose puts the handle at u 11..14, where the sensor sees the background (600 mm).
        let (w, h) = (40, 40);
        let cam = Camera::new(500.0, 500.0, 20.0, 20.0, 1.0).unwrap();
        let rgb = RgbImage::new(w as u32, h as u32);
        let paint = |handle: std::ops::Range<usize>| {
            let mut d = vec![0.0f32; w * h];
            for v in 10..30 {
                for u in (15..25).chain(if (12..22).contains(&v) { handle.clone() } else { 0..0 }) {
                    d[v * w + u] = 500.0;
                }
            }
            RoiDepth { roi: Roi::full(w, h), depth: d }
        };
        let (right, turned) = (paint(26..29), paint(11..14));
        let depth = DepthMm { width: w, height: h, mm: right.depth.iter().map(|&z| if z > 0.0 { z } else { 600.0 }).collect() };
        let obs = Observation { camera: &cam, depth: &depth, rgb: &rgb, support: None, tolerance: 5.0 };
        // 60 pixels differ: 30 of each handle. The right pose explains its 30; the turned one
        // is seen through at its 30 (-60).
        assert_eq!(duel(&right, &turned, &obs), (30, -60, 60));
        assert_eq!(duel(&turned, &right, &obs), (-60, 30, 60));
        // Identical poses have nothing to compare.
        assert_eq!(duel(&right, &right, &obs), (0, 0, 0));
    }
}
