//! The checkpoint policy on the shared opcode reader: plain data, the torch rebuild globals
//! and their REDUCE, BUILD of a dict's attributes, and binary persistent ids naming storages.
use super::*;

pub(super) struct Unpickler {
    /// The opcode being executed and where it starts, for messages.
    pub(super) op: u8,
    pub(super) at: usize,
    pub(super) nodes: Vec<Node>,
    pub(super) stack: Vec<Id>,
    /// Stack lengths at each open MARK.
    pub(super) marks: Vec<usize>,
    pub(super) memo: HashMap<u32, Id>,
    pub(super) storages: Vec<StorageRef>,
    pub(super) storage_keys: HashMap<String, usize>,
}

impl Unpickler {
    pub(super) fn malformed(&self, msg: impl Into<String>) -> UnpickleError {
        UnpickleError::Malformed { op: op::name(self.op), at: self.at, msg: msg.into() }
    }

    pub(super) fn refused(&self, why: impl Into<String>) -> UnpickleError {
        UnpickleError::Refused { op: op::name(self.op), at: self.at, why: why.into() }
    }

    pub(super) fn push(&mut self, node: Node) {
        self.nodes.push(node);
        self.stack.push(self.nodes.len() - 1);
    }

    /// Stack length at the innermost open MARK: values below it are out of reach.
    pub(super) fn floor(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    pub(super) fn pop(&mut self) -> Result<Id, UnpickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    pub(super) fn top(&self) -> Result<Id, UnpickleError> {
        if self.stack.len() <= self.floor() {
            return Err(self.malformed("stack underflow"));
        }
        Ok(*self.stack.last().expect("checked above"))
    }

    /// The values above the innermost MARK, which is closed.
    pub(super) fn pop_mark(&mut self) -> Result<Vec<Id>, UnpickleError> {
        let Some(m) = self.marks.pop() else {
            return Err(self.malformed("no MARK to close"));
        };
        Ok(self.stack.split_off(m))
    }

    pub(super) fn str_of(&self, id: Id) -> Option<&str> {
        match &self.nodes[id] {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn int_of(&self, id: Id) -> Option<i64> {
        match self.nodes[id] {
            Node::Int(i) => Some(i),
            _ => None,
        }
    }

    pub(super) fn type_name(&self, id: Id) -> &'static str {
        self.nodes[id].type_name()
    }

    /// "an int", "a list": the type with its article, for messages.
    pub(super) fn a_type(&self, id: Id) -> String {
        let t = self.type_name(id);
        if t.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {t}") } else { format!("a {t}") }
    }

    pub(super) fn global(&mut self, module: &str, name: &str) -> Result<(), UnpickleError> {
        match Global::lookup(module, name) {
            Some(g) => {
                self.push(Node::Global(g));
                Ok(())
            }
            None => Err(UnpickleError::Global { name: format!("{module}.{name}"), hint: global_hint(module, name) }),
        }
    }

    pub(super) fn set_items(&mut self, target: Id, items: &[Id]) -> Result<(), UnpickleError> {
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

    pub(super) fn append(&mut self, target: Id, items: &[Id]) -> Result<(), UnpickleError> {
        match &mut self.nodes[target] {
            Node::List(v) => {
                v.extend_from_slice(items);
                Ok(())
            }
            _ => Err(self.malformed(format!("appending to {}, not a list", self.a_type(target)))),
        }
    }

    /// `('storage', torch.<T>Storage, key, location, numel)` → a storage.
    pub(super) fn persistent_load(&mut self, pid: Id) -> Result<(), UnpickleError> {
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

    pub(super) fn ints(&self, id: Id, what: &str) -> Result<Vec<u64>, UnpickleError> {
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
    pub(super) fn rebuild_tensor(&self, args: &[Id]) -> Result<Node, UnpickleError> {
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

    pub(super) fn reduce(&mut self) -> Result<(), UnpickleError> {
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

    /// The checkpoint policy: plain data, the accepted globals and their REDUCE, BUILD of a
    /// dict's attributes, and binary persistent ids naming storages.
    pub(super) fn step(&mut self, next: Op<'_>) -> Result<(), UnpickleError> {
        use op::*;
        match next {
            Op::Proto(v) if v > 5 => return Err(self.malformed(format!("unsupported pickle protocol {v}"))),
            // Framing only groups opcodes for buffered reading; the whole pickle is in memory
            // (the reader checked that the frame's bytes are there).
            Op::Proto(_) | Op::Frame => {}
            Op::Stop => unreachable!("unpickle handles STOP"),
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                // Python pops a MARK when nothing was pushed above it.
                if self.stack.len() == self.floor() && !self.marks.is_empty() {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            Op::PopMark => {
                self.pop_mark()?;
            }
            Op::Dup => {
                let t = self.top()?;
                self.stack.push(t);
            }
            Op::None => self.push(Node::None),
            Op::Bool(b) => self.push(Node::Bool(b)),
            Op::Int(v) => self.push(Node::Int(v)),
            Op::Long(b) => self.push(long_value(b)),
            Op::Float(v) => self.push(Node::Float(v)),
            Op::Utf8(b) => {
                let s = std::str::from_utf8(b).map_err(|_| self.malformed("a string that is not UTF-8"))?;
                self.push(Node::Str(s.to_owned()));
            }
            // Python 2 `str`: latin-1 text.
            Op::Latin1(b) => self.push(Node::Str(b.iter().map(|&b| b as char).collect())),
            Op::Bytes(b) | Op::ByteArray(b) => self.push(Node::Bytes(b.len())),
            Op::EmptyList => self.push(Node::List(Vec::new())),
            Op::EmptyTuple => self.push(Node::Tuple(Vec::new())),
            Op::EmptyDict => self.push(Node::Dict(Vec::new())),
            Op::List => {
                let items = self.pop_mark()?;
                self.push(Node::List(items));
            }
            Op::Tuple => {
                let items = self.pop_mark()?;
                self.push(Node::Tuple(items));
            }
            Op::TupleN(n) => {
                if self.stack.len() < self.floor() + n {
                    return Err(self.malformed("stack underflow"));
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Node::Tuple(items));
            }
            Op::Dict => {
                let items = self.pop_mark()?;
                self.push(Node::Dict(Vec::new()));
                let target = self.top()?;
                self.set_items(target, &items)?;
            }
            Op::Append => {
                let v = self.pop()?;
                let target = self.top()?;
                self.append(target, &[v])?;
            }
            Op::Appends => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.append(target, &items)?;
            }
            Op::SetItem => {
                let v = self.pop()?;
                let k = self.pop()?;
                let target = self.top()?;
                self.set_items(target, &[k, v])?;
            }
            Op::SetItems => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.set_items(target, &items)?;
            }
            Op::Put(_) | Op::Get(_) if matches!(self.op, PUT | GET) => {
                return Err(self.refused("a text-protocol opcode (torch.save writes pickle protocol 2 or later)"))
            }
            Op::Put(key) => {
                let t = self.top()?;
                self.memo.insert(key, t);
            }
            Op::Memoize => {
                let (key, t) = (self.memo.len() as u32, self.top()?);
                self.memo.insert(key, t);
            }
            Op::Get(key) => match self.memo.get(&key) {
                Some(&id) => self.stack.push(id),
                None => return Err(self.malformed(format!("memo key {key} was never stored"))),
            },
            Op::Global(module, name) => {
                let text = |b| std::str::from_utf8(b).map_err(|_| self.malformed("the name is not UTF-8"));
                let (module, name) = (text(module)?, text(name)?);
                self.global(module, name)?;
            }
            Op::StackGlobal => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (self.str_of(module).map(str::to_owned), self.str_of(name).map(str::to_owned)) {
                    (Some(m), Some(n)) => self.global(&m, &n)?,
                    _ => return Err(self.malformed("STACK_GLOBAL needs two strings")),
                }
            }
            Op::Reduce => self.reduce()?,
            Op::Object(BUILD) => {
                // OrderedDict's pickled state is its attribute dict (a state dict's `_metadata`):
                // attributes are not items, so it is read and dropped.
                let state = self.pop()?;
                let target = self.top()?;
                let ok = matches!(self.nodes[target], Node::Dict(_)) && matches!(self.nodes[state], Node::Dict(_) | Node::None);
                if !ok {
                    return Err(self.refused(format!("setting the state of {} from {}: only a dict's attributes may be set", self.a_type(target), self.a_type(state))));
                }
            }
            Op::Object(BINPERSID) => {
                let pid = self.pop()?;
                self.persistent_load(pid)?;
            }
            Op::Object(c) => {
                return Err(self.refused(match c {
                    PERSID => "a text persistent id (torch.save writes binary ones)",
                    EXT1 | EXT2 | EXT4 => "it imports a global through the extension registry",
                    NEXT_BUFFER | READONLY_BUFFER => "out-of-band buffers are not part of a checkpoint",
                    EMPTY_SET | ADDITEMS | FROZENSET => "sets are not part of a state dict",
                    _ => "it creates a class instance; a checkpoint only needs tensors",
                }))
            }
            Op::TextInt(_) | Op::TextLong(_) | Op::TextFloat(_) | Op::TextString(_) | Op::TextUnicode(_) => {
                return Err(self.refused("a text-protocol opcode (torch.save writes pickle protocol 2 or later)"))
            }
        }
        Ok(())
    }
}

/// LONG1/LONG4 payload: little-endian two's complement.
pub(super) fn long_value(b: &[u8]) -> Node {
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
