//! Building blocks shared by the ported networks (SAM, DINOv2, the PEM): layers that tch lacks,
//! loading tensors into a `VarStore` by the official checkpoints' names, and switching a
//! backbone's precision.
mod layer_norm_2d;
mod load;
pub mod precision;

pub use layer_norm_2d::LayerNorm2d;
pub use load::{load_named, LoadReport};
