//! The one restricted pickle machine. It runs the opcodes the [`Reader`] yields with an explicit
//! value stack, MARK stack and memo, under one budget, and leaves what a value *is* to a
//! [`Policy`]: the wire protocol's plain data (`protocol::pickle`) and a checkpoint's tensors
//! (`weights::unpickle`) are the two.
//!
//! What the machine guarantees whatever the policy:
//! * **Nothing is ever called.** A GLOBAL or STACK_GLOBAL the policy does not name is refused
//!   on sight, before any REDUCE; a REDUCE, BUILD or persistent id is the policy's to evaluate
//!   (or refuse), never Python's.
//! * **No recursion.** One loop over the opcodes; operands are only ever the values above the
//!   last MARK.
//! * **Bounded work.** Every value created, and every value copied for DUP or a memo GET (as
//!   the policy sizes it), counts against [`Budget`].
//! * **The memo refers to objects**, as Python's does: a value memoized while it is on the stack
//!   is shared from there (so a list memoized empty and filled afterwards is filled at every
//!   reference); when it leaves the stack, a copy is kept only if some GET still wants it. One
//!   pre-pass finds which keys are ever read, so that protocol 4 (which memoizes everything)
//!   costs nothing for the keys no GET reads.
use super::ops::name;
use super::reader::{Op, ReadError, Reader};
use std::collections::{HashMap, HashSet};

/// The opcode being executed and where it starts, for messages.
#[derive(Clone, Copy, Debug)]
pub struct Here {
    pub code: u8,
    pub at: usize,
}

impl Here {
    /// `pickletools`' name of the opcode.
    pub fn op(self) -> &'static str {
        name(self.code)
    }

    pub fn malformed(self, msg: impl Into<String>) -> Fault {
        Fault::Malformed { op: self.op(), at: self.at, msg: msg.into() }
    }
}

/// What the machine itself finds wrong; each policy's error type says it in its own words.
#[derive(Debug)]
pub enum Fault {
    Read(ReadError),
    Empty,
    NoStop(usize),
    Trailing(usize),
    Protocol { proto: u8, at: usize },
    /// A global the policy does not accept (names shortened to 80 characters).
    Global { module: String, name: String, hint: &'static str },
    TooManyValues(usize),
    TooMuchCopying(usize),
    /// Stack underflow, a missing MARK, an undefined memo key, ...
    Malformed { op: &'static str, at: usize, msg: String },
}

/// How many values may be created, and how many bytes copied, while decoding one pickle.
pub struct Budget {
    nodes: usize,
    max_nodes: usize,
    copied: usize,
    max_copied: usize,
}

impl Budget {
    pub fn new(max_nodes: usize, max_copied: usize) -> Budget {
        Budget { nodes: 0, max_nodes, copied: 0, max_copied }
    }

    #[inline]
    fn charge(&mut self, size: Size) -> Result<(), Fault> {
        self.nodes = self.nodes.saturating_add(size.nodes);
        if self.nodes > self.max_nodes {
            return Err(Fault::TooManyValues(self.max_nodes));
        }
        self.copied = self.copied.saturating_add(size.bytes);
        if self.copied > self.max_copied {
            return Err(Fault::TooMuchCopying(self.max_copied));
        }
        Ok(())
    }
}

/// What a value costs the budget: values in it, and bytes it owns (copied from the input).
#[derive(Clone, Copy, Debug, Default)]
pub struct Size {
    pub nodes: usize,
    pub bytes: usize,
}

impl Size {
    const ONE: Size = Size { nodes: 1, bytes: 0 };
}

/// What a decoder decides: what each opcode builds, which globals exist, what calling them
/// means. Hooks get their operands already taken off the stack (or as the slice above a MARK,
/// which the machine removes afterwards), checked for count and reachability.
pub trait Policy<'a> {
    /// One value on the stack.
    type Item;
    type Output;
    type Error: From<Fault>;

    /// The value of an opcode without operands: a scalar, a string, an empty container.
    fn atom(&mut self, op: Op<'a>, h: Here) -> Result<Self::Item, Self::Error>;
    /// LIST, TUPLE, TUPLE1–3 of `items`. `below` is the value under them (REDUCE's function
    /// when they are its arguments).
    fn sequence(&mut self, below: Option<&Self::Item>, items: &mut [Self::Item], tuple: bool, h: Here) -> Result<Self::Item, Self::Error>;
    /// APPEND(S): `items` go into the list `target`.
    fn append(&mut self, target: &mut Self::Item, items: &mut [Self::Item], h: Here) -> Result<(), Self::Error>;
    /// SETITEM(S), DICT: key/value `pairs` (an even number) go into the dict `target`.
    fn set_items(&mut self, target: &mut Self::Item, pairs: &mut [Self::Item], h: Here) -> Result<(), Self::Error>;
    /// The value of a global the policy accepts, None for every other.
    fn global(&mut self, module: &[u8], name: &[u8]) -> Option<Self::Item>;
    /// More to say about a refused global ("; send arr.tobytes() instead"), or "".
    fn global_hint(&self, module: &[u8], name: &[u8]) -> &'static str;
    /// The text of a str value (STACK_GLOBAL's operands).
    fn text<'s>(&'s self, item: &'s Self::Item) -> Option<&'s [u8]>;
    /// REDUCE: `func(*args)`, evaluated by the policy for the globals it accepts.
    fn reduce(&mut self, func: Self::Item, args: Self::Item, h: Here) -> Result<Self::Item, Self::Error>;
    /// BUILD: sets the state of `target`. Refused unless the policy says otherwise.
    fn build(&mut self, target: &mut Self::Item, state: Self::Item, h: Here) -> Result<(), Self::Error> {
        let _ = (target, state);
        Err(self.refuse(h))
    }
    /// BINPERSID: the object a persistent id names. Refused unless the policy says otherwise.
    fn persistent_load(&mut self, pid: Self::Item, h: Here) -> Result<Self::Item, Self::Error> {
        let _ = pid;
        Err(self.refuse(h))
    }
    /// Why an opcode that builds something other than data (instances, sets, extensions,
    /// out-of-band buffers, and BUILD/BINPERSID by default) is refused.
    fn refuse(&self, h: Here) -> Self::Error;
    /// Another reference to `item` (DUP, memo GET), which may be marked as shared, and its
    /// cost.
    fn share(&mut self, item: &mut Self::Item) -> (Self::Item, Size);
    /// Bytes a new value owns (a latin-1 conversion, an unescaped text string).
    fn owned(&self, item: &Self::Item) -> usize;
    /// STOP: the result, from the one value left.
    fn finish(self, root: Self::Item, h: Here) -> Result<Self::Output, Self::Error>;
}

/// Decodes one pickle, which must fill `buf` exactly (bytes after STOP are an error).
pub fn run<'a, P: Policy<'a>>(buf: &'a [u8], policy: P, budget: Budget) -> Result<P::Output, P::Error> {
    if buf.is_empty() {
        return Err(Fault::Empty.into());
    }
    let mut m = Machine::new(buf, policy, budget);
    let mut r = Reader::new(buf);
    while r.more() {
        let (op, code, at) = r.next().map_err(Fault::Read)?;
        let h = Here { code, at };
        if let Op::Stop = op {
            let root = m.stop(h)?;
            if r.more() {
                return Err(Fault::Trailing(r.left()).into());
            }
            return m.policy.finish(root, h);
        }
        m.step(op, h)?;
    }
    Err(Fault::NoStop(buf.len()).into())
}

enum MemoState<T> {
    Unset,
    /// The object is still on the stack at this position (and may still be growing).
    Live(usize),
    /// A copy taken when the object left the stack.
    Frozen(T),
}

struct MemoSlot<T> {
    /// GETs of this key still to come (from the pre-pass).
    remaining: u32,
    state: MemoState<T>,
}

/// `len(memo)`, which MEMOIZE uses as its key.
enum MemoLen {
    /// Only MEMOIZE stores: keys are 0, 1, 2, ...
    Counter(u32),
    /// PUT and MEMOIZE mixed: the distinct keys.
    Keys(HashSet<u32>),
}

struct Machine<'a, P: Policy<'a>> {
    policy: P,
    stack: Vec<P::Item>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    /// Only keys that some GET reads; storing into any other key does nothing.
    memo: HashMap<u32, MemoSlot<P::Item>>,
    /// (stack position, memo key) of the memo slots that refer to a value still on the stack.
    /// Sorted by position: a store always refers to the top, and leaving the stack releases.
    live: Vec<(usize, u32)>,
    memo_len: MemoLen,
    budget: Budget,
}

impl<'a, P: Policy<'a>> Machine<'a, P> {
    fn new(buf: &'a [u8], policy: P, budget: Budget) -> Self {
        // Pre-pass: which memo keys are ever read, and how often. It stops at the first thing it
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
                Ok((Op::Stop, ..)) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let memo_len = if put && memoize { MemoLen::Keys(HashSet::new()) } else { MemoLen::Counter(0) };
        Machine { policy, stack: Vec::with_capacity(16), marks: Vec::new(), memo, live: Vec::new(), memo_len, budget }
    }

    /// Values above the last MARK (the only ones an opcode may consume).
    #[inline]
    fn avail(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    #[inline]
    fn need(&self, n: usize, h: Here) -> Result<(), Fault> {
        let have = self.avail();
        if have < n {
            let where_ = if self.marks.is_empty() { "on the stack" } else { "above the last MARK" };
            return Err(h.malformed(format!("stack underflow: needs {n} value(s), {have} {where_}")));
        }
        Ok(())
    }

    /// Pushes a value the policy just made, charging it (`bytes`: what it copied).
    #[inline]
    fn push_new(&mut self, item: P::Item, bytes: usize) -> Result<(), Fault> {
        self.budget.charge(Size { nodes: 1, bytes })?;
        self.stack.push(item);
        Ok(())
    }

    /// Before the values from `start` up leave the stack: memo keys that still refer to one of
    /// them get a copy (if some GET of them is still to come). Every removal goes through here.
    fn release_from(&mut self, start: usize) -> Result<(), Fault> {
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
            let (copy, size) = self.policy.share(&mut self.stack[pos]);
            self.budget.charge(size)?;
            slot.state = MemoState::Frozen(copy);
        }
        Ok(())
    }

    fn pop(&mut self, h: Here) -> Result<P::Item, Fault> {
        self.need(1, h)?;
        self.release_from(self.stack.len() - 1)?;
        Ok(self.stack.pop().expect("checked by need()"))
    }

    /// Removes the values from `start` up.
    fn truncate(&mut self, start: usize) -> Result<(), Fault> {
        self.release_from(start)?;
        self.stack.truncate(start);
        Ok(())
    }

    /// Closes the last MARK: where the values above it start.
    fn close_mark(&mut self, h: Here) -> Result<usize, Fault> {
        self.marks.pop().ok_or_else(|| h.malformed("no MARK to close"))
    }

    /// After `close_mark`: the container the values are added to must be there, above any
    /// earlier MARK.
    fn need_below(&self, start: usize, what: &str, h: Here) -> Result<(), Fault> {
        if start == self.marks.last().copied().unwrap_or(0) {
            return Err(h.malformed(format!("stack underflow: no {what} below the MARK")));
        }
        Ok(())
    }

    /// Replaces the values from `start` up by a list or tuple of them.
    fn sequence(&mut self, start: usize, tuple: bool, h: Here) -> Result<(), P::Error> {
        self.release_from(start)?;
        let (below, items) = self.stack.split_at_mut(start);
        let seq = self.policy.sequence(below.last(), items, tuple, h)?;
        self.stack.truncate(start);
        Ok(self.push_new(seq, 0)?)
    }

    /// Moves the values from `start` up into the list (or dict) just below them.
    fn extend(&mut self, start: usize, dict: bool, h: Here) -> Result<(), P::Error> {
        let n = self.stack.len() - start;
        if dict && !n.is_multiple_of(2) {
            return Err(h.malformed(format!("odd number of values ({n}) for key/value pairs")).into());
        }
        self.release_from(start)?;
        let (below, items) = self.stack.split_at_mut(start);
        let target = below.last_mut().expect("checked by the callers");
        if dict {
            self.policy.set_items(target, items, h)?;
        } else {
            self.policy.append(target, items, h)?;
        }
        self.stack.truncate(start);
        Ok(())
    }

    fn memo_store(&mut self, k: u32, h: Here) -> Result<(), Fault> {
        self.need(1, h)?;
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

    fn memo_get(&mut self, k: u32, h: Here) -> Result<(), Fault> {
        let undefined = || h.malformed(format!("memo key {k} was never stored"));
        let slot = self.memo.get_mut(&k).ok_or_else(undefined)?;
        slot.remaining = slot.remaining.saturating_sub(1);
        let item = match &mut slot.state {
            MemoState::Unset => return Err(undefined()),
            MemoState::Live(p) => {
                let (copy, size) = self.policy.share(&mut self.stack[*p]);
                self.budget.charge(size)?;
                copy
            }
            MemoState::Frozen(f) if slot.remaining > 0 => {
                let (copy, size) = self.policy.share(f);
                self.budget.charge(size)?;
                copy
            }
            // The last GET of this key: hand over the frozen copy itself.
            MemoState::Frozen(_) => match std::mem::replace(&mut slot.state, MemoState::Unset) {
                MemoState::Frozen(f) => f,
                _ => unreachable!("matched above"),
            },
        };
        self.stack.push(item);
        Ok(())
    }

    fn global(&mut self, module: &[u8], name: &[u8]) -> Result<(), Fault> {
        match self.policy.global(module, name) {
            Some(g) => self.push_new(g, 0),
            None => {
                let show = |b: &[u8]| {
                    let s = String::from_utf8_lossy(b);
                    if s.chars().count() > 80 { format!("{}…", s.chars().take(80).collect::<String>()) } else { s.into_owned() }
                };
                Err(Fault::Global { module: show(module), name: show(name), hint: self.policy.global_hint(module, name) })
            }
        }
    }

    /// STOP: the one value left, with every MARK closed.
    fn stop(&mut self, h: Here) -> Result<P::Item, Fault> {
        if self.stack.len() != 1 {
            return Err(h.malformed(format!("stack underflow: {} values on the stack, expected 1", self.stack.len())));
        }
        if !self.marks.is_empty() {
            return Err(h.malformed(format!("{} MARK(s) left open", self.marks.len())));
        }
        Ok(self.stack.pop().expect("one value"))
    }

    /// Executes one opcode (not STOP).
    #[inline]
    fn step(&mut self, op: Op<'a>, h: Here) -> Result<(), P::Error> {
        match op {
            Op::Proto(p) => {
                if p > 5 {
                    return Err(Fault::Protocol { proto: p, at: h.at }.into());
                }
            }
            // Framing only groups opcodes for buffered reading; the whole pickle is in memory
            // (the reader checked that the frame's bytes are there).
            Op::Frame => {}
            Op::Stop => unreachable!("run() handles STOP"),
            Op::Mark => self.marks.push(self.stack.len()),
            Op::Pop => {
                if self.avail() > 0 {
                    self.pop(h)?;
                } else if !self.marks.is_empty() {
                    // As Python: POP with nothing above the MARK pops the MARK.
                    self.close_mark(h)?;
                } else {
                    self.need(1, h)?;
                }
            }
            Op::PopMark => {
                let start = self.close_mark(h)?;
                self.truncate(start)?;
            }
            Op::Dup => {
                self.need(1, h)?;
                let (copy, size) = self.policy.share(self.stack.last_mut().expect("checked"));
                self.budget.charge(size)?;
                self.stack.push(copy);
            }
            Op::None
            | Op::Bool(_)
            | Op::Int(_)
            | Op::Long(_)
            | Op::Float(_)
            | Op::Utf8(_)
            | Op::Latin1(_)
            | Op::Bytes(_)
            | Op::ByteArray(_)
            | Op::TextInt(_)
            | Op::TextLong(_)
            | Op::TextFloat(_)
            | Op::TextString(_)
            | Op::TextUnicode(_)
            | Op::EmptyList
            | Op::EmptyTuple
            | Op::EmptyDict => {
                let item = self.policy.atom(op, h)?;
                let bytes = self.policy.owned(&item);
                self.push_new(item, bytes)?;
            }
            Op::Append => {
                self.need(2, h)?;
                self.extend(self.stack.len() - 1, false, h)?;
            }
            Op::Appends => {
                let start = self.close_mark(h)?;
                self.need_below(start, "list", h)?;
                self.extend(start, false, h)?;
            }
            Op::SetItem => {
                self.need(3, h)?;
                self.extend(self.stack.len() - 2, true, h)?;
            }
            Op::SetItems => {
                let start = self.close_mark(h)?;
                self.need_below(start, "dict", h)?;
                self.extend(start, true, h)?;
            }
            Op::List | Op::Tuple => {
                let start = self.close_mark(h)?;
                self.sequence(start, matches!(op, Op::Tuple), h)?;
            }
            Op::TupleN(n) => {
                self.need(n, h)?;
                self.sequence(self.stack.len() - n, true, h)?;
            }
            Op::Dict => {
                // The new dict goes below the pairs, which then move into it.
                let start = self.close_mark(h)?;
                self.release_from(start)?;
                let dict = self.policy.atom(Op::EmptyDict, h)?;
                self.budget.charge(Size::ONE)?;
                self.stack.insert(start, dict);
                self.extend(start + 1, true, h)?;
            }
            Op::Memoize => {
                let k = match &mut self.memo_len {
                    MemoLen::Counter(n) => {
                        *n = n.checked_add(1).ok_or_else(|| h.malformed("more than 2^32 memo entries"))?;
                        *n - 1
                    }
                    MemoLen::Keys(keys) => {
                        let k = keys.len() as u32;
                        keys.insert(k);
                        k
                    }
                };
                self.memo_store(k, h)?;
            }
            Op::Put(k) => {
                if let MemoLen::Keys(keys) = &mut self.memo_len {
                    keys.insert(k);
                }
                self.memo_store(k, h)?;
            }
            Op::Get(k) => self.memo_get(k, h)?,
            Op::Global(module, name) => self.global(module, name)?,
            Op::StackGlobal => {
                self.need(2, h)?;
                let name = self.pop(h)?;
                let module = self.pop(h)?;
                let (Some(m), Some(n)) = (self.policy.text(&module), self.policy.text(&name)) else {
                    return Err(h.malformed("STACK_GLOBAL needs a module and a name that are strings").into());
                };
                let (m, n) = (m.to_vec(), n.to_vec());
                self.global(&m, &n)?;
            }
            Op::Reduce => {
                self.need(2, h)?;
                let args = self.pop(h)?;
                let func = self.pop(h)?;
                let v = self.policy.reduce(func, args, h)?;
                let bytes = self.policy.owned(&v);
                self.push_new(v, bytes)?;
            }
            Op::Object(code) if code == super::ops::BUILD => {
                self.need(2, h)?;
                let state = self.pop(h)?;
                let target = self.stack.last_mut().expect("checked by need()");
                self.policy.build(target, state, h)?;
            }
            Op::Object(code) if code == super::ops::BINPERSID => {
                let pid = self.pop(h)?;
                let v = self.policy.persistent_load(pid, h)?;
                self.push_new(v, 0)?;
            }
            Op::Object(_) => return Err(self.policy.refuse(h)),
        }
        Ok(())
    }
}
