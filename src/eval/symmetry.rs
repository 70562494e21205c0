//! An object's symmetry transformations as BOP lists them in `models_info.json`, turned into the
//! finite set MSSD/MSPD minimise over (BOP toolkit `misc.get_symmetry_transformations`):
//! - the identity plus each discrete symmetry (a 4×4 model → model transform, mm);
//! - each continuous symmetry (rotation about `axis` through `offset`) sampled at
//!   n = ⌈π / max_step⌉ angles 2πi/n, i = 0 … n−1: a point at most d/2 from the axis (d =
//!   diameter) travels at most (2π/n)·(d/2) ≤ max_step·d between samples, 1 % of d with BOP's
//!   max_step = 0.01;
//! - with both kinds, every continuous sample composed after every discrete one.
use crate::geometry::Pose;
use nalgebra::{Matrix3, Rotation3, Unit, Vector3};

/// BOP's discretisation step for continuous symmetries (fraction of the diameter).
pub const MAX_SYM_DISC_STEP: f64 = 0.01;

/// A rotational symmetry about `axis` through `offset` (model frame, mm).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Continuous {
    pub axis: [f64; 3],
    pub offset: [f64; 3],
}

/// The symmetry transformations S (model → model): an estimate is as good as the ground truth
/// composed with any of them, gt ∘ S. The identity comes first.
pub fn symmetry_transformations(discrete: &[[f64; 16]], continuous: &[Continuous], max_step: f64) -> Vec<Pose> {
    let mut disc = vec![Pose::identity()];
    for m in discrete {
        let r = Matrix3::new(m[0], m[1], m[2], m[4], m[5], m[6], m[8], m[9], m[10]);
        disc.push(Pose::new(r, Vector3::new(m[3], m[7], m[11])));
    }
    let mut cont = Vec::new();
    for c in continuous {
        let axis = Unit::new_normalize(Vector3::from(c.axis));
        let offset = Vector3::from(c.offset);
        let n = (std::f64::consts::PI / max_step).ceil() as usize;
        let step = std::f64::consts::TAU / n as f64;
        for i in 0..n {
            let r = *Rotation3::from_axis_angle(&axis, i as f64 * step).matrix();
            // Rotation about the axis through `offset`: p ↦ R (p − o) + o.
            cont.push(Pose::new(r, offset - r * offset));
        }
    }
    if cont.is_empty() {
        return disc;
    }
    disc.iter().flat_map(|d| cont.iter().map(move |c| c.compose(d))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discrete_and_continuous_sets() {
        // No symmetry: the identity only.
        assert_eq!(symmetry_transformations(&[], &[], MAX_SYM_DISC_STEP).len(), 1);
        // A 180° flip about z: identity + flip.
        let flip = [-1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0];
        let s = symmetry_transformations(&[flip], &[], MAX_SYM_DISC_STEP);
        assert_eq!(s.len(), 2);
        assert_eq!(s[1].apply(&Vector3::new(1.0, 2.0, 3.0)), Vector3::new(-1.0, -2.0, 3.0));
        // Continuous about z through (10, 0, 0): ⌈π/0.01⌉ = 315 samples, the identity first;
        // every sample keeps the axis point fixed; the step is 2π/315.
        let c = Continuous { axis: [0.0, 0.0, 2.0], offset: [10.0, 0.0, 0.0] };
        let s = symmetry_transformations(&[], &[c], MAX_SYM_DISC_STEP);
        assert_eq!(s.len(), 315);
        assert!((s[0].apply(&Vector3::new(3.0, 4.0, 5.0)) - Vector3::new(3.0, 4.0, 5.0)).norm() < 1e-12);
        for t in &s {
            assert!((t.apply(&Vector3::new(10.0, 0.0, 7.0)) - Vector3::new(10.0, 0.0, 7.0)).norm() < 1e-9);
        }
        assert!((s[1].r.trace() - (1.0 + 2.0 * (std::f64::consts::TAU / 315.0).cos())).abs() < 1e-12);
        // Both: 2 × 315, each continuous sample after each discrete one.
        let s = symmetry_transformations(&[flip], &[c], MAX_SYM_DISC_STEP);
        assert_eq!(s.len(), 630);
    }
}
