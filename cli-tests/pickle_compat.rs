//! Pickles written by Python's own `pickle.dumps`, protocols 0 to 5 (made at test time by
//! clients/gen_pickles.py), decode to the values Python sees, and the ones the decoder must
//! refuse (sets, class instances, an os.system payload, recursive or too deep structures,
//! integers beyond 64 bits) are refused with a message that says why.
use sam6d::protocol::pickle::{decode, Limits, Value};
use serde_json::Value as J;
use std::borrow::Cow;
use std::path::Path;
use std::process::Command;

/// Runs the generator into `dir`. No Python is a failure, not a skip: CI has it.
fn generate(dir: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cli-tests/clients/gen_pickles.py");
    let out = match Command::new("python3").arg(&script).arg(dir).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("python3 is not on PATH: this test needs Python 3 to write its pickles (run `source scripts/env.sh` or install python3)")
        }
        Err(e) => panic!("cannot run python3 {}: {e}", script.display()),
    };
    assert!(out.status.success(), "{} failed:\n{}", script.display(), String::from_utf8_lossy(&out.stderr));
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

/// Compares a decoded value with the generator's tagged JSON; the error says where they differ.
fn same(ours: &Value, want: &J, dir: &Path, at: &str) -> Result<(), String> {
    let differ = || Err(format!("at {at}: decoded {} {}, Python has {}", ours.type_name(), short(ours), short_json(want)));
    match (ours, want) {
        (Value::None, J::Null) => Ok(()),
        (Value::Bool(a), J::Bool(b)) if a == b => Ok(()),
        (Value::Int(a), J::Number(n)) if n.as_i64() == Some(*a) => Ok(()),
        (Value::Str(a), J::String(b)) if a == b => Ok(()),
        (_, J::Object(o)) if o.len() == 1 => {
            let (tag, inner) = o.iter().next().expect("one entry");
            match (tag.as_str(), ours, inner) {
                ("float", Value::Float(a), J::String(repr)) => {
                    let b: f64 = repr.parse().map_err(|_| format!("bad float repr {repr}"))?;
                    if a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) {
                        Ok(())
                    } else {
                        differ()
                    }
                }
                ("bytes_hex" | "bytes_file", Value::Bytes(a), J::String(s)) => {
                    let b = if tag == "bytes_hex" { hex(s) } else { std::fs::read(dir.join(s)).map_err(|e| format!("{s}: {e}"))? };
                    if a.as_ref() == &b[..] {
                        Ok(())
                    } else {
                        differ()
                    }
                }
                ("list", Value::List(a), J::Array(b)) | ("tuple", Value::Tuple(a), J::Array(b)) => {
                    if a.len() != b.len() {
                        return differ();
                    }
                    a.iter().zip(b).enumerate().try_for_each(|(i, (x, y))| same(x, y, dir, &format!("{at}[{i}]")))
                }
                ("dict", Value::Dict(a), J::Array(b)) => {
                    if a.len() != b.len() {
                        return differ();
                    }
                    for (i, ((k, v), pair)) in a.iter().zip(b).enumerate() {
                        let pair = pair.as_array().filter(|p| p.len() == 2).ok_or("bad dict pair in the JSON")?;
                        same(k, &pair[0], dir, &format!("{at}.key{i}"))?;
                        same(v, &pair[1], dir, &format!("{at}[{}]", short(k)))?;
                    }
                    Ok(())
                }
                _ => differ(),
            }
        }
        _ => differ(),
    }
}

/// At most 80 characters of a long text.
fn cut(s: String) -> String {
    if s.chars().count() > 80 {
        format!("{}…", s.chars().take(80).collect::<String>())
    } else {
        s
    }
}

fn short(v: &Value) -> String {
    cut(format!("{v:?}"))
}

fn short_json(v: &J) -> String {
    cut(v.to_string())
}

#[test]
fn python_pickles_of_protocols_0_to_5_decode_as_python_sees_them() {
    let tmp = tempfile::TempDir::new().unwrap();
    let dir = tmp.path();
    generate(dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".pkl").map(str::to_owned))
        .collect();
    names.sort();
    let (mut decoded, mut refused, mut failures) = (0, 0, Vec::new());
    for name in &names {
        let pkl = std::fs::read(dir.join(format!("{name}.pkl"))).unwrap();
        let want: J = serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
        let got = decode(&pkl, &Limits::default());
        match (&got, want.get("error")) {
            (Ok(v), None) => match same(v, &want, dir, "value") {
                Ok(()) => decoded += 1,
                Err(e) => failures.push(format!("{name}: {e}")),
            },
            (Err(e), Some(needle)) => {
                let (msg, needle) = (e.to_string(), needle.as_str().expect("error needle is a string"));
                if msg.contains(needle) && !msg.contains("not implemented") {
                    refused += 1;
                } else {
                    failures.push(format!("{name}: error {msg:?} should contain {needle:?}"));
                }
            }
            (Ok(v), Some(_)) => failures.push(format!("{name}: must be refused, decoded {}", short(v))),
            (Err(e), None) => failures.push(format!("{name}: {e}")),
        }
    }
    assert!(failures.is_empty(), "{} of {} pickles wrong:\n{}", failures.len(), names.len(), failures.join("\n"));
    // Every case at every protocol: 25 decodable, 9 refused, × 6 protocols.
    assert!(decoded >= 150 && refused >= 54, "only {decoded} decoded and {refused} refused: did the generator change?");
}

#[test]
fn python_request_bytes_are_zero_copy_from_protocol_3() {
    let tmp = tempfile::TempDir::new().unwrap();
    generate(tmp.path());
    for proto in 0..=5 {
        let pkl = std::fs::read(tmp.path().join(format!("request_p{proto}.pkl"))).unwrap();
        let v = decode(&pkl, &Limits::default()).unwrap_or_else(|e| panic!("protocol {proto}: {e}"));
        let rgb = v.get("rgb_bytes").unwrap_or_else(|| panic!("protocol {proto}: no rgb_bytes"));
        assert_eq!(rgb.as_bytes().map(<[u8]>::len), Some(1_000_000), "protocol {proto}");
        let borrowed = matches!(rgb, Value::Bytes(Cow::Borrowed(_)));
        // Protocols 0-2 have no bytes opcode: Python writes latin-1 text, which must be converted.
        assert_eq!(borrowed, proto >= 3, "protocol {proto}: rgb_bytes borrowed = {borrowed}");
        assert_eq!(v.get("action").and_then(Value::as_str), Some("sam6d_inference"));
        assert_eq!(v.get("id").and_then(Value::as_i64), Some(17));
        assert_eq!(v.get("det_score_thresh").and_then(Value::as_f64), Some(0.5));
        assert_eq!(v.get("visualize").and_then(Value::as_bool), Some(true));
    }
}
