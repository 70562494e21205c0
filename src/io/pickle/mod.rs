//! Python pickles at the byte level: the opcodes (protocols 0–5), one reader of them, and one
//! restricted machine that runs them under a policy. The wire protocol's decoder (plain data)
//! and the checkpoint reader (tensors) are the two policies.
pub mod machine;
pub mod ops;
pub mod reader;
