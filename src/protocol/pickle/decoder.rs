//! The stack machine: one step per opcode from the shared reader, under the wire policy
//! (plain data only, the three data constructors evaluated, everything else refused).
use super::*;

pub(super) struct Decoder<'a> {
    pub(super) stack: Vec<Entry<'a>>,
    /// Stack lengths at each open MARK.
    pub(super) marks: Vec<usize>,
    /// Only keys that some GET reads; storing into any other key does nothing.
    pub(super) memo: HashMap<u32, MemoSlot<'a>>,
    /// (stack position, memo key) of the memo slots that refer to a value still on the stack.
    /// Sorted by position: a store always refers to the top, and leaving the stack releases.
    pub(super) live: Vec<(usize, u32)>,
    pub(super) memo_len: MemoLen,
    pub(super) max_depth: u32,
    pub(super) budget: Budget,
    pub(super) hash_keys: Option<RandomState>,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(buf: &'a [u8], limits: &Limits) -> Self {
        // Pre-scan: which memo keys are ever read, and how often. Storing a value for a key
        // nobody reads would cost a copy for nothing. The scan stops at the first thing it
        // cannot read; the real pass stops there too, with the error.
        let mut memo = HashMap::new();
        let (mut put, mut memoize) = (false, false);
        let mut r = Reader::new(buf);
        while r.more() {
            match r.next() {
                Ok((Op::Get(k), ..)) => {
                    let slot = memo.entry(k).or_insert(MemoSlot { remaining: 0, state: MemoState::Unset });
                    slot.remaining = slot.remaining.saturating_add(1);
                }
                Ok((Op::Put(_), ..)) => put = true,
                Ok((Op::Memoize, ..)) => memoize = true,
                Ok((Op::Stop | Op::Object(_), ..)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let memo_len = if put && memoize { MemoLen::Keys(HashSet::new()) } else { MemoLen::Counter(0) };
        Decoder {
            stack: Vec::with_capacity(16),
            marks: Vec::new(),
            memo,
            live: Vec::new(),
            memo_len,
            max_depth: limits.max_depth.min(HARD_MAX_DEPTH) as u32,
            budget: Budget {
                nodes: 0,
                max_nodes: limits.max_nodes,
                copied: 0,
                max_copied: buf.len().saturating_mul(COPY_FACTOR).saturating_add(COPY_SLACK),
            },
            hash_keys: None,
        }
    }

    /// Values above the last MARK (the only ones an opcode may consume).
    #[inline]
    pub(super) fn avail(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    #[inline]
    pub(super) fn need(&self, n: usize, c: u8, at: usize) -> Result<(), PickleError> {
        let have = self.avail();
        if have < n {
            let where_ = if self.marks.is_empty() { "on the stack" } else { "above the last MARK" };
            return Err(malformed(c, at, format!("stack underflow: needs {n} value(s), {have} {where_}")));
        }
        Ok(())
    }

    #[inline]
    pub(super) fn push_scalar(&mut self, v: Value<'a>, owned: usize) -> Result<(), PickleError> {
        self.budget.charge(1, owned)?;
        self.stack.push(Entry::scalar(v, owned));
        Ok(())
    }

    pub(super) fn push_container(&mut self, v: Value<'a>) -> Result<(), PickleError> {
        self.check_depth(1)?;
        self.budget.charge(1, 0)?;
        let hashable = matches!(v, Value::Tuple(_));
        self.stack.push(Entry::new(Item::V(v), 1, hashable, 1, 0));
        Ok(())
    }

    #[inline]
    pub(super) fn check_depth(&self, h: u32) -> Result<(), PickleError> {
        if h > self.max_depth {
            return Err(PickleError::TooDeep(self.max_depth as usize));
        }
        Ok(())
    }

    /// Before the entries from `start` up leave the stack: memo keys that still refer to one of
    /// them get a copy (if some GET of them is still to come). Every removal goes through here.
    pub(super) fn release_from(&mut self, start: usize) -> Result<(), PickleError> {
        while let Some(&(pos, k)) = self.live.last() {
            if pos < start {
                break;
            }
            self.live.pop();
            let Some(slot) = self.memo.get_mut(&k) else { continue };
            if !matches!(slot.state, MemoState::Live(p) if p == pos) {
                continue;
            }
            if slot.remaining == 0 {
                slot.state = MemoState::Unset;
                continue;
            }
            let e = &self.stack[pos];
            self.budget.charge(e.nodes, e.owned)?;
            slot.state = MemoState::Frozen(e.copy());
        }
        Ok(())
    }

    pub(super) fn pop(&mut self) -> Result<Entry<'a>, PickleError> {
        self.release_from(self.stack.len() - 1)?;
        Ok(self.stack.pop().expect("checked by need()"))
    }

    /// Removes the entries from `start` up.
    pub(super) fn truncate(&mut self, start: usize) -> Result<(), PickleError> {
        self.release_from(start)?;
        self.stack.truncate(start);
        Ok(())
    }

    /// Closes the last MARK: where the values above it start.
    pub(super) fn close_mark(&mut self, c: u8, at: usize) -> Result<usize, PickleError> {
        self.marks.pop().ok_or_else(|| malformed(c, at, "no MARK to close"))
    }

    /// After `close_mark`: the container the values are added to must be there, above any
    /// earlier MARK.
    pub(super) fn need_below(&self, start: usize, what: &str, c: u8, at: usize) -> Result<(), PickleError> {
        if start == self.marks.last().copied().unwrap_or(0) {
            return Err(malformed(c, at, format!("stack underflow: no {what} below the MARK")));
        }
        Ok(())
    }

    pub(super) fn memo_store(&mut self, k: u32, c: u8, at: usize) -> Result<(), PickleError> {
        self.need(1, c, at)?;
        if self.memo.is_empty() {
            return Ok(());
        }
        let top = self.stack.len() - 1;
        if let Some(slot) = self.memo.get_mut(&k) {
            slot.state = MemoState::Live(top);
            self.live.push((top, k));
        }
        Ok(())
    }

    pub(super) fn memo_get(&mut self, k: u32, c: u8, at: usize) -> Result<(), PickleError> {
        let undefined = || malformed(c, at, format!("memo key {k} was never stored"));
        let slot = self.memo.get_mut(&k).ok_or_else(undefined)?;
        slot.remaining = slot.remaining.saturating_sub(1);
        let e = match &mut slot.state {
            MemoState::Unset => return Err(undefined()),
            MemoState::Live(p) => {
                let orig = &mut self.stack[*p];
                orig.shared = true;
                self.budget.charge(orig.nodes, orig.owned)?;
                orig.copy()
            }
            MemoState::Frozen(f) if slot.remaining > 0 => {
                self.budget.charge(f.nodes, f.owned)?;
                f.copy()
            }
            // The last GET of this key: hand over the frozen copy itself.
            MemoState::Frozen(_) => match std::mem::replace(&mut slot.state, MemoState::Unset) {
                MemoState::Frozen(f) => f,
                _ => unreachable!(),
            },
        };
        self.stack.push(e);
        Ok(())
    }

    /// The value of an entry that is about to be put into a container.
    pub(super) fn value_of(e: Entry<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
        Self::materialize(e.item, c, at)
    }

    pub(super) fn materialize(item: Item<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
        match item {
            Item::V(v) => Ok(v),
            Item::L(b, sc, sat) => Ok(Value::Str(Cow::Borrowed(utf8(b, sc, sat)?))),
            Item::Latin1Args(b, sc, sat, enc) => {
                Ok(Value::Tuple(vec![Value::Str(Cow::Borrowed(utf8(b, sc, sat)?)), Value::Str(Cow::Borrowed(enc))]))
            }
            Item::G(g) => Err(PickleError::Refused {
                op: op_name(c),
                at,
                why: format!("stores the global '{}' as a value (it may only be called, by REDUCE, to make bytes)", g.name()),
            }),
        }
    }

    /// Replaces the values from `start` up by a list or tuple of them.
    pub(super) fn build_seq(&mut self, start: usize, tuple: bool, c: u8, at: usize) -> Result<(), PickleError> {
        self.release_from(start)?;
        let n = self.stack.len() - start;
        // The arguments of `_codecs.encode(text, 'latin1')` (or bytearray's): keep the text
        // unchecked for REDUCE's one-pass conversion.
        if tuple && n == 2 && start > 0 && matches!(self.stack[start - 1].item, Item::G(Ctor::Encode | Ctor::ByteArray)) {
            if let (Item::L(b, sc, sat), Some(enc)) = (&self.stack[start].item, latin1_name(&self.stack[start + 1].item)) {
                let item = Item::Latin1Args(b, *sc, *sat, enc);
                self.check_depth(1)?;
                self.budget.charge(1, 0)?;
                self.stack.truncate(start);
                self.stack.push(Entry::new(item, 1, true, 3, 0));
                return Ok(());
            }
        }
        let (mut height, mut nodes, mut owned, mut hashable) = (0u32, 1usize, 0usize, true);
        let mut vals = Vec::with_capacity(n);
        for e in &mut self.stack[start..] {
            height = height.max(e.height);
            nodes += e.nodes;
            owned += e.owned;
            hashable &= e.hashable;
            vals.push(Self::materialize(take(&mut e.item), c, at)?);
        }
        self.stack.truncate(start);
        self.check_depth(height + 1)?;
        self.budget.charge(1, 0)?;
        let v = if tuple { Value::Tuple(vals) } else { Value::List(vals) };
        self.stack.push(Entry::new(Item::V(v), height + 1, tuple && hashable, nodes, owned));
        Ok(())
    }

    /// Moves the values from `start` up into the list just below them.
    pub(super) fn append(&mut self, start: usize, c: u8, at: usize) -> Result<(), PickleError> {
        self.release_from(start)?;
        let max_depth = self.max_depth;
        let (below, items) = self.stack.split_at_mut(start);
        let t = below.last_mut().expect("checked by the callers");
        check_target(t, false, c, at)?;
        let (mut height, mut nodes, mut owned) = (t.height, t.nodes, t.owned);
        let Item::V(Value::List(list)) = &mut t.item else { unreachable!() };
        list.reserve(items.len());
        for e in items.iter_mut() {
            height = height.max(e.height + 1);
            nodes += e.nodes;
            owned += e.owned;
            list.push(Self::materialize(take(&mut e.item), c, at)?);
        }
        if height > max_depth {
            return Err(PickleError::TooDeep(max_depth as usize));
        }
        (t.height, t.nodes, t.owned) = (height, nodes, owned);
        self.stack.truncate(start);
        Ok(())
    }

    /// Moves the key/value pairs from `start` up into the dict just below them.
    pub(super) fn set_items(&mut self, start: usize, c: u8, at: usize) -> Result<(), PickleError> {
        let n = self.stack.len() - start;
        if !n.is_multiple_of(2) {
            return Err(malformed(c, at, format!("odd number of values ({n}) for key/value pairs")));
        }
        self.release_from(start)?;
        let max_depth = self.max_depth;
        let hasher = self.hash_keys.get_or_insert_with(RandomState::new);
        let (below, items) = self.stack.split_at_mut(start);
        let t = below.last_mut().expect("checked by the callers");
        check_target(t, true, c, at)?;
        let (mut height, mut nodes, mut owned) = (t.height, t.nodes, t.owned);
        let Item::V(Value::Dict(dict)) = &mut t.item else { unreachable!() };
        dict.reserve(n / 2);
        for pair in items.chunks_exact_mut(2) {
            let [k, v] = pair else { unreachable!() };
            if !k.hashable {
                if let Item::G(_) = k.item {
                    return Self::materialize(take(&mut k.item), c, at).map(|_| ());
                }
                return Err(malformed(c, at, format!("unhashable dict key of type {}", item_type(&k.item))));
            }
            height = height.max(k.height.max(v.height) + 1);
            nodes += k.nodes + v.nodes;
            owned += k.owned + v.owned;
            let k = Self::materialize(take(&mut k.item), c, at)?;
            let v = Self::materialize(take(&mut v.item), c, at)?;
            dict_insert(dict, &mut t.key_index, hasher, k, v).map_err(|k| malformed(c, at, format!("repeated dict key {}", short_repr(&k))))?;
        }
        if height > max_depth {
            return Err(PickleError::TooDeep(max_depth as usize));
        }
        (t.height, t.nodes, t.owned) = (height, nodes, owned);
        self.stack.truncate(start);
        Ok(())
    }

    pub(super) fn reduce(&mut self, c: u8, at: usize) -> Result<(), PickleError> {
        self.need(2, c, at)?;
        let args = self.pop()?;
        let func = self.pop()?;
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
            self.budget.charge(1, owned)?;
            self.stack.push(Entry { hashable: ctor == Ctor::Encode, ..Entry::scalar(Value::Bytes(bytes), owned) });
            return Ok(());
        }
        let args_type = item_type(&args.item);
        let Value::Tuple(args) = Self::value_of(args, c, at)? else {
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
                let Some(Value::Bytes(b)) = args.into_iter().next() else { unreachable!() };
                (b, false)
            }
            (Ctor::Encode | Ctor::ByteArray, 2) if matches!(args[0], Value::Str(_)) && is_latin1(&args[1]) => {
                let Some(Value::Str(s)) = args.into_iter().next() else { unreachable!() };
                let b = latin1_bytes(s).map_err(|i| {
                    malformed(c, at, format!("{}(): character {i} of the string is above U+00FF, so it is not latin-1", ctor.name()))
                })?;
                (b, ctor == Ctor::Encode)
            }
            _ => return Err(bad_args(&args)),
        };
        let owned = if matches!(bytes, Cow::Owned(_)) { bytes.len() } else { 0 };
        self.budget.charge(1, owned)?;
        self.stack.push(Entry { hashable, ..Entry::scalar(Value::Bytes(bytes), owned) });
        Ok(())
    }

    /// Executes one opcode; the result when it is STOP.
    pub(super) fn step(&mut self, op: Op<'a>, c: u8, at: usize) -> Result<Option<Value<'a>>, PickleError> {
        match op {
            Op::Proto(p) => {
                if p > 5 {
                    return Err(PickleError::Protocol { proto: p, at });
                }
            }
            Op::Frame => {}
            Op::Stop => {
                if !self.marks.is_empty() {
                    return Err(malformed(c, at, format!("{} MARK(s) left open", self.marks.len())));
                }
                if self.stack.len() != 1 {
                    return Err(malformed(c, at, format!("{} values on the stack, expected 1", self.stack.len())));
                }
                let e = self.stack.pop().expect("one value");
                return Self::value_of(e, c, at).map(Some);
            }
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                if self.avail() > 0 {
                    self.pop()?;
                } else if !self.marks.is_empty() {
                    // As Python: POP with nothing above the MARK pops the MARK.
                    self.close_mark(c, at)?;
                } else {
                    self.need(1, c, at)?;
                }
            }
            Op::PopMark => {
                let start = self.close_mark(c, at)?;
                self.truncate(start)?;
            }
            Op::Dup => {
                self.need(1, c, at)?;
                let top = self.stack.last_mut().expect("checked");
                top.shared = true;
                let e = top.copy();
                self.budget.charge(e.nodes, e.owned)?;
                self.stack.push(e);
            }
            Op::None => self.push_scalar(Value::None, 0)?,
            Op::Bool(b) => self.push_scalar(Value::Bool(b), 0)?,
            Op::Int(i) => self.push_scalar(Value::Int(i), 0)?,
            Op::Long(b) => {
                let i = long_to_i64(b).ok_or_else(|| malformed(c, at, "integer does not fit in 64 bits"))?;
                self.push_scalar(Value::Int(i), 0)?;
            }
            Op::Float(f) => self.push_scalar(Value::Float(f), 0)?,
            Op::Utf8(b) => {
                self.budget.charge(1, 0)?;
                self.stack.push(Entry::new(Item::L(b, c, at), 0, true, 1, 0));
            }
            Op::Latin1(b) => {
                let s = latin1_str(b);
                let owned = if matches!(s, Cow::Owned(_)) { s.len() } else { 0 };
                self.push_scalar(Value::Str(s), owned)?;
            }
            Op::Bytes(b) => self.push_scalar(Value::Bytes(Cow::Borrowed(b)), 0)?,
            Op::ByteArray(b) => {
                self.budget.charge(1, 0)?;
                self.stack.push(Entry { hashable: false, ..Entry::scalar(Value::Bytes(Cow::Borrowed(b)), 0) });
            }
            Op::TextInt(line) => {
                let v = match line {
                    b"01" => Value::Bool(true),
                    b"00" => Value::Bool(false),
                    _ => Value::Int(parse_text_int(line).ok_or_else(|| bad_text(c, at, line))?),
                };
                self.push_scalar(v, 0)?;
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
                self.push_scalar(Value::Int(i), 0)?;
            }
            Op::TextFloat(line) => {
                let f = std::str::from_utf8(line).ok().and_then(|s| s.trim().parse::<f64>().ok()).ok_or_else(|| bad_text(c, at, line))?;
                self.push_scalar(Value::Float(f), 0)?;
            }
            Op::TextString(line) => {
                let s = python_string_literal(line).ok_or_else(|| bad_text(c, at, line))?;
                let owned = s.len();
                self.push_scalar(Value::Str(Cow::Owned(s)), owned)?;
            }
            Op::TextUnicode(line) => {
                let s = raw_unicode_escape(line).ok_or_else(|| bad_text(c, at, line))?;
                let owned = if matches!(s, Cow::Owned(_)) { s.len() } else { 0 };
                self.push_scalar(Value::Str(s), owned)?;
            }
            Op::EmptyList => self.push_container(Value::List(Vec::new()))?,
            Op::EmptyTuple => self.push_container(Value::Tuple(Vec::new()))?,
            Op::EmptyDict => self.push_container(Value::Dict(Vec::new()))?,
            Op::Append => {
                self.need(2, c, at)?;
                self.append(self.stack.len() - 1, c, at)?;
            }
            Op::Appends => {
                let start = self.close_mark(c, at)?;
                self.need_below(start, "list", c, at)?;
                self.append(start, c, at)?;
            }
            Op::SetItem => {
                self.need(3, c, at)?;
                self.set_items(self.stack.len() - 2, c, at)?;
            }
            Op::SetItems => {
                let start = self.close_mark(c, at)?;
                self.need_below(start, "dict", c, at)?;
                self.set_items(start, c, at)?;
            }
            Op::List => {
                let start = self.close_mark(c, at)?;
                self.build_seq(start, false, c, at)?;
            }
            Op::Tuple => {
                let start = self.close_mark(c, at)?;
                self.build_seq(start, true, c, at)?;
            }
            Op::TupleN(n) => {
                self.need(n, c, at)?;
                self.build_seq(self.stack.len() - n, true, c, at)?;
            }
            Op::Dict => {
                // The new dict goes below the pairs, which then move into it.
                let start = self.close_mark(c, at)?;
                self.release_from(start)?;
                self.check_depth(1)?;
                self.budget.charge(1, 0)?;
                self.stack.insert(start, Entry::new(Item::V(Value::Dict(Vec::new())), 1, false, 1, 0));
                self.set_items(start + 1, c, at)?;
            }
            Op::Memoize => {
                let k = match &mut self.memo_len {
                    MemoLen::Counter(n) => {
                        *n = n.checked_add(1).ok_or_else(|| malformed(c, at, "more than 2^32 memo entries"))?;
                        *n - 1
                    }
                    MemoLen::Keys(keys) => {
                        let k = keys.len() as u32;
                        keys.insert(k);
                        k
                    }
                };
                self.memo_store(k, c, at)?;
            }
            Op::Put(k) => {
                if let MemoLen::Keys(keys) = &mut self.memo_len {
                    keys.insert(k);
                }
                self.memo_store(k, c, at)?;
            }
            Op::Get(k) => self.memo_get(k, c, at)?,
            Op::Global(module, name) => {
                let g = Ctor::lookup(module, name)?;
                self.budget.charge(1, 0)?;
                self.stack.push(Entry::new(Item::G(g), 0, false, 1, 0));
            }
            Op::StackGlobal => {
                self.need(2, c, at)?;
                let name = Self::value_of(self.pop()?, c, at)?;
                let module = Self::value_of(self.pop()?, c, at)?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err(malformed(c, at, "module and name must be strings"));
                };
                let g = Ctor::lookup(module.as_bytes(), name.as_bytes())?;
                self.budget.charge(1, 0)?;
                self.stack.push(Entry::new(Item::G(g), 0, false, 1, 0));
            }
            Op::Reduce => self.reduce(c, at)?,
            Op::Object(_) => {
                return Err(PickleError::Refused { op: op_name(c), at, why: format!("{} ({PLAIN})", refusal(c)) });
            }
        }
        Ok(None)
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

pub(super) fn parse_text_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse::<i64>().ok()
}

pub(super) fn bad_text(c: u8, at: usize, line: &[u8]) -> PickleError {
    let s = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
    malformed(c, at, format!("cannot read the argument {s:?}"))
}
