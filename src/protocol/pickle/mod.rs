//! Safe decoding of Python pickles: plain data only, never code.
//!
//! The peers that send us pickles are untrusted, so this is not an unpickler: it is the wire
//! policy (`decoder::Plain`) on the shared restricted machine (`io::pickle::machine`, which
//! owns the stack, MARKs, memo, budget and the refusal of unknown globals). It understands the
//! opcodes Python's `pickle.dumps` (protocols 0 to 5) uses for `dict`, `list`, `tuple`, `str`,
//! `bytes`, `bytearray`, `int`, `float`, `bool` and `None`, and refuses everything else (class
//! instances, sets, out-of-band buffers, any global other than the three data constructors
//! below) with an error that names what it saw.
//!
//! * **Nothing is ever called.** Protocols 0 to 2 cannot write `bytes` natively, so Python
//!   writes `_codecs.encode('<latin-1 text>', 'latin1')`, `bytes()` and `bytearray(...)` as a
//!   GLOBAL and a REDUCE. Those three constructors are recognised by name and evaluated here,
//!   with their argument types checked exactly; any other GLOBAL/STACK_GLOBAL is refused on
//!   sight by the machine, before its REDUCE.
//! * **No recursion.** Each value carries its nesting height and node count, updated as
//!   containers grow, so the depth limit ([`Limits::max_depth`]) is enforced as the input is
//!   read: a 10 000-deep list is an error at level 33, not a stack overflow. (The depth limit
//!   also keeps the compiler-generated `Drop`/`Clone` of [`Value`] shallow.)
//! * **Bounded work.** Shared references (memo GETs, DUP) are materialised as copies, and every
//!   node created, copies included, counts against [`Limits::max_nodes`], which stops "billion
//!   laughs" inputs. Bytes copied on behalf of shared references or latin-1 conversions are
//!   capped at a small multiple of the input size. Declared lengths are checked against the
//!   bytes actually present before anything is sliced or allocated.
//! * **Zero-copy.** `str` and `bytes` payloads of the binary opcodes borrow from the input.
//!   UTF-8 is checked when a string becomes part of the result; the text of
//!   `_codecs.encode(text, 'latin1')` (a protocol-2 image: half its characters are non-ASCII,
//!   where `std::str::from_utf8` is slow) is checked and converted to bytes in one branch-free
//!   pass instead.
//!
//! Python semantics kept: the memo refers to objects, so a list that is memoized when it is
//! created and filled afterwards comes back filled at every reference. A container that is
//! mutated after being shared (which is how recursive structures look) is refused. Dict keys
//! must be hashable; a repeated key (Python equality, `1 == 1.0 == True`) is refused rather than
//! silently resolved.
use std::borrow::Cow;
use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

mod decoder;
mod stack;
mod text;
#[cfg(test)]
mod tests;

use decoder::*;
use stack::*;
use text::*;

/// A decoded pickle value. Strings and byte strings borrow from the input buffer (zero-copy).
#[derive(Clone, Debug, PartialEq)]
pub enum Value<'a> {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Bytes(Cow<'a, [u8]>),
    List(Vec<Value<'a>>),
    Tuple(Vec<Value<'a>>),
    /// Insertion order kept, as Python dicts.
    Dict(Vec<(Value<'a>, Value<'a>)>),
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most nesting levels: a scalar has height 0, a list of scalars (or an empty list) 1.
    /// Values above [`HARD_MAX_DEPTH`] are treated as [`HARD_MAX_DEPTH`].
    pub max_depth: usize,
    /// Most values created while decoding, the copies made for shared references included.
    pub max_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_depth: 32, max_nodes: 1 << 20 }
    }
}

/// The depth limit never goes above this, whatever [`Limits::max_depth`] says: dropping and
/// cloning a [`Value`] recurses once per level.
pub const HARD_MAX_DEPTH: usize = 512;

/// Bytes that decoding may copy (latin-1 conversions, text-protocol strings, copies of
/// shared byte strings), beyond [`COPY_FACTOR`] times the input's size.
const COPY_SLACK: usize = 16 << 20;
const COPY_FACTOR: usize = 4;

/// Dicts up to this size are checked for repeated keys by comparison, bigger ones by hash.
const LINEAR_KEY_CHECK: usize = 8;

const PLAIN: &str = "only plain data — dict, list, tuple, str, bytes, int, float, bool, None — is accepted";

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("empty message: no pickle data")]
    Empty,
    #[error("truncated pickle: {op} at byte {at} needs {need} bytes, {left} left")]
    Truncated { op: &'static str, at: usize, need: u64, left: usize },
    #[error("truncated pickle: {op} at byte {at} has no end of line")]
    UnterminatedLine { op: &'static str, at: usize },
    #[error("truncated pickle: {0} bytes without a STOP opcode")]
    NoStop(usize),
    #[error("trailing data: {0} bytes after STOP")]
    Trailing(usize),
    #[error("unknown pickle opcode 0x{op:02x} at byte {at}")]
    UnknownOpcode { op: u8, at: usize },
    #[error("unsupported pickle protocol {proto} at byte {at} (0 to 5 are supported)")]
    Protocol { proto: u8, at: usize },
    /// A GLOBAL/STACK_GLOBAL other than the data constructors `_codecs.encode`, `bytes` and
    /// `bytearray`.
    #[error("pickle refused: global '{module}.{name}' ({PLAIN}){hint}")]
    Global { module: String, name: String, hint: &'static str },
    /// An opcode that builds something other than plain data.
    #[error("pickle refused: {op} at byte {at} {why}")]
    Refused { op: &'static str, at: usize, why: String },
    #[error("pickle nests deeper than {0} levels")]
    TooDeep(usize),
    #[error("pickle too large: more than {0} values (each use of a shared value counts)")]
    TooManyValues(usize),
    #[error("pickle too large: decoding would copy more than {0} bytes (shared or converted strings)")]
    TooMuchCopying(usize),
    /// Stack underflow, missing MARK, wrong types for an opcode, bad UTF-8, ...
    #[error("malformed pickle: {msg} ({op} at byte {at})")]
    Malformed { op: &'static str, at: usize, msg: String },
}

/// Decodes one pickle, which must fill `buf` exactly (bytes after STOP are an error).
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<Value<'a>, PickleError> {
    let max_copied = buf.len().saturating_mul(COPY_FACTOR).saturating_add(COPY_SLACK);
    machine::run(buf, Plain::new(limits), Budget::new(limits.max_nodes, max_copied))
}

impl<'a> Value<'a> {
    /// Python's name for the type, for error messages ("bytes", "str", "dict", ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "NoneType",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict(_) => "dict",
        }
    }
    /// Looks up a `str` key of a dict (None if not a dict or no such key).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| matches!(k, Value::Str(s) if s == key)).map(|(_, v)| v),
            _ => None,
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }
    /// Int or Float as f64 (bools are not numbers here).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }
    /// An Int (bools and floats are not).
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }
    /// The items of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::List(v) | Value::Tuple(v) => Some(v),
            _ => None,
        }
    }
    /// The (key, value) pairs of a dict, in insertion order.
    pub fn as_dict(&self) -> Option<&[(Value<'a>, Value<'a>)]> {
        match self {
            Value::Dict(items) => Some(items),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Opcodes

use crate::io::pickle::ops as code;
use crate::io::pickle::machine::{self, Budget, Fault};
use crate::io::pickle::reader::{Op, ReadError};

/// The opcode's name in Python's `pickletools`.
pub(super) fn op_name(c: u8) -> &'static str {
    code::name(c)
}

pub(super) fn malformed(c: u8, at: usize, msg: impl Into<String>) -> PickleError {
    PickleError::Malformed { op: op_name(c), at, msg: msg.into() }
}

