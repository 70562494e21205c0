//! Building blocks shared by the ported networks (SAM today; DINOv2 and PEM next): layers that
//! tch lacks and loading tensors into a `VarStore` by the official checkpoints' names.
mod layer_norm_2d;
mod load;

pub use layer_norm_2d::LayerNorm2d;
pub use load::{load_named, LoadReport};
