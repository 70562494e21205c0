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
//! Values live in an arena and the stack holds indices into it, so the memo (PUT/GET) shares
//! objects as Python does (a dict memoized empty and filled afterwards is filled at every
//! reference) without copies. Decoding is one loop with no recursion, and nothing else in this
//! module recurses, so nesting depth cannot overflow the stack; every opcode adds at most one
//! value, so the work and memory are bounded by the input's size.
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

use crate::io::pickle_ops as op;

/// Most dimensions a tensor may have (torch's own limit is 64 too).
const MAX_DIMS: usize = 64;

/// Decodes `data.pkl`. Never executes anything; refuses what a state dict does not need.
pub fn unpickle(buf: &[u8]) -> Result<Pickled, UnpickleError> {
    let mut u = Unpickler { buf, pos: 0, op: 0, at: 0, nodes: Vec::new(), stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), storages: Vec::new(), storage_keys: HashMap::new() };
    loop {
        if u.pos >= buf.len() {
            return Err(UnpickleError::NoStop(buf.len()));
        }
        u.at = u.pos;
        u.op = buf[u.pos];
        u.pos += 1;
        if u.op == op::STOP {
            let root = u.pop()?;
            if u.pos < buf.len() {
                return Err(UnpickleError::Trailing(buf.len() - u.pos));
            }
            return Ok(Pickled { nodes: u.nodes, root, storages: u.storages });
        }
        u.step()?;
    }
}

struct Unpickler<'a> {
    buf: &'a [u8],
    pos: usize,
    /// The opcode being executed and where it starts, for messages.
    op: u8,
    at: usize,
    nodes: Vec<Node>,
    stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    storages: Vec<StorageRef>,
    storage_keys: HashMap<String, usize>,
}

impl<'a> Unpickler<'a> {
    fn malformed(&self, msg: impl Into<String>) -> UnpickleError {
        UnpickleError::Malformed { op: op::name(self.op), at: self.at, msg: msg.into() }
    }

    fn refused(&self, why: impl Into<String>) -> UnpickleError {
        UnpickleError::Refused { op: op::name(self.op), at: self.at, why: why.into() }
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], UnpickleError> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return Err(UnpickleError::Truncated { op: op::name(self.op), at: self.at, need: n, left });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    fn arr<const N: usize>(&mut self) -> Result<[u8; N], UnpickleError> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u8(&mut self) -> Result<u8, UnpickleError> {
        Ok(self.arr::<1>()?[0])
    }

    fn u32(&mut self) -> Result<u32, UnpickleError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }

    fn u64(&mut self) -> Result<u64, UnpickleError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }

    fn i32_len(&mut self) -> Result<u64, UnpickleError> {
        let n = i32::from_le_bytes(self.arr()?);
        u64::try_from(n).map_err(|_| self.malformed(format!("negative length {n}")))
    }

    /// A text argument up to the next newline, which is consumed.
    fn line(&mut self) -> Result<&'a str, UnpickleError> {
        let rest = &self.buf[self.pos..];
        let Some(i) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.malformed("no end of line"));
        };
        self.pos += i + 1;
        std::str::from_utf8(&rest[..i]).map_err(|_| self.malformed("the name is not UTF-8"))
    }

    fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
    }

    /// Stack length at the innermost open MARK: values below it are out of reach.
    fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Id, UnpickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> Result<Id, UnpickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    /// The values above the innermost MARK, which is closed.
    fn pop_mark(&mut self) -> Result<Vec<Id>, UnpickleError> {
        let Some(m) = self.marks.pop() else {
            return Err(self.malformed("no MARK to close"));
        };
        Ok(self.stack.split_off(m))
    }

    fn str_of(&self, id: Id) -> Option<&str> {
        match &self.nodes[id] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    fn int_of(&self, id: Id) -> Option<i64> {
        match self.nodes[id] {
            Node::Int(i) => Some(i),
            _ => None,
        }
    }

    fn type_name(&self, id: Id) -> &'static str {
        self.nodes[id].type_name()
    }

    /// "an int", "a list": the type with its article, for messages.
    fn a_type(&self, id: Id) -> String {
        let t = self.type_name(id);
        if t.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {t}") } else { format!("a {t}") }
    }

    fn global(&mut self, module: &str, name: &str) -> Result<(), UnpickleError> {
        match Global::lookup(module, name) {
            Some(g) => {
                self.push(Node::Global(g));
                Ok(())
            }
            None => Err(UnpickleError::Global { name: format!("{module}.{name}"), hint: global_hint(module, name) }),
        }
    }

    fn set_items(&mut self, target: Id, items: &[Id]) -> Result<(), UnpickleError> {
        if !items.len().is_multiple_of(2) {
            return Err(self.malformed("odd number of items for a dict"));
        }
        for pair in items.chunks_exact(2) {
            if matches!(self.nodes[pair[0]], Node::List(_) | Node::Dict(_)) {
                return Err(self.malformed(format!("unhashable dict key of type {}", self.type_name(pair[0]))));
            }
        }
        if !matches!(self.nodes[target], Node::Dict(_)) {
            return Err(self.malformed(format!("setting items of {}, not a dict", self.a_type(target))));
        }
        // Pairs are kept in order; a repeated key is resolved by whoever reads the dict
        // (lookups take the last, as Python would; a state dict refuses repeats).
        let Node::Dict(entries) = &mut self.nodes[target] else { unreachable!("checked above") };
        entries.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
        Ok(())
    }

    fn append(&mut self, target: Id, items: &[Id]) -> Result<(), UnpickleError> {
        match &mut self.nodes[target] {
            Node::List(v) => {
                v.extend_from_slice(items);
                Ok(())
            }
            _ => Err(self.malformed(format!("appending to {}, not a list", self.a_type(target)))),
        }
    }

    /// `('storage', torch.<T>Storage, key, location, numel)` → a storage.
    fn persistent_load(&mut self, pid: Id) -> Result<(), UnpickleError> {
        let Node::Tuple(items) = &self.nodes[pid] else {
            return Err(self.refused(format!("a persistent id must be a ('storage', type, key, location, numel) tuple, not {}", self.a_type(pid))));
        };
        let [tag, ty, key, _location, numel] = items[..] else {
            return Err(self.refused(format!("a persistent id must have 5 items ('storage', type, key, location, numel), this one has {}", items.len())));
        };
        if self.str_of(tag) != Some("storage") {
            return Err(self.refused("a persistent id must start with 'storage'"));
        }
        let Node::Global(Global::StorageType(dtype)) = self.nodes[ty] else {
            return Err(self.refused(format!("the storage type in a persistent id is {}, not a torch.<Type>Storage", self.a_type(ty))));
        };
        let Some(key) = self.str_of(key).map(str::to_owned) else {
            return Err(self.malformed("a storage key must be a str"));
        };
        let numel = match self.int_of(numel).map(u64::try_from) {
            Some(Ok(n)) if n.checked_mul(dtype.size() as u64).is_some() => n,
            _ => return Err(self.malformed(format!("storage {key}: the element count must be a non-negative int"))),
        };
        let index = match self.storage_keys.get(&key) {
            Some(&i) => {
                let s = &self.storages[i];
                if s.dtype != dtype || s.numel != numel {
                    return Err(self.malformed(format!("storage {key} is described twice differently ({} × {} and {} × {})", s.numel, s.dtype, numel, dtype)));
                }
                i
            }
            None => {
                self.storages.push(StorageRef { key: key.clone(), dtype, numel });
                self.storage_keys.insert(key, self.storages.len() - 1);
                self.storages.len() - 1
            }
        };
        self.push(Node::Storage(index));
        Ok(())
    }

    fn ints(&self, id: Id, what: &str) -> Result<Vec<u64>, UnpickleError> {
        let Node::Tuple(items) = &self.nodes[id] else {
            return Err(self.malformed(format!("a tensor's {what} must be a tuple, not {}", self.a_type(id))));
        };
        if items.len() > MAX_DIMS {
            return Err(self.malformed(format!("a tensor with {} dimensions (at most {MAX_DIMS})", items.len())));
        }
        items
            .iter()
            .map(|&i| match self.int_of(i).map(u64::try_from) {
                Some(Ok(v)) => Ok(v),
                _ => Err(self.malformed(format!("a tensor's {what} must hold non-negative ints"))),
            })
            .collect()
    }

    /// `_rebuild_tensor[_v2](storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: &[Id]) -> Result<Node, UnpickleError> {
        let Node::Storage(storage) = self.nodes[args[0]] else {
            return Err(self.malformed(format!("a tensor's storage is {}", self.a_type(args[0]))));
        };
        let offset = match self.int_of(args[1]).map(u64::try_from) {
            Some(Ok(o)) => o,
            _ => return Err(self.malformed("a tensor's storage offset must be a non-negative int")),
        };
        let shape = self.ints(args[2], "size")?;
        let stride = self.ints(args[3], "stride")?;
        if shape.len() != stride.len() {
            return Err(self.malformed(format!("a tensor with {} sizes and {} strides", shape.len(), stride.len())));
        }
        let s = &self.storages[storage];
        let outside = || self.malformed(format!("a tensor of size {shape:?}, stride {stride:?} at offset {offset} reaches outside its storage {} of {} elements", s.key, s.numel));
        let numel = shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n)).ok_or_else(outside)?;
        if numel > 0 {
            let last = shape.iter().zip(&stride).try_fold(offset, |a, (&n, &st)| (n - 1).checked_mul(st).and_then(|d| a.checked_add(d))).ok_or_else(outside)?;
            if last >= s.numel {
                return Err(outside());
            }
        }
        Ok(Node::Tensor(TensorMeta { storage, dtype: s.dtype, offset, shape, stride }))
    }

    fn reduce(&mut self) -> Result<(), UnpickleError> {
        let args = self.pop()?;
        let func = self.pop()?;
        let Node::Global(g) = self.nodes[func] else {
            return Err(self.refused(format!("calling {}: only the accepted globals may be called", self.a_type(func))));
        };
        let Node::Tuple(args) = self.nodes[args].clone() else {
            return Err(self.malformed(format!("the arguments of {} are {}, not a tuple", g.name(), self.a_type(args))));
        };
        let wrong_args = |u: &Self| u.malformed(format!("{} called with {} arguments", g.name(), args.len()));
        match g {
            Global::OrderedDict => {
                self.push(Node::Dict(Vec::new()));
                match args[..] {
                    [] => {}
                    [items] => {
                        let pairs = match &self.nodes[items] {
                            Node::List(v) | Node::Tuple(v) => v.clone(),
                            _ => return Err(self.malformed("OrderedDict() of something that is not a list of pairs")),
                        };
                        let mut flat = Vec::with_capacity(pairs.len() * 2);
                        for p in pairs {
                            match &self.nodes[p] {
                                Node::List(kv) | Node::Tuple(kv) if kv.len() == 2 => flat.extend_from_slice(kv),
                                _ => return Err(self.malformed("OrderedDict() of something that is not a list of pairs")),
                            }
                        }
                        let target = self.top()?;
                        self.set_items(target, &flat)?;
                    }
                    _ => return Err(wrong_args(self)),
                }
            }
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                let ok = if g == Global::RebuildTensor { args.len() == 4 } else { args.len() == 6 || args.len() == 7 };
                if !ok {
                    return Err(wrong_args(self));
                }
                let t = self.rebuild_tensor(&args)?;
                self.push(t);
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let n = if g == Global::RebuildParameter { 3 } else { 4 };
                if args.len() != n {
                    return Err(wrong_args(self));
                }
                if !matches!(self.nodes[args[0]], Node::Tensor(_)) {
                    return Err(self.malformed(format!("a parameter's data is {}, not a tensor", self.a_type(args[0]))));
                }
                // A parameter is its tensor here (requires_grad, hooks and state are training-time
                // details); the tensor node is shared, as it is immutable.
                self.stack.push(args[0]);
            }
            Global::StorageType(_) => {
                return Err(self.refused(format!("calling {}: a storage class may only name a storage's type in a persistent id", g.name())));
            }
        }
        Ok(())
    }

    fn step(&mut self) -> Result<(), UnpickleError> {
        use op::*;
        let c = self.op;
        match c {
            PROTO => {
                let v = self.u8()?;
                if v > 5 {
                    return Err(self.malformed(format!("unsupported pickle protocol {v}")));
                }
            }
            FRAME => {
                // Framing only groups opcodes for buffered reading; the whole pickle is in memory.
                let n = self.u64()?;
                if n > (self.buf.len() - self.pos) as u64 {
                    return Err(UnpickleError::Truncated { op: "FRAME", at: self.at, need: n, left: self.buf.len() - self.pos });
                }
            }
            MARK => self.marks.push(self.stack.len()),
            POP => {
                // Python pops a MARK when nothing was pushed above it.
                if self.stack.len() == self.floor() && !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            POP_MARK => {
                self.pop_mark()?;
            }
            DUP => {
                let t = self.top()?;
                self.stack.push(t);
            }
            NONE => self.push(Node::None),
            NEWTRUE => self.push(Node::Bool(true)),
            NEWFALSE => self.push(Node::Bool(false)),
            BININT => {
                let v = i32::from_le_bytes(self.arr()?);
                self.push(Node::Int(v as i64));
            }
            BININT1 => {
                let v = self.u8()?;
                self.push(Node::Int(v as i64));
            }
            BININT2 => {
                let v = u16::from_le_bytes(self.arr()?);
                self.push(Node::Int(v as i64));
            }
            LONG1 | LONG4 => {
                let n = if c == LONG1 { self.u8()? as u64 } else { self.i32_len()? };
                let b = self.take(n)?;
                self.push(long_value(b));
            }
            BINFLOAT => {
                let v = f64::from_be_bytes(self.arr()?);
                self.push(Node::Float(v));
            }
            SHORT_BINUNICODE | BINUNICODE | BINUNICODE8 => {
                let n = match c {
                    SHORT_BINUNICODE => self.u8()? as u64,
                    BINUNICODE => self.u32()? as u64,
                    _ => self.u64()?,
                };
                let b = self.take(n)?;
                let s = std::str::from_utf8(b).map_err(|_| self.malformed("a string that is not UTF-8"))?;
                self.push(Node::Str(s.to_owned()));
            }
            SHORT_BINSTRING | BINSTRING => {
                // Python 2 `str`: latin-1 text.
                let n = if c == SHORT_BINSTRING { self.u8()? as u64 } else { self.i32_len()? };
                let b = self.take(n)?;
                self.push(Node::Str(b.iter().map(|&b| b as char).collect()));
            }
            SHORT_BINBYTES | BINBYTES | BINBYTES8 | BYTEARRAY8 => {
                let n = match c {
                    SHORT_BINBYTES => self.u8()? as u64,
                    BINBYTES => self.u32()? as u64,
                    _ => self.u64()?,
                };
                let b = self.take(n)?;
                self.push(Node::Bytes(b.len()));
            }
            EMPTY_LIST => self.push(Node::List(Vec::new())),
            EMPTY_TUPLE => self.push(Node::Tuple(Vec::new())),
            EMPTY_DICT => self.push(Node::Dict(Vec::new())),
            LIST => {
                let items = self.pop_mark()?;
                self.push(Node::List(items));
            }
            TUPLE => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items));
            }
            TUPLE1 | TUPLE2 | TUPLE3 => {
                let n = (c - TUPLE1 + 1) as usize;
                if self.stack.len() < self.floor() + n {
                    return Err(self.malformed("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items));
            }
            DICT => {
                let items = self.pop_mark()?;
                self.push(Node::Dict(Vec::new()));
                let target = self.top()?;
                self.set_items(target, &items)?;
            }
            APPEND => {
                let v = self.pop()?;
                let target = self.top()?;
                self.append(target, &[v])?;
            }
            APPENDS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.append(target, &items)?;
            }
            SETITEM => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                self.set_items(target, &[k, v])?;
            }
            SETITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.set_items(target, &items)?;
            }
            BINPUT | LONG_BINPUT | MEMOIZE => {
                let key = match c {
                    BINPUT => self.u8()? as u32,
                    LONG_BINPUT => self.u32()?,
                    _ => self.memo.len() as u32,
                };
                let t = self.top()?;
                self.memo.insert(key, t);
            }
            BINGET | LONG_BINGET => {
                let key = if c == BINGET { self.u8()? as u32 } else { self.u32()? };
                match self.memo.get(&key) {
                    Some(&id) => self.stack.push(id),
                    None => return Err(self.malformed(format!("memo key {key} was never stored"))),
                }
            }
            GLOBAL => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name)?;
            }
            STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.str_of(module).map(str::to_owned), self.str_of(name).map(str::to_owned)) {
                    (Some(m), Some(n)) => self.global(&m, &n)?,
                    _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                }
            }
            REDUCE => self.reduce()?,
            BUILD => {
                // OrderedDict's pickled state is its attribute dict (a state dict's `_metadata`):
                // attributes are not items, so it is read and dropped.
                let state = self.pop()?;
                let target = self.top()?;
                let ok = matches!(self.nodes[target], Node::Dict(_)) && matches!(self.nodes[state], Node::Dict(_) | Node::None);
                if !ok {
                    return Err(self.refused(format!("setting the state of {} from {}: only a dict's attributes may be set", self.a_type(target), self.a_type(state))));
                }
            }
            BINPERSID => {
                let pid = self.pop()?;
                self.persistent_load(pid)?;
            }
            PERSID => return Err(self.refused("a text persistent id (torch.save writes binary ones)")),
            NEWOBJ | NEWOBJ_EX | INST | OBJ => return Err(self.refused("it creates a class instance; a checkpoint only needs tensors")),
            EXT1 | EXT2 | EXT4 => return Err(self.refused("it imports a global through the extension registry")),
            NEXT_BUFFER | READONLY_BUFFER => return Err(self.refused("out-of-band buffers are not part of a checkpoint")),
            EMPTY_SET | ADDITEMS | FROZENSET => return Err(self.refused("sets are not part of a state dict")),
            INT | LONG | FLOAT | STRING | UNICODE | PUT | GET => {
                return Err(self.refused("a text-protocol opcode (torch.save writes pickle protocol 2 or later)"))
            }
            _ => return Err(UnpickleError::UnknownOpcode { op: c, at: self.at }),
        }
        Ok(())
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
fn long_value(b: &[u8]) -> Node {
    if b.is_empty() {
        return Node::Int(0);
    }
    let negative = b[b.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if b.len() > 8 && b[8..].iter().any(|&x| x != fill) {
        return Node::BigInt;
    }
    let mut a = [fill; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    let v = i64::from_le_bytes(a);
    // Sign of the 8-byte value must agree with the full value's.
    if (v < 0) != negative {
        return Node::BigInt;
    }
    Node::Int(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(p: &[u8]) -> String {
        match unpickle(p) {
            Ok(v) => panic!("{p:?} decoded: {:?}", v.node(v.root)),
            Err(e) => e.to_string(),
        }
    }

    /// A pickle as torch.save writes a state dict: protocol 2, an OrderedDict REDUCE, tensors as
    /// `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`.
    /// (name, storage type, storage key, storage numel, offset, size, stride)
    type Spec<'a> = (&'a str, &'a str, &'a str, u8, u8, &'a [u8], &'a [u8]);

    fn torch_like_pickle(tensors: &[Spec]) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        for (name, ty, key, numel, offset, size, stride) in tensors {
            p.push(b'X');
            p.extend_from_slice(&(name.len() as u32).to_le_bytes());
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
            p.extend_from_slice(format!("ctorch\n{ty}\n").as_bytes());
            p.push(b'X');
            p.extend_from_slice(&(key.len() as u32).to_le_bytes());
            p.extend_from_slice(key.as_bytes());
            p.extend_from_slice(b"X\x03\x00\x00\x00cpuK");
            p.push(*numel);
            p.extend_from_slice(b"tQK");
            p.push(*offset);
            for dims in [size, stride] {
                p.push(b'(');
                for d in dims.iter() {
                    p.extend_from_slice(&[b'K', *d]);
                }
                p.push(b't');
            }
            p.extend_from_slice(b"\x89h\x00)RtR");
        }
        // SETITEMS, then BUILD with the attribute dict {'_metadata': OrderedDict()}.
        p.extend_from_slice(b"u}X\x09\x00\x00\x00_metadatah\x00)Rsb.");
        p
    }

    fn tensor<'p>(p: &'p Pickled, name: &str) -> &'p TensorMeta {
        match p.node(p.dict_get(p.root, name).unwrap()) {
            Node::Tensor(t) => t,
            n => panic!("{name} is {n:?}"),
        }
    }

    #[test]
    fn decodes_a_torch_like_state_dict() {
        let p = torch_like_pickle(&[("a.weight", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]), ("a.bias", "HalfStorage", "1", 3, 0, &[3], &[1]), ("b", "FloatStorage", "0", 12, 5, &[2], &[1])]);
        let v = unpickle(&p).unwrap();
        assert_eq!(v.storages.len(), 2, "storage '0' is shared, not duplicated");
        let w = tensor(&v, "a.weight");
        assert_eq!((w.dtype, w.shape.clone(), w.stride.clone(), w.offset), (DType::F32, vec![4, 3], vec![1, 4], 0));
        assert!(!w.is_contiguous());
        assert_eq!(w.end(), 12);
        let b = tensor(&v, "a.bias");
        assert_eq!((b.dtype, b.is_contiguous()), (DType::F16, true));
        let s = tensor(&v, "b");
        assert_eq!((s.storage, s.offset, s.end()), (w.storage, 5, 7));
    }

    #[test]
    fn tensors_must_lie_inside_their_storage() {
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 11, 0, &[4, 3], &[3, 1])]));
        assert!(e.contains("outside its storage"), "{e}");
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 12, 1, &[4, 3], &[3, 1])]));
        assert!(e.contains("outside its storage"), "{e}");
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 12, 0, &[4, 3], &[3, 1])])).is_ok());
        // Empty tensors touch nothing; stride-0 (expanded) views are fine.
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 0, 0, &[0, 3], &[3, 1])])).is_ok());
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 3, 0, &[4, 3], &[0, 1])])).is_ok());
        // The same storage key with two descriptions.
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 3, 0, &[3], &[1]), ("y", "HalfStorage", "0", 3, 0, &[3], &[1])]));
        assert!(e.contains("described twice"), "{e}");
    }

    #[test]
    fn refuses_code_execution_globals_by_name() {
        // pickle.dumps of os.system('touch /tmp/x') as Python writes it on Linux and by hand.
        for (p, name) in [
            (&b"cposix\nsystem\n(S'touch /tmp/pwned'\ntR."[..], "posix.system"),
            (b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R.", "os.system"),
            (b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "builtins.eval"),
            (b"\x80\x02c__builtin__\nexec\n.", "__builtin__.exec"),
            (b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x01x\x85R.", "torch.storage._load_from_bytes"),
            (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n.", "torch._tensor._rebuild_from_type_v2"),
            (b"\x80\x02ctorch\nUntypedStorage\n.", "torch.UntypedStorage"),
            (b"\x80\x02ctorch\nload\n.", "torch.load"),
            (b"\x80\x02cnumpy.core.multiarray\nscalar\n.", "numpy.core.multiarray.scalar"),
            (b"\x80\x04\x8c\x02os\x8c\x06system\x93X\x01\x00\x00\x00x\x85R.", "os.system"),
            (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00kcsubprocess\ncall\nu.", "subprocess.call"),
        ] {
            let e = err(p);
            assert!(e.starts_with(&format!("refusing global {name}: a checkpoint only needs tensors")), "{name}: {e}");
            assert!(e.contains("nothing in the file was executed"), "{e}");
        }
        assert!(err(b"\x80\x02ctorch.storage\n_load_from_bytes\n.").contains("nested pickle"));
    }

    #[test]
    fn refuses_instances_and_calls_of_accepted_names_out_of_place() {
        // A storage class called instead of named in a persistent id.
        let e = err(b"\x80\x02ctorch\nFloatStorage\n)R.");
        assert!(e.contains("refusing REDUCE") && e.contains("torch.FloatStorage"), "{e}");
        // REDUCE of something that is not a global at all.
        assert!(err(b"\x80\x02X\x01\x00\x00\x00f)R.").contains("calling a str"));
        for (p, what) in [
            (&b"\x80\x02ccollections\nOrderedDict\n)\x81."[..], "NEWOBJ"),
            (b"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),
            (b"(icollections\nOrderedDict\n.", "INST"),
            (b"\x80\x02\x82\x01.", "EXT1"),
            (b"\x80\x02Pfoo\n.", "PERSID"),
            (b"\x80\x05\x97.", "NEXT_BUFFER"),
            (b"\x80\x04\x8f.", "EMPTY_SET"),
            (b"I1\n.", "INT"),
        ] {
            let e = err(p);
            assert!(e.starts_with(&format!("refusing {what}")), "{what}: {e}");
        }
        // BUILD sets attributes: on a dict (an OrderedDict's `_metadata`) they are dropped,
        // on anything else refused.
        let e = err(b"\x80\x02N}b.");
        assert!(e.contains("refusing BUILD"), "{e}");
        assert!(unpickle(b"\x80\x02}}b.").is_ok());
        // A persistent id that is not a storage.
        assert!(err(b"\x80\x02X\x01\x00\x00\x00xQ.").contains("persistent id must be"));
        assert!(err(b"\x80\x02(X\x07\x00\x00\x00storageNX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.").contains("not a torch.<Type>Storage"));
    }

    #[test]
    fn memo_shares_objects_filled_after_memoizing() {
        // d = {}; r = {'a': d, 'b': d}; d['k'] = 5 written after r (protocol 2).
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01X\x01\x00\x00\x00bh\x01uh\x01X\x01\x00\x00\x00kK\x05s0.";
        let v = unpickle(p).unwrap();
        let a = v.dict_get(v.root, "a").unwrap();
        assert_eq!(v.dict_get(v.root, "b"), Some(a));
        assert_eq!(v.dict_get(a, "k").map(|k| v.node(k).clone()), Some(Node::Int(5)));
        // l = []; l.append(l): a cycle is representable and harmless (nothing walks it).
        let v = unpickle(b"\x80\x02]q\x00h\x00a.").unwrap();
        assert!(matches!(v.node(v.root), Node::List(l) if l == &vec![v.root]));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for (p, needle) in [
            (&b""[..], "no STOP"),
            (b"\x80\x02", "no STOP"),
            (b"\x80\x02.", "stack underflow"),
            (b"\x80\x02N.N", "after STOP"),
            (b"\x80\x02X\xff\x00\x00\x00ab.", "truncated"),
            (b"\x80\x02h\x07.", "never stored"),
            (b"\x80\x02K\x01a.", "stack underflow"),
            (b"\x80\x02K\x01]a.", "appending to an int"),
            (b"\x80\x02]K\x01K\x02s.", "not a dict"),
            (b"\x80\x02}]K\x01s.", "unhashable"),
            (b"\x80\x02e.", "no MARK"),
            (b"\x80\x09N.", "protocol 9"),
            (b"\x80\x02X\x02\x00\x00\x00\xc3\x28.", "not UTF-8"),
            (b"\x80\x02\xff.", "unknown pickle opcode 0xff"),
            (b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.", "not a list of pairs"),
            (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.", "0 arguments"),
        ] {
            let e = err(p);
            assert!(e.contains(needle), "{p:?}: {e} (wanted {needle:?})");
        }
    }

    #[test]
    fn long_ints() {
        assert_eq!(long_value(&[]), Node::Int(0));
        assert_eq!(long_value(&[0xff]), Node::Int(-1));
        assert_eq!(long_value(&[0x00, 0x01]), Node::Int(256));
        assert_eq!(long_value(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), Node::Int(i64::MAX));
        assert_eq!(long_value(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), Node::BigInt);
        assert_eq!(long_value(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Node::Int(-2));
        assert_eq!(long_value(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), Node::BigInt);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // [[[[...]]]] a million levels deep, and a million nested tuples: no recursion anywhere,
        // dropping included.
        let n = 1_000_000;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let v = unpickle(&p).unwrap();
        assert_eq!(v.type_name(v.root), "list");
        drop(v);
        let mut p = b"\x80\x02N".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, n));
        p.push(b'.');
        assert!(unpickle(&p).is_ok());
        // Marks without end.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', n));
        p.push(b'.');
        assert!(err(&p).contains("stack underflow"));
    }

    use crate::io::pickle_ops::fuzz::{mutate_and_decode, Rng};

    #[test]
    fn mutated_and_random_input_never_panics() {
        let mut r = Rng(0x5eed_1234_abcd_0001);
        let seeds = [
            torch_like_pickle(&[("a.weight", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]), ("a.bias", "HalfStorage", "1", 3, 0, &[3], &[1]), ("b", "FloatStorage", "0", 12, 5, &[2], &[1])]),
            torch_like_pickle(&[("n", "LongStorage", "7", 1, 0, &[], &[]), ("e", "BFloat16Storage", "x", 6, 2, &[2, 2], &[0, 1])]),
            b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01ccollections\nOrderedDict\n)Rq\x02X\x05\x00\x00\x00epochK\x03u.".to_vec(),
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02eh\x00\x86\x94.".to_vec(),
        ];
        let opcodes: &[u8] = b"().012JKMNQRXabcdeh jlqrstu}]\x80\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x93\x94\x95\x96BCG";
        mutate_and_decode(&mut r, &seeds, opcodes, |p| {
            if let Ok(v) = unpickle(p) {
                // Every tensor that decodes lies inside its storage.
                for id in 0..v.nodes.len() {
                    if let Node::Tensor(t) = v.node(id) {
                        assert!(t.end() <= v.storages[t.storage].numel, "{t:?}");
                    }
                }
            }
        });
    }
}
