//! Python pickles at the byte level: the opcodes (protocols 0–5) and one reader of them, shared
//! by the wire protocol's decoder and the checkpoint reader, which each add their policy.
pub mod ops;
pub mod reader;
