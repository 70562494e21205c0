//! Segment Anything in tch, one network part per file. Every parameter sits at the path the
//! official checkpoint gives it (`image_encoder.*`, `prompt_encoder.*`, `mask_decoder.*`), so a
//! safetensors file with those names loads with [`crate::nn::load_named`].
pub mod amg;
pub mod automatic;
mod common;
pub mod image_encoder;
pub mod mask_decoder;
pub mod model;
pub mod prompt_encoder;
pub mod tiny_vit;
pub mod transformer;

pub use mask_decoder::{MaskDecoder, MaskDecoderConfig};
pub use prompt_encoder::{PromptEncoder, PromptEncoderConfig};
