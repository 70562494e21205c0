//! Point-to-plane ICP with projective data association: each visible model point is projected
//! into the depth image and paired with the measured point on the same pixel. No search
//! structure, full sensor resolution, and occluders fall out by the distance gate.
use crate::geometry::{Mesh, Pose, Vec3};
use crate::render::roi::{Roi, RoiDepth};
use crate::io::Camera;
use nalgebra::{Matrix6, Rotation3, Vector3, Vector6};

/// Camera-frame points of every pixel (z = 0 where depth is missing), row-major.
pub struct OrganizedCloud<'a> {
    pub width: usize,
    pub height: usize,
    pub points: &'a [Vec3],
    pub camera: &'a Camera,
}

impl OrganizedCloud<'_> {
    /// The pixel where camera-frame `x` projects (may lie outside the image).
    #[inline]
    fn pixel(&self, x: &Vec3) -> Option<(i32, i32)> {
        if x.z <= 1.0 {
            return None;
        }
        let u = (self.camera.fx as f32 * x.x / x.z + self.camera.cx as f32).round() as i32;
        let v = (self.camera.fy as f32 * x.y / x.z + self.camera.cy as f32).round() as i32;
        Some((u, v))
    }

    /// Whether `x`, projecting to `px`, is on the front surface of a rendered depth `zbuf`.
    #[inline]
    fn visible(x: &Vec3, (u, v): (i32, i32), zbuf: &RoiDepth, slack: f32) -> bool {
        let z = zbuf.at(u as isize, v as isize);
        z > 0.0 && x.z <= z + slack
    }

    /// The measured point nearest to `x` among the pixels within `radius` pixels (sampled
    /// every `step`) of `(u, v)`, where `x` projects. Searching a window, not just the one
    /// pixel, lets ICP also see sideways misalignment, which a pure projective lookup (the
    /// measured point on the same ray) can only infer from the normals.
    #[inline]
    fn nearest(&self, x: &Vec3, (u, v): (i32, i32), radius: i32, step: usize) -> Option<&Vec3> {
        let (w, h) = (self.width as i32, self.height as i32);
        let mut best: Option<(&Vec3, f32)> = None;
        for dv in (-radius..=radius).step_by(step) {
            let y = v + dv;
            if y < 0 || y >= h {
                continue;
            }
            for du in (-radius..=radius).step_by(step) {
                let xx = u + du;
                if xx < 0 || xx >= w {
                    continue;
                }
                let p = &self.points[(y * w + xx) as usize];
                if p.z <= 0.0 {
                    continue;
                }
                let d2 = (p - x).norm_squared();
                if best.is_none_or(|(_, b)| d2 < b) {
                    best = Some((p, d2));
                }
            }
        }
        best.map(|(p, _)| p)
    }
}

#[derive(Clone, Copy, Debug, Default)]
pub struct IcpResult {
    pub pose: Pose,
    /// Model points paired in the last iteration, and their RMS point-to-plane residual (mm).
    pub inliers: usize,
    pub rms: f32,
}

/// Refines `pose` with `iterations` Gauss–Newton steps. The gate shrinks from `gate_start` to
/// `gate_end` (mm) so that a rough PPF pose is pulled in before the fit tightens.
/// `mesh` (a light render mesh) decides which model points are visible: a normal facing the
/// camera is not enough for concave objects (a mug's far inner wall faces the camera but
/// hides behind its front wall), so the model is rendered every few iterations and points
/// behind the rendered surface sit out.
#[allow(clippy::too_many_arguments)]
pub fn refine(
    scene: &OrganizedCloud,
    mesh: &Mesh,
    pts: &[Vec3],
    nrm: &[Vec3],
    pose: &Pose,
    iterations: usize,
    gate_start: f32,
    gate_end: f32,
) -> IcpResult {
    let mut pose = *pose;
    let mut result = IcpResult { pose, inliers: 0, rms: f32::INFINITY };
    let centre = pts.iter().fold(Vec3::zeros(), |a, p| a + p) / pts.len().max(1) as f32;
    let mut zbuf = RoiDepth { roi: Roi::full(0, 0), depth: Vec::new() };
    for it in 0..iterations {
        if it % 8 == 0 {
            zbuf = RoiDepth::render(mesh, scene.camera, &pose, scene.width, scene.height, 2);
        }
        let f = if iterations > 1 { it as f32 / (iterations - 1) as f32 } else { 1.0 };
        let gate = gate_start * (1.0 - f) + gate_end * f;
        // Search window: about the gate's size in pixels at this depth, sampled sparsely
        // while the gate is wide.
        let z = pose.t.z.max(100.0) as f32;
        let radius = ((gate * scene.camera.fx as f32 / z) as i32).clamp(1, 12);
        let wstep = (radius as usize / 2).max(1);
        let r = pose.r.cast::<f32>();
        let t = pose.t.cast::<f32>();
        // Rotate about the model's centre, not the camera's: about the camera, a small turn is
        // also a long shift, and the two become nearly impossible to tell apart.
        let c = r * centre + t;
        let mut ata = Matrix6::<f64>::zeros();
        let mut atb = Vector6::<f64>::zeros();
        let (mut n_in, mut sq) = (0usize, 0.0f64);
        for (m, mn) in pts.iter().zip(nrm) {
            let x = r * m + t;
            let n = r * mn;
            // Back-facing points are hidden by the object itself.
            if n.dot(&x) >= 0.0 {
                continue;
            }
            let Some(px) = scene.pixel(&x) else { continue };
            if !OrganizedCloud::visible(&x, px, &zbuf, gate_end.max(2.0)) {
                continue;
            }
            let Some(s) = scene.nearest(&x, px, radius, wstep) else { continue };
            let d = x - s;
            if d.norm_squared() > gate * gate {
                continue;
            }
            let res = d.dot(&n) as f64;
            // Huber-like weight: full weight inside a third of the gate.
            let w = if res.abs() < (gate / 3.0) as f64 { 1.0 } else { (gate / 3.0) as f64 / res.abs() };
            let xn = (x - c).cross(&n).cast::<f64>();
            let j = Vector6::new(xn.x, xn.y, xn.z, n.x as f64, n.y as f64, n.z as f64);
            ata += j * j.transpose() * w;
            atb += j * (-res * w);
            n_in += 1;
            sq += res * res;
        }
        if n_in < 6 {
            result.inliers = n_in;
            break;
        }
        result = IcpResult { pose, inliers: n_in, rms: (sq / n_in as f64).sqrt() as f32 };
        // Damping relative to each direction's own curvature (Levenberg–Marquardt style) keeps
        // poorly constrained directions (the axis of a symmetric part) still without slowing
        // the others.
        let damped = ata + Matrix6::from_diagonal(&(ata.diagonal() * 1e-4 + Vector6::repeat(1e-9)));
        let Some(delta) = damped.cholesky().map(|ch| ch.solve(&atb)) else { break };
        let w = Vector3::new(delta[0], delta[1], delta[2]);
        let dt = Vector3::new(delta[3], delta[4], delta[5]);
        let dr = *Rotation3::new(w).matrix();
        let c = c.cast::<f64>();
        pose = Pose::new(dr * pose.r, dr * (pose.t - c) + c + dt).orthonormalized();
        result.pose = pose;
        // Converged once a step moves the surface by well under a tenth of a millimetre.
        if w.norm() < 1e-4 && dt.norm() < 0.05 {
            break;
        }
    }
    result
}
