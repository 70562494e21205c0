//! The automatic mask generator's pure helpers, as segment-anything's `utils/amg.py` and
//! torchvision's NMS compute them: the prompt point grid, the stability score, the tight box of
//! a mask, and greedy box NMS.
use tch::{Kind, Tensor};

/// `n × n` points in [0, 1]², cell centres ((i + 0.5) / n), x varying fastest: SAM's
/// `build_point_grid`. Computed like numpy's `linspace(1/2n, 1 − 1/2n, n)` (start + i·step,
/// last = stop exactly) so the coordinates are the reference's to the last bit.
pub fn build_point_grid(n: usize) -> Vec<[f64; 2]> {
    let offset = 1.0 / (2 * n) as f64;
    let (start, stop) = (offset, 1.0 - offset);
    let side: Vec<f64> = (0..n)
        .map(|i| {
            if n > 1 && i == n - 1 {
                stop
            } else if n > 1 {
                i as f64 * ((stop - start) / (n - 1) as f64) + start
            } else {
                start
            }
        })
        .collect();
    side.iter().flat_map(|&y| side.iter().map(move |&x| [x, y])).collect()
}

/// Stability of each mask in `logits` (N×H×W): #(logit > t + offset) / #(logit > t − offset),
/// t = `mask_threshold`. f32 like the reference (0/0 gives NaN, which no threshold keeps).
pub fn stability_score(logits: &Tensor, mask_threshold: f64, offset: f64) -> Tensor {
    let count = |t: f64| logits.gt(t).sum_dim_intlist([-1, -2].as_slice(), false, Kind::Int64).to_kind(Kind::Float);
    count(mask_threshold + offset) / count(mask_threshold - offset)
}

/// The tight box of each mask (N×H×W bool) as N×4 int64 x0, y0, x1, y1 with the max
/// **inclusive** (the last column/row inside); an empty mask gives 0, 0, 0, 0 (SAM's
/// `batched_mask_to_box`).
pub fn masks_to_boxes(masks: &Tensor) -> Tensor {
    let (n, h, w) = masks.size3().expect("masks N×H×W");
    let dev = masks.device();
    if n == 0 {
        return Tensor::zeros([0, 4], (Kind::Int64, dev));
    }
    // Per row (column): does the mask touch it? Then the first and last index that does.
    let edges = |along: i64, len: i64| {
        let hit = masks.any_dim(along, false); // N×len
        let idx = Tensor::arange(len, (Kind::Int64, dev)).unsqueeze(0);
        let last = (&hit * &idx).amax([-1].as_slice(), false);
        let first = (&hit * &idx + hit.logical_not() * len).amin([-1].as_slice(), false);
        (first, last)
    };
    let (top, bottom) = edges(2, h);
    let (left, right) = edges(1, w);
    let empty = right.lt_tensor(&left).logical_or(&bottom.lt_tensor(&top));
    Tensor::stack(&[left, top, right, bottom], -1) * empty.logical_not().unsqueeze(-1)
}

/// Greedy non-maximum suppression as torchvision's `nms` (and `batched_nms` with one category):
/// boxes visited by descending score (stable for ties), a box is dropped when its IoU with a
/// kept one is **greater** than `iou_thresh`. Areas are (x1 − x0)·(y1 − y0) on the boxes as
/// given (SAM's inclusive boxes included), all in f32, the comparison in f64. Returns the kept
/// indices, best score first.
pub fn box_nms(boxes: &[[f32; 4]], scores: &[f32], iou_thresh: f64) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].partial_cmp(&scores[a]).unwrap_or(std::cmp::Ordering::Equal));
    let area = |b: &[f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let (bi, ai) = (&boxes[i], area(&boxes[i]));
        for &j in &order[k + 1..] {
            if suppressed[j] {
                continue;
            }
            let bj = &boxes[j];
            let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
            let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
            let inter = w * h;
            let iou = inter / (ai + area(bj) - inter);
            if iou as f64 > iou_thresh {
                suppressed[j] = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn point_grid_is_cell_centres_x_fastest() {
        assert_eq!(build_point_grid(1), vec![[0.5, 0.5]]);
        assert_eq!(build_point_grid(2), vec![[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]]);
        let g = build_point_grid(32);
        assert_eq!(g.len(), 1024);
        for (k, p) in g.iter().enumerate() {
            let (i, j) = (k % 32, k / 32);
            assert!((p[0] - (i as f64 + 0.5) / 32.0).abs() < 1e-12 && (p[1] - (j as f64 + 0.5) / 32.0).abs() < 1e-12, "{k}: {p:?}");
        }
    }

    fn t(rows: &[&[f32]]) -> Tensor {
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        Tensor::from_slice(&flat).view([1, rows.len() as i64, rows[0].len() as i64])
    }

    #[test]
    fn stability_counts_logits_beyond_plus_and_minus_offset() {
        // > +1: 3 (2.0, 1.5, 9); > −1: 3 + 0.5, 0.0, −0.5, 1.0 = 7 (−1.0 itself is not > −1).
        let logits = t(&[&[2.0, 1.5, 0.5, -3.0], &[0.0, -0.5, 9.0, 1.0], &[-1.0, -2.0, -1.5, -7.0]]);
        let s = stability_score(&logits, 0.0, 1.0);
        assert_eq!(s.size(), vec![1]);
        assert!((s.double_value(&[0]) - 3.0 / 7.0).abs() < 1e-7, "{s}");
        // Around threshold 1 with offset 0.5: > 1.5: 2.0, 9 = 2; > 0.5: 2.0, 1.5, 9, 1.0 = 4.
        assert!((stability_score(&logits, 1.0, 0.5).double_value(&[0]) - 0.5).abs() < 1e-7);
        // Nothing above −offset: 0/0.
        assert!(stability_score(&t(&[&[-5.0, -6.0]]), 0.0, 1.0).double_value(&[0]).is_nan());
    }

    fn mask(rows: &[&str]) -> Tensor {
        let flat: Vec<bool> = rows.iter().flat_map(|r| r.chars().map(|c| c == '#')).collect();
        Tensor::from_slice(&flat).view([1, rows.len() as i64, rows[0].len() as i64])
    }

    fn boxes_of(masks: &[Tensor]) -> Vec<i64> {
        Vec::<i64>::try_from(masks_to_boxes(&Tensor::cat(masks, 0)).flatten(0, -1)).unwrap()
    }

    #[test]
    fn mask_boxes_have_inclusive_max_and_empty_masks_give_zeros() {
        let a = mask(&["......", "..##..", "...#..", "......"]);
        let b = mask(&["#.....", "......", "......", ".....#"]);
        let one = mask(&["......", "......", "....#.", "......"]);
        let empty = mask(&["......", "......", "......", "......"]);
        assert_eq!(boxes_of(&[a, b, one, empty]), vec![2, 1, 3, 2, 0, 0, 5, 3, 4, 2, 4, 2, 0, 0, 0, 0]);
        assert_eq!(masks_to_boxes(&Tensor::zeros([0, 3, 3], (Kind::Bool, Device::Cpu))).size(), vec![0, 4]);
    }

    #[test]
    fn nms_drops_boxes_overlapping_a_better_one_by_more_than_the_threshold() {
        // 0: 10×10 at the origin (area 100). 1: shifted by 1 → inter 9·10 = 90, union 110,
        // IoU 0.818 > 0.7: dropped. 2: shifted by 2 → inter 80, union 120, IoU 0.667: kept.
        // 3: far away, best score. 4: equals 3 but lower score: IoU 1, dropped.
        let boxes = [[0.0, 0.0, 10.0, 10.0], [1.0, 0.0, 11.0, 10.0], [2.0, 0.0, 12.0, 10.0], [50.0, 50.0, 60.0, 60.0], [50.0, 50.0, 60.0, 60.0]];
        let scores = [0.9, 0.8, 0.7, 0.95, 0.5];
        assert_eq!(box_nms(&boxes, &scores, 0.7), vec![3, 0, 2]);
        // Suppression needs IoU strictly above: 2 vs 0 is 2/3 exactly in f32 terms, kept at 2/3.
        assert_eq!(box_nms(&boxes[..3], &scores[..3], (80.0f32 / 120.0) as f64), vec![0, 2]);
        assert_eq!(box_nms(&boxes[..3], &scores[..3], 0.6), vec![0]);
        // A suppressed box does not suppress others: 1 (dropped by 0) would drop 2 (IoU 0.818).
        assert_eq!(box_nms(&boxes[..3], &[0.9, 0.8, 0.7], 0.75), vec![0, 2]);
        // Equal scores: earlier index first (stable).
        assert_eq!(box_nms(&[[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 6.0, 6.0]], &[0.5, 0.5], 0.7), vec![0, 1]);
        // Zero-area boxes (a 1-pixel-wide inclusive box): IoU 0/0 = NaN never suppresses.
        assert_eq!(box_nms(&[[3.0, 3.0, 3.0, 9.0], [3.0, 3.0, 3.0, 9.0]], &[0.9, 0.8], 0.7), vec![0, 1]);
        assert!(box_nms(&[], &[], 0.7).is_empty());
    }
}
