//! A uniform grid over a point set, for fixed-radius neighbour queries. Simpler and faster than
//! a k-d tree for what we ask: "all points within r" and "nearest within r" with r known upfront.
use super::Vec3;

pub struct Grid {
    cell: f32,
    origin: Vec3,
    dims: [usize; 3],
    /// CSR layout: points of cell c are `order[start[c]..start[c + 1]]`.
    start: Vec<u32>,
    order: Vec<u32>,
}

impl Grid {
    /// `cell` should be about the query radius. The grid is clamped to a sane number of cells;
    /// points far outside just share border cells (still correct, only slower).
    pub fn new(points: &[Vec3], cell: f32) -> Grid {
        let mut lo = Vec3::repeat(f32::INFINITY);
        let mut hi = Vec3::repeat(f32::NEG_INFINITY);
        for p in points {
            lo = lo.inf(p);
            hi = hi.sup(p);
        }
        if points.is_empty() {
            lo = Vec3::zeros();
            hi = Vec3::zeros();
        }
        let mut cell = cell.max(1e-6);
        let ext = hi - lo;
        // Keep the cell table below ~4M entries.
        while ((ext.x / cell) as usize + 1) * ((ext.y / cell) as usize + 1) * ((ext.z / cell) as usize + 1) > 4_000_000 {
            cell *= 1.5;
        }
        let dims = [(ext.x / cell) as usize + 1, (ext.y / cell) as usize + 1, (ext.z / cell) as usize + 1];
        let mut g = Grid { cell, origin: lo, dims, start: vec![0; dims[0] * dims[1] * dims[2] + 1], order: vec![0; points.len()] };
        let cells: Vec<usize> = points.iter().map(|p| g.cell_index(g.coords(p))).collect();
        for &c in &cells {
            g.start[c + 1] += 1;
        }
        for c in 0..g.start.len() - 1 {
            g.start[c + 1] += g.start[c];
        }
        let mut fill = g.start.clone();
        for (i, &c) in cells.iter().enumerate() {
            g.order[fill[c] as usize] = i as u32;
            fill[c] += 1;
        }
        g
    }

    fn coords(&self, p: &Vec3) -> [usize; 3] {
        let q = (p - self.origin) / self.cell;
        [
            (q.x.max(0.0) as usize).min(self.dims[0] - 1),
            (q.y.max(0.0) as usize).min(self.dims[1] - 1),
            (q.z.max(0.0) as usize).min(self.dims[2] - 1),
        ]
    }

    fn cell_index(&self, c: [usize; 3]) -> usize {
        (c[2] * self.dims[1] + c[1]) * self.dims[0] + c[0]
    }

    /// Calls `f(index)` for every point in the cells touching the ball (q, r); the caller checks
    /// the exact distance (it usually needs it anyway).
    #[inline]
    pub fn for_each_candidate(&self, q: &Vec3, r: f32, mut f: impl FnMut(u32)) {
        let lo = self.coords(&(q - Vec3::repeat(r)));
        let hi = self.coords(&(q + Vec3::repeat(r)));
        for z in lo[2]..=hi[2] {
            for y in lo[1]..=hi[1] {
                let row = (z * self.dims[1] + y) * self.dims[0];
                let (a, b) = (self.start[row + lo[0]] as usize, self.start[row + hi[0] + 1] as usize);
                for &i in &self.order[a..b] {
                    f(i);
                }
            }
        }
    }

    /// Indices of points within distance r of q.
    pub fn within(&self, points: &[Vec3], q: &Vec3, r: f32, out: &mut Vec<u32>) {
        out.clear();
        let r2 = r * r;
        self.for_each_candidate(q, r, |i| {
            if (points[i as usize] - q).norm_squared() <= r2 {
                out.push(i);
            }
        });
    }

    /// Nearest point within distance r, with its squared distance.
    pub fn nearest_within(&self, points: &[Vec3], q: &Vec3, r: f32) -> Option<(u32, f32)> {
        let mut best: Option<(u32, f32)> = None;
        let mut r2 = r * r;
        self.for_each_candidate(q, r, |i| {
            let d2 = (points[i as usize] - q).norm_squared();
            if d2 <= r2 {
                r2 = d2;
                best = Some((i, d2));
            }
        });
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::SplitMix64;

    #[test]
    fn matches_brute_force() {
        let mut rng = SplitMix64(5);
        let pts: Vec<Vec3> = (0..3000)
            .map(|_| Vec3::new(rng.next_f64() as f32 * 300.0, rng.next_f64() as f32 * 200.0, 500.0 + rng.next_f64() as f32 * 100.0))
            .collect();
        let grid = Grid::new(&pts, 20.0);
        let mut out = Vec::new();
        for qi in (0..3000).step_by(97) {
            let q = pts[qi] + Vec3::new(3.0, -2.0, 1.0);
            grid.within(&pts, &q, 25.0, &mut out);
            let mut got = out.clone();
            got.sort_unstable();
            let want: Vec<u32> = (0..pts.len() as u32).filter(|&i| (pts[i as usize] - q).norm() <= 25.0).collect();
            assert_eq!(got, want);
            let nn = grid.nearest_within(&pts, &q, 25.0).map(|(i, _)| i);
            let brute = want.iter().copied().min_by(|&a, &b| {
                (pts[a as usize] - q).norm().partial_cmp(&(pts[b as usize] - q).norm()).unwrap()
            });
            assert_eq!(nn, brute);
        }
        // A query far outside the bounds still works.
        assert!(grid.nearest_within(&pts, &Vec3::new(-1e4, 0.0, 0.0), 10.0).is_none());
    }
}
