//! Segmentation networks: SAM (image encoder, prompt encoder, mask decoder), found by the
//! official checkpoints' parameter names.
pub mod sam;
