//! Rigid poses in SAM-6D's convention: `x_cam = R · x_model + t`, millimetres, OpenCV camera
//! (x right, y down, z forward).
use nalgebra::{Matrix3, Rotation3, UnitQuaternion, Vector3};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Pose {
    pub r: Matrix3<f64>,
    pub t: Vector3<f64>,
}

impl Default for Pose {
    fn default() -> Self {
        Pose::identity()
    }
}

impl Pose {
    pub fn identity() -> Pose {
        Pose { r: Matrix3::identity(), t: Vector3::zeros() }
    }

    pub fn new(r: Matrix3<f64>, t: Vector3<f64>) -> Pose {
        Pose { r, t }
    }

    /// Rotation from an axis-angle vector (radians), then translation.
    pub fn from_axis_angle(axis_angle: Vector3<f64>, t: Vector3<f64>) -> Pose {
        Pose { r: *Rotation3::new(axis_angle).matrix(), t }
    }

    pub fn apply(&self, p: &Vector3<f64>) -> Vector3<f64> {
        self.r * p + self.t
    }

    pub fn apply_f32(&self, p: &Vector3<f32>) -> Vector3<f32> {
        (self.r * p.cast::<f64>() + self.t).cast::<f32>()
    }

    pub fn rotate_f32(&self, n: &Vector3<f32>) -> Vector3<f32> {
        (self.r * n.cast::<f64>()).cast::<f32>()
    }

    /// `self ∘ other`: apply `other` first.
    pub fn compose(&self, other: &Pose) -> Pose {
        Pose { r: self.r * other.r, t: self.r * other.t + self.t }
    }

    pub fn inverse(&self) -> Pose {
        let rt = self.r.transpose();
        Pose { r: rt, t: -(rt * self.t) }
    }

    /// Snaps `r` back onto SO(3) (drift after many compositions, or a noisy estimate).
    pub fn orthonormalized(&self) -> Pose {
        let q = UnitQuaternion::from_matrix(&self.r);
        Pose { r: *q.to_rotation_matrix().matrix(), t: self.t }
    }

    /// Angle of the relative rotation, radians in [0, π].
    pub fn rotation_angle_to(&self, other: &Pose) -> f64 {
        let rel = self.r.transpose() * other.r;
        ((rel.trace() - 1.0) * 0.5).clamp(-1.0, 1.0).acos()
    }

    /// From the row lists of a result file or server answer.
    pub fn from_rows(r: &[[f64; 3]; 3], t: &[f64; 3]) -> Pose {
        Pose::new(Matrix3::from_fn(|i, j| r[i][j]), Vector3::new(t[0], t[1], t[2]))
    }

    pub fn rotation_rows(&self) -> [[f64; 3]; 3] {
        let r = &self.r;
        [[r[(0, 0)], r[(0, 1)], r[(0, 2)]], [r[(1, 0)], r[(1, 1)], r[(1, 2)]], [r[(2, 0)], r[(2, 1)], r[(2, 2)]]]
    }

    pub fn translation_array(&self) -> [f64; 3] {
        [self.t.x, self.t.y, self.t.z]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inverse_composes_to_identity() {
        let p = Pose::from_axis_angle(Vector3::new(0.3, -1.2, 0.5), Vector3::new(10.0, -4.0, 700.0));
        let id = p.compose(&p.inverse());
        assert!((id.r - Matrix3::identity()).norm() < 1e-12);
        assert!(id.t.norm() < 1e-9);
        assert!((p.rotation_angle_to(&p)).abs() < 1e-6);
        let q = Pose::from_axis_angle(Vector3::new(0.0, 0.0, 0.5), Vector3::zeros());
        assert!((Pose::identity().rotation_angle_to(&q) - 0.5).abs() < 1e-9);
    }
}
