//! sam6d: zero-shot 6D object pose estimation from RGB-D frames and a CAD model.
//!
//! Data flows one way: inputs ([`io`]) become a [`pipeline::Frame`] and an
//! [`pipeline::ObjectModel`]; [`pipeline::Pipeline::estimate`] returns poses; the CLI and the
//! server only format them.
pub mod client;
pub mod device;
pub mod eval;
pub mod geometry;
pub mod io;
pub mod nn;
pub mod pipeline;
pub mod protocol;
pub mod render;
pub mod results;
pub mod server;
pub mod synth;
pub mod viz;
pub mod weights;
