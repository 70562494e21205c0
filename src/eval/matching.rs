//! BOP's greedy matching of estimates to ground-truth instances, for one image and one object
//! (BOP toolkit `pose_matching.match_poses`): estimates in order of decreasing score; each
//! takes, among the instances not matched yet, the one with the smallest error below the
//! threshold, if any. It runs once per threshold, so an estimate may match different instances
//! (or none) at different thresholds.

/// `errors[e][g]`: error of estimate e (estimates already sorted by decreasing score) against
/// instance g. Returns, per estimate, the instance it was matched to.
pub fn greedy_match(errors: &[Vec<f64>], threshold: f64) -> Vec<Option<usize>> {
    let n_gt = errors.first().map_or(0, Vec::len);
    let mut taken = vec![false; n_gt];
    errors
        .iter()
        .map(|row| {
            let mut best: Option<(usize, f64)> = None;
            for (g, &e) in row.iter().enumerate() {
                // Strictly below the threshold (BOP: error < th), and the smallest so far.
                if !taken[g] && e < threshold && best.is_none_or(|(_, b)| e < b) {
                    best = Some((g, e));
                }
            }
            best.map(|(g, _)| {
                taken[g] = true;
                g
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_instances_three_estimates() {
        // Estimates sorted by score. Errors (mm) against GT 0 and GT 1:
        //   e0 (score .9): 12, 30   → takes GT 0 (smallest below the threshold)
        //   e1 (score .8):  3, 25   → GT 0 is taken although e1 fits it better: takes GT 1
        //   e2 (score .7):  1,  2   → nothing left: unmatched
        let errors = vec![vec![12.0, 30.0], vec![3.0, 25.0], vec![1.0, 2.0]];
        assert_eq!(greedy_match(&errors, 50.0), vec![Some(0), Some(1), None]);
        // Threshold 20: e0 still takes GT 0; e1's 25 against GT 1 is too large; e2 takes GT 1.
        assert_eq!(greedy_match(&errors, 20.0), vec![Some(0), None, Some(1)]);
        // Threshold 10: e0 matches nothing; e1 takes GT 0; e2 takes GT 1.
        assert_eq!(greedy_match(&errors, 10.0), vec![None, Some(0), Some(1)]);
        // Strict: an error equal to the threshold is not a match.
        assert_eq!(greedy_match(&[vec![5.0]], 5.0), vec![None]);
        assert_eq!(greedy_match(&[], 5.0), Vec::<Option<usize>>::new());
    }
}
