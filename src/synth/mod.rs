//! Reproducible synthetic RGB-D scenes for benchmarks and tests, built from the procedural
//! meshes of [`crate::geometry::shapes`]: table-top scenes with ground truth ([`scene`]), Kinect-like depth corruption
//! ([`noise`]), the fixed benchmark set ([`benchmark`]), BOP scene files ([`bop`]) and timing summaries
//! ([`eval`]; the scoring is [`crate::eval`]). Everything follows from a u64 seed.
pub mod benchmark;
pub mod bop;
pub mod eval;
pub mod noise;
pub mod rng;
pub mod scene;

pub use benchmark::{benchmark_set, benchmark_spec, printed_box, procedural_targets};
pub use noise::DepthNoise;
pub use scene::{generate, GtInstance, NamedMesh, SceneSpec, SceneTarget, SyntheticFrame, KINECT};
