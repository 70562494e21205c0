//! What the decoder's stack holds (values, the data constructors, their sizes for the limits),
//! the memo's bookkeeping, and Python's dict-key semantics (`1 == 1.0 == True`, hashing).
use super::*;

/// The data constructors a GLOBAL may name; evaluated by REDUCE here, never called.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Ctor {
    /// `_codecs.encode(str, 'latin1')`: how protocols 0–2 write `bytes`.
    Encode,
    /// `bytes()`: the empty `bytes` in protocols 0–2.
    Bytes,
    /// `bytearray()`, `bytearray(bytes)`, `bytearray(str, 'latin-1')`.
    ByteArray,
}

impl Ctor {
    pub(super) fn name(self) -> &'static str {
        match self {
            Ctor::Encode => "_codecs.encode",
            Ctor::Bytes => "builtins.bytes",
            Ctor::ByteArray => "builtins.bytearray",
        }
    }

    /// The constructor a GLOBAL names, if it is one of the three.
    pub(super) fn lookup(module: &[u8], name: &[u8]) -> Option<Ctor> {
        match (module, name) {
            (b"_codecs", b"encode") => Some(Ctor::Encode),
            (b"builtins" | b"__builtin__", b"bytes") => Some(Ctor::Bytes),
            (b"builtins" | b"__builtin__", b"bytearray") => Some(Ctor::ByteArray),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub(super) enum Item<'a> {
    V(Value<'a>),
    /// A whitelisted GLOBAL, waiting for its REDUCE. Never part of a result.
    G(Ctor),
    /// A `str` from a BINUNICODE-family opcode (payload, opcode, position): its UTF-8 is
    /// checked when it becomes part of a value, so that the text of `_codecs.encode` is read
    /// only once, by the latin-1 conversion that also validates it.
    L(&'a [u8], u8, usize),
    /// `(str, 'latin1')` built right above an `encode`/`bytearray` global: the str still
    /// unchecked (as in `L`), and the encoding name (one of [`LATIN1_NAMES`]).
    Latin1Args(&'a [u8], u8, usize, &'static str),
}

/// The spellings of latin-1 accepted as the encoding argument.
pub(super) const LATIN1_NAMES: [&str; 6] = ["latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"];

/// The encoding name, if the item is one of [`LATIN1_NAMES`].
pub(super) fn latin1_name(item: &Item) -> Option<&'static str> {
    let text = match item {
        Item::V(Value::Str(s)) => s.as_bytes(),
        Item::L(b, ..) => b,
        _ => return None,
    };
    LATIN1_NAMES.iter().find(|n| n.as_bytes() == text).copied()
}

/// The text of a BINUNICODE-family payload.
pub(super) fn utf8(b: &[u8], c: u8, at: usize) -> Result<&str, PickleError> {
    std::str::from_utf8(b).map_err(|e| {
        malformed(c, at, format!("string is not valid UTF-8 at its byte {} (lone surrogates are not supported)", e.valid_up_to()))
    })
}

/// A value on the stack (or frozen in the memo), with what the limits need to know about it.
pub(super) struct Entry<'a> {
    pub(super) item: Item<'a>,
    /// Nesting height: 0 for scalars, 1 + the highest item for containers.
    pub(super) height: u32,
    /// Python would accept it as a dict key.
    pub(super) hashable: bool,
    /// Other references to the same object exist (memo GET, DUP): must not be mutated.
    pub(super) shared: bool,
    /// Values in this tree, itself included.
    pub(super) nodes: usize,
    /// Heap bytes of owned strings in this tree (what copying it would copy).
    pub(super) owned: usize,
    /// For dicts with many keys: key hash → index, to find repeated keys.
    pub(super) key_index: Option<Box<KeyIndex>>,
}

/// Key hash → index of the key in its dict. The hashes are already seeded SipHash values, so
/// the map uses them as they are.
type KeyIndex = HashMap<u64, usize, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
pub(super) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ b as u64;
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x;
    }
}

impl<'a> Entry<'a> {
    pub(super) fn new(item: Item<'a>, height: u32, hashable: bool, nodes: usize, owned: usize) -> Self {
        Entry { item, height, hashable, shared: false, nodes, owned, key_index: None }
    }

    pub(super) fn scalar(v: Value<'a>, owned: usize) -> Self {
        Entry::new(Item::V(v), 0, true, 1, owned)
    }

    pub(super) fn copy(&self) -> Self {
        Entry { shared: true, ..Entry::new(self.item.clone(), self.height, self.hashable, self.nodes, self.owned) }
    }
}

/// A key for an error message.
pub(super) fn short_repr(v: &Value) -> String {
    match v {
        Value::Str(s) if s.chars().count() <= 40 => format!("{s:?}"),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.into(),
        Value::None => "None".into(),
        _ => format!("of type {}", v.type_name()),
    }
}

// ---------------------------------------------------------------------------------------------
// Dict keys: Python equality and a matching hash, without recursion

pub(super) enum Num {
    I(i64),
    F(f64),
}

pub(super) fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::I(*b as i64)),
        Value::Int(i) => Some(Num::I(*i)),
        Value::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

/// The i64 equal to `f`, if there is one.
pub(super) fn float_as_int(f: f64) -> Option<i64> {
    // [-2^63, 2^63): exactly the floats that convert to an i64 without saturating.
    (f.fract() == 0.0 && (i64::MIN as f64..-(i64::MIN as f64)).contains(&f)).then_some(f as i64)
}

/// `a == b` as Python compares hashable values (`1 == 1.0 == True`, `'a' != b'a'`).
pub(super) fn py_eq(a: &Value, b: &Value) -> bool {
    let mut todo: Vec<(&Value, &Value)> = Vec::new();
    let (mut a, mut b) = (a, b);
    loop {
        let eq = match (a, b) {
            (Value::None, Value::None) => true,
            (Value::Str(x), Value::Str(y)) => x == y,
            (Value::Bytes(x), Value::Bytes(y)) => x == y,
            (Value::Tuple(x), Value::Tuple(y)) => {
                todo.extend(x.iter().zip(y.iter()));
                x.len() == y.len()
            }
            _ => match (num(a), num(b)) {
                (Some(Num::I(x)), Some(Num::I(y))) => x == y,
                (Some(Num::F(x)), Some(Num::F(y))) => x == y,
                (Some(Num::I(i)), Some(Num::F(f))) | (Some(Num::F(f)), Some(Num::I(i))) => float_as_int(f) == Some(i),
                _ => false,
            },
        };
        if !eq {
            return false;
        }
        match todo.pop() {
            Some((x, y)) => (a, b) = (x, y),
            None => return true,
        }
    }
}

/// A hash consistent with [`py_eq`].
pub(super) fn key_hash(v: &Value, s: &RandomState) -> u64 {
    let mut h = s.build_hasher();
    let mut todo: Vec<&Value> = Vec::new();
    let mut v = v;
    loop {
        match v {
            Value::None => 0u8.hash(&mut h),
            Value::Bool(b) => (1u8, *b as i64).hash(&mut h),
            Value::Int(i) => (1u8, *i).hash(&mut h),
            Value::Float(f) => match float_as_int(*f) {
                Some(i) => (1u8, i).hash(&mut h),
                None => (2u8, f.to_bits()).hash(&mut h),
            },
            Value::Str(s) => (3u8, &**s).hash(&mut h),
            Value::Bytes(b) => (4u8, &**b).hash(&mut h),
            Value::Tuple(items) => {
                (5u8, items.len()).hash(&mut h);
                todo.extend(items.iter().rev());
            }
            Value::List(_) | Value::Dict(_) => 6u8.hash(&mut h),
        }
        match todo.pop() {
            Some(next) => v = next,
            None => return h.finish(),
        }
    }
}

/// Adds a pair, or gives the key back if the dict already has an equal one.
pub(super) fn dict_insert<'a>(
    dict: &mut Vec<(Value<'a>, Value<'a>)>,
    index: &mut Option<Box<KeyIndex>>,
    hasher: &RandomState,
    k: Value<'a>,
    v: Value<'a>,
) -> Result<(), Value<'a>> {
    if dict.len() < LINEAR_KEY_CHECK {
        if dict.iter().any(|(e, _)| py_eq(e, &k)) {
            return Err(k);
        }
    } else {
        let index = index.get_or_insert_with(|| {
            let mut m = KeyIndex::with_capacity_and_hasher(dict.len() * 2, Default::default());
            for (i, (e, _)) in dict.iter().enumerate() {
                m.entry(key_hash(e, hasher)).or_insert(i);
            }
            Box::new(m)
        });
        match index.entry(key_hash(&k, hasher)) {
            MapEntry::Occupied(o) => {
                // Equal hash: the same key, or (rarely; the hash is seeded) a collision, where
                // only a full comparison can tell.
                if py_eq(&dict[*o.get()].0, &k) || dict.iter().any(|(e, _)| py_eq(e, &k)) {
                    return Err(k);
                }
            }
            MapEntry::Vacant(slot) => {
                slot.insert(dict.len());
            }
        }
    }
    dict.push((k, v));
    Ok(())
}

/// Moves an item out of a stack entry that is about to be removed.
pub(super) fn take<'a>(item: &mut Item<'a>) -> Item<'a> {
    std::mem::replace(item, Item::V(Value::None))
}

/// The list (or dict) that APPEND(S) (or SETITEM(S)) add to, not yet shared.
pub(super) fn check_target(e: &Entry, dict: bool, c: u8, at: usize) -> Result<(), PickleError> {
    let ok = match &e.item {
        Item::V(Value::List(_)) => !dict,
        Item::V(Value::Dict(_)) => dict,
        _ => false,
    };
    if !ok {
        let want = if dict { "dict" } else { "list" };
        return Err(malformed(c, at, format!("adds items to a {}, not a {want}", item_type(&e.item))));
    }
    if e.shared {
        return Err(PickleError::Refused {
            op: op_name(c),
            at,
            why: "changes a container after it was shared: recursive (self-containing) structures are not supported".into(),
        });
    }
    Ok(())
}

pub(super) fn item_type(item: &Item) -> &'static str {
    match item {
        Item::V(v) => v.type_name(),
        Item::G(_) => "global",
        Item::L(..) => "str",
        Item::Latin1Args(..) => "tuple",
    }
}
