//! Switching a part of a network to another element type in place. tch's `VarStore::bfloat16`
//! converts a whole store; the pipeline wants only the ViT backbones in reduced precision (see
//! [`crate::device::Precision`]), so each network lists the parameters of that part.
use tch::{nn, Kind, Tensor};

/// A linear layer's weight and bias.
pub fn linear_tensors(l: &nn::Linear) -> Vec<&Tensor> {
    std::iter::once(&l.ws).chain(l.bs.as_ref()).collect()
}

/// A LayerNorm's affine parameters.
pub fn layer_norm_tensors(l: &nn::LayerNorm) -> Vec<&Tensor> {
    l.ws.iter().chain(l.bs.as_ref()).collect()
}

/// A convolution's weight and bias.
pub fn conv_tensors<ND>(c: &nn::Conv<ND>) -> Vec<&Tensor> {
    std::iter::once(&c.ws).chain(c.bs.as_ref()).collect()
}

/// Converts every tensor to `kind` in place: `set_data` swaps the storage behind the same
/// tensor, so the layers (and the VarStore, if still alive) see the converted values.
pub fn set_kind(tensors: &[&Tensor], kind: Kind) {
    tch::no_grad(|| {
        for t in tensors {
            let mut t = t.shallow_clone();
            if t.kind() != kind {
                t.set_data(&t.to_kind(kind));
            }
        }
    });
}
