//! SAM-6D's Pose Estimation Model: two-stage point matching between the observed points of a
//! detection and points sampled from the object's templates.
pub mod coarse_point_matching;
pub mod feature_extraction;
pub mod fine_point_matching;
pub mod geo_embedding;
pub mod inputs;
pub mod model;
pub mod point_ops;
pub mod pose_solver;
pub mod shared;
pub mod stage;
pub mod positional_encoding;
pub mod transformer;
