//! Scoring estimates against a synthetic frame's ground truth, and timing summaries, for the
//! benches.
use crate::geometry::metrics::PoseErrors;
use crate::geometry::{Pose, Vec3};
use crate::io::Camera;

/// The outcome for one object in one frame.
#[derive(Clone, Debug, PartialEq)]
pub struct Matched {
    /// One entry per ground-truth instance, in `gt` order; missed ones are infinite.
    pub errors: Vec<PoseErrors>,
    /// Estimates left unmatched.
    pub false_positives: usize,
    /// Per estimate, in `estimates` order: whether it was matched to an instance.
    pub matched: Vec<bool>,
}

/// Greedy one-to-one matching by MSSD: the pair with the smallest error is matched first, then
/// the next among the remaining estimates and instances, and so on. Pairs with MSSD ≥ 0.5 ×
/// diameter (the largest BOP threshold, beyond which a match cannot count) are never matched,
/// so a far-off estimate is a false positive and its instance is missed.
pub fn match_estimates(estimates: &[Pose], gt: &[Pose], pts: &[Vec3], cam: &Camera, diameter: f64) -> Matched {
    let mut pairs: Vec<(usize, usize, PoseErrors)> = Vec::new();
    for (e, est) in estimates.iter().enumerate() {
        for (g, truth) in gt.iter().enumerate() {
            let err = PoseErrors::compute(est, truth, pts, cam, diameter);
            if err.mssd < 0.5 * diameter {
                pairs.push((e, g, err));
            }
        }
    }
    pairs.sort_by(|a, b| a.2.mssd.total_cmp(&b.2.mssd));
    let mut errors = vec![PoseErrors::missed(diameter); gt.len()];
    let (mut est_used, mut gt_used) = (vec![false; estimates.len()], vec![false; gt.len()]);
    for (e, g, err) in pairs {
        if !est_used[e] && !gt_used[g] {
            est_used[e] = true;
            gt_used[g] = true;
            errors[g] = err;
        }
    }
    Matched { errors, false_positives: est_used.iter().filter(|u| !**u).count(), matched: est_used }
}

/// Milliseconds per named stage, in order of first appearance.
#[derive(Clone, Debug, Default)]
pub struct StageTimes {
    stages: Vec<(String, Vec<f64>)>,
}

impl StageTimes {
    pub fn add(&mut self, stage: &str, ms: f64) {
        match self.stages.iter_mut().find(|(s, _)| s == stage) {
            Some((_, v)) => v.push(ms),
            None => self.stages.push((stage.to_string(), vec![ms])),
        }
    }

    /// (stage, mean, median, count) per stage.
    pub fn summary(&self) -> Vec<(String, f64, f64, usize)> {
        self.stages.iter().map(|(s, v)| (s.clone(), mean(v), median(v), v.len())).collect()
    }
}

pub fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        0.5 * (s[m - 1] + s[m])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::{Matrix3, Vector3};

    #[test]
    fn greedy_matching_pairs_nearest_and_counts_the_rest() {
        let cam = super::super::KINECT;
        let pts = vec![Vec3::new(50.0, 0.0, 0.0), Vec3::new(-50.0, 0.0, 0.0), Vec3::new(0.0, 50.0, 0.0)];
        let at = |x: f64| Pose::new(Matrix3::identity(), Vector3::new(x, 0.0, 800.0));
        let gt = [at(0.0), at(200.0), at(-300.0)];
        // Estimate 0 is 3 mm from GT 0 and 197 from GT 1; estimate 1 is 10 mm from GT 1;
        // estimate 2 is far from everything (diameter 100: gate 50 mm).
        let est = [at(3.0), at(210.0), at(600.0)];
        let m = match_estimates(&est, &gt, &pts, &cam, 100.0);
        assert_eq!(m.false_positives, 1);
        assert!((m.errors[0].mssd - 3.0).abs() < 1e-9 && (m.errors[0].add - 3.0).abs() < 1e-9);
        assert!((m.errors[1].mssd - 10.0).abs() < 1e-9);
        assert!(m.errors[2].mssd.is_infinite());
        // Two estimates for one instance: the closer wins, the other is a false positive.
        let m = match_estimates(&[at(8.0), at(2.0)], &gt[..1], &pts, &cam, 100.0);
        assert_eq!((m.false_positives, m.errors[0].mssd), (1, 2.0));
    }

    #[test]
    fn stage_summary() {
        let mut t = StageTimes::default();
        for (s, ms) in [("a", 1.0), ("b", 5.0), ("a", 3.0), ("a", 10.0)] {
            t.add(s, ms);
        }
        let s = t.summary();
        assert_eq!(s[0], ("a".to_string(), 14.0 / 3.0, 3.0, 3));
        assert_eq!(s[1], ("b".to_string(), 5.0, 5.0, 1));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
