//! The opcode reader both pickle decoders share: the wire protocol's plain-data decoder
//! (`protocol::pickle`) and the checkpoint reader (`weights::unpickle`). It turns bytes into
//! [`Op`]s, checking every declared length against the bytes present before slicing, and
//! decides nothing: which opcodes a decoder accepts, and what they build, is its policy.
use super::ops::*;

/// What can go wrong reading an opcode, before any decoder looks at it.
#[derive(Debug)]
pub enum ReadError {
    Truncated { op: &'static str, at: usize, need: u64, left: usize },
    UnterminatedLine { op: &'static str, at: usize },
    UnknownOpcode { op: u8, at: usize },
    Malformed { op: &'static str, at: usize, msg: String },
}

/// One opcode with its argument read (payloads as slices of the input, not yet validated).
/// What a value is made of, never what it means: each decoder's policy decides that.
#[derive(Clone, Copy, Debug)]
pub enum Op<'a> {
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
    /// A known opcode that builds something other than plain data (instances, object state,
    /// persistent ids, extensions, out-of-band buffers, sets): its byte, arguments unread.
    /// Decoders refuse these or, for the few a checkpoint needs (BUILD, BINPERSID), handle them.
    Object(u8),
}

/// Reads one opcode and its argument at a time from a pickle held in memory.
pub struct Reader<'a> {
    buf: &'a [u8],
    pub pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    /// Whether opcodes are left to read.
    pub fn more(&self) -> bool {
        self.pos < self.buf.len()
    }

    pub fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    #[inline]
    fn bytes(&mut self, n: u64, c: u8, at: usize) -> Result<&'a [u8], ReadError> {
        let left = self.buf.len() - self.pos;
        if n > left as u64 {
            return Err(ReadError::Truncated { op: name(c), at, need: n, left });
        }
        let s = &self.buf[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    #[inline]
    fn arr<const N: usize>(&mut self, c: u8, at: usize) -> Result<[u8; N], ReadError> {
        Ok(self.bytes(N as u64, c, at)?.try_into().expect("N bytes"))
    }

    #[inline]
    fn u8(&mut self, c: u8, at: usize) -> Result<u8, ReadError> {
        Ok(self.arr::<1>(c, at)?[0])
    }

    #[inline]
    fn u32(&mut self, c: u8, at: usize) -> Result<u32, ReadError> {
        Ok(u32::from_le_bytes(self.arr(c, at)?))
    }

    #[inline]
    fn u64(&mut self, c: u8, at: usize) -> Result<u64, ReadError> {
        Ok(u64::from_le_bytes(self.arr(c, at)?))
    }

    /// A 4-byte signed length (BINSTRING, LONG4): negative is malformed.
    fn i32_len(&mut self, c: u8, at: usize) -> Result<u64, ReadError> {
        let n = i32::from_le_bytes(self.arr(c, at)?);
        u64::try_from(n).map_err(|_| malformed(c, at, format!("negative length {n}")))
    }

    /// A text argument up to the next newline (which is consumed, not returned).
    fn line(&mut self, c: u8, at: usize) -> Result<&'a [u8], ReadError> {
        let rest = &self.buf[self.pos..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.pos += i + 1;
                Ok(&rest[..i])
            }
            None => Err(ReadError::UnterminatedLine { op: name(c), at }),
        }
    }

    /// Reads the opcode at `pos` (which must be < len) and its argument.
    #[inline(always)]
    pub fn next(&mut self) -> Result<(Op<'a>, u8, usize), ReadError> {
        let at = self.pos;
        let c = self.buf[at];
        self.pos += 1;
        let op = match c {
            PROTO => Op::Proto(self.u8(c, at)?),
            FRAME => {
                let n = self.u64(c, at)?;
                let left = self.buf.len() - self.pos;
                if n > left as u64 {
                    return Err(ReadError::Truncated { op: "FRAME", at, need: n, left });
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
            INST | OBJ | NEWOBJ | NEWOBJ_EX | BUILD | PERSID | BINPERSID | EXT1 | EXT2 | EXT4 | NEXT_BUFFER | READONLY_BUFFER | EMPTY_SET | ADDITEMS | FROZENSET => {
                Op::Object(c)
            }
            _ => return Err(ReadError::UnknownOpcode { op: c, at }),
        };
        Ok((op, c, at))
    }
}

fn malformed(c: u8, at: usize, msg: impl Into<String>) -> ReadError {
    ReadError::Malformed { op: name(c), at, msg: msg.into() }
}

/// Decimal memo index of the text PUT/GET opcodes.
fn text_index(line: &[u8], c: u8, at: usize) -> Result<u32, ReadError> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .ok_or_else(|| malformed(c, at, format!("bad memo index {:?}", String::from_utf8_lossy(line))))
}
