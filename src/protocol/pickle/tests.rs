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

    use crate::io::pickle::ops::fuzz::{mutate_and_decode, Rng};

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
