//! The checkpoint policy on the shared pickle machine: plain data, the torch rebuild globals
//! and their REDUCE, BUILD of a dict's attributes, and binary persistent ids naming storages.
//! Values live in an arena and the machine's stack holds their indices, so sharing a value
//! (DUP, memo GET) shares the object itself, as Python does.
use super::*;
use crate::io::pickle::machine::{Fault, Here, Policy, Size};

#[derive(Default)]
pub(super) struct Checkpoint {
    pub(super) nodes: Vec<Node>,
    pub(super) storages: Vec<StorageRef>,
    pub(super) storage_keys: HashMap<String, usize>,
}

fn malformed(h: Here, msg: impl Into<String>) -> UnpickleError {
    UnpickleError::Malformed { op: h.op(), at: h.at, msg: msg.into() }
}

fn refused(h: Here, why: impl Into<String>) -> UnpickleError {
    UnpickleError::Refused { op: h.op(), at: h.at, why: why.into() }
}

impl Checkpoint {
    fn add(&mut self, node: Node) -> Id {
        self.nodes.push(node);
        self.nodes.len() - 1
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

    /// "an int", "a list": the type with its article, for messages.
    fn a_type(&self, id: Id) -> String {
        let t = self.nodes[id].type_name();
        if t.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {t}") } else { format!("a {t}") }
    }

    fn add_items(&mut self, target: Id, items: &[Id], h: Here) -> Result<(), UnpickleError> {
        for pair in items.chunks_exact(2) {
            if matches!(self.nodes[pair[0]], Node::List(_) | Node::Dict(_)) {
                return Err(malformed(h, format!("unhashable dict key of type {}", self.nodes[pair[0]].type_name())));
            }
        }
        // Pairs are kept in order; a repeated key is resolved by whoever reads the dict
        // (lookups take the last, as Python would; a state dict refuses repeats).
        match &mut self.nodes[target] {
            Node::Dict(entries) => {
                entries.extend(items.chunks_exact(2).map(|p| (p[0], p[1])));
                Ok(())
            }
            _ => Err(malformed(h, format!("setting items of {}, not a dict", self.a_type(target)))),
        }
    }

    fn ints(&self, id: Id, what: &str, h: Here) -> Result<Vec<u64>, UnpickleError> {
        let Node::Tuple(items) = &self.nodes[id] else {
            return Err(malformed(h, format!("a tensor's {what} must be a tuple, not {}", self.a_type(id))));
        };
        if items.len() > MAX_DIMS {
            return Err(malformed(h, format!("a tensor with {} dimensions (at most {MAX_DIMS})", items.len())));
        }
        items
            .iter()
            .map(|&i| match self.int_of(i).map(u64::try_from) {
                Some(Ok(v)) => Ok(v),
                _ => Err(malformed(h, format!("a tensor's {what} must hold non-negative ints"))),
            })
            .collect()
    }

    /// `_rebuild_tensor[_v2](storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&self, args: &[Id], h: Here) -> Result<Node, UnpickleError> {
        let Node::Storage(storage) = self.nodes[args[0]] else {
            return Err(malformed(h, format!("a tensor's storage is {}", self.a_type(args[0]))));
        };
        let offset = match self.int_of(args[1]).map(u64::try_from) {
            Some(Ok(o)) => o,
            _ => return Err(malformed(h, "a tensor's storage offset must be a non-negative int")),
        };
        let shape = self.ints(args[2], "size", h)?;
        let stride = self.ints(args[3], "stride", h)?;
        if shape.len() != stride.len() {
            return Err(malformed(h, format!("a tensor with {} sizes and {} strides", shape.len(), stride.len())));
        }
        let s = &self.storages[storage];
        let outside = || malformed(h, format!("a tensor of size {shape:?}, stride {stride:?} at offset {offset} reaches outside its storage {} of {} elements", s.key, s.numel));
        let numel = shape.iter().try_fold(1u64, |a, &n| a.checked_mul(n)).ok_or_else(outside)?;
        if numel > 0 {
            let last = shape.iter().zip(&stride).try_fold(offset, |a, (&n, &st)| (n - 1).checked_mul(st).and_then(|d| a.checked_add(d))).ok_or_else(outside)?;
            if last >= s.numel {
                return Err(outside());
            }
        }
        Ok(Node::Tensor(TensorMeta { storage, dtype: s.dtype, offset, shape, stride }))
    }
}

impl<'a> Policy<'a> for Checkpoint {
    type Item = Id;
    type Output = Pickled;
    type Error = UnpickleError;

    fn atom(&mut self, op: Op<'a>, h: Here) -> Result<Id, UnpickleError> {
        let node = match op {
            Op::None => Node::None,
            Op::Bool(b) => Node::Bool(b),
            Op::Int(v) => Node::Int(v),
            Op::Long(b) => long_value(b),
            Op::Float(v) => Node::Float(v),
            Op::Utf8(b) => Node::Str(std::str::from_utf8(b).map_err(|_| malformed(h, "a string that is not UTF-8"))?.to_owned()),
            // Python 2 `str`: latin-1 text.
            Op::Latin1(b) => Node::Str(b.iter().map(|&b| b as char).collect()),
            Op::Bytes(b) | Op::ByteArray(b) => Node::Bytes(b.len()),
            Op::EmptyList => Node::List(Vec::new()),
            Op::EmptyTuple => Node::Tuple(Vec::new()),
            Op::EmptyDict => Node::Dict(Vec::new()),
            _ => return Err(refused(h, "a text-protocol opcode (torch.save writes pickle protocol 2 or later)")),
        };
        Ok(self.add(node))
    }

    fn sequence(&mut self, _below: Option<&Id>, items: &mut [Id], tuple: bool, _h: Here) -> Result<Id, UnpickleError> {
        let items = items.to_vec();
        Ok(self.add(if tuple { Node::Tuple(items) } else { Node::List(items) }))
    }

    fn append(&mut self, target: &mut Id, items: &mut [Id], h: Here) -> Result<(), UnpickleError> {
        match &mut self.nodes[*target] {
            Node::List(v) => {
                v.extend_from_slice(items);
                Ok(())
            }
            _ => Err(malformed(h, format!("appending to {}, not a list", self.a_type(*target)))),
        }
    }

    fn set_items(&mut self, target: &mut Id, pairs: &mut [Id], h: Here) -> Result<(), UnpickleError> {
        self.add_items(*target, pairs, h)
    }

    fn global(&mut self, module: &[u8], name: &[u8]) -> Option<Id> {
        let g = Global::lookup(std::str::from_utf8(module).ok()?, std::str::from_utf8(name).ok()?)?;
        Some(self.add(Node::Global(g)))
    }

    fn global_hint(&self, module: &[u8], name: &[u8]) -> &'static str {
        global_hint(&String::from_utf8_lossy(module), &String::from_utf8_lossy(name))
    }

    fn text<'s>(&'s self, id: &'s Id) -> Option<&'s [u8]> {
        self.str_of(*id).map(str::as_bytes)
    }

    fn reduce(&mut self, func: Id, args: Id, h: Here) -> Result<Id, UnpickleError> {
        let Node::Global(g) = self.nodes[func] else {
            return Err(refused(h, format!("calling {}: only the accepted globals may be called", self.a_type(func))));
        };
        let Node::Tuple(args) = self.nodes[args].clone() else {
            return Err(malformed(h, format!("the arguments of {} are {}, not a tuple", g.name(), self.a_type(args))));
        };
        let wrong_args = || malformed(h, format!("{} called with {} arguments", g.name(), args.len()));
        match g {
            Global::OrderedDict => {
                let dict = self.add(Node::Dict(Vec::new()));
                match args[..] {
                    [] => {}
                    [items] => {
                        let not_pairs = || malformed(h, "OrderedDict() of something that is not a list of pairs");
                        let pairs = match &self.nodes[items] {
                            Node::List(v) | Node::Tuple(v) => v.clone(),
                            _ => return Err(not_pairs()),
                        };
                        let mut flat = Vec::with_capacity(pairs.len() * 2);
                        for p in pairs {
                            match &self.nodes[p] {
                                Node::List(kv) | Node::Tuple(kv) if kv.len() == 2 => flat.extend_from_slice(kv),
                                _ => return Err(not_pairs()),
                            }
                        }
                        self.add_items(dict, &flat, h)?;
                    }
                    _ => return Err(wrong_args()),
                }
                Ok(dict)
            }
            Global::RebuildTensor | Global::RebuildTensorV2 => {
                let ok = if g == Global::RebuildTensor { args.len() == 4 } else { args.len() == 6 || args.len() == 7 };
                if !ok {
                    return Err(wrong_args());
                }
                let t = self.rebuild_tensor(&args, h)?;
                Ok(self.add(t))
            }
            Global::RebuildParameter | Global::RebuildParameterWithState => {
                let n = if g == Global::RebuildParameter { 3 } else { 4 };
                if args.len() != n {
                    return Err(wrong_args());
                }
                if !matches!(self.nodes[args[0]], Node::Tensor(_)) {
                    return Err(malformed(h, format!("a parameter's data is {}, not a tensor", self.a_type(args[0]))));
                }
                // A parameter is its tensor here (requires_grad, hooks and state are training-time
                // details); the tensor node is shared, as it is immutable.
                Ok(args[0])
            }
            Global::StorageType(_) => Err(refused(h, format!("calling {}: a storage class may only name a storage's type in a persistent id", g.name()))),
        }
    }

    fn build(&mut self, target: &mut Id, state: Id, h: Here) -> Result<(), UnpickleError> {
        // OrderedDict's pickled state is its attribute dict (a state dict's `_metadata`):
        // attributes are not items, so it is read and dropped.
        let ok = matches!(self.nodes[*target], Node::Dict(_)) && matches!(self.nodes[state], Node::Dict(_) | Node::None);
        if !ok {
            return Err(refused(h, format!("setting the state of {} from {}: only a dict's attributes may be set", self.a_type(*target), self.a_type(state))));
        }
        Ok(())
    }

    /// `('storage', torch.<T>Storage, key, location, numel)` → a storage.
    fn persistent_load(&mut self, pid: Id, h: Here) -> Result<Id, UnpickleError> {
        let Node::Tuple(items) = &self.nodes[pid] else {
            return Err(refused(h, format!("a persistent id must be a ('storage', type, key, location, numel) tuple, not {}", self.a_type(pid))));
        };
        let [tag, ty, key, _location, numel] = items[..] else {
            return Err(refused(h, format!("a persistent id must have 5 items ('storage', type, key, location, numel), this one has {}", items.len())));
        };
        if self.str_of(tag) != Some("storage") {
            return Err(refused(h, "a persistent id must start with 'storage'"));
        }
        let Node::Global(Global::StorageType(dtype)) = self.nodes[ty] else {
            return Err(refused(h, format!("the storage type in a persistent id is {}, not a torch.<Type>Storage", self.a_type(ty))));
        };
        let Some(key) = self.str_of(key).map(str::to_owned) else {
            return Err(malformed(h, "a storage key must be a str"));
        };
        let numel = match self.int_of(numel).map(u64::try_from) {
            Some(Ok(n)) if n.checked_mul(dtype.size() as u64).is_some() => n,
            _ => return Err(malformed(h, format!("storage {key}: the element count must be a non-negative int"))),
        };
        let index = match self.storage_keys.get(&key) {
            Some(&i) => {
                let s = &self.storages[i];
                if s.dtype != dtype || s.numel != numel {
                    return Err(malformed(h, format!("storage {key} is described twice differently ({} × {} and {} × {})", s.numel, s.dtype, numel, dtype)));
                }
                i
            }
            None => {
                self.storages.push(StorageRef { key: key.clone(), dtype, numel });
                self.storage_keys.insert(key, self.storages.len() - 1);
                self.storages.len() - 1
            }
        };
        Ok(self.add(Node::Storage(index)))
    }

    fn refuse(&self, h: Here) -> UnpickleError {
        use op::*;
        refused(
            h,
            match h.code {
                PERSID => "a text persistent id (torch.save writes binary ones)",
                EXT1 | EXT2 | EXT4 => "it imports a global through the extension registry",
                NEXT_BUFFER | READONLY_BUFFER => "out-of-band buffers are not part of a checkpoint",
                EMPTY_SET | ADDITEMS | FROZENSET => "sets are not part of a state dict",
                _ => "it creates a class instance; a checkpoint only needs tensors",
            },
        )
    }

    /// The same object: nothing is copied.
    fn share(&mut self, id: &mut Id) -> (Id, Size) {
        (*id, Size { nodes: 1, bytes: 0 })
    }

    fn owned(&self, _id: &Id) -> usize {
        0
    }

    fn finish(self, root: Id, _h: Here) -> Result<Pickled, UnpickleError> {
        Ok(Pickled { nodes: self.nodes, root, storages: self.storages })
    }
}

impl From<Fault> for UnpickleError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Read(e) => e.into(),
            Fault::Empty => UnpickleError::NoStop(0),
            Fault::NoStop(n) => UnpickleError::NoStop(n),
            Fault::Trailing(n) => UnpickleError::Trailing(n),
            Fault::Protocol { proto, at } => UnpickleError::Malformed { op: "PROTO", at, msg: format!("unsupported pickle protocol {proto}") },
            Fault::Global { module, name, hint } => UnpickleError::Global { name: format!("{module}.{name}"), hint },
            Fault::TooManyValues(n) => UnpickleError::TooLarge(format!("more than {n} values")),
            Fault::TooMuchCopying(n) => UnpickleError::TooLarge(format!("more than {n} bytes copied")),
            Fault::Malformed { op, at, msg } => UnpickleError::Malformed { op, at, msg },
        }
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
