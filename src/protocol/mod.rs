//! The wire protocol our users' Python clients speak: every message, both ways, is a 4-byte
//! big-endian length and then that many bytes of a pickled dict.
//!
//! `frame` cuts the byte stream into messages (with a size limit checked before allocating),
//! `pickle` turns bytes into plain values without ever executing anything, and `message` turns
//! values into typed requests and responses.
pub mod frame;
pub mod message;
pub mod pickle;
