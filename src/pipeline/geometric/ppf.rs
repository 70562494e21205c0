//! Point-pair-feature voting (Drost et al. 2010) with Vidal et al. 2018's refinements that pay
//! off on real sensors: normals from a neighbourhood rather than a voxel, votes also cast into
//! the neighbouring bin of any feature component that lies near a bin edge, and one vote per
//! (model pair, scene pair) even when both bins hit.
//!
//! F(p1, p2) = (‖d‖, ∠(n1, d), ∠(n2, d), ∠(n1, n2)), d = p2 − p1. The model table maps a
//! quantised F to the model pairs having it; each scene reference point votes in a (model point,
//! rotation angle α about its normal) accumulator, whose peak is a full 6D pose.
use crate::geometry::{cloud::Cloud, grid::Grid, Pose, Vec3};
use nalgebra::{Matrix3, Vector3};
use std::f32::consts::PI;

/// Angle bins over [0, π] for the three angles of a feature (12°, as Drost).
const ANGLE_BINS: usize = 15;
/// Bins of the in-plane rotation α over [0, 2π).
pub const ALPHA_BINS: usize = 30;
const COS_LUT: usize = 4096;


/// A model point's local frame: `rot` maps its normal to +x; `x_local = rot · (x − origin)`.
#[derive(Clone, Copy)]
struct RefFrame {
    rot: Matrix3<f32>,
    origin: Vec3,
}

impl RefFrame {
    fn new(p: &Vec3, n: &Vec3) -> RefFrame {
        // Rotation taking n to +x about the axis n × x.
        let x = Vec3::x();
        let axis = n.cross(&x);
        let s = axis.norm();
        let c = n.dot(&x);
        let rot = if s < 1e-6 {
            if c > 0.0 { Matrix3::identity() } else { Matrix3::from_diagonal(&Vec3::new(-1.0, -1.0, 1.0)) }
        } else {
            *nalgebra::Rotation3::from_axis_angle(&nalgebra::Unit::new_normalize(axis), s.atan2(c)).matrix()
        };
        RefFrame { rot, origin: *p }
    }

    /// Angle of the local point about +x, measured in the y–z plane.
    #[inline]
    fn alpha(&self, q: &Vec3) -> f32 {
        let v = self.rot * (q - self.origin);
        fast_atan2(v.z, v.y)
    }
}

/// atan2 with ≤ 2.1e-4 rad error: exactness is wasted on 12° bins, the call is in the hot loop.
#[inline]
fn fast_atan2(y: f32, x: f32) -> f32 {
    let (ax, ay) = (x.abs(), y.abs());
    if ax == 0.0 && ay == 0.0 {
        return 0.0;
    }
    let (a, swap) = if ay > ax { (ax / ay, true) } else { (ay / ax, false) };
    let s = a * a;
    let mut r = ((-0.046_496_47 * s + 0.159_314_22) * s - 0.327_622_76) * s * a + a;
    if swap {
        r = PI / 2.0 - r;
    }
    if x < 0.0 {
        r = PI - r;
    }
    if y < 0.0 { -r } else { r }
}

/// A quantised feature: the table key of its bins and, per component, the key offset to the
/// neighbouring bin when the value lies within `band` of that bin edge (Vidal's noise-tolerant
/// voting), else 0. Computed without branches: which side a value falls is a coin toss, and
/// mispredicted branches used to cost more than the arithmetic.
#[derive(Clone, Copy)]
struct Feature {
    key: usize,
    spread: [isize; 4],
}

/// Key strides of the four components (distance, then the three angles).
const STRIDES: [isize; 4] = [(ANGLE_BINS * ANGLE_BINS * ANGLE_BINS) as isize, (ANGLE_BINS * ANGLE_BINS) as isize, ANGLE_BINS as isize, 1];

pub struct PpfModel {
    pub cloud: Cloud,
    frames: Vec<RefFrame>,
    pub dist_step: f32,
    pub max_dist: f32,
    dist_bins: usize,
    /// CSR table: pairs with feature key k are `entries[offsets[k]..offsets[k+1]]`.
    offsets: Vec<u32>,
    entries: Vec<Entry>,
    /// cos → (angle bin, −1/0/+1 towards the neighbouring bin that also votes), avoiding acos
    /// in the hot loop.
    cos_lut: Vec<(u16, i8)>,
    bucket_cap: usize,
    /// Fraction of a bin at each edge within which the neighbouring bin also votes.
    band: f32,
}

/// One model pair in the table, packed into 32 bits for cache, pre-arranged so that its vote
/// costs one add and one shift: ALPHA_SUB × (the first cell of its reference point's row in
/// the voting accumulator) + ALPHA_UNITS − its angle α in 1/ALPHA_SUB-bin units (1.5°, finer
/// than the 12° bins voted into). The voting accumulator has two turns of α bins per row, so
/// (entry + α_scene units) >> log2(ALPHA_SUB) is the cell of α_scene − α_model without a
/// wrap-around test; the turns are summed before the peaks are read.
#[derive(Clone, Copy, Default)]
struct Entry(u32);

/// Sub-steps of an α bin used for the stored angles.
const ALPHA_SUB: usize = 8;
/// log2(ALPHA_SUB): votes divide by shifting.
const ALPHA_SHIFT: u32 = ALPHA_SUB.trailing_zeros();
const ALPHA_UNITS: u32 = (ALPHA_BINS * ALPHA_SUB) as u32;
/// Cells per model point in the voting accumulator: two turns of α bins (see [`Entry`]).
const VOTE_ROW: usize = 2 * ALPHA_BINS;

impl Entry {
    fn new(model_ref: usize, alpha: f32) -> Entry {
        Entry((ALPHA_SUB * model_ref * VOTE_ROW) as u32 + ALPHA_UNITS - alpha_units(alpha))
    }
}

/// α in [−π, π] → integer units in [0, ALPHA_UNITS).
#[inline]
fn alpha_units(alpha: f32) -> u32 {
    let a = alpha.rem_euclid(2.0 * PI) * (ALPHA_UNITS as f32 / (2.0 * PI));
    (a as u32).min(ALPHA_UNITS - 1)
}

fn build_cos_lut(band: f32) -> Vec<(u16, i8)> {
    (0..=COS_LUT)
        .map(|i| {
            let c = -1.0 + 2.0 * i as f32 / COS_LUT as f32;
            let a = c.clamp(-1.0, 1.0).acos() / PI * ANGLE_BINS as f32;
            let bin = (a as usize).min(ANGLE_BINS - 1);
            (bin as u16, spread_step(a - bin as f32, band, bin, ANGLE_BINS))
        })
        .collect()
}

/// −1, 0 or +1: the neighbouring bin that also votes for a value at `frac` of bin `bin` of
/// `bins`.
#[inline]
fn spread_step(frac: f32, band: f32, bin: usize, bins: usize) -> i8 {
    (frac > 1.0 - band && bin + 1 < bins) as i8 - (frac < band && bin > 0) as i8
}

/// The voting accumulator (model point × two turns of α bins, see `Entry`; left zeroed after
/// each vote), its turns summed (model point × α bin) and the neighbour list: reused across
/// references to avoid allocating in the hot loop.
pub struct VoteScratch {
    acc: Vec<u32>,
    folded: Vec<u32>,
    neighbours: Vec<u32>,
}

/// A scene reference point's hypotheses: model point, rotation angle, votes.
#[derive(Clone, Copy, Debug)]
pub struct Hypothesis {
    pub pose: Pose,
    pub votes: f32,
}

impl PpfModel {
    /// `cloud`: model points (mm) with outward normals, already down-sampled to `dist_step`.
    /// Buckets larger than `cap_rel` × the mean are sampled when voting; `band` is the
    /// fraction of a bin at each edge where the neighbouring bin votes too.
    pub fn build(cloud: Cloud, dist_step: f32, max_dist: f32, cap_rel: f32, band: f32) -> PpfModel {
        let frames: Vec<RefFrame> = cloud.points.iter().zip(&cloud.normals).map(|(p, n)| RefFrame::new(p, n)).collect();
        let dist_bins = (max_dist / dist_step).ceil() as usize + 1;
        let mut model = PpfModel {
            cloud,
            frames,
            dist_step,
            max_dist,
            dist_bins,
            offsets: Vec::new(),
            entries: Vec::new(),
            cos_lut: build_cos_lut(band),
            bucket_cap: usize::MAX,
            band,
        };
        let n = model.cloud.len();
        let nkeys = dist_bins * ANGLE_BINS * ANGLE_BINS * ANGLE_BINS;
        // Two passes (count, then fill) keep the table in one flat allocation.
        let mut keyed: Vec<(u32, Entry)> = Vec::with_capacity(n * n.saturating_sub(1));
        for i in 0..n {
            for j in 0..n {
                if i == j {
                    continue;
                }
                if let Some(f) = model.quantise(j, &model.cloud.points, &model.cloud.normals, &model.cloud.points[i], &model.cloud.normals[i]) {
                    keyed.push((f.key as u32, Entry::new(i, model.frames[i].alpha(&model.cloud.points[j]))));
                }
            }
        }
        let mut offsets = vec![0u32; nkeys + 1];
        for (k, _) in &keyed {
            offsets[*k as usize + 1] += 1;
        }
        for k in 0..nkeys {
            offsets[k + 1] += offsets[k];
        }
        let mut fill = offsets.clone();
        let mut entries = vec![Entry::default(); keyed.len()];
        for (k, e) in keyed {
            entries[fill[k as usize] as usize] = e;
            fill[k as usize] += 1;
        }
        // Shuffle each bucket (deterministically) so any window of it is a random sample.
        let mut rng = crate::geometry::SplitMix64(0x5EED);
        for k in 0..nkeys {
            let (a, b) = (offsets[k] as usize, offsets[k + 1] as usize);
            for i in (a + 1..b).rev() {
                let j = a + (rng.next_u64() % (i - a + 1) as u64) as usize;
                entries.swap(i, j);
            }
        }
        model.offsets = offsets;
        model.entries = entries;
        let used = model.offsets.windows(2).filter(|w| w[1] > w[0]).count();
        let mean = model.entries.len() as f32 / used.max(1) as f32;
        model.bucket_cap = ((cap_rel * mean) as usize).max(1);
        tracing::debug!("ppf table: {} pairs in {used} buckets (mean {mean:.1}, sampled above {})", model.entries.len(), model.bucket_cap);
        model
    }

    pub fn len(&self) -> usize {
        self.cloud.len()
    }

    /// Model pairs in the table.
    pub fn pairs(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.cloud.is_empty()
    }

    /// Angle bin of a cosine and the step to its spread bin.
    #[inline]
    fn angle(&self, cos: f32) -> (usize, isize) {
        let idx = ((cos.clamp(-1.0, 1.0) + 1.0) * 0.5 * COS_LUT as f32 + 0.5) as usize;
        let (bin, step) = self.cos_lut[idx.min(COS_LUT)];
        (bin as usize, step as isize)
    }

    /// Quantised feature of the pair (reference p1/n1, point j of pts/nrm).
    #[inline]
    fn quantise(&self, j: usize, pts: &[Vec3], nrm: &[Vec3], p1: &Vec3, n1: &Vec3) -> Option<Feature> {
        let d = pts[j] - p1;
        let dist = d.norm();
        if dist < 1e-6 || dist > self.max_dist {
            return None;
        }
        let dn = d / dist;
        let n2 = &nrm[j];
        let df = dist / self.dist_step;
        let dbin = df as usize;
        if dbin >= self.dist_bins {
            return None;
        }
        let ds = spread_step(df - dbin as f32, self.band, dbin, self.dist_bins) as isize;
        let (a1, s1) = self.angle(n1.dot(&dn));
        let (a2, s2) = self.angle(n2.dot(&dn));
        let (a3, s3) = self.angle(n1.dot(n2));
        let key = ((dbin * ANGLE_BINS + a1) * ANGLE_BINS + a2) * ANGLE_BINS + a3;
        Some(Feature { key, spread: [ds * STRIDES[0], s1 * STRIDES[1], s2 * STRIDES[2], s3 * STRIDES[3]] })
    }

    /// Scratch space for [`PpfModel::vote`], one per thread.
    pub fn scratch(&self) -> VoteScratch {
        VoteScratch { acc: vec![0; self.len() * VOTE_ROW], folded: vec![0; self.len() * ALPHA_BINS], neighbours: Vec::new() }
    }

    /// Votes for one scene reference point against its neighbours; returns the best `peaks`
    /// poses. `grid` indexes `scene.points` with cells of about `max_dist`.
    pub fn vote(&self, scene: &Cloud, grid: &Grid, r: usize, scratch: &mut VoteScratch, peaks: usize) -> Vec<Hypothesis> {
        let VoteScratch { acc, folded, neighbours } = scratch;
        // cast_votes indexes without bounds checks: the accumulator must be this model's.
        assert_eq!(acc.len(), self.len() * VOTE_ROW, "scratch of another model");
        let (sp, sn) = (&scene.points[r], &scene.normals[r]);
        let frame = RefFrame::new(sp, sn);
        grid.within(&scene.points, sp, self.max_dist, neighbours);
        let alpha_scale = ALPHA_BINS as f32 / (2.0 * PI);
        let mut keys: [isize; 16] = [0; 16];
        for &j in neighbours.iter() {
            let j = j as usize;
            if j == r {
                continue;
            }
            let Some(f) = self.quantise(j, &scene.points, &scene.normals, sp, sn) else { continue };
            // Scene angle in the units of the entries.
            let alpha_s = alpha_units(frame.alpha(&scene.points[j]));
            // All combinations of bin/neighbour per component (1 to 16 keys), built without
            // branches: the offset of every subset of components, then the distinct ones.
            keys[0] = f.key as isize;
            for (c, &delta) in f.spread.iter().enumerate() {
                let half = 1 << c;
                for k in 0..half {
                    keys[half + k] = keys[k] + delta;
                }
            }
            let spread_mask = f.spread.iter().enumerate().fold(0usize, |m, (c, &d)| m | ((d != 0) as usize) << c);
            // Subsets of the spread components, enumerated as (sub − mask) & mask.
            let mut sub = 0usize;
            loop {
                let key = keys[sub] as usize;
                let (a, b) = (self.offsets[key] as usize, self.offsets[key + 1] as usize);
                // Common features (flat patches) fill huge buckets: visit a window of
                // `bucket_cap` entries and weigh each vote by size/cap, an unbiased estimate
                // of the full vote at a fraction of the cost. Buckets are shuffled at build
                // time, and the window (contiguous, wrapping, for the cache) starts at a place
                // that varies with the partner, so every entry gets its turn.
                let n = b - a;
                let (first, second, weight) = if n <= self.bucket_cap {
                    (a..b, b..b, 1u32)
                } else {
                    let start = a + (j.wrapping_mul(2_654_435_761) >> 7) % n;
                    let end = start + self.bucket_cap;
                    let weight = ((n + self.bucket_cap / 2) / self.bucket_cap) as u32;
                    if end <= b { (start..end, b..b, weight) } else { (start..b, a..a + (end - b), weight) }
                };
                // The window's two parts (the second is empty unless it wraps).
                cast_votes(acc, &self.entries[first], alpha_s, weight);
                cast_votes(acc, &self.entries[second], alpha_s, weight);
                sub = sub.wrapping_sub(spread_mask) & spread_mask;
                if sub == 0 {
                    break;
                }
            }
        }
        // Sum the two turns of each row: cell (m, b) of the folded accumulator is rotation b.
        // The accumulator is zeroed in the same pass, ready for the next reference.
        for (row, out) in acc.chunks_exact_mut(VOTE_ROW).zip(folded.chunks_exact_mut(ALPHA_BINS)) {
            let (first, second) = row.split_at_mut(ALPHA_BINS);
            for ((o, a), b) in out.iter_mut().zip(first).zip(second) {
                *o = std::mem::take(a) + std::mem::take(b);
            }
        }
        let best = top_cells(folded, peaks);
        best.into_iter()
            .map(|(v, cell)| {
                let m = cell as usize / ALPHA_BINS;
                let th = ((cell as usize % ALPHA_BINS) as f32 + 0.5) / alpha_scale;
                Hypothesis { pose: self.pose(&frame, m, th), votes: v as f32 }
            })
            .collect()
    }

    /// x_scene = Fsᵀ · Rx(θ) · Fm · (x_model − m) + s.
    fn pose(&self, scene_frame: &RefFrame, m: usize, th: f32) -> Pose {
        let mf = &self.frames[m];
        let rx = Matrix3::new(1.0, 0.0, 0.0, 0.0, th.cos(), -th.sin(), 0.0, th.sin(), th.cos());
        let r: Matrix3<f32> = scene_frame.rot.transpose() * rx * mf.rot;
        let t: Vector3<f32> = scene_frame.origin - r * mf.origin;
        Pose::new(r.cast::<f64>(), t.cast::<f64>()).orthonormalized()
    }
}

/// Adds `weight` to the accumulator cell of each model pair: its reference point's row, at the
/// rotation about x taking the pair's angle to the scene pair's (`alpha_s`, in [0,
/// ALPHA_UNITS)). This loop is most of the pipeline's time, hence the pre-arranged entries and
/// no bookkeeping of touched cells (a branch here costs more than scanning the whole
/// accumulator once per reference) and no saturation: a cell gains at most about (partners ×
/// 16 keys × model points) per reference, far below u32's range.
#[inline(always)]
fn cast_votes(acc: &mut [u32], entries: &[Entry], alpha_s: u32, weight: u32) {
    for e in entries {
        let cell = ((e.0 + alpha_s) >> ALPHA_SHIFT) as usize;
        debug_assert!(cell < acc.len());
        // SAFETY: an entry is ALPHA_SUB × (m × VOTE_ROW) + (0, ALPHA_UNITS] with m < model
        // points, and alpha_s < ALPHA_UNITS, so cell < (m + 1) × VOTE_ROW ≤ acc.len().
        let c = unsafe { acc.get_unchecked_mut(cell) };
        *c = c.wrapping_add(weight);
    }
}

/// The `k` highest non-zero cells, highest first (ties: lower index first). Blocks whose
/// maximum (a vectorised pass) cannot enter the list are skipped without a scalar look.
fn top_cells(acc: &[u32], k: usize) -> Vec<(u32, u32)> {
    const BLOCK: usize = 64;
    let mut best: Vec<(u32, u32)> = Vec::with_capacity(k + 1);
    for (b, block) in acc.chunks(BLOCK).enumerate() {
        let floor = if best.len() < k { 0 } else { best[k - 1].0 };
        if block.iter().copied().max().unwrap_or(0) <= floor {
            continue;
        }
        for (i, &v) in block.iter().enumerate() {
            let floor = if best.len() < k { 0 } else { best[k - 1].0 };
            if v > floor {
                let at = best.iter().position(|x| x.0 < v).unwrap_or(best.len());
                best.insert(at, (v, (b * BLOCK + i) as u32));
                best.truncate(k);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_cells_are_the_highest_in_order() {
        let mut acc = vec![0u32; 1000];
        for (i, v) in [(3, 5), (700, 9), (64, 9), (999, 7), (500, 1)] {
            acc[i] = v;
        }
        assert_eq!(top_cells(&acc, 3), vec![(9, 64), (9, 700), (7, 999)]);
        assert_eq!(top_cells(&acc, 10).len(), 5);
        assert!(top_cells(&vec![0u32; 100], 2).is_empty());
    }

    #[test]
    fn fast_atan2_is_close() {
        for i in 0..360 {
            let a = (i as f32).to_radians() - PI;
            let (y, x) = (a.sin() * 3.0, a.cos() * 3.0);
            assert!((fast_atan2(y, x) - y.atan2(x)).abs() < 3e-4, "{a}");
        }
    }

    #[test]
    fn ref_frame_maps_normal_to_x() {
        for n in [Vec3::x(), -Vec3::x(), Vec3::new(0.3, -0.5, 0.8).normalize()] {
            let f = RefFrame::new(&Vec3::zeros(), &n);
            assert!((f.rot * n - Vec3::x()).norm() < 1e-5);
        }
    }
}
