//! Point-cloud operations of the PEM (farthest point sampling, ball query, gather/group, k-NN)
//! as plain tch tensor ops that run on any device.
//!
//! The reference runs these as pointnet2 CUDA kernels. Their exact semantics matter for parity
//! (sam6d-pipeline.md §5.11): FPS starts at index 0 and breaks exact ties the way the kernel's
//! thread layout and block reduction do. Ties are common, because observed and template points
//! are drawn with replacement and so contain duplicates, and which duplicate is picked matters
//! through the fine stage's off-by-one gather (Q13). Distances are computed with the kernels'
//! expression `(dx*dx + dy*dy) + dz*dz` in f32, one elementwise op at a time (no reordering).
use tch::{Device, Kind, Tensor};

/// Threads per block the pointnet2 kernels launch for `work_size` items (`opt_n_threads` in
/// cuda_utils.h): the largest power of two ≤ work_size, capped at 512.
pub fn opt_n_threads(work_size: i64) -> i64 {
    let pow_2 = ((work_size.max(1) as f64).ln() / 2f64.ln()) as u32;
    (1i64 << pow_2.min(62)).clamp(1, 512)
}

fn bit_reverse(mut t: i64, bits: u32) -> i64 {
    let mut r = 0;
    for _ in 0..bits {
        r = (r << 1) | (t & 1);
        t >>= 1;
    }
    r
}

/// Preference key of every point index for FPS ties (smaller wins). The kernel runs T threads;
/// thread t = k mod T scans k = t, t+T, … and keeps its first maximum; the tree reduction keeps
/// the lower slot unless the upper one is strictly larger, so among tied threads the one with
/// the smallest bit-reversed id wins. Key = bitrev(t)·rows + k div T orders candidates exactly
/// that way, and every key is distinct, so one argmin over the tied points gives the kernel's
/// pick.
fn fps_tie_keys(n: i64, device: Device) -> Tensor {
    let threads = opt_n_threads(n);
    let bits = threads.trailing_zeros();
    let rows = (n + threads - 1) / threads;
    let keys: Vec<i64> = (0..n).map(|k| bit_reverse(k % threads, bits) * rows + k / threads).collect();
    Tensor::from_slice(&keys).to_device(device)
}

/// Squared distances `(dx*dx + dy*dy) + dz*dz` between every point of `a` (…,P,3) and `b`
/// broadcast against it, in the kernels' f32 evaluation order.
fn sq_dist(a: &Tensor, b: &Tensor) -> Tensor {
    let d = |i: i64| {
        let x = a.select(-1, i) - b.select(-1, i);
        &x * &x
    };
    (d(0) + d(1)) + d(2)
}

/// Farthest point sampling with the reference's start index and tie rule. xyz (B,N,3) f32 → (B,npoint) i64.
pub fn furthest_point_sample(xyz: &Tensor, npoint: i64) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (b, n, _) = xyz.size3().expect("furthest_point_sample: xyz must be (B,N,3)");
    let device = xyz.device();
    let xyz = xyz.to_kind(Kind::Float).contiguous();
    let out = Tensor::zeros([b, npoint.max(0)], (Kind::Int64, device));
    if npoint <= 1 || n == 0 {
        return out;
    }
    let keys = fps_tie_keys(n, device).unsqueeze(0).expand([b, n], false);
    let no_key = Tensor::full([1, 1], i64::MAX, (Kind::Int64, device));
    // contiguous coordinate columns: each step is then a few dense passes over N
    let cols: Vec<Tensor> = (0..3).map(|i| xyz.select(2, i).contiguous()).collect();
    // min squared distance to the chosen set, initialised as the kernel's temp buffer (1e10)
    let mut temp = Tensor::full([b, n], 1e10, (Kind::Float, device));
    let mut old = Tensor::zeros([b, 1], (Kind::Int64, device));
    let mut picks = Vec::with_capacity(npoint as usize);
    picks.push(old.shallow_clone());
    for _ in 1..npoint {
        let sq = |c: &Tensor| {
            let x = c - c.gather(1, &old, false);
            &x * &x
        };
        let d = (sq(&cols[0]) + sq(&cols[1])) + sq(&cols[2]);
        temp = temp.minimum(&d);
        let best = temp.amax([1], true);
        let tied = temp.eq_tensor(&best);
        old = keys.where_self(&tied, &no_key).argmin(1, true);
        picks.push(old.shallow_clone());
    }
    Tensor::cat(&picks, 1)
}

/// For each of new_xyz (B,M,3), up to nsample indices of xyz (B,N,3) within radius (strict), index order, unfilled = first hit → (B,M,nsample) i64.
pub fn ball_query(radius: f64, nsample: i64, xyz: &Tensor, new_xyz: &Tensor) -> Tensor {
    let _guard = tch::no_grad_guard();
    let (b, n, _) = xyz.size3().expect("ball_query: xyz must be (B,N,3)");
    let (_, m, _) = new_xyz.size3().expect("ball_query: new_xyz must be (B,M,3)");
    let device = xyz.device();
    if n == 0 || nsample <= 0 || m == 0 {
        return Tensor::zeros([b, m, nsample.max(0)], (Kind::Int64, device));
    }
    // the kernel squares the radius in f32
    let r = radius as f32;
    let r2 = f64::from(r * r);
    let xyz = xyz.to_kind(Kind::Float).unsqueeze(1); // (B,1,N,3)
    let new_xyz = new_xyz.to_kind(Kind::Float);
    let index = Tensor::arange(n, (Kind::Int64, device)).view([1, 1, n]);
    let k = nsample.min(n);
    // bound the (B,chunk,N) distance block to ~32M elements
    let chunk = (32 * 1024 * 1024 / (b * n).max(1)).clamp(1, m);
    let mut parts = Vec::new();
    for start in (0..m).step_by(chunk as usize) {
        let len = chunk.min(m - start);
        let centres = new_xyz.narrow(1, start, len).unsqueeze(2); // (B,len,1,3)
        let hit = sq_dist(&centres, &xyz).lt(r2); // (B,len,N)
        // hits keep their index, misses sort after every hit
        let key = index.where_scalarother(&hit, n);
        let (mut first, _) = key.topk(k, 2, false, true);
        if k < nsample {
            first = Tensor::cat(&[first, Tensor::full([b, len, nsample - k], n, (Kind::Int64, device))], 2);
        }
        let found = first.lt(n);
        // unfilled slots repeat the first hit; all zeros when there is none
        let first_hit = first.narrow(2, 0, 1).where_scalarother(&found.narrow(2, 0, 1), 0);
        parts.push(first.where_self(&found, &first_hit.expand_as(&first)));
    }
    Tensor::cat(&parts, 1)
}

/// features (B,C,N), idx (B,M) → (B,C,M)
pub fn gather(features: &Tensor, idx: &Tensor) -> Tensor {
    let (b, c, _) = features.size3().expect("gather: features must be (B,C,N)");
    let m = idx.size()[1];
    features.gather(2, &idx.to_kind(Kind::Int64).unsqueeze(1).expand([b, c, m], false), false)
}

/// features (B,C,N), idx (B,M,S) → (B,C,M,S)
pub fn group(features: &Tensor, idx: &Tensor) -> Tensor {
    let (b, c, _) = features.size3().expect("group: features must be (B,C,N)");
    let (_, m, s) = idx.size3().expect("group: idx must be (B,M,S)");
    let flat = idx.to_kind(Kind::Int64).reshape([b, 1, m * s]).expand([b, c, m * s], false);
    features.gather(2, &flat, false).reshape([b, c, m, s])
}

/// Squared distances between two point sets as the reference's `pairwise_distance` computes
/// them (x² − 2xy + y², clamped at 0): x (…,N,3), y (…,M,3) → (…,N,M). The pose scores and
/// the geometric embedding use this form, so parity needs it rather than a direct difference.
pub fn pairwise_sq_distance(x: &Tensor, y: &Tensor) -> Tensor {
    let xy = x.matmul(&y.transpose(-1, -2));
    let x2 = x.square().sum_dim_intlist(&[-1i64][..], false, None::<Kind>).unsqueeze(-1);
    let y2 = y.square().sum_dim_intlist(&[-1i64][..], false, None::<Kind>).unsqueeze(-2);
    ((x2 - xy * 2.0) + y2).clamp_min(0.0)
}

/// k nearest neighbours (distances and indices) of each query among points, for the pose scores / geo embedding: query (B,M,3), points (B,N,3) → (dist (B,M,k), idx (B,M,k))
///
/// Distances are Euclidean, from `pairwise_sq_distance`, ascending.
pub fn knn(query: &Tensor, points: &Tensor, k: i64) -> (Tensor, Tensor) {
    let (_, m, _) = query.size3().expect("knn: query must be (B,M,3)");
    let (b, n, _) = points.size3().expect("knn: points must be (B,N,3)");
    // bound the (B,chunk,N) distance block to ~32M elements
    let chunk = (32 * 1024 * 1024 / (b * n).max(1)).clamp(1, m.max(1));
    let (mut dists, mut idxs) = (Vec::new(), Vec::new());
    for start in (0..m).step_by(chunk as usize) {
        let len = chunk.min(m - start);
        let d = pairwise_sq_distance(&query.narrow(1, start, len), points).sqrt();
        let (v, i) = d.topk(k, 2, false, true);
        dists.push(v);
        idxs.push(i);
    }
    if dists.is_empty() {
        let dev = query.device();
        return (Tensor::zeros([b, 0, k], (Kind::Float, dev)), Tensor::zeros([b, 0, k], (Kind::Int64, dev)));
    }
    (Tensor::cat(&dists, 1), Tensor::cat(&idxs, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal re-enactment of the CUDA kernel: T threads each scanning its stride, then the
    /// shared-memory tree reduction.
    fn fps_kernel(points: &[[f32; 3]], m: usize) -> Vec<i64> {
        let n = points.len();
        let t = opt_n_threads(n as i64) as usize;
        let mut temp = vec![1e10f32; n];
        let mut out = vec![0i64; m];
        let mut old = 0usize;
        for slot in out.iter_mut().skip(1) {
            let p = points[old];
            let mut dists = vec![-1f32; t];
            let mut di = vec![0usize; t];
            for tid in 0..t {
                let (mut best, mut besti) = (-1f32, 0usize);
                for k in (tid..n).step_by(t) {
                    let q = points[k];
                    let d = (q[0] - p[0]) * (q[0] - p[0]) + (q[1] - p[1]) * (q[1] - p[1]) + (q[2] - p[2]) * (q[2] - p[2]);
                    let d2 = d.min(temp[k]);
                    temp[k] = d2;
                    if d2 > best {
                        best = d2;
                        besti = k;
                    }
                }
                dists[tid] = best;
                di[tid] = besti;
            }
            let mut s = t / 2;
            while s >= 1 {
                for i in 0..s {
                    let (v1, v2) = (dists[i], dists[i + s]);
                    di[i] = if v2 > v1 { di[i + s] } else { di[i] };
                    dists[i] = v1.max(v2);
                }
                s /= 2;
            }
            old = di[0];
            *slot = old as i64;
        }
        out
    }

    fn grid_points(n: usize, seed: u64) -> Vec<[f32; 3]> {
        // coarse grid values and repeats: many exact ties
        let mut s = seed;
        let mut next = || {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 33) % 5) as f32 * 0.25
        };
        let base: Vec<[f32; 3]> = (0..n / 3 + 1).map(|_| [next(), next(), next()]).collect();
        (0..n).map(|i| base[i % base.len()]).collect()
    }

    #[test]
    fn thread_counts_follow_the_kernel() {
        assert_eq!(opt_n_threads(1), 1);
        assert_eq!(opt_n_threads(37), 32);
        assert_eq!(opt_n_threads(64), 64);
        assert_eq!(opt_n_threads(511), 256);
        assert_eq!(opt_n_threads(512), 512);
        assert_eq!(opt_n_threads(210_000), 512);
    }

    #[test]
    fn fps_ties_match_the_kernel_reenactment() {
        for (n, m) in [(700usize, 40usize), (100, 30), (64, 40), (1100, 30), (513, 25), (37, 20), (2, 2)] {
            let pts = grid_points(n, n as u64);
            let flat: Vec<f32> = pts.iter().flatten().copied().collect();
            let xyz = Tensor::from_slice(&flat).view([1, n as i64, 3]);
            let got = Vec::<i64>::try_from(furthest_point_sample(&xyz, m as i64).view([-1])).unwrap();
            assert_eq!(got, fps_kernel(&pts, m), "n = {n}");
        }
    }

    #[test]
    fn ball_query_scans_in_order_and_fills_with_the_first_hit() {
        let pts = Tensor::from_slice(&[0f32, 0., 0., 5., 0., 0., 0.1, 0., 0., 0.2, 0., 0., 0.05, 0., 0.]).view([1, 5, 3]);
        let centres = Tensor::from_slice(&[0.1f32, 0., 0., 9., 9., 9.]).view([1, 2, 3]);
        let idx = Vec::<i64>::try_from(ball_query(0.1, 4, &pts, &centres).view([-1])).unwrap();
        // centre 0: point 0 lies exactly at r (excluded: strict), expectation in f32 arithmetic
        let r2 = 0.1f32 * 0.1f32;
        let mut expect0: Vec<i64> = Vec::new();
        for (k, x) in [0f32, 5., 0.1, 0.2, 0.05].iter().enumerate() {
            let d = (0.1f32 - x) * (0.1f32 - x);
            if d < r2 && expect0.len() < 4 {
                expect0.push(k as i64);
            }
        }
        while expect0.len() < 4 {
            expect0.push(expect0[0]);
        }
        assert_eq!(&idx[..4], &expect0[..]);
        assert_eq!(&idx[4..], &[0, 0, 0, 0]);
    }

    #[test]
    fn knn_and_group_agree_with_direct_computation() {
        let pts = Tensor::from_slice(&[0f32, 0., 0., 1., 0., 0., 0., 2., 0., 0., 0., 3.]).view([1, 4, 3]);
        let (d, i) = knn(&pts, &pts, 2);
        assert_eq!(Vec::<i64>::try_from(i.select(2, 0).view([-1])).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(Vec::<i64>::try_from(i.select(2, 1).view([-1])).unwrap(), vec![1, 0, 0, 0]);
        assert!((d.select(2, 1).double_value(&[0, 3]) - 3.0).abs() < 1e-6);
        let feats = pts.transpose(1, 2);
        let g = group(&feats, &i);
        assert_eq!(g.size(), vec![1, 3, 4, 2]);
        assert_eq!(g.double_value(&[0, 1, 2, 0]), 2.0);
        assert_eq!(gather(&feats, &i.select(2, 1)).double_value(&[0, 2, 3]), 0.0);
    }
}
