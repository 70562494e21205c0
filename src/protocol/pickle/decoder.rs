//! The wire policy on the shared pickle machine: plain data only, the three data constructors
//! evaluated, everything else refused. Values are trees that borrow from the input; each carries
//! its height, size and hashability (see [`Entry`]) so that the limits hold as the input is read.
use super::*;
use crate::io::pickle::machine::{Here, Policy, Size};

pub(super) struct Plain {
    pub(super) max_depth: u32,
    pub(super) hash_keys: Option<RandomState>,
}

impl Plain {
    pub(super) fn new(limits: &Limits) -> Self {
        Plain { max_depth: limits.max_depth.min(HARD_MAX_DEPTH) as u32, hash_keys: None }
    }

    #[inline]
    fn check_depth(&self, h: u32) -> Result<(), PickleError> {
        if h > self.max_depth {
            return Err(PickleError::TooDeep(self.max_depth as usize));
        }
        Ok(())
    }

    fn container(&self, v: Value<'static>) -> Result<Entry<'static>, PickleError> {
        self.check_depth(1)?;
        let hashable = matches!(v, Value::Tuple(_));
        Ok(Entry::new(Item::V(v), 1, hashable, 1, 0))
    }
}

/// The value of an entry that is about to be put into a container.
pub(super) fn value_of<'a>(e: Entry<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
    materialize(e.item, c, at)
}

pub(super) fn materialize<'a>(item: Item<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
    match item {
        Item::V(v) => Ok(v),
        Item::L(b, sc, sat) => Ok(Value::Str(Cow::Borrowed(utf8(b, sc, sat)?))),
        Item::Latin1Args(b, sc, sat, enc) => Ok(Value::Tuple(vec![Value::Str(Cow::Borrowed(utf8(b, sc, sat)?)), Value::Str(Cow::Borrowed(enc))])),
        Item::G(g) => Err(PickleError::Refused {
            op: op_name(c),
            at,
            why: format!("stores the global '{}' as a value (it may only be called, by REDUCE, to make bytes)", g.name()),
        }),
    }
}

impl<'a> Policy<'a> for Plain {
    type Item = Entry<'a>;
    type Output = Value<'a>;
    type Error = PickleError;

    fn atom(&mut self, op: Op<'a>, h: Here) -> Result<Entry<'a>, PickleError> {
        let Here { code: c, at } = h;
        Ok(match op {
            Op::None => Entry::scalar(Value::None, 0),
            Op::Bool(b) => Entry::scalar(Value::Bool(b), 0),
            Op::Int(i) => Entry::scalar(Value::Int(i), 0),
            Op::Long(b) => Entry::scalar(Value::Int(long_to_i64(b).ok_or_else(|| malformed(c, at, "integer does not fit in 64 bits"))?), 0),
            Op::Float(f) => Entry::scalar(Value::Float(f), 0),
            Op::Utf8(b) => Entry::new(Item::L(b, c, at), 0, true, 1, 0),
            Op::Latin1(b) => {
                let s = latin1_str(b);
                let owned = if matches!(s, Cow::Owned(_)) { s.len() } else { 0 };
                Entry::scalar(Value::Str(s), owned)
            }
            Op::Bytes(b) => Entry::scalar(Value::Bytes(Cow::Borrowed(b)), 0),
            Op::ByteArray(b) => Entry { hashable: false, ..Entry::scalar(Value::Bytes(Cow::Borrowed(b)), 0) },
            Op::TextInt(line) => {
                let v = match line {
                    b"01" => Value::Bool(true),
                    b"00" => Value::Bool(false),
                    _ => Value::Int(parse_text_int(line).ok_or_else(|| bad_text(c, at, line))?),
                };
                Entry::scalar(v, 0)
            }
            Op::TextLong(line) => {
                let digits = line.strip_suffix(b"L").unwrap_or(line);
                let i = parse_text_int(digits).ok_or_else(|| {
                    if !digits.is_empty() && digits.iter().enumerate().all(|(i, &d)| d.is_ascii_digit() || (i == 0 && (d == b'-' || d == b'+'))) {
                        malformed(c, at, "integer does not fit in 64 bits")
                    } else {
                        bad_text(c, at, line)
                    }
                })?;
                Entry::scalar(Value::Int(i), 0)
            }
            Op::TextFloat(line) => {
                let f = std::str::from_utf8(line).ok().and_then(|s| s.trim().parse::<f64>().ok()).ok_or_else(|| bad_text(c, at, line))?;
                Entry::scalar(Value::Float(f), 0)
            }
            Op::TextString(line) => {
                let s = python_string_literal(line).ok_or_else(|| bad_text(c, at, line))?;
                let owned = s.len();
                Entry::scalar(Value::Str(Cow::Owned(s)), owned)
            }
            Op::TextUnicode(line) => {
                let s = raw_unicode_escape(line).ok_or_else(|| bad_text(c, at, line))?;
                let owned = if matches!(s, Cow::Owned(_)) { s.len() } else { 0 };
                Entry::scalar(Value::Str(s), owned)
            }
            Op::EmptyList => self.container(Value::List(Vec::new()))?,
            Op::EmptyTuple => self.container(Value::Tuple(Vec::new()))?,
            Op::EmptyDict => self.container(Value::Dict(Vec::new()))?,
            _ => unreachable!("the machine hands atoms only"),
        })
    }

    fn sequence(&mut self, below: Option<&Entry<'a>>, items: &mut [Entry<'a>], tuple: bool, h: Here) -> Result<Entry<'a>, PickleError> {
        let Here { code: c, at } = h;
        // The arguments of `_codecs.encode(text, 'latin1')` (or bytearray's): keep the text
        // unchecked for REDUCE's one-pass conversion.
        if tuple && items.len() == 2 && matches!(below, Some(Entry { item: Item::G(Ctor::Encode | Ctor::ByteArray), .. })) {
            if let (Item::L(b, sc, sat), Some(enc)) = (&items[0].item, latin1_name(&items[1].item)) {
                self.check_depth(1)?;
                return Ok(Entry::new(Item::Latin1Args(b, *sc, *sat, enc), 1, true, 3, 0));
            }
        }
        let (mut height, mut nodes, mut owned, mut hashable) = (0u32, 1usize, 0usize, true);
        let mut vals = Vec::with_capacity(items.len());
        for e in items.iter_mut() {
            height = height.max(e.height);
            nodes += e.nodes;
            owned += e.owned;
            hashable &= e.hashable;
            vals.push(materialize(take(&mut e.item), c, at)?);
        }
        self.check_depth(height + 1)?;
        let v = if tuple { Value::Tuple(vals) } else { Value::List(vals) };
        Ok(Entry::new(Item::V(v), height + 1, tuple && hashable, nodes, owned))
    }

    fn append(&mut self, t: &mut Entry<'a>, items: &mut [Entry<'a>], h: Here) -> Result<(), PickleError> {
        let Here { code: c, at } = h;
        check_target(t, false, c, at)?;
        let (mut height, mut nodes, mut owned) = (t.height, t.nodes, t.owned);
        let Item::V(Value::List(list)) = &mut t.item else { unreachable!("checked by check_target") };
        list.reserve(items.len());
        for e in items.iter_mut() {
            height = height.max(e.height + 1);
            nodes += e.nodes;
            owned += e.owned;
            list.push(materialize(take(&mut e.item), c, at)?);
        }
        self.check_depth(height)?;
        (t.height, t.nodes, t.owned) = (height, nodes, owned);
        Ok(())
    }

    fn set_items(&mut self, t: &mut Entry<'a>, pairs: &mut [Entry<'a>], h: Here) -> Result<(), PickleError> {
        let Here { code: c, at } = h;
        check_target(t, true, c, at)?;
        let max_depth = self.max_depth;
        let hasher = self.hash_keys.get_or_insert_with(RandomState::new);
        let (mut height, mut nodes, mut owned) = (t.height, t.nodes, t.owned);
        let Item::V(Value::Dict(dict)) = &mut t.item else { unreachable!("checked by check_target") };
        dict.reserve(pairs.len() / 2);
        for pair in pairs.chunks_exact_mut(2) {
            let [k, v] = pair else { unreachable!("chunks of 2") };
            if !k.hashable {
                if let Item::G(_) = k.item {
                    return materialize(take(&mut k.item), c, at).map(|_| ());
                }
                return Err(malformed(c, at, format!("unhashable dict key of type {}", item_type(&k.item))));
            }
            height = height.max(k.height.max(v.height) + 1);
            nodes += k.nodes + v.nodes;
            owned += k.owned + v.owned;
            let k = materialize(take(&mut k.item), c, at)?;
            let v = materialize(take(&mut v.item), c, at)?;
            dict_insert(dict, &mut t.key_index, hasher, k, v).map_err(|k| malformed(c, at, format!("repeated dict key {}", short_repr(&k))))?;
        }
        if height > max_depth {
            return Err(PickleError::TooDeep(max_depth as usize));
        }
        (t.height, t.nodes, t.owned) = (height, nodes, owned);
        Ok(())
    }

    fn global(&mut self, module: &[u8], name: &[u8]) -> Option<Entry<'a>> {
        Ctor::lookup(module, name).map(|g| Entry::new(Item::G(g), 0, false, 1, 0))
    }

    fn global_hint(&self, module: &[u8], name: &[u8]) -> &'static str {
        if module == b"numpy" || module.starts_with(b"numpy.") || module.starts_with(b"torch") {
            "; arrays cannot be sent as objects: send arr.tobytes() (with its shape and dtype) instead"
        } else if matches!(name, b"set" | b"frozenset") {
            "; sets are not supported: send a list or tuple instead"
        } else {
            ""
        }
    }

    fn text<'s>(&'s self, e: &'s Entry<'a>) -> Option<&'s [u8]> {
        match &e.item {
            Item::V(Value::Str(s)) => Some(s.as_bytes()),
            Item::L(b, ..) => Some(b),
            _ => None,
        }
    }

    fn reduce(&mut self, func: Entry<'a>, args: Entry<'a>, h: Here) -> Result<Entry<'a>, PickleError> {
        let Here { code: c, at } = h;
        let ctor = match func.item {
            Item::G(g) => g,
            other => return Err(malformed(c, at, format!("calls a {}, which is not a function", item_type(&other)))),
        };
        if let (Item::Latin1Args(text, sc, sat, _), Ctor::Encode | Ctor::ByteArray) = (&args.item, ctor) {
            // The hot path of protocols 0-2: validate and convert in one pass; on failure, say
            // what is wrong.
            let bytes = match latin1_from_utf8(text) {
                Some(b) => b,
                None => latin1_bytes(Cow::Borrowed(utf8(text, *sc, *sat)?)).map_err(|i| {
                    malformed(c, at, format!("{}(): character {i} of the string is above U+00FF, so it is not latin-1", ctor.name()))
                })?,
            };
            let owned = if matches!(bytes, Cow::Owned(_)) { bytes.len() } else { 0 };
            return Ok(Entry { hashable: ctor == Ctor::Encode, ..Entry::scalar(Value::Bytes(bytes), owned) });
        }
        let args_type = item_type(&args.item);
        let Value::Tuple(args) = value_of(args, c, at)? else {
            return Err(malformed(c, at, format!("arguments of {}() are a {args_type}, not a tuple", ctor.name())));
        };
        let bad_args = |args: &[Value]| {
            let types: Vec<&str> = args.iter().map(Value::type_name).collect();
            PickleError::Refused {
                op: op_name(c),
                at,
                why: format!("calls {}({}): only _codecs.encode(str, 'latin1'), bytes() and bytearray() / bytearray(bytes) / bytearray(str, 'latin-1') are accepted", ctor.name(), types.join(", ")),
            }
        };
        let is_latin1 = |e: &Value| e.as_str().is_some_and(|s| LATIN1_NAMES.contains(&s));
        let (bytes, hashable) = match (ctor, args.len()) {
            (Ctor::Bytes | Ctor::ByteArray, 0) => (Cow::Borrowed(&[][..]), ctor == Ctor::Bytes),
            (Ctor::ByteArray, 1) if matches!(args[0], Value::Bytes(_)) => {
                let Some(Value::Bytes(b)) = args.into_iter().next() else { unreachable!("matched above") };
                (b, false)
            }
            (Ctor::Encode | Ctor::ByteArray, 2) if matches!(args[0], Value::Str(_)) && is_latin1(&args[1]) => {
                let Some(Value::Str(s)) = args.into_iter().next() else { unreachable!("matched above") };
                let b = latin1_bytes(s).map_err(|i| {
                    malformed(c, at, format!("{}(): character {i} of the string is above U+00FF, so it is not latin-1", ctor.name()))
                })?;
                (b, ctor == Ctor::Encode)
            }
            _ => return Err(bad_args(&args)),
        };
        let owned = if matches!(bytes, Cow::Owned(_)) { bytes.len() } else { 0 };
        Ok(Entry { hashable, ..Entry::scalar(Value::Bytes(bytes), owned) })
    }

    fn refuse(&self, h: Here) -> PickleError {
        PickleError::Refused { op: h.op(), at: h.at, why: format!("{} ({PLAIN})", refusal(h.code)) }
    }

    fn share(&mut self, e: &mut Entry<'a>) -> (Entry<'a>, Size) {
        // Mutating it from now on would change every reference: refused (see `check_target`).
        e.shared = true;
        (e.copy(), Size { nodes: e.nodes, bytes: e.owned })
    }

    fn owned(&self, e: &Entry<'a>) -> usize {
        e.owned
    }

    fn finish(self, root: Entry<'a>, h: Here) -> Result<Value<'a>, PickleError> {
        value_of(root, h.code, h.at)
    }
}

/// Why this decoder refuses an opcode that builds something other than plain data.
pub(super) fn refusal(c: u8) -> &'static str {
    use code::*;
    match c {
        INST | OBJ | NEWOBJ | NEWOBJ_EX => "builds a class instance",
        BUILD => "sets an object's state",
        PERSID | BINPERSID => "refers to a persistent (external) object",
        EXT1 | EXT2 | EXT4 => "refers to a registered extension object",
        NEXT_BUFFER | READONLY_BUFFER => "uses an out-of-band buffer (pickle with protocol 5 without buffer_callback, so bytes are in-band)",
        _ => "builds a set: sets are not supported, send a list or tuple instead",
    }
}

impl From<ReadError> for PickleError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Truncated { op, at, need, left } => PickleError::Truncated { op, at, need, left },
            ReadError::UnterminatedLine { op, at } => PickleError::UnterminatedLine { op, at },
            ReadError::UnknownOpcode { op, at } => PickleError::UnknownOpcode { op, at },
            ReadError::Malformed { op, at, msg } => PickleError::Malformed { op, at, msg },
        }
    }
}

impl From<Fault> for PickleError {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Read(e) => e.into(),
            Fault::Empty => PickleError::Empty,
            Fault::NoStop(n) => PickleError::NoStop(n),
            Fault::Trailing(n) => PickleError::Trailing(n),
            Fault::Protocol { proto, at } => PickleError::Protocol { proto, at },
            Fault::Global { module, name, hint } => PickleError::Global { module, name, hint },
            Fault::TooManyValues(n) => PickleError::TooManyValues(n),
            Fault::TooMuchCopying(n) => PickleError::TooMuchCopying(n),
            Fault::Malformed { op, at, msg } => PickleError::Malformed { op, at, msg },
        }
    }
}

pub(super) fn parse_text_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse::<i64>().ok()
}

pub(super) fn bad_text(c: u8, at: usize, line: &[u8]) -> PickleError {
    let s = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
    malformed(c, at, format!("cannot read the argument {s:?}"))
}
