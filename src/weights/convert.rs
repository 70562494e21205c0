//! Writes a checkpoint's state dict as safetensors: an 8-byte little-endian header length, a
//! JSON header (`name → {dtype, shape, data_offsets}` and `__metadata__`, padded with spaces to a
//! multiple of 8), then the tensors' bytes, row-major and little-endian.
//!
//! Tensors are streamed from the checkpoint one chunk (or one strided view) at a time, so a
//! 2.5 GB ViT-H needs tens of MB of memory, not copies of the file. Data is ordered by element
//! size, largest first (then by name, as the `safetensors` crate does), so every tensor starts
//! at an offset aligned to its element size. The file is written under a temporary name in the
//! destination's folder and renamed into place only when complete, so an error or Ctrl-C
//! never leaves a half-written file under the requested name.
use super::pth::{Checkpoint, PthError, StateDict};
use super::DType;
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0} exists; pass --force to overwrite it")]
    Exists(PathBuf),
    #[error("the output {0} is the input file")]
    SameFile(PathBuf),
    #[error(transparent)]
    Read(#[from] PthError),
    #[error("writing {0}: {1}")]
    Write(PathBuf, io::Error),
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub tensors: usize,
    pub elements: u64,
    /// Tensor data bytes (the file adds the header).
    pub bytes: u64,
    pub file_bytes: u64,
    pub dtypes: BTreeMap<DType, usize>,
}

/// Bytes of tensor data the state dict will produce (for a progress bar).
pub fn data_bytes(sd: &StateDict) -> u64 {
    sd.tensors.iter().map(|(_, t)| t.numel() * t.dtype.size() as u64).sum()
}

/// Removes the temporary file unless the conversion completed.
struct Partial {
    path: PathBuf,
    done: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Converts `sd` (from `ckpt`) into the safetensors file `out`. Refuses to replace an existing
/// file unless `force`. `metadata` goes into the header's `__metadata__`. `tick(bytes)` is
/// called as data is written; an error from it aborts (the partial file is removed).
pub fn write_safetensors(
    ckpt: &Checkpoint,
    sd: &StateDict,
    out: &Path,
    force: bool,
    metadata: &BTreeMap<String, String>,
    tick: &mut dyn FnMut(u64) -> io::Result<()>,
) -> Result<Summary, ConvertError> {
    if out.exists() {
        if fs::canonicalize(out).ok() == fs::canonicalize(ckpt.path()).ok() {
            return Err(ConvertError::SameFile(out.to_owned()));
        }
        if !force {
            return Err(ConvertError::Exists(out.to_owned()));
        }
    }
    let werr = |e| ConvertError::Write(out.to_owned(), e);

    let mut order: Vec<usize> = (0..sd.tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (na, ta) = &sd.tensors[a];
        let (nb, tb) = &sd.tensors[b];
        tb.dtype.size().cmp(&ta.dtype.size()).then_with(|| na.cmp(nb))
    });
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).expect("strings serialise"));
    }
    let mut summary = Summary { tensors: sd.tensors.len(), elements: 0, bytes: 0, file_bytes: 0, dtypes: BTreeMap::new() };
    for &i in &order {
        let (name, t) = &sd.tensors[i];
        let n = t.numel() * t.dtype.size() as u64;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": t.dtype.safetensors_name(), "shape": t.shape, "data_offsets": [summary.bytes, summary.bytes + n] }),
        );
        summary.bytes += n;
        summary.elements += t.numel();
        *summary.dtypes.entry(t.dtype).or_default() += 1;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header)).expect("JSON values serialise");
    header.resize(header.len().div_ceil(8) * 8, b' ');

    let file_name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "out.safetensors".into());
    let tmp = out.with_file_name(format!(".{file_name}.partial-{}", std::process::id()));
    let file = OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(werr)?;
    let mut partial = Partial { path: tmp, done: false };
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(header.len() as u64).to_le_bytes()).map_err(werr)?;
    w.write_all(&header).map_err(werr)?;
    for &i in &order {
        ckpt.write_tensor(&sd.tensors[i].1, &mut w, tick)?;
    }
    let file: File = w.into_inner().map_err(|e| werr(e.into_error()))?;
    // On disk before it gets the final name: a crash must not leave a complete-looking file
    // with missing data.
    file.sync_all().map_err(werr)?;
    summary.file_bytes = file.metadata().map_err(werr)?.len();
    drop(file);
    if !force && out.exists() {
        return Err(ConvertError::Exists(out.to_owned()));
    }
    fs::rename(&partial.path, out).map_err(werr)?;
    partial.done = true;
    Ok(summary)
}
