//! Geometry shared by every stage: poses, point clouds from depth, neighbour search, metrics.
pub mod cloud;
pub mod grid;
pub mod mesh;
pub mod metrics;
pub mod ply;
pub mod pose;
pub mod proposal;
pub mod shapes;

pub use mesh::Mesh;
pub use pose::Pose;
pub use proposal::Proposal;

/// Points and normals are `f32` (memory and speed); poses are `f64`.
pub type Vec3 = nalgebra::Vector3<f32>;

/// Small deterministic PRNG (splitmix64): reproducible sampling without a crate.
#[derive(Clone, Debug)]
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
