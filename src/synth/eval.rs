//! Timing summaries (per-stage times, mean, median) for the benches and the evaluation report.
//! Scoring itself is the BOP evaluation in [`crate::eval`].

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
