    use super::*;

    fn err(p: &[u8]) -> String {
        match unpickle(p) {
            Ok(v) => panic!("{p:?} decoded: {:?}", v.node(v.root)),
            Err(e) => e.to_string(),
        }
    }

    /// A pickle as torch.save writes a state dict: protocol 2, an OrderedDict REDUCE, tensors as
    /// `_rebuild_tensor_v2(persistent storage, offset, size, stride, False, OrderedDict())`.
    /// (name, storage type, storage key, storage numel, offset, size, stride)
    type Spec<'a> = (&'a str, &'a str, &'a str, u8, u8, &'a [u8], &'a [u8]);

    fn torch_like_pickle(tensors: &[Spec]) -> Vec<u8> {
        let mut p = b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(".to_vec();
        for (name, ty, key, numel, offset, size, stride) in tensors {
            p.push(b'X');
            p.extend_from_slice(&(name.len() as u32).to_le_bytes());
            p.extend_from_slice(name.as_bytes());
            p.extend_from_slice(b"ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storage");
            p.extend_from_slice(format!("ctorch\n{ty}\n").as_bytes());
            p.push(b'X');
            p.extend_from_slice(&(key.len() as u32).to_le_bytes());
            p.extend_from_slice(key.as_bytes());
            p.extend_from_slice(b"X\x03\x00\x00\x00cpuK");
            p.push(*numel);
            p.extend_from_slice(b"tQK");
            p.push(*offset);
            for dims in [size, stride] {
                p.push(b'(');
                for d in dims.iter() {
                    p.extend_from_slice(&[b'K', *d]);
                }
                p.push(b't');
            }
            p.extend_from_slice(b"\x89h\x00)RtR");
        }
        // SETITEMS, then BUILD with the attribute dict {'_metadata': OrderedDict()}.
        p.extend_from_slice(b"u}X\x09\x00\x00\x00_metadatah\x00)Rsb.");
        p
    }

    fn tensor<'p>(p: &'p Pickled, name: &str) -> &'p TensorMeta {
        match p.node(p.dict_get(p.root, name).unwrap()) {
            Node::Tensor(t) => t,
            n => panic!("{name} is {n:?}"),
        }
    }

    #[test]
    fn decodes_a_torch_like_state_dict() {
        let p = torch_like_pickle(&[("a.weight", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]), ("a.bias", "HalfStorage", "1", 3, 0, &[3], &[1]), ("b", "FloatStorage", "0", 12, 5, &[2], &[1])]);
        let v = unpickle(&p).unwrap();
        assert_eq!(v.storages.len(), 2, "storage '0' is shared, not duplicated");
        let w = tensor(&v, "a.weight");
        assert_eq!((w.dtype, w.shape.clone(), w.stride.clone(), w.offset), (DType::F32, vec![4, 3], vec![1, 4], 0));
        assert!(!w.is_contiguous());
        assert_eq!(w.end(), 12);
        let b = tensor(&v, "a.bias");
        assert_eq!((b.dtype, b.is_contiguous()), (DType::F16, true));
        let s = tensor(&v, "b");
        assert_eq!((s.storage, s.offset, s.end()), (w.storage, 5, 7));
    }

    #[test]
    fn tensors_must_lie_inside_their_storage() {
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 11, 0, &[4, 3], &[3, 1])]));
        assert!(e.contains("outside its storage"), "{e}");
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 12, 1, &[4, 3], &[3, 1])]));
        assert!(e.contains("outside its storage"), "{e}");
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 12, 0, &[4, 3], &[3, 1])])).is_ok());
        // Empty tensors touch nothing; stride-0 (expanded) views are fine.
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 0, 0, &[0, 3], &[3, 1])])).is_ok());
        assert!(unpickle(&torch_like_pickle(&[("x", "FloatStorage", "0", 3, 0, &[4, 3], &[0, 1])])).is_ok());
        // The same storage key with two descriptions.
        let e = err(&torch_like_pickle(&[("x", "FloatStorage", "0", 3, 0, &[3], &[1]), ("y", "HalfStorage", "0", 3, 0, &[3], &[1])]));
        assert!(e.contains("described twice"), "{e}");
    }

    #[test]
    fn refuses_code_execution_globals_by_name() {
        // pickle.dumps of os.system('touch /tmp/x') as Python writes it on Linux and by hand.
        for (p, name) in [
            (&b"cposix\nsystem\n(S'touch /tmp/pwned'\ntR."[..], "posix.system"),
            (b"\x80\x02cos\nsystem\nX\x05\x00\x00\x00touch\x85R.", "os.system"),
            (b"\x80\x02cbuiltins\neval\nX\x01\x00\x00\x001\x85R.", "builtins.eval"),
            (b"\x80\x02c__builtin__\nexec\n.", "__builtin__.exec"),
            (b"\x80\x02ctorch.storage\n_load_from_bytes\nC\x01x\x85R.", "torch.storage._load_from_bytes"),
            (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n.", "torch._tensor._rebuild_from_type_v2"),
            (b"\x80\x02ctorch\nUntypedStorage\n.", "torch.UntypedStorage"),
            (b"\x80\x02ctorch\nload\n.", "torch.load"),
            (b"\x80\x02cnumpy.core.multiarray\nscalar\n.", "numpy.core.multiarray.scalar"),
            (b"\x80\x04\x8c\x02os\x8c\x06system\x93X\x01\x00\x00\x00x\x85R.", "os.system"),
            (b"\x80\x02ccollections\nOrderedDict\n)R(X\x01\x00\x00\x00kcsubprocess\ncall\nu.", "subprocess.call"),
        ] {
            let e = err(p);
            assert!(e.starts_with(&format!("refusing global {name}: a checkpoint only needs tensors")), "{name}: {e}");
            assert!(e.contains("nothing in the file was executed"), "{e}");
        }
        assert!(err(b"\x80\x02ctorch.storage\n_load_from_bytes\n.").contains("nested pickle"));
    }

    #[test]
    fn refuses_instances_and_calls_of_accepted_names_out_of_place() {
        // A storage class called instead of named in a persistent id.
        let e = err(b"\x80\x02ctorch\nFloatStorage\n)R.");
        assert!(e.contains("refusing REDUCE") && e.contains("torch.FloatStorage"), "{e}");
        // REDUCE of something that is not a global at all.
        assert!(err(b"\x80\x02X\x01\x00\x00\x00f)R.").contains("calling a str"));
        for (p, what) in [
            (&b"\x80\x02ccollections\nOrderedDict\n)\x81."[..], "NEWOBJ"),
            (b"\x80\x02(ccollections\nOrderedDict\no.", "OBJ"),
            (b"(icollections\nOrderedDict\n.", "INST"),
            (b"\x80\x02\x82\x01.", "EXT1"),
            (b"\x80\x02Pfoo\n.", "PERSID"),
            (b"\x80\x05\x97.", "NEXT_BUFFER"),
            (b"\x80\x04\x8f.", "EMPTY_SET"),
            (b"I1\n.", "INT"),
        ] {
            let e = err(p);
            assert!(e.starts_with(&format!("refusing {what}")), "{what}: {e}");
        }
        // BUILD sets attributes: on a dict (an OrderedDict's `_metadata`) they are dropped,
        // on anything else refused.
        let e = err(b"\x80\x02N}b.");
        assert!(e.contains("refusing BUILD"), "{e}");
        assert!(unpickle(b"\x80\x02}}b.").is_ok());
        // A persistent id that is not a storage.
        assert!(err(b"\x80\x02X\x01\x00\x00\x00xQ.").contains("persistent id must be"));
        assert!(err(b"\x80\x02(X\x07\x00\x00\x00storageNX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.").contains("not a torch.<Type>Storage"));
    }

    #[test]
    fn memo_shares_objects_filled_after_memoizing() {
        // d = {}; r = {'a': d, 'b': d}; d['k'] = 5 written after r (protocol 2).
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00a}q\x01X\x01\x00\x00\x00bh\x01uh\x01X\x01\x00\x00\x00kK\x05s0.";
        let v = unpickle(p).unwrap();
        let a = v.dict_get(v.root, "a").unwrap();
        assert_eq!(v.dict_get(v.root, "b"), Some(a));
        assert_eq!(v.dict_get(a, "k").map(|k| v.node(k).clone()), Some(Node::Int(5)));
        // l = []; l.append(l): a cycle is representable and harmless (nothing walks it).
        let v = unpickle(b"\x80\x02]q\x00h\x00a.").unwrap();
        assert!(matches!(v.node(v.root), Node::List(l) if l == &vec![v.root]));
    }

    #[test]
    fn malformed_input_is_an_error() {
        for (p, needle) in [
            (&b""[..], "no STOP"),
            (b"\x80\x02", "no STOP"),
            (b"\x80\x02.", "stack underflow"),
            (b"\x80\x02N.N", "after STOP"),
            (b"\x80\x02X\xff\x00\x00\x00ab.", "truncated"),
            (b"\x80\x02h\x07.", "never stored"),
            (b"\x80\x02K\x01a.", "stack underflow"),
            (b"\x80\x02K\x01]a.", "appending to an int"),
            (b"\x80\x02]K\x01K\x02s.", "not a dict"),
            (b"\x80\x02}]K\x01s.", "unhashable"),
            (b"\x80\x02e.", "no MARK"),
            (b"\x80\x09N.", "protocol 9"),
            (b"\x80\x02X\x02\x00\x00\x00\xc3\x28.", "not UTF-8"),
            (b"\x80\x02\xff.", "unknown pickle opcode 0xff"),
            (b"\x80\x02ccollections\nOrderedDict\nK\x01\x85R.", "not a list of pairs"),
            (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n)R.", "0 arguments"),
        ] {
            let e = err(p);
            assert!(e.contains(needle), "{p:?}: {e} (wanted {needle:?})");
        }
    }

    #[test]
    fn long_ints() {
        assert_eq!(long_value(&[]), Node::Int(0));
        assert_eq!(long_value(&[0xff]), Node::Int(-1));
        assert_eq!(long_value(&[0x00, 0x01]), Node::Int(256));
        assert_eq!(long_value(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f]), Node::Int(i64::MAX));
        assert_eq!(long_value(&[0, 0, 0, 0, 0, 0, 0, 0x80, 0]), Node::BigInt);
        assert_eq!(long_value(&[0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), Node::Int(-2));
        assert_eq!(long_value(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), Node::BigInt);
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        // [[[[...]]]] a million levels deep, and a million nested tuples: no recursion anywhere,
        // dropping included.
        let n = 1_000_000;
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', n));
        p.extend(std::iter::repeat_n(b'a', n - 1));
        p.push(b'.');
        let v = unpickle(&p).unwrap();
        assert_eq!(v.type_name(v.root), "list");
        drop(v);
        let mut p = b"\x80\x02N".to_vec();
        p.extend(std::iter::repeat_n(0x85u8, n));
        p.push(b'.');
        assert!(unpickle(&p).is_ok());
        // Marks without end.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b'(', n));
        p.push(b'.');
        assert!(err(&p).contains("stack underflow"));
    }

    use crate::io::pickle::ops::fuzz::{mutate_and_decode, Rng};

    #[test]
    fn mutated_and_random_input_never_panics() {
        let mut r = Rng(0x5eed_1234_abcd_0001);
        let seeds = [
            torch_like_pickle(&[("a.weight", "FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]), ("a.bias", "HalfStorage", "1", 3, 0, &[3], &[1]), ("b", "FloatStorage", "0", 12, 5, &[2], &[1])]),
            torch_like_pickle(&[("n", "LongStorage", "7", 1, 0, &[], &[]), ("e", "BFloat16Storage", "x", 6, 2, &[2, 2], &[0, 1])]),
            b"\x80\x02}q\x00(X\x05\x00\x00\x00modelq\x01ccollections\nOrderedDict\n)Rq\x02X\x05\x00\x00\x00epochK\x03u.".to_vec(),
            b"\x80\x04\x95\x10\x00\x00\x00\x00\x00\x00\x00]\x94(K\x01K\x02eh\x00\x86\x94.".to_vec(),
        ];
        let opcodes: &[u8] = b"().012JKMNQRXabcdeh jlqrstu}]\x80\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x93\x94\x95\x96BCG";
        mutate_and_decode(&mut r, &seeds, opcodes, |p| {
            if let Ok(v) = unpickle(p) {
                // Every tensor that decodes lies inside its storage.
                for id in 0..v.nodes.len() {
                    if let Node::Tensor(t) = v.node(id) {
                        assert!(t.end() <= v.storages[t.storage].numel, "{t:?}");
                    }
                }
            }
        });
    }
