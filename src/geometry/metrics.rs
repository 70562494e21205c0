//! BOP-style pose error metrics over model points (mm), and the recall scores built on them.
//!
//! * ADD: mean distance between corresponding transformed points; ADI (ADD-S): mean distance
//!   to the closest transformed point (for symmetric objects).
//! * MSSD: maximum distance between corresponding points; BOP takes the minimum over the
//!   object's symmetries ([`mssd_sym`]; [`mssd`] is the plain maximum, for objects without).
//! * MSPD: maximum distance between the projections, pixels ([`mspd_sym`] / [`mspd`]).
//! * AR (BOP 2019+) = mean of AR_MSSD and AR_MSPD in [`ArScores`]; `sam6d eval`
//!   (`crate::eval`) also averages AR_VSD, which needs the test depth images.
//!
//! A pose counts as correct for a threshold θ when its error e < θ (strict, as in BOP).
use super::{Pose, Vec3};
use crate::io::Camera;
use nalgebra::Vector3;

fn transform_all(pose: &Pose, pts: &[Vec3]) -> Vec<Vector3<f64>> {
    pts.iter().map(|p| pose.apply(&p.cast::<f64>())).collect()
}

/// Mean distance between corresponding model points under the two poses (ADD), mm.
pub fn add(est: &Pose, gt: &Pose, pts: &[Vec3]) -> f64 {
    if pts.is_empty() {
        return 0.0;
    }
    let sum: f64 = pts.iter().map(|p| (est.apply(&p.cast()) - gt.apply(&p.cast())).norm()).sum();
    sum / pts.len() as f64
}

/// Mean distance from each estimated point to the closest ground-truth point (ADI / ADD-S), mm.
/// Brute force O(n²): pass a subsample (a few thousand points) for big meshes.
pub fn adi(est: &Pose, gt: &Pose, pts: &[Vec3]) -> f64 {
    if pts.is_empty() {
        return 0.0;
    }
    let e = transform_all(est, pts);
    let g = transform_all(gt, pts);
    let sum: f64 = e
        .iter()
        .map(|p| g.iter().map(|q| (p - q).norm_squared()).fold(f64::INFINITY, f64::min).sqrt())
        .sum();
    sum / pts.len() as f64
}

/// Maximum symmetry-aware surface distance without symmetries: max ‖est(p) − gt(p)‖, mm.
pub fn mssd(est: &Pose, gt: &Pose, pts: &[Vec3]) -> f64 {
    pts.iter().map(|p| (est.apply(&p.cast()) - gt.apply(&p.cast())).norm()).fold(0.0, f64::max)
}

/// Maximum symmetry-aware projection distance without symmetries, pixels.
pub fn mspd(est: &Pose, gt: &Pose, pts: &[Vec3], cam: &Camera) -> f64 {
    let proj = |pose: &Pose, p: &Vec3| {
        let q = pose.apply(&p.cast());
        cam.project([q.x, q.y, q.z])
    };
    pts.iter()
        .map(|p| {
            let (a, b) = (proj(est, p), proj(gt, p));
            ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
        })
        .fold(0.0, f64::max)
}

/// BOP's MSSD with symmetries: min over the symmetry transformations S of
/// max_p ‖est(p) − (gt ∘ S)(p)‖, mm, and the index of the S that gives it. `syms` holds the
/// object's symmetry transformations (model → model), identity included; empty = identity only.
pub fn mssd_sym(est: &Pose, gt: &Pose, pts: &[Vector3<f64>], syms: &[Pose]) -> (f64, usize) {
    let identity = [Pose::identity()];
    let syms = if syms.is_empty() { &identity[..] } else { syms };
    let mut best = (f64::INFINITY, 0);
    for (k, s) in syms.iter().enumerate() {
        let g = gt.compose(s);
        // est(p) − g(p) = (R_e − R_g) p + (t_e − t_g): one matrix-vector product per point.
        let (a, b) = (est.r - g.r, est.t - g.t);
        let mut worst2 = 0.0f64;
        for p in pts {
            worst2 = worst2.max((a * p + b).norm_squared());
            // This symmetry can no longer beat the best one: stop early (same minimum).
            if worst2 >= best.0 * best.0 {
                break;
            }
        }
        if worst2.sqrt() < best.0 {
            best = (worst2.sqrt(), k);
        }
    }
    best
}

/// BOP's MSPD with symmetries: min over S of max_p ‖π(est(p)) − π((gt ∘ S)(p))‖, pixels.
pub fn mspd_sym(est: &Pose, gt: &Pose, pts: &[Vector3<f64>], syms: &[Pose], cam: &Camera) -> f64 {
    let identity = [Pose::identity()];
    let syms = if syms.is_empty() { &identity[..] } else { syms };
    let proj = |q: Vector3<f64>| cam.project([q.x, q.y, q.z]);
    let est_px: Vec<[f64; 2]> = pts.iter().map(|p| proj(est.r * p + est.t)).collect();
    let mut best2 = f64::INFINITY;
    for s in syms {
        let g = gt.compose(s);
        let mut worst2 = 0.0f64;
        for (p, e) in pts.iter().zip(&est_px) {
            let q = proj(g.r * p + g.t);
            worst2 = worst2.max((q[0] - e[0]).powi(2) + (q[1] - e[1]).powi(2));
            if worst2 >= best2 {
                break;
            }
        }
        best2 = best2.min(worst2);
    }
    best2.sqrt()
}

/// ADI (ADD-S) over all points, exact, with a grid for the nearest-neighbour search (the brute
/// force of [`adi`] is quadratic, too slow for full CAD models). mm.
pub fn adi_exact(est: &Pose, gt: &Pose, pts: &[Vector3<f64>]) -> f64 {
    if pts.is_empty() {
        return 0.0;
    }
    let g: Vec<Vec3> = pts.iter().map(|p| (gt.r * p + gt.t).cast::<f32>()).collect();
    let (mut lo, mut hi) = (g[0], g[0]);
    for p in &g {
        lo = lo.inf(p);
        hi = hi.sup(p);
    }
    let cell = ((hi - lo).norm() / 32.0).max(1e-3);
    let grid = super::grid::Grid::new(&g, cell);
    let sum: f64 = pts
        .iter()
        .map(|p| {
            let q = (est.r * p + est.t).cast::<f32>();
            // Grow the radius until a point is found; the first hit within r is the nearest.
            let mut r = cell;
            loop {
                if let Some((_, d2)) = grid.nearest_within(&g, &q, r) {
                    return (d2 as f64).sqrt();
                }
                r *= 2.0;
            }
        })
        .sum();
    sum / pts.len() as f64
}

/// Mean distance between corresponding points (ADD) over f64 points, mm.
pub fn add_f64(est: &Pose, gt: &Pose, pts: &[Vector3<f64>]) -> f64 {
    if pts.is_empty() {
        return 0.0;
    }
    let (a, b) = (est.r - gt.r, est.t - gt.t);
    pts.iter().map(|p| (a * p + b).norm()).sum::<f64>() / pts.len() as f64
}

/// Angle of the rotation between the two poses, degrees in [0, 180].
pub fn rotation_error_deg(est: &Pose, gt: &Pose) -> f64 {
    est.rotation_angle_to(gt).to_degrees()
}

/// The errors of one ground-truth instance against the estimate matched to it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PoseErrors {
    pub add: f64,
    pub mssd: f64,
    pub mspd: f64,
    /// Object diameter, mm (thresholds scale with it).
    pub diameter: f64,
}

impl PoseErrors {
    pub fn compute(est: &Pose, gt: &Pose, pts: &[Vec3], cam: &Camera, diameter: f64) -> PoseErrors {
        PoseErrors { add: add(est, gt, pts), mssd: mssd(est, gt, pts), mspd: mspd(est, gt, pts, cam), diameter }
    }

    /// A ground-truth instance with no estimate: wrong at every threshold.
    pub fn missed(diameter: f64) -> PoseErrors {
        PoseErrors { add: f64::INFINITY, mssd: f64::INFINITY, mspd: f64::INFINITY, diameter }
    }
}

/// MSSD thresholds as fractions of the diameter: 0.05, 0.10, …, 0.50.
pub fn mssd_thresholds() -> Vec<f64> {
    (1..=10).map(|k| 0.05 * k as f64).collect()
}

/// MSPD thresholds in pixels: 5r, 10r, …, 50r with r = width / 640 (BOP: thresholds grow with
/// the image resolution).
pub fn mspd_thresholds(image_width: usize) -> Vec<f64> {
    let r = image_width as f64 / 640.0;
    (1..=10).map(|k| 5.0 * k as f64 * r).collect()
}

/// Fraction of `errors` below `threshold` (0 for an empty list).
pub fn recall(errors: impl IntoIterator<Item = f64>, threshold: f64) -> f64 {
    let (mut hit, mut n) = (0usize, 0usize);
    for e in errors {
        n += 1;
        if e < threshold {
            hit += 1;
        }
    }
    if n == 0 {
        0.0
    } else {
        hit as f64 / n as f64
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ArScores {
    pub ar_mssd: f64,
    pub ar_mspd: f64,
    /// Mean of the two (VSD needs depth images: see `crate::eval`).
    pub ar: f64,
}

/// BOP average recalls over ground-truth instances (one entry each; missed ones via
/// [`PoseErrors::missed`]).
pub fn ar_mssd_mspd(errors: &[PoseErrors], image_width: usize) -> ArScores {
    let mean = |v: Vec<f64>| if v.is_empty() { 0.0 } else { v.iter().sum::<f64>() / v.len() as f64 };
    let ar_mssd = mean(
        mssd_thresholds()
            .into_iter()
            .map(|f| {
                let n = errors.len().max(1) as f64;
                errors.iter().filter(|e| e.mssd < f * e.diameter).count() as f64 / n
            })
            .collect(),
    );
    let ar_mspd = mean(mspd_thresholds(image_width).into_iter().map(|t| recall(errors.iter().map(|e| e.mspd), t)).collect());
    ArScores { ar_mssd, ar_mspd, ar: 0.5 * (ar_mssd + ar_mspd) }
}

/// ADD-0.1d recall: fraction of instances with ADD < 0.1 × diameter.
pub fn add_recall(errors: &[PoseErrors], fraction_of_diameter: f64) -> f64 {
    if errors.is_empty() {
        return 0.0;
    }
    errors.iter().filter(|e| e.add < fraction_of_diameter * e.diameter).count() as f64 / errors.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Matrix3, Vector3};

    fn pts() -> Vec<Vec3> {
        vec![Vec3::new(10.0, 0.0, 0.0), Vec3::new(-10.0, 0.0, 0.0), Vec3::new(0.0, 20.0, 0.0), Vec3::new(0.0, 0.0, 30.0)]
    }

    fn shifted(t: [f64; 3]) -> Pose {
        Pose::new(Matrix3::identity(), Vector3::new(t[0], t[1], t[2]))
    }

    #[test]
    fn translation_errors() {
        let gt = shifted([0.0, 0.0, 500.0]);
        let est = shifted([3.0, 4.0, 500.0]);
        assert!((add(&est, &gt, &pts()) - 5.0).abs() < 1e-12);
        assert!((mssd(&est, &gt, &pts()) - 5.0).abs() < 1e-12);
        assert_eq!(add(&gt, &gt, &pts()), 0.0);
        // ADI: ±10 mm along x are each other's images under a 20 mm x-shift.
        let est = shifted([20.0, 0.0, 500.0]);
        // p=(10,0,0)+20 → (30,..) closest gt (10,..): 20; (−10)+20=(10): 0; (0,20,0)+20=(20,20,0)
        // → closest gt (0,20,0): 20 (not (10,0,0): √500); (0,0,30)+20 → gt (0,0,30): 20.
        let want = (20.0 + 0.0 + 20.0 + 20.0) / 4.0;
        assert!((adi(&est, &gt, &pts()) - want).abs() < 1e-9);
        assert!((add(&est, &gt, &pts()) - 20.0).abs() < 1e-12);
    }

    #[test]
    fn rotation_errors() {
        // 90° about z: (10,0,0)→(0,10,0): 10√2; (−10,0,0): 10√2; (0,20,0)→(−20,0,0): 20√2;
        // (0,0,30) fixed: 0.
        let gt = shifted([0.0, 0.0, 500.0]);
        let est = Pose::from_axis_angle(Vector3::new(0.0, 0.0, std::f64::consts::FRAC_PI_2), gt.t);
        let s2 = 2f64.sqrt();
        assert!((add(&est, &gt, &pts()) - (10.0 * s2 + 10.0 * s2 + 20.0 * s2) / 4.0).abs() < 1e-9);
        assert!((mssd(&est, &gt, &pts()) - 20.0 * s2).abs() < 1e-9);
        // ADI ≤ ADD always.
        assert!(adi(&est, &gt, &pts()) <= add(&est, &gt, &pts()));
    }

    #[test]
    fn projection_error() {
        let cam = Camera { fx: 500.0, fy: 500.0, cx: 320.0, cy: 240.0, depth_scale: 1.0 };
        let gt = shifted([0.0, 0.0, 500.0]);
        // A 2 mm x-shift at depth z moves a point by 500·2/z px; the nearest point (z = 500)
        // moves most: 2 px.
        let est = shifted([2.0, 0.0, 500.0]);
        assert!((mspd(&est, &gt, &pts(), &cam) - 2.0).abs() < 1e-9);
        // A depth shift: (10,0,0) at z 500 → 510: u from 330 to 320 + 5000/510.
        let est = shifted([0.0, 0.0, 510.0]);
        let want = (20.0f64 * 500.0 / 500.0 - 20.0 * 500.0 / 510.0).max(10.0 - 5000.0 / 510.0);
        assert!((mspd(&est, &gt, &pts(), &cam) - want).abs() < 1e-9, "{want}");
    }

    #[test]
    fn thresholds_and_recall() {
        let t = mssd_thresholds();
        assert_eq!(t.len(), 10);
        assert!((t[0] - 0.05).abs() < 1e-12 && (t[9] - 0.5).abs() < 1e-12);
        assert_eq!(mspd_thresholds(640), vec![5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0]);
        assert_eq!(mspd_thresholds(1280)[0], 10.0);
        assert_eq!(recall([1.0, 2.0, 3.0, 4.0], 3.0), 0.5);
        assert_eq!(recall(Vec::new(), 3.0), 0.0);

        // Instance A: MSSD 0.12 d → correct at 8 of 10 thresholds (0.15 … 0.50);
        // MSPD 12 px → correct at 8 (15 … 50). Instance B: MSSD 0.05 d exactly → 9 (strict <);
        // MSPD 50 px → 0. Instance C missed.
        let d = 200.0;
        let errs = [
            PoseErrors { add: 10.0, mssd: 0.12 * d, mspd: 12.0, diameter: d },
            PoseErrors { add: 30.0, mssd: 0.05 * d, mspd: 50.0, diameter: d },
            PoseErrors::missed(d),
        ];
        let ar = ar_mssd_mspd(&errs, 640);
        assert!((ar.ar_mssd - (8.0 + 9.0) / 30.0).abs() < 1e-12, "{ar:?}");
        assert!((ar.ar_mspd - 8.0 / 30.0).abs() < 1e-12, "{ar:?}");
        assert!((ar.ar - 0.5 * (17.0 + 8.0) / 30.0).abs() < 1e-12);
        // ADD-0.1d: 10 < 20 yes, 30 no, missed no.
        assert!((add_recall(&errs, 0.1) - 1.0 / 3.0).abs() < 1e-12);
        let perfect = ar_mssd_mspd(&[PoseErrors { add: 0.0, mssd: 0.0, mspd: 0.0, diameter: d }], 640);
        assert_eq!((perfect.ar_mssd, perfect.ar_mspd, perfect.ar), (1.0, 1.0, 1.0));
    }
}
