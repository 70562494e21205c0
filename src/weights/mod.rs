//! Network weights on disk: the official PyTorch checkpoints (`.pth`, a zip of pickled
//! metadata and raw tensor storages) converted once to safetensors, which tch reads, and a
//! check of a weights file against the network we build from it.
//!
//! * [`unpickle`]: a restricted unpickler that rebuilds a state dict's *description* (names,
//!   dtypes, shapes, strides, storage offsets) and refuses every pickle global that is not a
//!   tensor-rebuild function, a storage type or `collections.OrderedDict`. Nothing is executed.
//! * [`pth`]: the checkpoint container, finding the state dict in it (flat, or under `model` /
//!   `state_dict` with a `module.` prefix) and reading each tensor's bytes.
//! * [`convert`]: streams the tensors into a safetensors file, one tensor in memory at a time.
//! * [`registry`]: the networks we know, their expected tensors (built with our tch modules) and
//!   detection of a file's network from its names and shapes; [`check`] compares a file with it.
pub mod check;
pub mod convert;
pub mod pth;
pub mod registry;
pub mod unpickle;

use std::fmt;

/// Element types that checkpoints hold and safetensors can store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F64,
    F32,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    pub const ALL: [DType; 10] = [DType::F64, DType::F32, DType::F16, DType::BF16, DType::I64, DType::I32, DType::I16, DType::I8, DType::U8, DType::Bool];

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
    }

    /// The name in a safetensors header.
    pub fn safetensors_name(self) -> &'static str {
        match self {
            DType::F64 => "F64",
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
            DType::I64 => "I64",
            DType::I32 => "I32",
            DType::I16 => "I16",
            DType::I8 => "I8",
            DType::U8 => "U8",
            DType::Bool => "BOOL",
        }
    }

    pub fn from_safetensors_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.safetensors_name() == s)
    }

    /// The legacy storage class torch pickles for this dtype (`torch.FloatStorage`, ...).
    pub fn storage_name(self) -> &'static str {
        match self {
            DType::F64 => "DoubleStorage",
            DType::F32 => "FloatStorage",
            DType::F16 => "HalfStorage",
            DType::BF16 => "BFloat16Storage",
            DType::I64 => "LongStorage",
            DType::I32 => "IntStorage",
            DType::I16 => "ShortStorage",
            DType::I8 => "CharStorage",
            DType::U8 => "ByteStorage",
            DType::Bool => "BoolStorage",
        }
    }

    pub fn from_storage_name(s: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.storage_name() == s)
    }

    pub fn from_kind(kind: tch::Kind) -> Option<DType> {
        use tch::Kind;
        Some(match kind {
            Kind::Double => DType::F64,
            Kind::Float => DType::F32,
            Kind::Half => DType::F16,
            Kind::BFloat16 => DType::BF16,
            Kind::Int64 => DType::I64,
            Kind::Int => DType::I32,
            Kind::Int16 => DType::I16,
            Kind::Int8 => DType::I8,
            Kind::Uint8 => DType::U8,
            Kind::Bool => DType::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F64 => "f64",
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        })
    }
}

/// One tensor of a weights file, as far as a name/shape check needs to know it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
}

impl TensorInfo {
    pub fn numel(&self) -> u64 {
        self.shape.iter().map(|&d| d.max(0) as u64).product()
    }
}

/// `[768, 3, 16, 16]`, `[]` for a scalar.
pub fn fmt_shape(shape: &[i64]) -> String {
    format!("[{}]", shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "))
}
