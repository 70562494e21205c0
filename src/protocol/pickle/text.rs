//! The text forms inside pickles: protocol 0's literals, latin-1 payloads (how protocols 0–2
//! send `bytes`), and LONG1/LONG4 integers.
use super::*;

/// Little-endian two's complement (LONG1/LONG4) to i64, None if it does not fit.
pub(super) fn long_to_i64(b: &[u8]) -> Option<i64> {
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
pub(super) fn latin1_bytes(s: Cow<'_, str>) -> Result<Cow<'_, [u8]>, usize> {
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
pub(super) fn latin1_from_utf8(b: &[u8]) -> Option<Cow<'_, [u8]>> {
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
pub(super) fn latin1_str(b: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) if s.is_ascii() => Cow::Borrowed(s),
        _ => Cow::Owned(b.iter().map(|&x| x as char).collect()),
    }
}

/// UNICODE (protocol 0): "raw-unicode-escape" — bytes are latin-1 characters, except
/// `\uXXXX` and `\UXXXXXXXX`.
pub(super) fn raw_unicode_escape(b: &[u8]) -> Option<Cow<'_, str>> {
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
pub(super) fn hex_value(digits: &[u8]) -> Option<u32> {
    digits.iter().try_fold(0u32, |acc, &d| Some(acc * 16 + (d as char).to_digit(16)?))
}

/// STRING (protocol 0, Python 2 `str`): a quoted Python literal with backslash escapes; the
/// bytes are read as latin-1.
pub(super) fn python_string_literal(line: &[u8]) -> Option<String> {
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

