//! Kinect-like corruption of a clean depth image (mm, 0 = nothing).
//!
//! What a structured-light sensor does to depth, in the order applied here:
//! * surfaces seen at grazing angles return nothing;
//! * at depth discontinuities the far side loses a band of pixels (the projector's shadow);
//! * axial noise is Gaussian with σ growing with the square of the distance;
//! * values are stored in whole millimetres;
//! * isolated pixels and small blobs drop out (specular or IR-absorbing spots);
//! * optionally the depth image is registered one pixel off the colour image;
//! * nothing is returned beyond the sensor's range.
use super::rng::Rng;
use crate::io::Camera;

/// Neighbours within this fraction of z count as the same surface when estimating normals:
/// looser than an edge, because a grazing surface changes depth fast from pixel to pixel.
pub const NORMAL_JUMP: f32 = 0.08;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthNoise {
    /// σ of the axial Gaussian noise at 1 m, mm; σ(z) = sigma_at_1m · (z / 1 m)².
    pub sigma_at_1m: f32,
    /// Round to whole millimetres (Kinect depth PNGs are 16-bit mm).
    pub quantise_mm: bool,
    /// Probability that any single pixel is missing.
    pub dropout: f32,
    /// Number of small missing blobs (radius 2–6 px) per frame.
    pub blobs: usize,
    /// A neighbour nearer by more than this fraction of z marks a discontinuity.
    pub edge_jump: f32,
    /// Largest width (px) of the missing band on the far side of a discontinuity; 0 = none.
    pub edge_band_px: usize,
    /// Angle (degrees) between the surface normal and the viewing ray beyond which depth
    /// starts to go missing (all gone 6° further); ≥ 90 disables it.
    pub oblique_deg: f32,
    /// Horizontal shift of the depth image against the colour image, pixels.
    pub shift_px: i32,
    /// Depth beyond this is not measured, mm.
    pub max_range_mm: f32,
}

impl DepthNoise {
    /// A Kinect v1 / PrimeSense-like sensor at the LM-O working range.
    pub fn kinect() -> DepthNoise {
        DepthNoise {
            sigma_at_1m: 1.5,
            quantise_mm: true,
            dropout: 0.005,
            blobs: 8,
            edge_jump: 0.02,
            edge_band_px: 3,
            oblique_deg: 78.0,
            shift_px: 0,
            max_range_mm: 3500.0,
        }
    }

    /// Perfect depth: corruption is the identity.
    pub fn none() -> DepthNoise {
        DepthNoise {
            sigma_at_1m: 0.0,
            quantise_mm: false,
            dropout: 0.0,
            blobs: 0,
            edge_jump: 0.02,
            edge_band_px: 0,
            oblique_deg: 90.0,
            shift_px: 0,
            max_range_mm: f32::INFINITY,
        }
    }

    /// Kinect-like noise with the random parts scaled by `level` (0 = only quantisation).
    pub fn kinect_scaled(level: f32) -> DepthNoise {
        let k = DepthNoise::kinect();
        DepthNoise {
            sigma_at_1m: k.sigma_at_1m * level,
            dropout: k.dropout * level,
            blobs: (k.blobs as f32 * level).round() as usize,
            edge_band_px: (k.edge_band_px as f32 * level).round() as usize,
            oblique_deg: if level > 0.0 { 90.0 - (90.0 - k.oblique_deg) * level.min(1.5) } else { 90.0 },
            ..k
        }
    }
}

/// Returns the corrupted copy of `clean` (row-major `width` × `height`, mm).
pub fn corrupt(clean: &[f32], width: usize, height: usize, cam: &Camera, noise: &DepthNoise, rng: &mut Rng) -> Vec<f32> {
    let (w, h) = (width, height);
    let mut out = clean.to_vec();
    let idx = |u: usize, v: usize| v * w + u;

    // Grazing surfaces, judged on the clean geometry.
    if noise.oblique_deg < 90.0 {
        for v in 0..h {
            for u in 0..w {
                if let Some(angle) = view_angle_deg(clean, w, h, cam, u, v, NORMAL_JUMP) {
                    let p = ((angle - noise.oblique_deg) / 6.0).clamp(0.0, 1.0);
                    if p > 0.0 && rng.chance(p as f64) {
                        out[idx(u, v)] = 0.0;
                    }
                }
            }
        }
    }

    // Far side of discontinuities: a band 1..=edge_band_px wide, stepping away from the edge.
    if noise.edge_band_px > 0 {
        let far_side = |z: f32, z_near: f32| z > 0.0 && z_near > 0.0 && z - z_near > noise.edge_jump * z;
        for v in 0..h {
            for u in 0..w {
                let z = clean[idx(u, v)];
                // (neighbour offset) for the 4-neighbourhood; the band grows opposite to it.
                for (du, dv) in [(1i64, 0i64), (-1, 0), (0, 1), (0, -1)] {
                    let (nu, nv) = (u as i64 + du, v as i64 + dv);
                    if nu < 0 || nv < 0 || nu >= w as i64 || nv >= h as i64 {
                        continue;
                    }
                    if !far_side(z, clean[idx(nu as usize, nv as usize)]) || !rng.chance(0.85) {
                        continue;
                    }
                    let band = 1 + rng.below(noise.edge_band_px);
                    for k in 0..band as i64 {
                        let (bu, bv) = (u as i64 - du * k, v as i64 - dv * k);
                        if bu < 0 || bv < 0 || bu >= w as i64 || bv >= h as i64 {
                            break;
                        }
                        let bi = idx(bu as usize, bv as usize);
                        // Stop where the band would leave the far surface.
                        if (clean[bi] - z).abs() > noise.edge_jump * z {
                            break;
                        }
                        out[bi] = 0.0;
                    }
                }
            }
        }
    }

    for z in out.iter_mut() {
        if *z <= 0.0 {
            continue;
        }
        if noise.sigma_at_1m > 0.0 {
            let zm = *z / 1000.0;
            *z += (noise.sigma_at_1m * zm * zm) * rng.normal() as f32;
        }
        if noise.quantise_mm {
            *z = z.round();
        }
        if *z > noise.max_range_mm || *z <= 0.0 || (noise.dropout > 0.0 && rng.chance(noise.dropout as f64)) {
            *z = 0.0;
        }
    }

    for _ in 0..noise.blobs {
        let (cu, cv) = (rng.below(w) as i64, rng.below(h) as i64);
        let r = rng.range(2.0, 6.0);
        let ri = r.ceil() as i64;
        for dv in -ri..=ri {
            for du in -ri..=ri {
                let (u, v) = (cu + du, cv + dv);
                if u >= 0 && v >= 0 && u < w as i64 && v < h as i64 && ((du * du + dv * dv) as f64) <= r * r {
                    out[idx(u as usize, v as usize)] = 0.0;
                }
            }
        }
    }

    if noise.shift_px != 0 {
        out = shift_columns(&out, w, h, noise.shift_px);
    }
    out
}

/// Moves every row by `dx` pixels (positive: to the right), filling with 0.
fn shift_columns(src: &[f32], w: usize, h: usize, dx: i32) -> Vec<f32> {
    let mut out = vec![0.0; src.len()];
    for v in 0..h {
        for u in 0..w {
            let su = u as i64 - dx as i64;
            if su >= 0 && (su as usize) < w {
                out[v * w + u] = src[v * w + su as usize];
            }
        }
    }
    out
}

/// Angle between the surface normal (from the depth image, one-sided differences on the
/// smoother side) and the ray through pixel (u, v), degrees; None without usable neighbours.
pub fn view_angle_deg(depth: &[f32], w: usize, h: usize, cam: &Camera, u: usize, v: usize, jump: f32) -> Option<f32> {
    let n = normal_at(depth, w, h, cam, u, v, jump)?;
    let z = depth[v * w + u] as f64;
    let p = cam.unproject(u as f64, v as f64, z);
    let len = (p[0] * p[0] + p[1] * p[1] + p[2] * p[2]).sqrt();
    let cos = ((n[0] * p[0] + n[1] * p[1] + n[2] * p[2]) / len).abs().min(1.0);
    Some(cos.acos().to_degrees() as f32)
}

/// Unit surface normal at (u, v) in the camera frame, facing the camera; None at the image
/// border, on empty pixels, or where both neighbours along an axis are across a discontinuity.
pub fn normal_at(depth: &[f32], w: usize, h: usize, cam: &Camera, u: usize, v: usize, jump: f32) -> Option<[f64; 3]> {
    if u == 0 || v == 0 || u + 1 >= w || v + 1 >= h {
        return None;
    }
    let z = depth[v * w + u];
    if z <= 0.0 {
        return None;
    }
    let p = |uu: usize, vv: usize| {
        let zz = depth[vv * w + uu];
        (zz > 0.0 && (zz - z).abs() <= jump * z).then(|| cam.unproject(uu as f64, vv as f64, zz as f64))
    };
    let c = cam.unproject(u as f64, v as f64, z as f64);
    let diff = |a: [f64; 3], b: [f64; 3]| [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
    // Prefer the forward difference, then the backward one (sign kept consistent).
    let tangent = |fwd: Option<[f64; 3]>, bwd: Option<[f64; 3]>| match (fwd, bwd) {
        (Some(f), Some(b)) => {
            let (df, db) = (diff(f, c), diff(c, b));
            Some(if df[2].abs() <= db[2].abs() { df } else { db })
        }
        (Some(f), None) => Some(diff(f, c)),
        (None, Some(b)) => Some(diff(c, b)),
        (None, None) => None,
    };
    let tu = tangent(p(u + 1, v), p(u - 1, v))?;
    let tv = tangent(p(u, v + 1), p(u, v - 1))?;
    let mut n = [tu[1] * tv[2] - tu[2] * tv[1], tu[2] * tv[0] - tu[0] * tv[2], tu[0] * tv[1] - tu[1] * tv[0]];
    let len = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    if len == 0.0 {
        return None;
    }
    // Face the camera (at the origin).
    let s = if n[0] * c[0] + n[1] * c[1] + n[2] * c[2] > 0.0 { -1.0 } else { 1.0 };
    for x in &mut n {
        *x *= s / len;
    }
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cam() -> Camera {
        Camera { fx: 572.4114, fy: 573.57043, cx: 325.2611, cy: 242.04899, depth_scale: 1.0 }
    }

    fn stats(clean: &[f32], noisy: &[f32]) -> (f64, f64, f64) {
        let pairs: Vec<f64> = clean.iter().zip(noisy).filter(|(_, &n)| n > 0.0).map(|(&c, &n)| (n - c) as f64).collect();
        let mean = pairs.iter().sum::<f64>() / pairs.len() as f64;
        let sd = (pairs.iter().map(|e| (e - mean).powi(2)).sum::<f64>() / pairs.len() as f64).sqrt();
        let missing = noisy.iter().filter(|&&z| z == 0.0).count() as f64 / noisy.len() as f64;
        (mean, sd, missing)
    }

    #[test]
    fn noise_statistics_follow_the_model() {
        let (w, h) = (640, 480);
        let only_gauss = DepthNoise { dropout: 0.0, blobs: 0, edge_band_px: 0, oblique_deg: 90.0, ..DepthNoise::kinect() };
        for (z, sigma) in [(1000.0f32, 1.5f64), (2000.0, 6.0)] {
            // A fronto-parallel wall: the model σ plus uniform rounding error (variance 1/12).
            let clean = vec![z; w * h];
            let noisy = corrupt(&clean, w, h, &cam(), &only_gauss, &mut Rng::new(3));
            let (mean, sd, missing) = stats(&clean, &noisy);
            let want = (sigma * sigma + 1.0 / 12.0).sqrt();
            assert!(mean.abs() < 0.05, "z {z}: mean {mean}");
            assert!((sd - want).abs() < 0.03 * want, "z {z}: sd {sd} vs {want}");
            assert_eq!(missing, 0.0);
            assert!(noisy.iter().all(|x| x.fract() == 0.0), "quantised to mm");
        }
        // Dropout rate, and blobs adding a little on top.
        let clean = vec![800.0f32; w * h];
        let d = DepthNoise { blobs: 0, edge_band_px: 0, oblique_deg: 90.0, dropout: 0.02, ..DepthNoise::kinect() };
        let (_, _, missing) = stats(&clean, &corrupt(&clean, w, h, &cam(), &d, &mut Rng::new(4)));
        assert!((missing - 0.02).abs() < 0.002, "{missing}");
        let none = corrupt(&clean, w, h, &cam(), &DepthNoise::none(), &mut Rng::new(4));
        assert_eq!(none, clean);
        // Beyond range: nothing.
        let far = vec![5000.0f32; 100];
        assert!(corrupt(&far, 10, 10, &cam(), &DepthNoise::kinect(), &mut Rng::new(1)).iter().all(|&z| z == 0.0));
    }

    #[test]
    fn holes_on_the_far_side_of_edges_and_at_grazing_angles() {
        let (w, h) = (200, 100);
        // Left half near (600 mm), right half far (900 mm).
        let clean: Vec<f32> = (0..w * h).map(|i| if i % w < 100 { 600.0 } else { 900.0 }).collect();
        let d = DepthNoise { sigma_at_1m: 0.0, dropout: 0.0, blobs: 0, oblique_deg: 90.0, edge_band_px: 3, ..DepthNoise::kinect() };
        let out = corrupt(&clean, w, h, &cam(), &d, &mut Rng::new(9));
        let rows_with_hole = (0..h).filter(|&v| out[v * w + 100] == 0.0).count();
        assert!(rows_with_hole > 70, "{rows_with_hole}");
        // Never more than the band, never on the near side.
        assert!((0..h).all(|v| out[v * w + 99] == 600.0 && out[v * w + 103] == 900.0));

        // A plane seen at a grazing angle vanishes; the same plane seen at 40° does not.
        let (w, h) = (640, 480);
        let c = cam();
        let plane = |tilt_deg: f64| -> Vec<f32> {
            // Through (0, 0, 1000) with its normal tilted from the optical axis about x.
            let (s, co) = tilt_deg.to_radians().sin_cos();
            (0..w * h)
                .map(|i| {
                    let ray = [((i % w) as f64 - c.cx) / c.fx, ((i / w) as f64 - c.cy) / c.fy, 1.0];
                    let den = ray[1] * s + ray[2] * co;
                    if den > 0.0 { (1000.0 * co / den).min(3000.0) as f32 } else { 0.0 }
                })
                .collect()
        };
        let d = DepthNoise { sigma_at_1m: 0.0, dropout: 0.0, blobs: 0, edge_band_px: 0, ..DepthNoise::kinect() };
        // Fraction of measurable pixels in rows [v0, v1) that came back empty.
        let missing = |tilt: f64, v0: usize, v1: usize| {
            let clean = plane(tilt);
            let out = corrupt(&clean, w, h, &c, &d, &mut Rng::new(2));
            let valid: Vec<usize> = (v0 * w..v1 * w).filter(|&i| clean[i] > 0.0 && clean[i] < 3000.0).collect();
            valid.iter().filter(|&&i| out[i] == 0.0).count() as f64 / valid.len() as f64
        };
        // Near the principal point the 86° plane is seen at 85–87°.
        let grazing = missing(86.0, 234, 251);
        assert!(grazing > 0.9, "{grazing}");
        let steep = missing(40.0, 1, h - 1);
        assert!(steep < 0.01, "{steep}");
        let a = view_angle_deg(&plane(40.0), w, h, &c, 325, 242, 0.02).unwrap();
        assert!((a - 40.0).abs() < 0.5, "{a}");
    }

    #[test]
    fn shift_moves_columns() {
        let src: Vec<f32> = (0..12).map(|i| i as f32 + 1.0).collect();
        assert_eq!(shift_columns(&src, 4, 3, 1), vec![0.0, 1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0, 0.0, 9.0, 10.0, 11.0]);
        assert_eq!(shift_columns(&src, 4, 3, -1)[..4], [2.0, 3.0, 4.0, 0.0]);
    }
}
