//! Compares a weights file's tensors (names, shapes, dtypes) with what one of our networks
//! loads: missing, unexpected and mis-shaped tensors. Only the file's header (safetensors) or
//! pickle (`.pth`) is read, never the tensor data, so checking a 2.5 GB file is instant once
//! the network's expectations are built.
use super::pth::{Checkpoint, PthError};
use super::registry::{Network, Part};
use super::{DType, TensorInfo};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Largest safetensors header accepted (the format's own readers use 100 MB).
const MAX_HEADER: u64 = 100 << 20;

#[derive(Debug, thiserror::Error)]
pub enum InventoryError {
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
    #[error("{0}: not a safetensors file: {1}")]
    BadSafetensors(PathBuf, String),
    #[error(transparent)]
    Pth(#[from] PthError),
}

/// The tensors of a weights file: a safetensors header, or a PyTorch checkpoint's state dict
/// (found as `sam6d weights convert` finds it).
pub fn read_inventory(path: &Path) -> Result<Vec<TensorInfo>, InventoryError> {
    let io_err = |e| InventoryError::Io(path.to_owned(), e);
    let mut f = File::open(path).map_err(io_err)?;
    let mut magic = [0u8; 4];
    let n = f.read(&mut magic).map_err(io_err)?;
    if n == 4 && &magic == b"PK\x03\x04" {
        let ckpt = Checkpoint::open(path)?;
        return Ok(ckpt.state_dict(None, None)?.infos());
    }
    drop(f);
    read_safetensors_header(path)
}

/// Names, dtypes and shapes from a safetensors header, with the offsets checked against the
/// file's size.
pub fn read_safetensors_header(path: &Path) -> Result<Vec<TensorInfo>, InventoryError> {
    let io_err = |e| InventoryError::Io(path.to_owned(), e);
    let bad = |m: String| InventoryError::BadSafetensors(path.to_owned(), m);
    let mut f = File::open(path).map_err(io_err)?;
    let len = f.metadata().map_err(io_err)?.len();
    let mut n = [0u8; 8];
    f.read_exact(&mut n).map_err(|_| bad(format!("{len} bytes, too short")))?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER || n > len - 8 {
        return Err(bad(format!("header length {n} does not fit a {len}-byte file")));
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header).map_err(io_err)?;
    let json: serde_json::Value = serde_json::from_slice(&header).map_err(|e| bad(format!("header is not JSON: {e}")))?;
    let serde_json::Value::Object(map) = json else {
        return Err(bad("header is not a JSON object".into()));
    };
    let data_len = len - 8 - n;
    let mut out = Vec::with_capacity(map.len());
    for (name, v) in map {
        if name == "__metadata__" {
            continue;
        }
        let dtype = v["dtype"].as_str().ok_or_else(|| bad(format!("{name}: no dtype")))?;
        let dtype = DType::from_safetensors_name(dtype).ok_or_else(|| bad(format!("{name}: dtype {dtype} is not supported")))?;
        let shape: Option<Vec<i64>> = v["shape"].as_array().and_then(|a| a.iter().map(|d| d.as_u64().and_then(|d| i64::try_from(d).ok())).collect());
        let shape = shape.ok_or_else(|| bad(format!("{name}: shape is not a list of sizes")))?;
        let offsets: Option<Vec<u64>> = v["data_offsets"].as_array().and_then(|a| a.iter().map(|d| d.as_u64()).collect());
        let info = TensorInfo { name, dtype, shape };
        let need = info.shape.iter().try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d as u64));
        match (offsets.as_deref(), need) {
            (Some(&[b, e]), Some(need)) if b <= e && e - b == need && e <= data_len => {}
            _ => return Err(bad(format!("{}: data_offsets {:?} do not fit its shape or the file", info.name, v["data_offsets"]))),
        }
        out.push(info);
    }
    Ok(out)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Mismatch {
    pub name: String,
    pub file: String,
    pub expected: String,
}

/// The outcome for one file.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub file: PathBuf,
    /// The network compared against (`--as`, or detected); None when unknown.
    pub network: Option<String>,
    pub detected: bool,
    /// The network's files that this one covers (`checkpoint`, or `encoder`/`decoder`).
    pub parts: Vec<String>,
    pub tensors: usize,
    pub expected: usize,
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    pub shape_mismatches: Vec<Mismatch>,
    /// Integer/bool where floats are expected, or the reverse: not loadable.
    pub dtype_mismatches: Vec<Mismatch>,
    /// Another float type than the network's (e.g. f16 for f32): cast when loaded, not an error.
    pub dtype_notes: Vec<Mismatch>,
    /// Reading the file failed, or its network is unknown.
    pub error: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.missing.is_empty() && self.unexpected.is_empty() && self.shape_mismatches.is_empty() && self.dtype_mismatches.is_empty()
    }
}

/// Networks' expected tensors, built once per network per process.
#[derive(Default)]
pub struct Expectations(HashMap<Network, Vec<TensorInfo>>);

impl Expectations {
    pub fn get(&mut self, net: Network) -> &[TensorInfo] {
        self.0.entry(net).or_insert_with(|| net.expected())
    }
}

/// Checks one file against `network` (None: detect it from the file).
pub fn check_file(path: &Path, network: Option<Network>, expectations: &mut Expectations) -> Report {
    let mut report = Report { file: path.to_owned(), ..Default::default() };
    let tensors = match read_inventory(path) {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    report.tensors = tensors.len();
    let (net, detected) = match network {
        Some(n) => (n, false),
        None => match Network::detect(&tensors) {
            Some(n) => (n, true),
            None => {
                let names: Vec<&str> = Network::ALL.iter().map(|n| n.name()).collect();
                report.error = Some(format!("cannot tell which network these {} tensors are for; pass --as ({})", tensors.len(), names.join(", ")));
                return report;
            }
        },
    };
    report.network = Some(net.name().to_owned());
    report.detected = detected;
    compare(&mut report, net, &tensors, expectations.get(net));
    report
}

fn under(name: &str, part: &Part) -> bool {
    part.prefixes.iter().any(|p| name.starts_with(p))
}

/// Fills the report's lists: `file` against the parts of `net` it covers.
pub fn compare(report: &mut Report, net: Network, file: &[TensorInfo], expected_all: &[TensorInfo]) {
    // A network stored in several files: compare with the parts this file has tensors of (all
    // parts when it has none, so that everything is reported missing).
    let mut parts: Vec<&Part> = net.parts().iter().filter(|p| file.iter().any(|t| under(&t.name, p))).collect();
    if parts.is_empty() {
        parts = net.parts().iter().collect();
    }
    report.parts = parts.iter().map(|p| p.name.to_owned()).collect();
    let expected: BTreeMap<&str, &TensorInfo> = expected_all.iter().filter(|t| parts.iter().any(|p| under(&t.name, p))).map(|t| (t.name.as_str(), t)).collect();
    report.expected = expected.len();
    let got: BTreeMap<&str, &TensorInfo> = file.iter().map(|t| (t.name.as_str(), t)).collect();
    for (name, e) in &expected {
        match got.get(name) {
            None if net.tolerated_missing(name) => {}
            None => report.missing.push(format!("{name} {} {}", super::fmt_shape(&e.shape), e.dtype)),
            Some(g) => {
                if g.shape != e.shape {
                    report.shape_mismatches.push(Mismatch { name: name.to_string(), file: super::fmt_shape(&g.shape), expected: super::fmt_shape(&e.shape) });
                }
                if g.dtype != e.dtype {
                    let m = Mismatch { name: name.to_string(), file: g.dtype.to_string(), expected: e.dtype.to_string() };
                    if g.dtype.is_float() && e.dtype.is_float() {
                        report.dtype_notes.push(m);
                    } else {
                        report.dtype_mismatches.push(m);
                    }
                }
            }
        }
    }
    for (name, g) in &got {
        if !expected.contains_key(name) {
            report.unexpected.push(format!("{name} {} {}", super::fmt_shape(&g.shape), g.dtype));
        }
    }
}

/// The files `sam6d weights check DIR` looks at: `*.safetensors`, `*.pth`, `*.pt`, sorted.
pub fn weight_files(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && matches!(p.extension().and_then(|e| e.to_str()), Some("safetensors" | "pth" | "pt")))
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, dtype: DType, shape: &[i64]) -> TensorInfo {
        TensorInfo { name: name.into(), dtype, shape: shape.to_vec() }
    }

    #[test]
    fn compare_reports_each_kind_of_difference() {
        let expected = vec![
            t("image_encoder.a", DType::F32, &[2, 3]),
            t("image_encoder.b", DType::F32, &[4]),
            t("mask_decoder.c", DType::F32, &[1]),
            t("prompt_encoder.d", DType::F32, &[5]),
            t("prompt_encoder.e", DType::F32, &[5]),
        ];
        let file = vec![
            t("image_encoder.a", DType::F32, &[3, 2]),
            t("image_encoder.b", DType::F16, &[4]),
            t("mask_decoder.c", DType::I64, &[1]),
            t("prompt_encoder.dd", DType::F32, &[5]),
            t("prompt_encoder.e", DType::F32, &[5]),
        ];
        let mut r = Report::default();
        compare(&mut r, Network::SamVitB, &file, &expected);
        assert_eq!(r.missing, vec!["prompt_encoder.d [5] f32"]);
        assert_eq!(r.unexpected, vec!["prompt_encoder.dd [5] f32"]);
        assert_eq!(r.shape_mismatches, vec![Mismatch { name: "image_encoder.a".into(), file: "[3, 2]".into(), expected: "[2, 3]".into() }]);
        assert_eq!(r.dtype_mismatches.len(), 1);
        assert_eq!(r.dtype_notes.len(), 1);
        assert!(!r.ok());
        let mut r = Report::default();
        compare(&mut r, Network::SamVitB, &expected, &expected);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.expected, 5);
    }

    #[test]
    fn split_networks_compare_the_parts_a_file_has() {
        let expected = vec![t("image_encoder.a", DType::F32, &[1]), t("mask_decoder.c", DType::F32, &[1]), t("prompt_encoder.d", DType::F32, &[1])];
        let mut r = Report::default();
        compare(&mut r, Network::SamTiny, &expected[..1], &expected);
        assert!(r.ok(), "{r:?}");
        assert_eq!(r.parts, vec!["encoder"]);
        let mut r = Report::default();
        compare(&mut r, Network::SamTiny, &expected[1..2], &expected);
        assert_eq!(r.missing, vec!["prompt_encoder.d [1] f32"]);
        // The one-file networks want everything.
        let mut r = Report::default();
        compare(&mut r, Network::SamVitH, &expected[..1], &expected);
        assert_eq!(r.missing.len(), 2);
    }
}
