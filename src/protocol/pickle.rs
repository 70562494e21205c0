//! Safe decoding of Python pickles: plain data only, never code.
//!
//! The peers that send us pickles are untrusted, so this is not an unpickler: it is a small
//! stack machine that understands the opcodes Python's `pickle.dumps` (protocols 0 to 5) uses
//! for `dict`, `list`, `tuple`, `str`, `bytes`, `bytearray`, `int`, `float`, `bool` and `None`,
//! and refuses everything else (class instances, sets, out-of-band buffers, any global other
//! than the three data constructors below) with an error that names what it saw.
//!
//! * **Nothing is ever called.** Protocols 0 to 2 cannot write `bytes` natively, so Python
//!   writes `_codecs.encode('<latin-1 text>', 'latin1')`, `bytes()` and `bytearray(...)` as a
//!   GLOBAL and a REDUCE. Those three constructors are recognised by name and evaluated here,
//!   with their argument types checked exactly; any other GLOBAL/STACK_GLOBAL is refused on
//!   sight, before its REDUCE.
//! * **No recursion.** Decoding is one loop over the opcodes with an explicit value stack and
//!   mark stack. Each value carries its nesting height and node count, updated as containers
//!   grow, so the depth limit ([`Limits::max_depth`]) is enforced as the input is read: a
//!   10 000-deep list is an error at level 33, not a stack overflow. (The depth limit also
//!   keeps the compiler-generated `Drop`/`Clone` of [`Value`] shallow.)
//! * **Bounded work.** Shared references (memo GETs) are materialised as copies, and every
//!   node created, copies included, counts against [`Limits::max_nodes`], which stops "billion
//!   laughs" inputs. Bytes copied on behalf of shared references or latin-1 conversions are
//!   capped at a small multiple of the input size. Declared lengths are checked against the
//!   bytes actually present before anything is sliced or allocated.
//! * **Zero-copy.** `str` and `bytes` payloads of the binary opcodes borrow from the input.
//!   UTF-8 is checked when a string becomes part of the result; the text of
//!   `_codecs.encode(text, 'latin1')` (a protocol-2 image: half its characters are non-ASCII,
//!   where `std::str::from_utf8` is slow) is checked and converted to bytes in one branch-free
//!   pass instead.
//! * **One pre-pass** over the opcodes finds which memo keys are ever read (GET), so that only
//!   those values are kept for later copies; protocol 4 memoizes every value it writes.
//!
//! Python semantics kept: the memo (PUT/GET, MEMOIZE) refers to objects, so a list that is
//! memoized when it is created and filled afterwards comes back filled at every reference. A
//! container that is mutated after being shared (which is how recursive structures look)
//! is refused. Dict keys must be hashable; a repeated key (Python equality, `1 == 1.0 ==
//! True`) is refused rather than silently resolved.
use std::borrow::Cow;
use std::collections::hash_map::{Entry as MapEntry, RandomState};
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

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
    if buf.is_empty() {
        return Err(PickleError::Empty);
    }
    let mut d = Decoder::new(buf, limits);
    let mut r = Reader { buf, pos: 0 };
    while r.pos < buf.len() {
        let (op, code, at) = r.next()?;
        if let Some(value) = d.step(op, code, at)? {
            if r.pos < buf.len() {
                return Err(PickleError::Trailing(buf.len() - r.pos));
            }
            return Ok(value);
        }
    }
    Err(PickleError::NoStop(buf.len()))
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

use crate::io::pickle_ops as code;

/// The opcode's name in Python's `pickletools`.
fn op_name(c: u8) -> &'static str {
    code::name(c)
}

/// One opcode with its argument read (payloads as slices of the input, not yet validated).
enum Op<'a> {
    Proto(u8),
    Frame,
    Stop,
    Mark,
    Pop,
    PopMark,
    Dup,
    None,
    Bool(bool),
    Int(i64),
    /// LONG1/LONG4: little-endian two's complement.
    Long(&'a [u8]),
    Float(f64),
    /// BINUNICODE family: UTF-8.
    Utf8(&'a [u8]),
    /// BINSTRING family (Python 2 `str`): latin-1.
    Latin1(&'a [u8]),
    Bytes(&'a [u8]),
    ByteArray(&'a [u8]),
    TextInt(&'a [u8]),
    TextLong(&'a [u8]),
    TextFloat(&'a [u8]),
    TextString(&'a [u8]),
    TextUnicode(&'a [u8]),
    EmptyList,
    Append,
    Appends,
    List,
    EmptyTuple,
    Tuple,
    TupleN(usize),
    EmptyDict,
    Dict,
    SetItem,
    SetItems,
    Memoize,
    Put(u32),
    Get(u32),
    Global(&'a [u8], &'a [u8]),
    StackGlobal,
    Reduce,
    /// A known opcode that builds something other than plain data: the reason.
    Refused(&'static str),
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn bytes(&mut self, n: u64, c: u8, at: usize) -> Result<&'a [u8], PickleError> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return Err(PickleError::Truncated { op: op_name(c), at, need: n, left });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    #[inline]
    fn arr<const N: usize>(&mut self, c: u8, at: usize) -> Result<[u8; N], PickleError> {
        Ok(self.bytes(N as u64, c, at)?.try_into().expect("N bytes"))
    }

    #[inline]
    fn u8(&mut self, c: u8, at: usize) -> Result<u8, PickleError> {
        Ok(self.arr::<1>(c, at)?[0])
    }

    #[inline]
    fn u32(&mut self, c: u8, at: usize) -> Result<u32, PickleError> {
        Ok(u32::from_le_bytes(self.arr(c, at)?))
    }

    #[inline]
    fn u64(&mut self, c: u8, at: usize) -> Result<u64, PickleError> {
        Ok(u64::from_le_bytes(self.arr(c, at)?))
    }

    /// A 4-byte signed length (BINSTRING, LONG4): negative is malformed.
    fn i32_len(&mut self, c: u8, at: usize) -> Result<u64, PickleError> {
        let n = i32::from_le_bytes(self.arr(c, at)?);
        u64::try_from(n).map_err(|_| malformed(c, at, format!("negative length {n}")))
    }

    /// A text argument up to the next newline (which is consumed, not returned).
    fn line(&mut self, c: u8, at: usize) -> Result<&'a [u8], PickleError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(PickleError::UnterminatedLine { op: op_name(c), at }),
        }
    }

    /// Reads the opcode at `pos` (which must be < len) and its argument.
    #[inline(always)]
    fn next(&mut self) -> Result<(Op<'a>, u8, usize), PickleError> {
        use code::*;
        let at = self.pos;
        let c = self.buf[at];
        self.pos += 1;
        let op = match c {
            PROTO => Op::Proto(self.u8(c, at)?),
            FRAME => {
                let n = self.u64(c, at)?;
                let left = self.buf.len() - self.pos;
                if n > left as u64 {
                    return Err(PickleError::Truncated { op: "FRAME", at, need: n, left });
                }
                Op::Frame
            }
            STOP => Op::Stop,
            MARK => Op::Mark,
            POP => Op::Pop,
            POP_MARK => Op::PopMark,
            DUP => Op::Dup,
            NONE => Op::None,
            NEWTRUE => Op::Bool(true),
            NEWFALSE => Op::Bool(false),
            BININT => Op::Int(i32::from_le_bytes(self.arr(c, at)?) as i64),
            BININT1 => Op::Int(self.u8(c, at)? as i64),
            BININT2 => Op::Int(u16::from_le_bytes(self.arr(c, at)?) as i64),
            LONG1 => {
                let n = self.u8(c, at)?;
                Op::Long(self.bytes(n as u64, c, at)?)
            }
            LONG4 => {
                let n = self.i32_len(c, at)?;
                Op::Long(self.bytes(n, c, at)?)
            }
            BINFLOAT => Op::Float(f64::from_be_bytes(self.arr(c, at)?)),
            SHORT_BINUNICODE => {
                let n = self.u8(c, at)?;
                Op::Utf8(self.bytes(n as u64, c, at)?)
            }
            BINUNICODE => {
                let n = self.u32(c, at)?;
                Op::Utf8(self.bytes(n as u64, c, at)?)
            }
            BINUNICODE8 => {
                let n = self.u64(c, at)?;
                Op::Utf8(self.bytes(n, c, at)?)
            }
            SHORT_BINSTRING => {
                let n = self.u8(c, at)?;
                Op::Latin1(self.bytes(n as u64, c, at)?)
            }
            BINSTRING => {
                let n = self.i32_len(c, at)?;
                Op::Latin1(self.bytes(n, c, at)?)
            }
            SHORT_BINBYTES => {
                let n = self.u8(c, at)?;
                Op::Bytes(self.bytes(n as u64, c, at)?)
            }
            BINBYTES => {
                let n = self.u32(c, at)?;
                Op::Bytes(self.bytes(n as u64, c, at)?)
            }
            BINBYTES8 => {
                let n = self.u64(c, at)?;
                Op::Bytes(self.bytes(n, c, at)?)
            }
            BYTEARRAY8 => {
                let n = self.u64(c, at)?;
                Op::ByteArray(self.bytes(n, c, at)?)
            }
            INT => Op::TextInt(self.line(c, at)?),
            LONG => Op::TextLong(self.line(c, at)?),
            FLOAT => Op::TextFloat(self.line(c, at)?),
            STRING => Op::TextString(self.line(c, at)?),
            UNICODE => Op::TextUnicode(self.line(c, at)?),
            EMPTY_LIST => Op::EmptyList,
            APPEND => Op::Append,
            APPENDS => Op::Appends,
            LIST => Op::List,
            EMPTY_TUPLE => Op::EmptyTuple,
            TUPLE => Op::Tuple,
            TUPLE1 => Op::TupleN(1),
            TUPLE2 => Op::TupleN(2),
            TUPLE3 => Op::TupleN(3),
            EMPTY_DICT => Op::EmptyDict,
            DICT => Op::Dict,
            SETITEM => Op::SetItem,
            SETITEMS => Op::SetItems,
            MEMOIZE => Op::Memoize,
            BINPUT => Op::Put(self.u8(c, at)? as u32),
            LONG_BINPUT => Op::Put(self.u32(c, at)?),
            PUT => Op::Put(text_index(self.line(c, at)?, c, at)?),
            BINGET => Op::Get(self.u8(c, at)? as u32),
            LONG_BINGET => Op::Get(self.u32(c, at)?),
            GET => Op::Get(text_index(self.line(c, at)?, c, at)?),
            GLOBAL => {
                let module = self.line(c, at)?;
                Op::Global(module, self.line(c, at)?)
            }
            STACK_GLOBAL => Op::StackGlobal,
            REDUCE => Op::Reduce,
            INST | OBJ | NEWOBJ | NEWOBJ_EX => Op::Refused("builds a class instance"),
            BUILD => Op::Refused("sets an object's state"),
            PERSID | BINPERSID => Op::Refused("refers to a persistent (external) object"),
            EXT1 | EXT2 | EXT4 => Op::Refused("refers to a registered extension object"),
            NEXT_BUFFER | READONLY_BUFFER => {
                Op::Refused("uses an out-of-band buffer (pickle with protocol 5 without buffer_callback, so bytes are in-band)")
            }
            EMPTY_SET | ADDITEMS | FROZENSET => Op::Refused("builds a set: sets are not supported, send a list or tuple instead"),
            _ => return Err(PickleError::UnknownOpcode { op: c, at }),
        };
        Ok((op, c, at))
    }
}

fn malformed(c: u8, at: usize, msg: impl Into<String>) -> PickleError {
    PickleError::Malformed { op: op_name(c), at, msg: msg.into() }
}

/// Decimal memo index of the text PUT/GET opcodes.
fn text_index(line: &[u8], c: u8, at: usize) -> Result<u32, PickleError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| malformed(c, at, format!("bad memo index {:?}", String::from_utf8_lossy(line))))
}

/// Little-endian two's complement (LONG1/LONG4) to i64, None if it does not fit.
fn long_to_i64(b: &[u8]) -> Option<i64> {
    let Some(&last) = b.last() else { return Some(0) };
    let fill = if last & 0x80 != 0 { 0xff } else { 0 };
    if b.len() > 8 {
        // Fits only if the extra bytes are sign extension of byte 7.
        let sign7 = if b[7] & 0x80 != 0 { 0xff } else { 0 };
        if sign7 != fill || b[8..].iter().any(|&x| x != fill) {
            return None;
        }
    }
    let mut w = [fill; 8];
    let n = b.len().min(8);
    w[..n].copy_from_slice(&b[..n]);
    Some(i64::from_le_bytes(w))
}

// ---------------------------------------------------------------------------------------------
// Latin-1 and the text-protocol string encodings

/// The bytes of a `str` whose characters are all ≤ U+00FF (what `_codecs.encode(s, 'latin1')`
/// gives), or the index of the first character that is not. Pure-ASCII input is returned
/// borrowed.
fn latin1_bytes(s: Cow<'_, str>) -> Result<Cow<'_, [u8]>, usize> {
    let first_above_ff = |s: &str| s.chars().position(|ch| ch as u32 > 0xff).unwrap_or(0);
    match s {
        Cow::Borrowed(t) => latin1_from_utf8(t.as_bytes()).ok_or_else(|| first_above_ff(t)),
        Cow::Owned(t) if t.is_ascii() => Ok(Cow::Owned(t.into_bytes())),
        Cow::Owned(t) => latin1_from_utf8(t.as_bytes()).map(|b| Cow::Owned(b.into_owned())).ok_or_else(|| first_above_ff(&t)),
    }
}

/// UTF-8 bytes whose characters are all ≤ U+00FF, converted to latin-1 in one pass that also
/// validates them: None unless the input is exactly a sequence of ASCII bytes and two-byte
/// sequences 0xC2/0xC3 + continuation (which is valid UTF-8, no overlong forms). Pure ASCII is
/// returned borrowed.
///
/// This is how protocols 0–2 send `bytes`, so it is the hot path for images: branch-free per
/// byte, several times faster than `std::str::from_utf8` on random (half non-ASCII) text.
fn latin1_from_utf8(b: &[u8]) -> Option<Cow<'_, [u8]>> {
    if b.is_ascii() {
        return Some(Cow::Borrowed(b));
    }
    let n = b.len();
    let mut out = vec![0u8; n];
    let (mut i, mut j, mut bad, mut prev) = (0usize, 0usize, false, 0u8);
    // Per input byte: every byte but a continuation writes one output byte; a lead byte
    // (0xC2/0xC3) combines its two payload bits with the next byte's six. Valid: no lead above
    // 0xC3, no overlong 0xC0/0xC1, a continuation exactly after each lead.
    macro_rules! step {
        ($c:expr, $next:expr, $out:expr, $t:expr) => {{
            let (c, next): (u8, u8) = ($c, $next);
            $out = if c >= 0xc0 { (c << 6) | (next & 0x3f) } else { c };
            let cont = c & 0xc0 == 0x80;
            $t += !cont as usize;
            bad |= (c >= 0xc4) | (c & 0xfe == 0xc0) | (cont != (prev & 0xe0 == 0xc0));
            prev = c;
        }};
    }
    // Blocks of 8 bytes (plus the next one, for a lead byte at the end of the block).
    while i + 9 <= n {
        let w: &[u8; 9] = b[i..i + 9].try_into().expect("9 bytes");
        let block: [u8; 8] = w[..8].try_into().expect("8 bytes");
        if u64::from_le_bytes(block) & 0x8080_8080_8080_8080 == 0 && prev < 0xc0 {
            // All ASCII (and not right after a lead byte): copied as is.
            out[j..j + 8].copy_from_slice(&block);
            prev = block[7];
            j += 8;
        } else {
            let mut buf = [0u8; 8];
            let mut t = 0usize;
            for k in 0..8 {
                step!(w[k], w[k + 1], buf[t & 7], t);
            }
            // Room for all 8: j <= i and i + 8 < n.
            out[j..j + 8].copy_from_slice(&buf);
            j += t;
        }
        i += 8;
    }
    while i < n {
        let next = if i + 1 < n { b[i + 1] } else { 0 };
        step!(b[i], next, out[j], j);
        i += 1;
    }
    if bad || b[n - 1] >= 0xc0 {
        return None;
    }
    out.truncate(j);
    Some(Cow::Owned(out))
}

/// Latin-1 bytes as a `str` (borrowed when they are ASCII).
fn latin1_str(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) if s.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(b.iter().map(|&x| x as char).collect()),
    }
}

/// UNICODE (protocol 0): "raw-unicode-escape" — bytes are latin-1 characters, except
/// `\uXXXX` and `\UXXXXXXXX`.
fn raw_unicode_escape(b: &[u8]) -> Option<Cow<'_, str>> {
    if !b.contains(&b'\\') {
        return Some(latin1_str(b));
    }
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let digits = match (c, b.get(i + 1)) {
            (b'\\', Some(b'u')) => 4,
            (b'\\', Some(b'U')) => 8,
            _ => 0,
        };
        if digits == 0 {
            out.push(c as char);
            i += 1;
            continue;
        }
        let code = hex_value(b.get(i + 2..i + 2 + digits)?)?;
        out.push(char::from_u32(code)?);
        i += 2 + digits;
    }
    Some(Cow::Owned(out))
}

/// Hex digits (only: no sign, no spaces) as a number.
fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + (d as char).to_digit(16)?))
}

/// STRING (protocol 0, Python 2 `str`): a quoted Python literal with backslash escapes; the
/// bytes are read as latin-1.
fn python_string_literal(line: &[u8]) -> Option<String> {
    let q = *line.first()?;
    if line.len() < 2 || (q != b'\'' && q != b'"') || *line.last()? != q {
        return None;
    }
    let b = &line[1..line.len() - 1];
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c != b'\\' || i == b.len() {
            out.push(c as char);
            continue;
        }
        let e = b[i];
        i += 1;
        let v = match e {
            b'\\' | b'\'' | b'"' => e,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'a' => 0x07,
            b'b' => 0x08,
            b'f' => 0x0c,
            b'v' => 0x0b,
            b'\n' => continue,
            b'x' => {
                let v = hex_value(b.get(i..i + 2)?)? as u8;
                i += 2;
                v
            }
            b'0'..=b'7' => {
                let mut v = (e - b'0') as u32;
                let mut k = 0;
                while k < 2 && i < b.len() && (b'0'..=b'7').contains(&b[i]) {
                    v = v * 8 + (b[i] - b'0') as u32;
                    i += 1;
                    k += 1;
                }
                (v & 0xff) as u8
            }
            _ => {
                out.push('\\');
                e
            }
        };
        out.push(v as char);
    }
    Some(out)
}

// ---------------------------------------------------------------------------------------------
// The stack machine

/// The data constructors a GLOBAL may name; evaluated by REDUCE here, never called.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ctor {
    /// `_codecs.encode(str, 'latin1')`: how protocols 0–2 write `bytes`.
    Encode,
    /// `bytes()`: the empty `bytes` in protocols 0–2.
    Bytes,
    /// `bytearray()`, `bytearray(bytes)`, `bytearray(str, 'latin-1')`.
    ByteArray,
}

impl Ctor {
    fn name(self) -> &'static str {
        match self {
            Ctor::Encode => "_codecs.encode",
            Ctor::Bytes => "builtins.bytes",
            Ctor::ByteArray => "builtins.bytearray",
        }
    }

    fn lookup(module: &[u8], name: &[u8]) -> Result<Ctor, PickleError> {
        match (module, name) {
            (b"_codecs", b"encode") => Ok(Ctor::Encode),
            (b"builtins" | b"__builtin__", b"bytes") => Ok(Ctor::Bytes),
            (b"builtins" | b"__builtin__", b"bytearray") => Ok(Ctor::ByteArray),
            _ => {
                let hint = if module == b"numpy" || module.starts_with(b"numpy.") || module.starts_with(b"torch") {
                    "; arrays cannot be sent as objects: send arr.tobytes() (with its shape and dtype) instead"
                } else if matches!(name, b"set" | b"frozenset") {
                    "; sets are not supported: send a list or tuple instead"
                } else {
                    ""
                };
                let show = |b: &[u8]| {
                    let s = String::from_utf8_lossy(b);
                    if s.chars().count() > 80 {
                        format!("{}…", s.chars().take(80).collect::<String>())
                    } else {
                        s.into_owned()
                    }
                };
                Err(PickleError::Global { module: show(module), name: show(name), hint })
            }
        }
    }
}

#[derive(Clone)]
enum Item<'a> {
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
const LATIN1_NAMES: [&str; 6] = ["latin1", "latin-1", "latin_1", "iso-8859-1", "iso8859-1", "l1"];

/// The encoding name, if the item is one of [`LATIN1_NAMES`].
fn latin1_name(item: &Item) -> Option<&'static str> {
    let text = match item {
        Item::V(Value::Str(s)) => s.as_bytes(),
        Item::L(b, ..) => b,
        _ => return None,
    };
    LATIN1_NAMES.iter().find(|n| n.as_bytes() == text).copied()
}

/// The text of a BINUNICODE-family payload.
fn utf8(b: &[u8], c: u8, at: usize) -> Result<&str, PickleError> {
    std::str::from_utf8(b).map_err(|e| {
        malformed(c, at, format!("string is not valid UTF-8 at its byte {} (lone surrogates are not supported)", e.valid_up_to()))
    })
}

/// A value on the stack (or frozen in the memo), with what the limits need to know about it.
struct Entry<'a> {
    item: Item<'a>,
    /// Nesting height: 0 for scalars, 1 + the highest item for containers.
    height: u32,
    /// Python would accept it as a dict key.
    hashable: bool,
    /// Other references to the same object exist (memo GET, DUP): must not be mutated.
    shared: bool,
    /// Values in this tree, itself included.
    nodes: usize,
    /// Heap bytes of owned strings in this tree (what copying it would copy).
    owned: usize,
    /// For dicts with many keys: key hash → index, to find repeated keys.
    key_index: Option<Box<KeyIndex>>,
}

/// Key hash → index of the key in its dict. The hashes are already seeded SipHash values, so
/// the map uses them as they are.
type KeyIndex = HashMap<u64, usize, BuildHasherDefault<PreHashed>>;

#[derive(Default)]
struct PreHashed(u64);

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
    fn new(item: Item<'a>, height: u32, hashable: bool, nodes: usize, owned: usize) -> Self {
        Entry { item, height, hashable, shared: false, nodes, owned, key_index: None }
    }

    fn scalar(v: Value<'a>, owned: usize) -> Self {
        Entry::new(Item::V(v), 0, true, 1, owned)
    }

    fn copy(&self) -> Self {
        Entry { shared: true, ..Entry::new(self.item.clone(), self.height, self.hashable, self.nodes, self.owned) }
    }
}

enum MemoState<'a> {
    Unset,
    /// The object is still on the stack at this position (and may still be growing).
    Live(usize),
    /// A copy taken when the object left the stack.
    Frozen(Entry<'a>),
}

struct MemoSlot<'a> {
    /// GETs of this key still to come (from the pre-scan).
    remaining: u32,
    state: MemoState<'a>,
}

/// `len(memo)`, which MEMOIZE uses as its key.
enum MemoLen {
    /// Only MEMOIZE stores: keys are 0, 1, 2, ...
    Counter(u32),
    /// PUT and MEMOIZE mixed: the distinct keys.
    Keys(HashSet<u32>),
}

struct Budget {
    nodes: usize,
    max_nodes: usize,
    copied: usize,
    max_copied: usize,
}

impl Budget {
    #[inline]
    fn charge(&mut self, nodes: usize, copied: usize) -> Result<(), PickleError> {
        self.nodes = self.nodes.saturating_add(nodes);
        if self.nodes > self.max_nodes {
            return Err(PickleError::TooManyValues(self.max_nodes));
        }
        self.copied = self.copied.saturating_add(copied);
        if self.copied > self.max_copied {
            return Err(PickleError::TooMuchCopying(self.max_copied));
        }
        Ok(())
    }
}

struct Decoder<'a> {
    stack: Vec<Entry<'a>>,
    /// Stack lengths at each open MARK.
    marks: Vec<usize>,
    /// Only keys that some GET reads; storing into any other key does nothing.
    memo: HashMap<u32, MemoSlot<'a>>,
    /// (stack position, memo key) of the memo slots that refer to a value still on the stack.
    /// Sorted by position: a store always refers to the top, and leaving the stack releases.
    live: Vec<(usize, u32)>,
    memo_len: MemoLen,
    max_depth: u32,
    budget: Budget,
    hash_keys: Option<RandomState>,
}

impl<'a> Decoder<'a> {
    fn new(buf: &'a [u8], limits: &Limits) -> Self {
        // Pre-scan: which memo keys are ever read, and how often. Storing a value for a key
        // nobody reads would cost a copy for nothing. The scan stops at the first thing it
        // cannot read; the real pass stops there too, with the error.
        let mut memo = HashMap::new();
        let (mut put, mut memoize) = (false, false);
        let mut r = Reader { buf, pos: 0 };
        while r.pos < buf.len() {
            match r.next() {
                Ok((Op::Get(k), ..)) => {
                    let slot = memo.entry(k).or_insert(MemoSlot { remaining: 0, state: MemoState::Unset });
                    slot.remaining = slot.remaining.saturating_add(1);
                }
                Ok((Op::Put(_), ..)) => put = true,
                Ok((Op::Memoize, ..)) => memoize = true,
                Ok((Op::Stop | Op::Refused(_), ..)) | Err(_) => break,
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
    fn avail(&self) -> usize {
        self.stack.len() - self.marks.last().copied().unwrap_or(0)
    }

    #[inline]
    fn need(&self, n: usize, c: u8, at: usize) -> Result<(), PickleError> {
        let have = self.avail();
        if have < n {
            let where_ = if self.marks.is_empty() { "on the stack" } else { "above the last MARK" };
            return Err(malformed(c, at, format!("stack underflow: needs {n} value(s), {have} {where_}")));
        }
        Ok(())
    }

    #[inline]
    fn push_scalar(&mut self, v: Value<'a>, owned: usize) -> Result<(), PickleError> {
        self.budget.charge(1, owned)?;
        self.stack.push(Entry::scalar(v, owned));
        Ok(())
    }

    fn push_container(&mut self, v: Value<'a>) -> Result<(), PickleError> {
        self.check_depth(1)?;
        self.budget.charge(1, 0)?;
        let hashable = matches!(v, Value::Tuple(_));
        self.stack.push(Entry::new(Item::V(v), 1, hashable, 1, 0));
        Ok(())
    }

    #[inline]
    fn check_depth(&self, h: u32) -> Result<(), PickleError> {
        if h > self.max_depth {
            return Err(PickleError::TooDeep(self.max_depth as usize));
        }
        Ok(())
    }

    /// Before the entries from `start` up leave the stack: memo keys that still refer to one of
    /// them get a copy (if some GET of them is still to come). Every removal goes through here.
    fn release_from(&mut self, start: usize) -> Result<(), PickleError> {
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

    fn pop(&mut self) -> Result<Entry<'a>, PickleError> {
        self.release_from(self.stack.len() - 1)?;
        Ok(self.stack.pop().expect("checked by need()"))
    }

    /// Removes the entries from `start` up.
    fn truncate(&mut self, start: usize) -> Result<(), PickleError> {
        self.release_from(start)?;
        self.stack.truncate(start);
        Ok(())
    }

    /// Closes the last MARK: where the values above it start.
    fn close_mark(&mut self, c: u8, at: usize) -> Result<usize, PickleError> {
        self.marks.pop().ok_or_else(|| malformed(c, at, "no MARK to close"))
    }

    /// After `close_mark`: the container the values are added to must be there, above any
    /// earlier MARK.
    fn need_below(&self, start: usize, what: &str, c: u8, at: usize) -> Result<(), PickleError> {
        if start == self.marks.last().copied().unwrap_or(0) {
            return Err(malformed(c, at, format!("stack underflow: no {what} below the MARK")));
        }
        Ok(())
    }

    fn memo_store(&mut self, k: u32, c: u8, at: usize) -> Result<(), PickleError> {
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

    fn memo_get(&mut self, k: u32, c: u8, at: usize) -> Result<(), PickleError> {
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
    fn value_of(e: Entry<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
        Self::materialize(e.item, c, at)
    }

    fn materialize(item: Item<'a>, c: u8, at: usize) -> Result<Value<'a>, PickleError> {
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
    fn build_seq(&mut self, start: usize, tuple: bool, c: u8, at: usize) -> Result<(), PickleError> {
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
    fn append(&mut self, start: usize, c: u8, at: usize) -> Result<(), PickleError> {
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
    fn set_items(&mut self, start: usize, c: u8, at: usize) -> Result<(), PickleError> {
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

    fn reduce(&mut self, c: u8, at: usize) -> Result<(), PickleError> {
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
    fn step(&mut self, op: Op<'a>, c: u8, at: usize) -> Result<Option<Value<'a>>, PickleError> {
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
            Op::Refused(why) => {
                return Err(PickleError::Refused { op: op_name(c), at, why: format!("{why} ({PLAIN})") });
            }
        }
        Ok(None)
    }
}

/// Moves an item out of a stack entry that is about to be removed.
fn take<'a>(item: &mut Item<'a>) -> Item<'a> {
    std::mem::replace(item, Item::V(Value::None))
}

/// The list (or dict) that APPEND(S) (or SETITEM(S)) add to, not yet shared.
fn check_target(e: &Entry, dict: bool, c: u8, at: usize) -> Result<(), PickleError> {
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

fn item_type(item: &Item) -> &'static str {
    match item {
        Item::V(v) => v.type_name(),
        Item::G(_) => "global",
        Item::L(..) => "str",
        Item::Latin1Args(..) => "tuple",
    }
}

fn parse_text_int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.trim().parse::<i64>().ok()
}

fn bad_text(c: u8, at: usize, line: &[u8]) -> PickleError {
    let s = String::from_utf8_lossy(&line[..line.len().min(40)]).into_owned();
    malformed(c, at, format!("cannot read the argument {s:?}"))
}

/// A key for an error message.
fn short_repr(v: &Value) -> String {
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

enum Num {
    I(i64),
    F(f64),
}

fn num(v: &Value) -> Option<Num> {
    match v {
        Value::Bool(b) => Some(Num::I(*b as i64)),
        Value::Int(i) => Some(Num::I(*i)),
        Value::Float(f) => Some(Num::F(*f)),
        _ => None,
    }
}

/// The i64 equal to `f`, if there is one.
fn float_as_int(f: f64) -> Option<i64> {
    // [-2^63, 2^63): exactly the floats that convert to an i64 without saturating.
    (f.fract() == 0.0 && (i64::MIN as f64..-(i64::MIN as f64)).contains(&f)).then_some(f as i64)
}

/// `a == b` as Python compares hashable values (`1 == 1.0 == True`, `'a' != b'a'`).
fn py_eq(a: &Value, b: &Value) -> bool {
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
fn key_hash(v: &Value, s: &RandomState) -> u64 {
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
fn dict_insert<'a>(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_pickle::{HashableValue as HV, SerOptions, Value as SP};
    use std::collections::BTreeMap;

    fn dec(b: &[u8]) -> Result<Value<'_>, PickleError> {
        decode(b, &Limits::default())
    }

    fn err(b: &[u8]) -> String {
        match dec(b) {
            Ok(v) => panic!("expected an error, got {v:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn s(x: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(x))
    }

    /// BINUNICODE
    fn uni(out: &mut Vec<u8>, x: &str) {
        out.push(b'X');
        out.extend_from_slice(&(x.len() as u32).to_le_bytes());
        out.extend_from_slice(x.as_bytes());
    }

    #[test]
    fn plain_values_protocol_2_hand_written() {
        // {'a': [1, -1, 300, 70000, None, True, False, 1.5], 'b': ('x', b'\x00\xff')}
        let mut p = b"\x80\x02}q\x00(".to_vec();
        uni(&mut p, "a");
        p.extend_from_slice(b"](K\x01J\xff\xff\xff\xffM\x2c\x01J\x70\x11\x01\x00N\x88\x89G\x3f\xf8\x00\x00\x00\x00\x00\x00e");
        uni(&mut p, "b");
        uni(&mut p, "x");
        p.extend_from_slice(b"c_codecs\nencode\nq\x01");
        uni(&mut p, "\u{0}\u{ff}");
        uni(&mut p, "latin1");
        p.extend_from_slice(b"\x86R\x86u.");
        let v = dec(&p).unwrap();
        let want = Value::Dict(vec![
            (
                s("a"),
                Value::List(vec![
                    Value::Int(1),
                    Value::Int(-1),
                    Value::Int(300),
                    Value::Int(70000),
                    Value::None,
                    Value::Bool(true),
                    Value::Bool(false),
                    Value::Float(1.5),
                ]),
            ),
            (s("b"), Value::Tuple(vec![s("x"), Value::Bytes(Cow::Owned(vec![0, 255]))])),
        ]);
        assert_eq!(v, want);
        assert_eq!(v.get("b").unwrap().as_seq().unwrap()[1].as_bytes(), Some(&[0u8, 255][..]));
    }

    #[test]
    fn str_and_bytes_borrow_from_the_input() {
        let payload = vec![7u8; 1000];
        let p = serde_pickle::value_to_vec(
            &SP::Tuple(vec![SP::Bytes(payload.clone()), SP::String("héllo".into())]),
            SerOptions::new(),
        )
        .unwrap();
        let v = dec(&p).unwrap();
        let range = p.as_ptr_range();
        let items = v.as_seq().unwrap();
        match (&items[0], &items[1]) {
            (Value::Bytes(Cow::Borrowed(b)), Value::Str(Cow::Borrowed(t))) => {
                assert_eq!(*b, &payload[..]);
                assert!(range.contains(&b.as_ptr()) && range.contains(&t.as_ptr()));
                assert_eq!(*t, "héllo");
            }
            other => panic!("not borrowed: {other:?}"),
        }
    }

    #[test]
    fn latin1_encode_path_gives_every_byte_value() {
        let all: Vec<u8> = (0..=255u8).cycle().take(256 * 5 + 3).collect();
        for data in [all.clone(), b"only ascii here".to_vec(), vec![], vec![0xff], vec![0x80, b'a']] {
            let p = serde_pickle::value_to_vec(&SP::Bytes(data.clone()), SerOptions::new().proto_v2()).unwrap();
            assert!(p.windows(7).any(|w| w == b"_codecs"), "serde-pickle v2 uses _codecs.encode");
            assert_eq!(dec(&p).unwrap().as_bytes(), Some(&data[..]));
        }
        // Direct: every offset/length combination near the 8-byte chunks.
        for n in 0..40 {
            for start in 0..=255u8 {
                let data: Vec<u8> = (0..n).map(|i| start.wrapping_add((i as u8).wrapping_mul(37))).collect();
                let text: String = data.iter().map(|&b| b as char).collect();
                assert_eq!(latin1_bytes(Cow::Borrowed(&text)).unwrap().as_ref(), &data[..]);
            }
        }
        assert_eq!(latin1_bytes(Cow::Borrowed("abcdefgh\u{100}")), Err(8));
        assert_eq!(latin1_bytes(Cow::Borrowed("ab😀")), Err(2));
    }

    #[test]
    fn latin1_conversion_validates_exactly_like_std() {
        // Reference: std's UTF-8 check, then every char ≤ U+00FF.
        let reference = |b: &[u8]| -> Option<Vec<u8>> {
            let s = std::str::from_utf8(b).ok()?;
            s.chars().map(|c| u8::try_from(c as u32).ok()).collect()
        };
        let alphabet = [0x00, b'A', 0x7f, 0x80, 0x9f, 0xbf, 0xc0, 0xc1, 0xc2, 0xc3, 0xc4, 0xdf, 0xe2, 0xf0, 0xff];
        let mut r = Rng(7);
        for case in 0..200_000 {
            let n = if case % 100 == 0 { r.below(300) } else { r.below(26) } as usize;
            let b: Vec<u8> = if case % 2 == 0 {
                (0..n).map(|_| alphabet[r.below(alphabet.len() as u64) as usize]).collect()
            } else {
                // Mostly valid latin-1 text with an occasional stray byte.
                let mut s: Vec<u8> = (0..n).map(|_| r.next() as u8 as char).collect::<String>().into_bytes();
                if !s.is_empty() && r.below(4) == 0 {
                    let i = r.below(s.len() as u64) as usize;
                    s[i] = alphabet[r.below(alphabet.len() as u64) as usize];
                }
                s
            };
            assert_eq!(latin1_from_utf8(&b).map(Cow::into_owned), reference(&b), "{b:02x?}");
        }
    }

    #[test]
    fn encode_refuses_non_latin1_and_wrong_arguments() {
        let mut p = b"\x80\x02c_codecs\nencode\n".to_vec();
        uni(&mut p, "\u{20ac}");
        uni(&mut p, "latin1");
        p.extend_from_slice(b"\x86R.");
        assert!(err(&p).contains("not latin-1"), "{}", err(&p));
        let mut p = b"\x80\x02c_codecs\nencode\n".to_vec();
        uni(&mut p, "abc");
        uni(&mut p, "utf-8");
        p.extend_from_slice(b"\x86R.");
        let e = err(&p);
        assert!(e.contains("_codecs.encode(str, str)") && e.contains("pickle refused"), "{e}");
        // bytes(...) with an argument, bytearray(int)
        let e = err(b"\x80\x02c__builtin__\nbytes\nK\x05\x85R.");
        assert!(e.contains("builtins.bytes(int)"), "{e}");
        let e = err(b"\x80\x03cbuiltins\nbytearray\nK\x05\x85R.");
        assert!(e.contains("builtins.bytearray(int)"), "{e}");
        // The empty forms and bytearray(bytes).
        assert_eq!(dec(b"\x80\x02c__builtin__\nbytes\n)R.").unwrap(), Value::Bytes(Cow::Borrowed(b"")));
        assert_eq!(dec(b"\x80\x03cbuiltins\nbytearray\nC\x02hi\x85R.").unwrap(), Value::Bytes(Cow::Borrowed(b"hi")));
        // A REDUCE whose callable is not a global.
        assert!(err(b"\x80\x02K\x01)R.").contains("not a function"));
    }

    #[test]
    fn refuses_os_system() {
        // pickle.dumps of a class whose __reduce__ returns (os.system, ('echo pwned',)), protocol 2.
        let mut p = b"\x80\x02cposix\nsystem\nq\x00".to_vec();
        uni(&mut p, "echo pwned");
        p.extend_from_slice(b"\x85q\x01Rq\x02.");
        let e = err(&p);
        assert!(e.starts_with("pickle refused: global 'posix.system' (only plain data"), "{e}");
        let e = err(b"cos\nsystem\n(S'echo pwned'\ntR.");
        assert_eq!(
            e,
            "pickle refused: global 'os.system' (only plain data — dict, list, tuple, str, bytes, int, float, bool, None — is accepted)"
        );
        // Protocol 4: STACK_GLOBAL.
        let e = err(b"\x80\x04\x8c\x02os\x94\x8c\x06system\x94\x93\x94\x8c\x02ls\x85R.");
        assert!(e.contains("global 'os.system'"), "{e}");
        // builtins.eval / getattr are refused by name as well.
        assert!(err(b"\x80\x03cbuiltins\neval\n.").contains("'builtins.eval'"));
        assert!(err(b"\x80\x03cbuiltins\ngetattr\n.").contains("'builtins.getattr'"));
    }

    #[test]
    fn refuses_numpy_with_a_hint() {
        let e = err(b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00cnumpy\nndarray\nq\x01K\x00\x85q\x02C\x01bq\x03\x87q\x04Rq\x05.");
        assert!(e.contains("global 'numpy.core.multiarray._reconstruct'") && e.contains("send arr.tobytes()"), "{e}");
    }

    #[test]
    fn refuses_objects_sets_and_buffers() {
        let cases: &[(&[u8], &str)] = &[
            (b"\x80\x04\x8f.", "sets are not supported"),
            (b"\x80\x04\x91.", "sets are not supported"),
            (b"\x80\x02cbuiltins\nset\n]\x85R.", "sets are not supported"),
            (b"\x80\x02c__main__\nThing\n)\x81.", "global '__main__.Thing'"),
            (b"\x80\x02N)\x81.", "NEWOBJ at byte 4 builds a class instance"),
            (b"\x80\x04N))}\x92.", "NEWOBJ_EX at byte 6 builds a class instance"),
            (b"\x80\x02}}b.", "BUILD at byte 4 sets an object's state"),
            (b"(i__main__\nThing\n.", "INST at byte 1"),
            (b"\x80\x02K\x01Q.", "BINPERSID"),
            (b"Pabc\n.", "PERSID"),
            (b"\x80\x02\x82\x01.", "EXT1"),
            (b"\x80\x05\x97.", "out-of-band"),
            (b"\x80\x05\x98.", "READONLY_BUFFER"),
        ];
        for (p, needle) in cases {
            let e = err(p);
            assert!(e.contains(needle) && e.starts_with("pickle refused"), "{p:?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let n = 10_000;
        // EMPTY_LIST × n, then APPEND × (n-1): [[[[...]]]]
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        assert_eq!(err(&p), "pickle nests deeper than 32 levels");
        // MARK × n, then LIST × n.
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', n));
        p.extend(std::iter::repeat_n(b'l', n));
        p.push(b'.');
        assert_eq!(err(&p), "pickle nests deeper than 32 levels");
        // TUPLE1 × n around None, and dicts.
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, n));
        p.push(b'.');
        assert_eq!(err(&p), "pickle nests deeper than 32 levels");
        let mut p = vec![0x80, 2];
        for _ in 0..n {
            p.extend_from_slice(b"}K\x01");
        }
        p.push(b'N');
        p.extend(std::iter::repeat_n(b's', n));
        p.push(b'.');
        assert_eq!(err(&p), "pickle nests deeper than 32 levels");
        // Exactly at the limit is fine; the limit is configurable.
        let nest = |levels: usize| {
            let mut p = vec![0x80, 2];
            p.extend(std::iter::repeat_n(b']', levels));
            p.extend(std::iter::repeat_n(b'a', levels - 1));
            p.push(b'.');
            p
        };
        assert!(dec(&nest(32)).is_ok());
        assert!(dec(&nest(33)).is_err());
        assert!(decode(&nest(33), &Limits { max_depth: 40, ..Limits::default() }).is_ok());
        assert!(decode(&nest(2), &Limits { max_depth: 1, ..Limits::default() }).is_err());
    }

    #[test]
    fn billion_laughs_is_stopped_by_the_node_budget() {
        // x0 = 'lol'; x(i+1) = [x(i)] * 10, all by memo GET: 10^9 strings if materialised.
        let mut p = b"\x80\x04\x8c\x03lol\x94".to_vec();
        for i in 0..9u32 {
            p.extend_from_slice(b"(");
            for _ in 0..10 {
                p.push(b'j');
                p.extend_from_slice(&i.to_le_bytes());
            }
            p.extend_from_slice(b"l\x94");
        }
        p.push(b'.');
        let e = err(&p);
        assert_eq!(e, "pickle too large: more than 1048576 values (each use of a shared value counts)");
        // DUP doubling.
        let mut p = b"\x80\x02]".to_vec();
        for _ in 0..40 {
            p.extend_from_slice(b"2\x86");
        }
        p.push(b'.');
        let e = err(&p);
        assert!(e.contains("too large") || e.contains("deeper"), "{e}");
        // A small explicit budget.
        let p = serde_pickle::value_to_vec(&SP::List((0..100).map(SP::I64).collect()), SerOptions::new()).unwrap();
        assert!(decode(&p, &Limits { max_nodes: 101, ..Limits::default() }).is_ok());
        assert!(decode(&p, &Limits { max_nodes: 100, ..Limits::default() }).is_err());
    }

    #[test]
    fn shared_big_bytes_are_stopped_by_the_copy_budget() {
        // One 500 kB owned byte string (latin-1 path, not ASCII), referenced 200 times.
        let text: String = std::iter::repeat_n('é', 500_000).collect();
        let mut p = b"\x80\x02c_codecs\nencode\n".to_vec();
        uni(&mut p, &text);
        uni(&mut p, "latin1");
        p.extend_from_slice(b"\x86Rq\x00](");
        for _ in 0..200 {
            p.extend_from_slice(b"h\x00");
        }
        p.extend_from_slice(b"e\x86.");
        let e = err(&p);
        assert!(e.starts_with("pickle too large: decoding would copy more than"), "{e}");
    }

    #[test]
    fn truncated_input_never_allocates_the_declared_length() {
        assert_eq!(err(b"\x80\x03B\xff\xff\xff\x7fabc."), "truncated pickle: BINBYTES at byte 2 needs 2147483647 bytes, 4 left");
        assert_eq!(
            err(b"\x80\x04\x8e\xff\xff\xff\xff\xff\xff\xff\xffab"),
            "truncated pickle: BINBYTES8 at byte 2 needs 18446744073709551615 bytes, 2 left"
        );
        assert_eq!(err(b"\x80\x04\x8d\xff\xff\xff\xff"), "truncated pickle: BINUNICODE8 at byte 2 needs 8 bytes, 4 left");
        assert_eq!(err(b"\x80\x04\x95\x00\x10\x00\x00\x00\x00\x00\x00N."), "truncated pickle: FRAME at byte 2 needs 4096 bytes, 2 left");
        assert!(err(b"\x80\x02T\xff\xff\xff\xffab.").contains("negative length -1"));
        assert!(err(b"\x80\x02\x8b\x00\x00\x00\x80.").contains("negative length"));
        assert_eq!(err(b"\x80\x02N"), "truncated pickle: 3 bytes without a STOP opcode");
        assert_eq!(err(b"cos\nsys"), "truncated pickle: GLOBAL at byte 0 has no end of line");
        assert_eq!(err(b"\x80"), "truncated pickle: PROTO at byte 0 needs 1 bytes, 0 left");
    }

    #[test]
    fn structural_errors() {
        assert_eq!(err(b""), "empty message: no pickle data");
        assert_eq!(err(b"\x80\x02N.xyz12"), "trailing data: 5 bytes after STOP");
        assert_eq!(err(b"\x80\x02\xff."), "unknown pickle opcode 0xff at byte 2");
        assert_eq!(err(b"\x80\x06N."), "unsupported pickle protocol 6 at byte 0 (0 to 5 are supported)");
        assert!(err(b"\x80\x02a.").contains("stack underflow"));
        assert!(err(b"\x80\x02]K\x01e.").contains("no MARK"));
        assert!(err(b"\x80\x02NN.").contains("2 values on the stack, expected 1"));
        assert!(err(b"\x80\x02.").contains("0 values on the stack"));
        assert!(err(b"\x80\x02(N.").contains("MARK(s) left open"));
        assert!(err(b"\x80\x02}]K\x01s.").contains("unhashable dict key of type list"));
        assert!(err(b"\x80\x02}]\x85K\x01s.").contains("unhashable dict key of type tuple"));
        assert!(err(b"\x80\x02K\x01K\x02a.").contains("adds items to a int, not a list"));
        assert!(err(b"\x80\x02]K\x01K\x02s.").contains("not a dict"));
        assert!(err(b"\x80\x02h\x05.").contains("memo key 5 was never stored"));
        assert!(err(b"\x80\x02X\x02\x00\x00\x00\xc3\x28.").contains("not valid UTF-8"));
        // Items below a MARK are out of reach until it is closed.
        assert!(err(b"\x80\x02](K\x01a.").contains("stack underflow"));
        // Repeated keys, in Python's sense of equality.
        assert!(err(b"\x80\x02}(K\x01NK\x01Nu.").contains("repeated dict key 1"));
        assert!(err(b"\x80\x02}(K\x01N\x88Nu.").contains("repeated dict key"));
        assert!(err(b"\x80\x02(K\x01NG\x3f\xf0\x00\x00\x00\x00\x00\x00Nd.").contains("repeated dict key"));
        let mut big = b"\x80\x02}(".to_vec();
        for i in 0..50u8 {
            big.extend_from_slice(&[b'K', i, b'N']);
        }
        assert!(dec(&[&big[..], b"u."].concat()).is_ok());
        big.extend_from_slice(b"K\x07N");
        assert!(err(&[&big[..], b"u."].concat()).contains("repeated dict key 7"));
    }

    #[test]
    fn globals_never_escape_into_values() {
        for p in [
            &b"\x80\x02c_codecs\nencode\n."[..],
            b"\x80\x02]c_codecs\nencode\na.",
            b"\x80\x02c__builtin__\nbytes\n\x85.",
            b"\x80\x02}c__builtin__\nbytes\nNs.",
            b"\x80\x02(cbuiltins\nbytearray\nl.",
        ] {
            let e = err(p);
            assert!(e.contains("may only be called"), "{p:?}: {e}");
        }
        // A global as the argument of a REDUCE.
        assert!(err(b"\x80\x02cbuiltins\nbytearray\ncbuiltins\nbytes\n\x85R.").contains("may only be called"));
    }

    #[test]
    fn memo_refers_to_objects_filled_after_memoizing() {
        // Python 3, protocol 2: L = [1, 2]; {'a': L, 'b': L, 'c': (L, L)}
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02X\x01\x00\x00\x00cq\x04h\x02h\x02\x86q\x05u.";
        let v = dec(p).unwrap();
        let l = Value::List(vec![Value::Int(1), Value::Int(2)]);
        assert_eq!(v.get("a"), Some(&l));
        assert_eq!(v.get("b"), Some(&l));
        assert_eq!(v.get("c"), Some(&Value::Tuple(vec![l.clone(), l.clone()])));
        // Protocol 4 (MEMOIZE): same object twice in a tuple while it is still on the stack.
        let p = b"\x80\x04\x95\x0d\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02eh\x00\x86\x94.";
        assert_eq!(dec(p).unwrap(), Value::Tuple(vec![l.clone(), l.clone()]));
        // Text protocol 0 PUT/GET.
        let p = b"(lp0\nI1\naI2\nag0\na.";
        assert!(err(p).contains("changes a container after it was shared"));
        let p = b"(lp0\nI1\naI2\na0(g0\ng0\ntp1\n.";
        assert_eq!(dec(p).unwrap(), Value::Tuple(vec![l.clone(), l.clone()]));
    }

    #[test]
    fn recursive_structures_are_refused() {
        // l = []; l.append(l)  (protocol 2 and 4)
        for p in [&b"\x80\x02]q\x00h\x00a."[..], b"\x80\x04]\x94h\x00a.", b"\x80\x02}q\x00K\x01h\x00s.", b"\x80\x02]2a."] {
            let e = err(p);
            assert!(e.contains("recursive"), "{p:?}: {e}");
        }
    }

    #[test]
    fn integers() {
        let long1 = |bytes: &[u8]| {
            let mut p = vec![0x80, 2, 0x8a, bytes.len() as u8];
            p.extend_from_slice(bytes);
            p.push(b'.');
            p
        };
        for i in [0i64, 1, -1, 127, 128, -128, -129, 255, 256, 65535, 65536, i32::MIN as i64, 1 << 31, i64::MAX, i64::MIN] {
            let p = serde_pickle::value_to_vec(&SP::I64(i), SerOptions::new()).unwrap();
            assert_eq!(dec(&p).unwrap(), Value::Int(i), "{i} {p:?}");
            // Minimal two's complement, as Python writes it.
            let mut b = i.to_le_bytes().to_vec();
            while b.len() > 1 && ((b[b.len() - 1] == 0 && b[b.len() - 2] & 0x80 == 0) || (b[b.len() - 1] == 0xff && b[b.len() - 2] & 0x80 != 0)) {
                b.pop();
            }
            assert_eq!(dec(&long1(&b)).unwrap(), Value::Int(i));
        }
        assert_eq!(dec(&long1(&[])).unwrap(), Value::Int(0));
        // Sign extension beyond 8 bytes is fine; real 65-bit values are not.
        assert_eq!(dec(&long1(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff])).unwrap(), Value::Int(-2));
        let e = err(&long1(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0])); // 2**63
        assert!(e.contains("does not fit in 64 bits"), "{e}");
        assert!(err(&long1(&[0, 0, 0, 0, 0, 0, 0, 0x7f, 0xff])).contains("64 bits"));
        assert!(err(b"L18446744073709551616L\n.").contains("64 bits"));
        assert_eq!(dec(b"L-9223372036854775808L\n.").unwrap(), Value::Int(i64::MIN));
        assert_eq!(dec(b"I-42\n.").unwrap(), Value::Int(-42));
        assert_eq!(dec(b"I01\n.").unwrap(), Value::Bool(true));
        assert_eq!(dec(b"I00\n.").unwrap(), Value::Bool(false));
    }

    #[test]
    fn text_protocol_0() {
        let p = b"(lp0\nVh\\u00e9llo \\u20ac \\U0001f600\np1\naF-0.0\naFnan\naF1e+300\naS'a\\'b\\x41\\n\\101'\np2\naNa(dp3\nVk\np4\n(tp5\nsa.";
        let v = dec(p).unwrap();
        let items = v.as_seq().unwrap();
        assert_eq!(items[0].as_str(), Some("héllo € 😀"));
        assert!(matches!(items[1], Value::Float(f) if f == 0.0 && f.is_sign_negative()));
        assert!(matches!(items[2], Value::Float(f) if f.is_nan()));
        assert_eq!(items[3], Value::Float(1e300));
        assert_eq!(items[4].as_str(), Some("a'bA\nA"));
        assert_eq!(items[5], Value::None);
        assert_eq!(items[6], Value::Dict(vec![(s("k"), Value::Tuple(vec![]))]));
        assert!(err(b"V\\u+041\n.").contains("cannot read the argument"));
        assert!(err(b"V\\ud800\n.").contains("cannot read the argument"));
        assert!(err(b"S'\\x+1'\n.").contains("cannot read the argument"));
        assert!(err(b"S'abc\n.").contains("cannot read the argument"));
        // Python 3 protocol 0 bytes: _codecs.encode of raw-unicode-escape text.
        let p = b"c_codecs\nencode\np0\n(Vab\\u0000\xff\np1\nVlatin1\np2\ntp3\nRp4\n.";
        assert_eq!(dec(p).unwrap(), Value::Bytes(Cow::Owned(b"ab\x00\xff".to_vec())));
    }

    // --- Round trips against serde-pickle ---------------------------------------------------

    use crate::io::pickle_ops::fuzz::{mutate_and_decode, Rng};

    fn rand_string(r: &mut Rng) -> String {
        let pool = ['a', 'z', ' ', 'é', 'ÿ', '€', '😀', '\0', '\n', '\\', 'Ω'];
        let n = if r.below(20) == 0 { 300 } else { r.below(8) as usize };
        (0..n).map(|_| pool[r.below(pool.len() as u64) as usize]).collect()
    }

    fn rand_bytes(r: &mut Rng) -> Vec<u8> {
        let n = [0, 1, 5, 255, 256, 3000][r.below(6) as usize];
        (0..n).map(|_| r.next() as u8).collect()
    }

    fn rand_int(r: &mut Rng) -> i64 {
        match r.below(6) {
            0 => r.below(256) as i64,
            1 => r.below(70000) as i64 - 35000,
            2 => r.next() as i64,
            3 => [i64::MIN, i64::MAX, -1, 1 << 31, -(1 << 31), (1 << 31) - 1][r.below(6) as usize],
            _ => (r.next() as i64) >> r.below(64),
        }
    }

    fn rand_key(r: &mut Rng, depth: u32) -> HV {
        match r.below(if depth > 0 { 4 } else { 3 }) {
            0 => HV::String(rand_string(r)),
            1 => HV::I64(rand_int(r)),
            2 => HV::Bytes(rand_bytes(r)),
            _ => HV::Tuple((0..r.below(3)).map(|_| rand_key(r, depth - 1)).collect()),
        }
    }

    fn rand_value(r: &mut Rng, depth: u32) -> SP {
        match r.below(if depth > 0 { 10 } else { 7 }) {
            0 => SP::None,
            1 => SP::Bool(r.below(2) == 0),
            2 => SP::I64(rand_int(r)),
            3 => SP::F64([0.0, -0.0, 1.5, -1e300, f64::INFINITY, f64::MIN_POSITIVE, f64::from_bits(r.next() & !(0x7ff << 52))][r.below(7) as usize]),
            4 => SP::String(rand_string(r)),
            5 | 6 => SP::Bytes(rand_bytes(r)),
            7 => SP::List((0..r.below(6)).map(|_| rand_value(r, depth - 1)).collect()),
            8 => SP::Tuple((0..r.below(5)).map(|_| rand_value(r, depth - 1)).collect()),
            _ => SP::Dict((0..r.below(12)).map(|_| (rand_key(r, 2), rand_value(r, depth - 1))).collect::<BTreeMap<_, _>>()),
        }
    }

    /// Ours, as a serde-pickle value.
    fn to_sp(v: &Value) -> SP {
        match v {
            Value::None => SP::None,
            Value::Bool(b) => SP::Bool(*b),
            Value::Int(i) => SP::I64(*i),
            Value::Float(f) => SP::F64(*f),
            Value::Str(s) => SP::String(s.to_string()),
            Value::Bytes(b) => SP::Bytes(b.to_vec()),
            Value::List(l) => SP::List(l.iter().map(to_sp).collect()),
            Value::Tuple(l) => SP::Tuple(l.iter().map(to_sp).collect()),
            Value::Dict(d) => SP::Dict(d.iter().map(|(k, v)| (to_sp(k).into_hashable().unwrap(), to_sp(v))).collect()),
        }
    }

    #[test]
    fn round_trips_serde_pickle_values_protocols_2_and_3() {
        let mut r = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..3000 {
            let v = rand_value(&mut r, 1 + (i % 5));
            for opts in [SerOptions::new(), SerOptions::new().proto_v2()] {
                let p = serde_pickle::value_to_vec(&v, opts).unwrap();
                let ours = dec(&p).unwrap_or_else(|e| panic!("case {i}: {e} for {v:?}"));
                assert_eq!(to_sp(&ours), v, "case {i}");
            }
        }
    }

    fn rand_json(r: &mut Rng, depth: u32) -> serde_json::Value {
        use serde_json::Value as J;
        match r.below(if depth > 0 { 8 } else { 6 }) {
            0 => J::Null,
            1 => J::Bool(r.below(2) == 0),
            2 => J::from(rand_int(r)),
            3 => J::from((r.next() as i64 as f64) / 1e6),
            4 | 5 => J::String(rand_string(r)),
            6 => J::Array((0..r.below(6)).map(|_| rand_json(r, depth - 1)).collect()),
            _ => J::Object((0..r.below(8)).map(|_| (rand_string(r), rand_json(r, depth - 1))).collect()),
        }
    }

    fn same_as_json(ours: &Value, j: &serde_json::Value) -> bool {
        use serde_json::Value as J;
        match (ours, j) {
            (Value::None, J::Null) => true,
            (Value::Bool(a), J::Bool(b)) => a == b,
            (Value::Int(a), J::Number(n)) => n.as_i64() == Some(*a),
            (Value::Float(a), J::Number(n)) => n.is_f64() && n.as_f64() == Some(*a),
            (Value::Str(a), J::String(b)) => a == b,
            (Value::List(a), J::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_as_json(x, y)),
            (Value::Dict(a), J::Object(b)) => {
                a.len() == b.len() && a.iter().all(|(k, v)| k.as_str().and_then(|k| b.get(k)).is_some_and(|w| same_as_json(v, w)))
            }
            _ => false,
        }
    }

    #[test]
    fn round_trips_serde_json_values() {
        let mut r = Rng(42);
        for i in 0..2000 {
            let j = rand_json(&mut r, 1 + (i % 5));
            for opts in [SerOptions::new(), SerOptions::new().proto_v2()] {
                let p = serde_pickle::to_vec(&j, opts).unwrap();
                let ours = dec(&p).unwrap_or_else(|e| panic!("case {i}: {e} for {j}"));
                assert!(same_as_json(&ours, &j), "case {i}: {ours:?} vs {j}");
            }
        }
    }

    #[test]
    fn mutated_and_random_input_never_panics() {
        let mut r = Rng(0xdead_beef);
        let mut seeds: Vec<Vec<u8>> = Vec::new();
        for i in 0..40 {
            let v = rand_value(&mut r, 1 + i % 4);
            seeds.push(serde_pickle::value_to_vec(&v, SerOptions::new()).unwrap());
            seeds.push(serde_pickle::value_to_vec(&v, SerOptions::new().proto_v2()).unwrap());
        }
        seeds.push(b"(lp0\nVh\\u00e9\np1\naF1.5\naS'x'\naL5L\nag1\na.".to_vec());
        seeds.push(b"\x80\x04\x95\r\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02eh\x00\x86\x94.".to_vec());
        seeds.push(b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01K\x02eX\x01\x00\x00\x00bq\x03h\x02u.".to_vec());
        seeds.push(b"\x80\x02c_codecs\nencode\nq\x00X\x02\x00\x00\x00\xc3\xbfq\x01X\x06\x00\x00\x00latin1q\x02\x86q\x03Rq\x04.".to_vec());
        let opcodes: &[u8] = b"().012FIJKLMNRSTUVXabcdegh jlpqrstu}]\x80\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x93\x94\x95\x96BC";
        mutate_and_decode(&mut r, &seeds, opcodes, |p| {
            let _ = dec(p);
        });
    }

    #[test]
    fn request_dict_accessors() {
        let mut d = BTreeMap::new();
        d.insert(HV::String("action".into()), SP::String("sam6d_inference".into()));
        d.insert(HV::String("rgb_bytes".into()), SP::Bytes(vec![1, 2, 3]));
        d.insert(HV::String("det_score_thresh".into()), SP::F64(0.5));
        d.insert(HV::String("visualize".into()), SP::Bool(true));
        d.insert(HV::String("id".into()), SP::I64(17));
        d.insert(HV::String("cam_K".into()), SP::List((0..9).map(|i| SP::F64(i as f64)).collect()));
        let p = serde_pickle::value_to_vec(&SP::Dict(d), SerOptions::new()).unwrap();
        let v = dec(&p).unwrap();
        assert_eq!(v.type_name(), "dict");
        assert_eq!(v.get("action").and_then(Value::as_str), Some("sam6d_inference"));
        assert_eq!(v.get("rgb_bytes").and_then(Value::as_bytes), Some(&[1u8, 2, 3][..]));
        assert_eq!(v.get("det_score_thresh").and_then(Value::as_f64), Some(0.5));
        assert_eq!(v.get("visualize").and_then(Value::as_bool), Some(true));
        assert_eq!(v.get("id").and_then(Value::as_i64), Some(17));
        assert_eq!(v.get("cam_K").and_then(Value::as_seq).map(<[_]>::len), Some(9));
        assert_eq!(v.as_dict().map(<[_]>::len), Some(6));
        assert!(v.get("missing").is_none());
    }
}
