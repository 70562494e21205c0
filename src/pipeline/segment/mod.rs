//! Segmentation: Segment Anything networks (image encoder, prompt encoder, mask decoder) found
//! by the official checkpoints' parameter names, and the object-mask proposals they produce.
pub mod sam;
pub mod segmenter;

pub use segmenter::{Segmenter, SegmenterKind};

pub use crate::geometry::Proposal;
