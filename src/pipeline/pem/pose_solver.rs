//! The PEM's pose solvers: the coarse stage's hypothesise-and-score and the fine stage's soft
//! correspondence Kabsch with its pose score (sam6d-pipeline.md §5.8 steps 4–8, §5.10).
//!
//! They follow the reference's `compute_coarse_Rt`, `compute_fine_Rt` and
//! `weighted_procrustes` operation for operation (same soft assignment, clamps, searchsorted
//! and distance formula) so that the same inputs give the same pose. The only randomness, the
//! hypothesis uniforms, is a parameter: `hypothesis_uniforms` draws them from torch's RNG as
//! the reference does, and tests inject the reference's numbers (Q16).
//!
//! Conventions: `pts1` are the observed points, `pts2` the template points, `model_pts` the CAD
//! points, all in normalised units; the returned pose maps model → camera: p = R·x + t.
use tch::{Device, Kind, Tensor};

/// Weight threshold of the coarse stage's Kabsch (`WeightedProcrustes` default); its weights
/// are all 1, so it never bites.
const COARSE_WEIGHT_THRESH: f64 = 0.5;
/// Weight threshold of the fine stage's Kabsch.
const FINE_WEIGHT_THRESH: f64 = 0.0;
const PROCRUSTES_EPS: f64 = 1e-5;

/// Weighted Kabsch (src → ref): weights below `weight_thresh` zeroed, w/(Σw+1e-5), R = V diag(1,1,sign det(VUᵀ)) Uᵀ, t = c_r − R c_s. src, ref (B,N,3), weights (B,N) → (R (B,3,3), t (B,3)).
pub fn weighted_procrustes(src: &Tensor, ref_: &Tensor, weights: &Tensor, weight_thresh: f64, eps: f64) -> (Tensor, Tensor) {
    let b = src.size()[0];
    let w = weights.where_scalarother(&weights.lt(weight_thresh).logical_not(), 0.0);
    let w = (&w / (w.sum_dim_intlist(&[1i64][..], true, None::<Kind>) + eps)).unsqueeze(2); // (B,N,1)
    let c_s = (src * &w).sum_dim_intlist(&[1i64][..], true, None::<Kind>); // (B,1,3)
    let c_r = (ref_ * &w).sum_dim_intlist(&[1i64][..], true, None::<Kind>);
    let src_c = src - &c_s;
    let ref_c = ref_ - &c_r;
    let h = src_c.transpose(1, 2).matmul(&(&w * ref_c)); // (B,3,3)
    // torch.svd as the reference (returns V, not Vᵀ)
    let (u, _s, v) = h.svd(true, true);
    let ut = u.transpose(1, 2);
    // diag(1, 1, sign det(V Uᵀ)): reflections are turned into rotations
    let sign = v.matmul(&ut).det().sign(); // (B,)
    let ones = Tensor::ones([b, 2], (Kind::Float, src.device())).to_kind(sign.kind());
    let diag = Tensor::cat(&[ones, sign.unsqueeze(1)], 1).diag_embed(0, -2, -1);
    let r = v.matmul(&diag).matmul(&ut);
    let t = c_r.transpose(1, 2) - r.matmul(&c_s.transpose(1, 2));
    (r, t.squeeze_dim(2))
}

/// Soft assignment of a similarity matrix with background row/column 0 (§5.8 step 4):
/// S = softmax_rows ⊙ softmax_cols; label1 = per observed point (rows 1..) the argmax over all
/// columns, label2 = per template point (columns 1..) the argmax over all rows.
/// → (S (B,N1+1,N2+1), label1 (B,N1), label2 (B,N2)).
fn soft_assignment(atten: &Tensor) -> (Tensor, Tensor, Tensor) {
    let s = atten.softmax(2, None::<Kind>) * atten.softmax(1, None::<Kind>);
    let n1 = s.size()[1];
    let n2 = s.size()[2];
    let label1 = s.narrow(1, 1, n1 - 1).argmax(2, false);
    let label2 = s.narrow(2, 1, n2 - 1).argmax(1, false);
    (s, label1, label2)
}

/// The hypothesis uniforms of `compute_coarse_rt` from torch's global RNG: (B, n_proposal1·3)
/// in [0,1), drawn as the reference's single `torch.rand(B, n_proposal1*3)`. Seed with
/// `tch::manual_seed` first (the reference seeds 1 once at start-up; CPU and CUDA generators
/// give different streams, as in the reference).
pub fn hypothesis_uniforms(batch: i64, n_proposal1: i64, device: Device) -> Tensor {
    Tensor::rand([batch, n_proposal1 * 3], (Kind::Float, device))
}

/// Index of the nearest model point's distance for every point of `pts` (B,P,3) against
/// `model` (B,M,3): the reference's sqrt(pairwise_distance).min → (B,P).
///
/// Bit for bit the reference's value, computed in cache-sized chunks of the batch: the coarse
/// stage scores B·300 hypotheses against 1024 CAD points, a (B·300, 196, 1024) block (1 GB for
/// B = 4) that the literal form writes and rereads six times. Per chunk, −2xy + x² + y² in place
/// equals the reference's (x² − 2xy) + y² exactly (scaling by 2 and negating are exact, and
/// addition commutes), and the square root of the minimum is the minimum of the square roots
/// (sqrt is correctly rounded and monotonic).
fn nearest_model_distance(pts: &Tensor, model: &Tensor) -> Tensor {
    let (b, p, _) = pts.size3().expect("nearest_model_distance: pts must be (B,P,3)");
    let m = model.size()[1];
    if b == 0 {
        return Tensor::zeros([0, p], (Kind::Float, pts.device()));
    }
    let chunk = (NEAREST_CHUNK_ELEMENTS / (p * m).max(1)).clamp(1, b);
    let x2 = pts.square().sum_dim_intlist(&[-1i64][..], false, None::<Kind>).unsqueeze(-1);
    let y2 = model.square().sum_dim_intlist(&[-1i64][..], false, None::<Kind>).unsqueeze(-2);
    let parts: Vec<Tensor> = (0..b)
        .step_by(chunk as usize)
        .map(|start| {
            let len = chunk.min(b - start);
            let mut d = pts.narrow(0, start, len).matmul(&model.narrow(0, start, len).transpose(-1, -2));
            let _ = d.g_mul_scalar_(-2.0);
            let _ = d.g_add_(&x2.narrow(0, start, len));
            let _ = d.g_add_(&y2.narrow(0, start, len));
            let _ = d.clamp_min_(0.0);
            d.amin(&[2i64][..], false)
        })
        .collect();
    Tensor::cat(&parts, 0).sqrt()
}

/// Elements of one chunk of [`nearest_model_distance`]'s distance block (4 MiB of f32).
const NEAREST_CHUNK_ELEMENTS: i64 = 1 << 20;

/// compute_coarse_Rt: soft assignment, 1.5-power weights, hypotheses drawn with the given uniforms (B, 6000*3) — injected so tests can use the reference's random numbers — top 300 by residual, scored against the CAD points; → (init_R (B,3,3), init_t (B,3)).
pub fn compute_coarse_rt(atten: &Tensor, pts1: &Tensor, pts2: &Tensor, model_pts: &Tensor, uniforms: &Tensor, n_proposal1: i64, n_proposal2: i64) -> (Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    // the solver always runs in f32 (cumulative sums and SVDs in half precision would drift)
    let (atten, pts1, pts2, model_pts) = (&atten.to_kind(Kind::Float), &pts1.to_kind(Kind::Float), &pts2.to_kind(Kind::Float), &model_pts.to_kind(Kind::Float));
    let (b, n1, _) = pts1.size3().expect("compute_coarse_rt: pts1 must be (B,N1,3)");
    let n2 = pts2.size()[1];
    let (s, label1, label2) = soft_assignment(atten);
    let w1 = label1.gt(0).to_kind(Kind::Float); // (B,N1)
    let w2 = label2.gt(0).to_kind(Kind::Float); // (B,N2)
    let score = s.narrow(1, 1, n1).narrow(2, 1, n2) * w1.unsqueeze(2) * w2.unsqueeze(1);
    let score = score.reshape([b, n1 * n2]).pow_tensor_scalar(1.5);

    // sample hypotheses: inverse-CDF draws of 3 correspondences each
    let cumsum = score.cumsum(1, None::<Kind>);
    let cumsum = &cumsum / (cumsum.narrow(1, n1 * n2 - 1, 1) + 1e-8);
    let idx = uniforms.to_kind(Kind::Float).searchsorted(&cumsum, false, false, "left", None::<Tensor>);
    let idx1 = idx.floor_divide_scalar(n2).clamp_max(n1 - 1).unsqueeze(2).expand([b, n_proposal1 * 3, 3], false);
    let idx2 = idx.remainder(n2).clamp_max(n2 - 1).unsqueeze(2).expand([b, n_proposal1 * 3, 3], false);
    let p1 = pts1.gather(1, &idx1, false).reshape([b * n_proposal1, 3, 3]);
    let p2 = pts2.gather(1, &idx2, false).reshape([b * n_proposal1, 3, 3]);
    let unit = Tensor::ones([b * n_proposal1, 3], (Kind::Float, pts1.device()));
    let (rs, ts) = weighted_procrustes(&p2, &p1, &unit, COARSE_WEIGHT_THRESH, PROCRUSTES_EPS);
    let rs = rs.reshape([b, n_proposal1, 3, 3]);
    let ts = ts.reshape([b, n_proposal1, 1, 3]);

    // keep the hypotheses whose own 3 correspondences fit best
    let p1 = p1.reshape([b, n_proposal1, 3, 3]);
    let p2 = p2.reshape([b, n_proposal1, 3, 3]);
    let residual = ((p1 - &ts).matmul(&rs) - p2).norm_scalaropt_dim(2, &[3i64][..], false).mean_dim(&[2i64][..], false, None::<Kind>);
    let (_, keep) = residual.topk(n_proposal2, 1, false, true);
    let rs = rs.gather(1, &keep.view([b, n_proposal2, 1, 1]).expand([b, n_proposal2, 3, 3], false), false);
    let ts = ts.gather(1, &keep.view([b, n_proposal2, 1, 1]).expand([b, n_proposal2, 1, 3], false), false);

    // score each against the CAD points: observed points in the model frame, nearest distance
    let model = model_pts.unsqueeze(1).expand([b, n_proposal2, model_pts.size()[1], 3], false).reshape([b * n_proposal2, -1, 3]);
    let moved = (pts1.unsqueeze(1) - &ts).matmul(&rs).reshape([b * n_proposal2, n1, 3]);
    let dis = nearest_model_distance(&moved, &model).reshape([b, n_proposal2, n1]);
    let w1 = w1.unsqueeze(1);
    let scores = w1.sum_dim_intlist(&[2i64][..], false, None::<Kind>) / ((dis * &w1).sum_dim_intlist(&[2i64][..], false, None::<Kind>) + 1e-8);
    let best = scores.argmax(1, false);
    let r = rs.gather(1, &best.view([b, 1, 1, 1]).expand([b, 1, 3, 3], false), false).squeeze_dim(1);
    let t = ts.gather(1, &best.view([b, 1, 1, 1]).expand([b, 1, 1, 3], false), false).reshape([b, 3]);
    (r, t)
}

/// compute_fine_Rt: → (R, t, pose_score (B,)) with dis_thres 0.15.
pub fn compute_fine_rt(atten: &Tensor, pts1: &Tensor, pts2: &Tensor, model_pts: &Tensor, dis_thres: f64) -> (Tensor, Tensor, Tensor) {
    let _guard = tch::no_grad_guard();
    let (atten, pts1, pts2, model_pts) = (&atten.to_kind(Kind::Float), &pts1.to_kind(Kind::Float), &pts2.to_kind(Kind::Float), &model_pts.to_kind(Kind::Float));
    let (_, n1, _) = pts1.size3().expect("compute_fine_rt: pts1 must be (B,N1,3)");
    let n2 = pts2.size()[1];
    let (s, label1, label2) = soft_assignment(atten);
    let mask1 = label1.gt(0).to_kind(Kind::Float);
    let m = s.narrow(1, 1, n1).narrow(2, 1, n2) * mask1.unsqueeze(2) * label2.gt(0).to_kind(Kind::Float).unsqueeze(1);
    // soft correspondence of every observed point among the template points
    let row_sum = m.sum_dim_intlist(&[2i64][..], true, None::<Kind>);
    let pred_pts = (&m / (&row_sum + 1e-6)).matmul(pts2);
    let (r, t) = weighted_procrustes(&pred_pts, pts1, &row_sum.squeeze_dim(2), FINE_WEIGHT_THRESH, PROCRUSTES_EPS);

    // pose score: share of (non-background) observed points near the CAD surface
    let moved = (pts1 - t.unsqueeze(1)).matmul(&r);
    let dis = nearest_model_distance(&moved, model_pts);
    let near = dis.lt(dis_thres).to_kind(Kind::Float);
    let score = (near * &mask1).sum_dim_intlist(&[1i64][..], false, None::<Kind>) / (mask1.sum_dim_intlist(&[1i64][..], false, None::<Kind>) + 1e-8);
    let score = score * mask1.mean_dim(&[1i64][..], false, None::<Kind>);
    (r, t, score)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_nearest_distance_is_the_literal_one_bit_for_bit() {
        tch::manual_seed(3);
        let opts = (Kind::Float, tch::Device::Cpu);
        // 50·196·1024 elements: several chunks, the last one shorter.
        let pts = Tensor::randn([50, 196, 3], opts);
        let model = Tensor::randn([50, 1024, 3], opts) * 0.7;
        let literal = super::super::point_ops::pairwise_sq_distance(&pts, &model).sqrt().amin(&[2i64][..], false);
        let chunked = nearest_model_distance(&pts, &model);
        assert_eq!(chunked.size(), [50, 196]);
        assert_eq!((chunked - literal).abs().max().double_value(&[]), 0.0);
    }

    #[test]
    fn procrustes_recovers_a_rigid_motion() {
        let src = Tensor::from_slice(&[0f32, 0., 0., 1., 0., 0., 0., 2., 0., 0., 0., 3., 1., 1., 1.]).view([1, 5, 3]);
        // 90° about z, then shift
        let r_true = Tensor::from_slice(&[0f32, -1., 0., 1., 0., 0., 0., 0., 1.]).view([1, 3, 3]);
        let t_true = Tensor::from_slice(&[0.5f32, -1., 2.]).view([1, 1, 3]);
        let dst = src.matmul(&r_true.transpose(1, 2)) + &t_true;
        let (r, t) = weighted_procrustes(&src, &dst, &Tensor::ones([1, 5], (Kind::Float, Device::Cpu)), 0.0, 1e-5);
        assert!((r - r_true).abs().max().double_value(&[]) < 1e-4);
        assert!((t - t_true.view([1, 3])).abs().max().double_value(&[]) < 1e-3);
    }
}
