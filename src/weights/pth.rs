//! PyTorch checkpoints as `torch.save` writes them since torch 1.6: a zip archive with one
//! top folder holding `data.pkl` (the pickled object, tensors as references to storages),
//! `data/<key>` (each storage's raw bytes, uncompressed) and `byteorder`.
//!
//! [`Checkpoint::open`] reads the archive's directory and decodes `data.pkl` with the
//! restricted unpickler ([`super::unpickle`]); storages stay on disk until a tensor is written
//! ([`Checkpoint::write_tensor`], one chunk or one strided view in memory at a time).
//! [`Checkpoint::state_dict`] finds the dict of tensors: the top level, or under `model` /
//! `state_dict` (SAM-6D's PEM checkpoint stores `{'model': ..., 'optimizer': ...}`), with a
//! common `module.` prefix (from `DataParallel`) stripped.
use super::unpickle::{self, Id, Node, Pickled, StorageRef, TensorMeta, UnpickleError};
use super::TensorInfo;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use zip::{CompressionMethod, ZipArchive};

/// `data.pkl` is metadata only (a few hundred bytes per tensor); anything bigger is not a
/// checkpoint this tool should trust with memory.
const MAX_PICKLE_BYTES: u64 = 512 << 20;

/// Bytes copied per read when a tensor is one run of its storage.
const CHUNK: usize = 8 << 20;

/// Keys that hold the state dict in common training checkpoints, tried in this order when the
/// top level is not a state dict itself (gorilla's `load_checkpoint`, which SAM-6D's PEM uses,
/// tries `model`, then `state_dict`).
pub const NESTED_KEYS: [&str; 2] = ["model", "state_dict"];

/// The prefix `torch.nn.DataParallel` adds; stripped when every name has it.
pub const DATA_PARALLEL_PREFIX: &str = "module.";

#[derive(Debug, thiserror::Error)]
pub enum PthError {
    #[error("{0}: a legacy PyTorch checkpoint (torch < 1.6, not a zip archive), which this reader does not support; re-save it with torch ≥ 1.6: python -c \"import torch; torch.save(torch.load('IN.pth', weights_only=True), 'OUT.pth')\"")]
    Legacy(PathBuf),
    #[error("{0}: already a safetensors file, there is nothing to convert")]
    Safetensors(PathBuf),
    #[error("{0}: not a PyTorch checkpoint ({1})")]
    NotCheckpoint(PathBuf, String),
    #[error("{0}: the checkpoint was saved on a big-endian machine; re-save it on a little-endian one")]
    BigEndian(PathBuf),
    #[error("{path}: data.pkl: {error}")]
    Unpickle { path: PathBuf, error: UnpickleError },
    #[error("{path}: storage data/{key}: {msg}")]
    Storage { path: PathBuf, key: String, msg: String },
    #[error("{path}: {msg}")]
    NoStateDict { path: PathBuf, msg: String },
    #[error("{0}: {1}")]
    Zip(PathBuf, zip::result::ZipError),
    #[error("{0}: {1}")]
    Io(PathBuf, io::Error),
}

/// Where a storage's bytes are in the archive.
#[derive(Debug)]
struct Entry {
    index: usize,
    /// Offset of the data in the file (stored entries only).
    data_start: u64,
    size: u64,
    stored: bool,
}

/// An opened checkpoint: its pickle decoded, its storages located.
pub struct Checkpoint {
    path: PathBuf,
    file: File,
    pub pickled: Pickled,
    entries: HashMap<String, Entry>,
    /// Only for compressed entries (torch never writes them; a re-zipped file may have them):
    /// the archive, and the last storage decompressed.
    archive: RefCell<ZipArchive<File>>,
    inflated: RefCell<Option<(String, Vec<u8>)>>,
}

/// The dict of tensors inside a checkpoint, names as they will be written.
#[derive(Debug)]
pub struct StateDict {
    /// The top-level key it was found under; None when the checkpoint is the state dict.
    pub key: Option<String>,
    pub stripped_prefix: Option<String>,
    /// In the file's order.
    pub tensors: Vec<(String, TensorMeta)>,
}

impl StateDict {
    pub fn infos(&self) -> Vec<TensorInfo> {
        self.tensors.iter().map(|(n, t)| TensorInfo { name: n.clone(), dtype: t.dtype, shape: t.shape_i64() }).collect()
    }
}

impl Checkpoint {
    pub fn open(path: &Path) -> Result<Checkpoint, PthError> {
        let io_err = |e| PthError::Io(path.to_owned(), e);
        let mut file = File::open(path).map_err(io_err)?;
        let mut head = Vec::with_capacity(512);
        (&mut file).take(512).read_to_end(&mut head).map_err(io_err)?;
        if !head.starts_with(b"PK\x03\x04") {
            return Err(classify_not_zip(path, &head));
        }
        let mut archive = ZipArchive::new(file.try_clone().map_err(io_err)?).map_err(|e| PthError::Zip(path.to_owned(), e))?;
        let zip_err = |e| PthError::Zip(path.to_owned(), e);

        // torch writes every entry under one folder named after the file: `<name>/data.pkl`.
        let pickles: Vec<String> = archive.file_names().filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1).map(str::to_owned).collect();
        let pkl = match &pickles[..] {
            [one] => one.clone(),
            [] if archive.file_names().any(|n| n.ends_with("constants.pkl") || n.contains("/code/")) => {
                return Err(PthError::NotCheckpoint(path.to_owned(), "a TorchScript archive (torch.jit.save); save the module's state_dict() with torch.save instead".into()))
            }
            [] => return Err(PthError::NotCheckpoint(path.to_owned(), "a zip archive without <folder>/data.pkl".into())),
            _ => return Err(PthError::NotCheckpoint(path.to_owned(), format!("{} data.pkl entries in one archive", pickles.len()))),
        };
        let prefix = pkl.trim_end_matches("data.pkl").to_owned();

        if let Ok(f) = archive.by_name(&format!("{prefix}byteorder")) {
            let mut order = String::new();
            f.take(16).read_to_string(&mut order).map_err(io_err)?;
            match order.trim() {
                "little" => {}
                "big" => return Err(PthError::BigEndian(path.to_owned())),
                other => return Err(PthError::NotCheckpoint(path.to_owned(), format!("byteorder says {other:?}"))),
            }
        }

        let pickle = {
            let f = archive.by_name(&pkl).map_err(zip_err)?;
            if f.size() > MAX_PICKLE_BYTES {
                return Err(PthError::NotCheckpoint(path.to_owned(), format!("data.pkl is {} bytes, more than the {MAX_PICKLE_BYTES} a state dict's description needs", f.size())));
            }
            let mut buf = Vec::with_capacity(f.size() as usize);
            f.take(MAX_PICKLE_BYTES).read_to_end(&mut buf).map_err(io_err)?;
            buf
        };
        let pickled = unpickle::unpickle(&pickle).map_err(|error| PthError::Unpickle { path: path.to_owned(), error })?;

        let file_len = file.metadata().map_err(io_err)?.len();
        let data_prefix = format!("{prefix}data/");
        let mut entries = HashMap::new();
        for index in 0..archive.len() {
            // `by_index` (not `_raw`) refuses encrypted entries, whose raw bytes are ciphertext.
            let f = archive.by_index(index).map_err(zip_err)?;
            let Some(key) = f.name().strip_prefix(&data_prefix) else { continue };
            let stored = f.compression() == CompressionMethod::Stored;
            if stored && f.data_start().checked_add(f.size()).is_none_or(|end| end > file_len) {
                return Err(PthError::Storage { path: path.to_owned(), key: key.to_owned(), msg: "its data runs past the end of the file (truncated download?)".into() });
            }
            entries.insert(key.to_owned(), Entry { index, data_start: f.data_start(), size: f.size(), stored });
        }
        for s in &pickled.storages {
            let need = s.numel * s.dtype.size() as u64; // cannot overflow: checked when decoded
            match entries.get(&s.key) {
                None => return Err(PthError::Storage { path: path.to_owned(), key: s.key.clone(), msg: "the pickle refers to it but the archive lacks it".into() }),
                Some(e) if e.size < need => {
                    return Err(PthError::Storage { path: path.to_owned(), key: s.key.clone(), msg: format!("{} bytes, but {} {} elements need {need}", e.size, s.numel, s.dtype) })
                }
                Some(_) => {}
            }
        }
        Ok(Checkpoint { path: path.to_owned(), file, pickled, entries, archive: RefCell::new(archive), inflated: RefCell::new(None) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn no_state_dict(&self, msg: String) -> PthError {
        PthError::NoStateDict { path: self.path.clone(), msg }
    }

    /// The dict of tensors. `key`: the top-level key it is under (default: the top level
    /// itself, else [`NESTED_KEYS`]). `strip_prefix`: removed from every name that has it;
    /// default [`DATA_PARALLEL_PREFIX`] when every name has it, `Some("")` for none.
    pub fn state_dict(&self, key: Option<&str>, strip_prefix: Option<&str>) -> Result<StateDict, PthError> {
        let p = &self.pickled;
        let root = p.root;
        let (key, tensors) = match key {
            Some(k) => {
                let Some(id) = p.dict_get(root, k) else {
                    return Err(self.no_state_dict(format!("no top-level key '{k}'; {}", self.describe_top())));
                };
                let t = self.as_state_dict(id).map_err(|why| self.no_state_dict(format!("'{k}' is not a state dict: {why}")))?;
                (Some(k.to_owned()), t)
            }
            None => match self.as_state_dict(root) {
                Ok(t) => (None, t),
                Err(top_why) => {
                    let mut found = None;
                    let mut whys = vec![format!("the top level {top_why}")];
                    for k in NESTED_KEYS {
                        if let Some(id) = p.dict_get(root, k) {
                            match self.as_state_dict(id) {
                                Ok(t) => {
                                    found = Some((Some(k.to_owned()), t));
                                    break;
                                }
                                Err(why) => whys.push(format!("'{k}' {why}")),
                            }
                        }
                    }
                    found.ok_or_else(|| self.no_state_dict(format!("no state dict (a dict of name → tensor) found: {}; {}; pass --key NAME to pick the dict of tensors", whys.join("; "), self.describe_top())))?
                }
            },
        };

        let prefix = match strip_prefix {
            Some("") => None,
            Some(pre) => {
                if !tensors.iter().any(|(n, _)| n.starts_with(pre)) {
                    return Err(self.no_state_dict(format!("no tensor name starts with '{pre}' (--strip-prefix); the first is '{}'", tensors[0].0)));
                }
                Some(pre.to_owned())
            }
            None => tensors.iter().all(|(n, _)| n.starts_with(DATA_PARALLEL_PREFIX)).then(|| DATA_PARALLEL_PREFIX.to_owned()),
        };
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(tensors.len());
        for (name, t) in tensors {
            let name = match &prefix {
                Some(pre) => name.strip_prefix(pre.as_str()).map(str::to_owned).unwrap_or(name),
                None => name,
            };
            if name.is_empty() {
                return Err(self.no_state_dict("a tensor name is empty after stripping the prefix".into()));
            }
            if !seen.insert(name.clone()) {
                return Err(self.no_state_dict(format!("the tensor name '{name}' appears twice{}", if prefix.is_some() { " after stripping the prefix" } else { "" })));
            }
            out.push((name, t));
        }
        Ok(StateDict { key, stripped_prefix: prefix, tensors: out })
    }

    /// A dict with `str` keys and only tensors as values, or why not ("is a list", ...).
    fn as_state_dict(&self, id: Id) -> Result<Vec<(String, TensorMeta)>, String> {
        let p = &self.pickled;
        let Node::Dict(items) = p.node(id) else {
            return Err(format!("is of type {}, not a dict", p.type_name(id)));
        };
        if items.is_empty() {
            return Err("is an empty dict".into());
        }
        let mut out = Vec::with_capacity(items.len());
        for &(k, v) in items {
            let Node::Str(name) = p.node(k) else {
                return Err(format!("has a key of type {}", p.type_name(k)));
            };
            let Node::Tensor(t) = p.node(v) else {
                return Err(format!("holds '{name}' of type {}, not a tensor", p.type_name(v)));
            };
            out.push((name.clone(), t.clone()));
        }
        Ok(out)
    }

    /// "the top-level keys are epoch (int), model (dict), ..." for messages.
    pub fn describe_top(&self) -> String {
        let p = &self.pickled;
        match p.node(p.root) {
            Node::Dict(items) => {
                let keys: Vec<String> = items
                    .iter()
                    .take(12)
                    .map(|&(k, v)| match p.node(k) {
                        Node::Str(s) => format!("{s} ({})", p.type_name(v)),
                        _ => format!("<{}> ({})", p.type_name(k), p.type_name(v)),
                    })
                    .collect();
                let more = if items.len() > 12 { format!(" and {} more", items.len() - 12) } else { String::new() };
                format!("the top-level keys are {}{more}", keys.join(", "))
            }
            _ => format!("the file holds a value of type {}", p.type_name(p.root)),
        }
    }

    fn storage_err(&self, s: &StorageRef, msg: String) -> PthError {
        PthError::Storage { path: self.path.clone(), key: s.key.clone(), msg }
    }

    /// Fills `buf` from byte `start` of a storage (the range was checked to lie inside it).
    fn read_storage(&self, s: &StorageRef, start: u64, buf: &mut [u8]) -> Result<(), PthError> {
        let e = &self.entries[&s.key];
        if e.stored {
            return self.file.read_exact_at(buf, e.data_start + start).map_err(|err| self.storage_err(s, err.to_string()));
        }
        let mut cache = self.inflated.borrow_mut();
        if cache.as_ref().is_none_or(|(k, _)| k != &s.key) {
            *cache = None;
            let mut archive = self.archive.borrow_mut();
            let f = archive.by_index(e.index).map_err(|err| self.storage_err(s, err.to_string()))?;
            let mut data = Vec::with_capacity(e.size as usize);
            f.take(e.size).read_to_end(&mut data).map_err(|err| self.storage_err(s, err.to_string()))?;
            *cache = Some((s.key.clone(), data));
        }
        let data = &cache.as_ref().expect("filled above").1;
        let end = start as usize + buf.len();
        if end > data.len() {
            return Err(self.storage_err(s, format!("decompressed to {} bytes, {end} needed", data.len())));
        }
        buf.copy_from_slice(&data[start as usize..end]);
        Ok(())
    }

    /// Writes a tensor's elements row-major (what safetensors stores) to `out`, calling
    /// `tick(bytes)` after each piece; an error from `tick` (e.g. Ctrl-C) stops the copy.
    pub fn write_tensor(&self, t: &TensorMeta, out: &mut impl Write, tick: &mut dyn FnMut(u64) -> io::Result<()>) -> Result<(), PthError> {
        let s = &self.pickled.storages[t.storage];
        let es = t.dtype.size() as u64;
        let io_err = |e: io::Error| PthError::Io(self.path.clone(), e);
        if t.numel() == 0 {
            return Ok(());
        }
        if t.is_contiguous() {
            // One run of the storage: copy it through a bounded buffer.
            let total = t.numel() * es;
            let mut buf = vec![0u8; total.min(CHUNK as u64) as usize];
            let mut done = 0u64;
            while done < total {
                let n = (total - done).min(CHUNK as u64) as usize;
                self.read_storage(s, t.offset * es + done, &mut buf[..n])?;
                out.write_all(&buf[..n]).map_err(io_err)?;
                tick(n as u64).map_err(io_err)?;
                done += n as u64;
            }
            return Ok(());
        }
        // A strided view (transposed, expanded, sliced): read the span it covers, gather.
        let span = ((t.end() - t.offset) * es) as usize;
        let mut src = vec![0u8; span];
        self.read_storage(s, t.offset * es, &mut src)?;
        gather(&src, &t.shape, &t.stride, es as usize, &mut |piece: &[u8]| {
            out.write_all(piece)?;
            tick(piece.len() as u64)
        })
        .map_err(io_err)
    }
}

/// Emits the elements of the strided view `shape`/`stride` of `src` (element size `es`,
/// offset 0) in row-major order, in pieces of at most about [`CHUNK`] bytes.
fn gather(src: &[u8], shape: &[u64], stride: &[u64], es: usize, emit: &mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()> {
    let nd = shape.len();
    debug_assert!(nd > 0, "a 0-d tensor is contiguous");
    let (rows, last) = (&shape[..nd - 1], shape[nd - 1] as usize);
    let last_stride = stride[nd - 1] as usize;
    let mut idx = vec![0u64; nd - 1];
    let mut buf = Vec::with_capacity(CHUNK.min(shape.iter().product::<u64>() as usize * es));
    loop {
        let base = idx.iter().zip(stride).map(|(&i, &s)| (i * s) as usize).sum::<usize>();
        if last_stride == 1 {
            buf.extend_from_slice(&src[base * es..(base + last) * es]);
        } else {
            for j in 0..last {
                let e = base + j * last_stride;
                buf.extend_from_slice(&src[e * es..(e + 1) * es]);
            }
        }
        if buf.len() >= CHUNK {
            emit(&buf)?;
            buf.clear();
        }
        // Next row: the odometer over all but the last dimension.
        let mut d = rows.len();
        loop {
            if d == 0 {
                if !buf.is_empty() {
                    emit(&buf)?;
                }
                return Ok(());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < rows[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Says what a file that is not a zip archive is, for the error.
fn classify_not_zip(path: &Path, head: &[u8]) -> PthError {
    // Legacy torch.save: protocol-2 pickle of the magic number 0x1950a86a20f9469cfc6c.
    const LEGACY_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";
    // Before torch 0.1.10: a tar archive.
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    if head.starts_with(LEGACY_MAGIC) || tar {
        return PthError::Legacy(path.to_owned());
    }
    if head.len() >= 9 && head[8] == b'{' {
        return PthError::Safetensors(path.to_owned());
    }
    let what = if head.is_empty() { "the file is empty".to_owned() } else if head[0] == 0x80 { "a bare pickle, not the zip archive torch.save writes".to_owned() } else { "no zip archive".to_owned() };
    PthError::NotCheckpoint(path.to_owned(), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gathered(src: &[u8], shape: &[u64], stride: &[u64], es: usize) -> Vec<u8> {
        let mut out = Vec::new();
        gather(src, shape, stride, es, &mut |p: &[u8]| {
            out.extend_from_slice(p);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn gather_follows_strides() {
        // 3×4 row-major storage 0..12, viewed transposed (4×3, stride (1, 4)).
        let src: Vec<u8> = (0..12).collect();
        assert_eq!(gathered(&src, &[4, 3], &[1, 4], 1), vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]);
        // Expanded (stride 0) and a column slice with 2-byte elements.
        assert_eq!(gathered(&src, &[2, 3], &[0, 1], 1), vec![0, 1, 2, 0, 1, 2]);
        let src16: Vec<u8> = (0..24).collect();
        assert_eq!(gathered(&src16, &[3, 2], &[4, 1], 2), vec![0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19]);
        // 3-d permute.
        let src: Vec<u8> = (0..24).collect();
        let want: Vec<u8> = (0..4).flat_map(|k| (0..2).flat_map(move |i| (0..3).map(move |j| (i * 12 + j * 4 + k) as u8))).collect();
        assert_eq!(gathered(&src, &[4, 2, 3], &[1, 12, 4], 1), want);
    }

    #[test]
    fn contiguity() {
        let t = |shape: &[u64], stride: &[u64]| TensorMeta { storage: 0, dtype: super::super::DType::F32, offset: 0, shape: shape.to_vec(), stride: stride.to_vec() };
        assert!(t(&[], &[]).is_contiguous());
        assert!(t(&[2, 3], &[3, 1]).is_contiguous());
        assert!(t(&[2, 1, 3], &[3, 99, 1]).is_contiguous());
        assert!(!t(&[3, 2], &[1, 3]).is_contiguous());
        assert!(!t(&[2, 3], &[0, 1]).is_contiguous());
        assert!(!t(&[2, 3], &[4, 1]).is_contiguous());
    }

    #[test]
    fn not_zip_files_are_named() {
        let p = Path::new("x.pth");
        let mut legacy = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.".to_vec();
        legacy.resize(600, 0);
        assert!(classify_not_zip(p, &legacy).to_string().contains("legacy PyTorch checkpoint (torch < 1.6"));
        let mut tar = vec![0u8; 600];
        tar[257..262].copy_from_slice(b"ustar");
        assert!(matches!(classify_not_zip(p, &tar), PthError::Legacy(_)));
        assert!(matches!(classify_not_zip(p, b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\""), PthError::Safetensors(_)));
        assert!(classify_not_zip(p, b"").to_string().contains("empty"));
        assert!(classify_not_zip(p, b"\x80\x04K\x01.").to_string().contains("bare pickle"));
    }
}
