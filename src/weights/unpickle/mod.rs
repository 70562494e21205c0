//! A restricted unpickler for the `data.pkl` of a PyTorch checkpoint.
//!
//! `torch.save` pickles a state dict as an `OrderedDict` of tensors, each written as a call of
//! `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)` whose storage is a
//! persistent id `('storage', torch.FloatStorage, key, location, numel)` naming the archive
//! entry `data/<key>`. A real unpickler would import and call whatever globals the file names
//! (`os.system` included), so this one never calls anything: it accepts exactly the globals a
//! state dict needs — `collections.OrderedDict`, the tensor and parameter rebuild functions and
//! the `torch.<Type>Storage` classes — and evaluates them itself, recording each tensor's
//! description ([`TensorMeta`]); any other global is refused on sight, naming it. Opcodes that
//! build class instances (NEWOBJ, INST, OBJ, BUILD on anything but a dict), reach the extension
//! registry or out-of-band buffers are refused too. Plain data (dict, list, tuple, str, bytes,
//! int, float, bool, None) is kept, so checkpoints with metadata next to the weights
//! (`{'model': ..., 'epoch': 3}`) decode.
//!
//! This is the checkpoint policy (`policy::Checkpoint`) on the shared restricted machine
//! (`io::pickle::machine`, which owns the stack, MARKs, memo, budget and the refusal of unknown
//! globals). Values live in an arena and the stack holds indices into it, so the memo (PUT/GET)
//! shares objects as Python does (a dict memoized empty and filled afterwards is filled at every
//! reference) without copies. Nothing in either recurses, so nesting depth cannot overflow the
//! stack; every opcode adds at most one value, so the work and memory are bounded by the input's
//! size.
use super::DType;
use std::collections::HashMap;

/// Index of a value in [`Pickled`]'s arena.
pub type Id = usize;

#[derive(Clone, Debug, PartialEq)]
pub enum Node {
    None,
    Bool(bool),
    Int(i64),
    /// An int beyond 64 bits: kept as an opaque value (metadata only; never a size).
    BigInt,
    Float(f64),
    Str(String),
    /// A byte string, by length (no checkpoint field we use is bytes).
    Bytes(usize),
    List(Vec<Id>),
    Tuple(Vec<Id>),
    /// Items in insertion order, as a Python dict.
    Dict(Vec<(Id, Id)>),
    /// One of the accepted globals, not yet called.
    Global(Global),
    /// Index into [`Pickled::storages`].
    Storage(usize),
    Tensor(TensorMeta),
}

impl Node {
    /// Python's name for the value's type, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::None => "NoneType",
            Node::Bool(_) => "bool",
            Node::Int(_) | Node::BigInt => "int",
            Node::Float(_) => "float",
            Node::Str(_) => "str",
            Node::Bytes(_) => "bytes",
            Node::List(_) => "list",
            Node::Tuple(_) => "tuple",
            Node::Dict(_) => "dict",
            Node::Global(_) => "global",
            Node::Storage(_) => "storage",
            Node::Tensor(_) => "tensor",
        }
    }
}

/// The only globals a checkpoint may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Global {
    OrderedDict,
    RebuildTensor,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    /// `torch.FloatStorage` and friends: only valid inside a storage's persistent id.
    StorageType(DType),
}

impl Global {
    fn lookup(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch._utils", "_rebuild_parameter_with_state") => Global::RebuildParameterWithState,
            ("torch", storage) => Global::StorageType(DType::from_storage_name(storage)?),
            _ => return None,
        })
    }

    pub fn name(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensor => "torch._utils._rebuild_tensor".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state".into(),
            Global::StorageType(d) => format!("torch.{}", d.storage_name()),
        }
    }
}

/// A storage the pickle refers to: the archive entry `data/<key>` holding `numel` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorageRef {
    pub key: String,
    pub dtype: DType,
    pub numel: u64,
}

/// A tensor as torch rebuilds it: a strided view of a storage. Sizes, strides and the offset
/// are in elements; the view lies inside the storage (checked when it is decoded).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorMeta {
    /// Index into [`Pickled::storages`].
    pub storage: usize,
    pub dtype: DType,
    pub offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

impl TensorMeta {
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }

    /// Row-major with no gaps (size-1 dimensions may have any stride), so the bytes are one
    /// run of the storage.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1u64;
        for (&n, &s) in self.shape.iter().zip(&self.stride).rev() {
            if n != 1 && s != expected {
                return false;
            }
            expected *= n;
        }
        true
    }

    /// One past the last storage element the view touches (the offset when it is empty).
    pub fn end(&self) -> u64 {
        if self.numel() == 0 {
            return self.offset;
        }
        // Checked at decode time not to overflow and to lie inside the storage.
        self.offset + self.shape.iter().zip(&self.stride).map(|(&n, &s)| (n - 1) * s).sum::<u64>() + 1
    }

    pub fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(|&d| d as i64).collect()
    }
}

/// The decoded pickle: an arena of values, the root, and the storages tensors refer to.
#[derive(Debug)]
pub struct Pickled {
    nodes: Vec<Node>,
    pub root: Id,
    pub storages: Vec<StorageRef>,
}

impl Pickled {
    pub fn node(&self, id: Id) -> &Node {
        &self.nodes[id]
    }

    /// The value under a `str` key of a dict (None if `id` is no dict or lacks the key).
    pub fn dict_get(&self, id: Id, key: &str) -> Option<Id> {
        match &self.nodes[id] {
            Node::Dict(items) => items.iter().rev().find(|(k, _)| matches!(&self.nodes[*k], Node::Str(s) if s == key)).map(|&(_, v)| v),
            _ => None,
        }
    }

    /// Python's name for the value's type, for messages.
    pub fn type_name(&self, id: Id) -> &'static str {
        self.nodes[id].type_name()
    }
}

const ACCEPTED: &str = "collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter, torch.<Type>Storage";

#[derive(Debug, thiserror::Error)]
pub enum UnpickleError {
    #[error("refusing global {name}: a checkpoint only needs tensors{hint} (accepted: {ACCEPTED}); nothing in the file was executed")]
    Global { name: String, hint: &'static str },
    #[error("refusing {op} at byte {at}: {why}")]
    Refused { op: &'static str, at: usize, why: String },
    #[error("malformed pickle: {msg} ({op} at byte {at})")]
    Malformed { op: &'static str, at: usize, msg: String },
    #[error("truncated pickle: {op} at byte {at} needs {need} bytes, {left} left")]
    Truncated { op: &'static str, at: usize, need: u64, left: usize },
    #[error("unknown pickle opcode 0x{op:02x} at byte {at}")]
    UnknownOpcode { op: u8, at: usize },
    #[error("truncated pickle: no STOP opcode in {0} bytes")]
    NoStop(usize),
    #[error("malformed pickle: {0} bytes after STOP")]
    Trailing(usize),
    #[error("pickle too large: {0}")]
    TooLarge(String),
}

/// Why a refused global is refused, when there is more to say than "not a tensor".
fn global_hint(module: &str, name: &str) -> &'static str {
    match (module, name) {
        ("torch.storage", "_load_from_bytes") => " (it would unpickle a nested pickle that nothing checks; re-save the tensors with torch.save)",
        ("torch._tensor", "_rebuild_from_type_v2") => " (a tensor subclass or a tensor with attributes; save plain tensors: {k: v.detach() for k, v in sd.items()})",
        ("torch._utils", "_rebuild_tensor_v3") => " (a tensor of a dtype safetensors cannot store here)",
        ("torch._utils", _) => " (only dense CPU/CUDA tensors are supported: no sparse, quantized or meta tensors)",
        ("torch", _) => " (a storage of a dtype safetensors cannot store here, or a torch object that is not a tensor)",
        ("numpy" | "numpy.core.multiarray" | "numpy._core.multiarray", _) => " (numpy values are not part of a state dict)",
        _ => "",
    }
}

use crate::io::pickle::ops as op;
use crate::io::pickle::machine::{self, Budget};
use crate::io::pickle::reader::{Op, ReadError};

mod policy;
#[cfg(test)]
mod tests;

use policy::*;

/// Most dimensions a tensor may have (torch's own limit is 64 too).
const MAX_DIMS: usize = 64;

/// Decodes `data.pkl`. Never executes anything; refuses what a state dict does not need.
pub fn unpickle(buf: &[u8]) -> Result<Pickled, UnpickleError> {
    // Every opcode adds at most one value, so the input's size bounds the work; the budget
    // only says so.
    machine::run(buf, Checkpoint::default(), Budget::new(buf.len(), usize::MAX))
}

impl From<ReadError> for UnpickleError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated { op, at, need, left } => UnpickleError::Truncated { op, at, need, left },
            ReadError::UnterminatedLine { op, at } => UnpickleError::Malformed { op, at, msg: "no end of line".into() },
            ReadError::UnknownOpcode { op, at } => UnpickleError::UnknownOpcode { op, at },
            ReadError::Malformed { op, at, msg } => UnpickleError::Malformed { op, at, msg },
        }
    }
}
