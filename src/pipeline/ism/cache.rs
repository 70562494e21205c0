//! The on-disk cache of per-object template data: the ISM's DINOv2 descriptors and the PEM's
//! template points and features.
//!
//! Rendering 42 templates takes a second, but describing them with DINOv2 ViT-L takes about a
//! minute on a CPU (the PEM's ViT ten seconds): a server should pay that once per object, not
//! at every start. Entries are
//! safetensors files named by a hash of everything the descriptors depend on (the mesh's
//! geometry and colours, the template settings, the descriptor network and its weights file),
//! so a changed model or weights file can never be answered from a stale entry.
use std::path::{Path, PathBuf};

/// Bump when template rendering or descriptor computation changes what they produce.
pub const VERSION: u32 = 1;

/// Where the cache lives: `--cache-dir`, else `$SAM6D_CACHE`, else `$XDG_CACHE_HOME/sam6d`
/// (default `~/.cache/sam6d`); `None` when no home is known (then nothing is cached).
pub fn cache_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = explicit {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("SAM6D_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|d| d.join("sam6d"))
}

/// FNV-1a, 64 bit: stable across Rust versions and platforms (std's hasher is not promised to
/// be), and plenty for naming cache entries.
#[derive(Clone, Copy, Debug)]
pub struct Key(u64);

impl Default for Key {
    fn default() -> Self {
        Key(0xcbf2_9ce4_8422_2325)
    }
}

impl Key {
    /// An entry's key: hashes [`VERSION`] first, so that a version bump retires every entry.
    pub fn versioned() -> Key {
        Key::default().bytes(&VERSION.to_le_bytes())
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Key {
        for &b in bytes {
            self.0 ^= b as u64;
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    pub fn str(self, s: &str) -> Key {
        // Length first, so that ("ab", "c") and ("a", "bc") differ.
        self.bytes(&(s.len() as u64).to_le_bytes()).bytes(s.as_bytes())
    }

    pub fn f32s(self, values: &[f32]) -> Key {
        values.iter().fold(self, |k, v| k.bytes(&v.to_le_bytes()))
    }

    pub fn u32s(self, values: &[u32]) -> Key {
        values.iter().fold(self, |k, v| k.bytes(&v.to_le_bytes()))
    }

    /// A mesh's geometry, faces and colours.
    pub fn mesh(self, mesh: &crate::geometry::Mesh) -> Key {
        let coords: Vec<f32> = mesh.vertices.iter().flat_map(|v| [v.x, v.y, v.z]).collect();
        let faces: Vec<u32> = mesh.faces.iter().flatten().copied().collect();
        let colors: Vec<u8> = mesh.colors.iter().flatten().flatten().copied().collect();
        self.f32s(&coords).u32s(&faces).bytes(&colors)
    }

    /// A file's identity without reading gigabytes: its size and modification time.
    pub fn file(self, path: &Path) -> Key {
        let meta = std::fs::metadata(path).ok();
        let len = meta.as_ref().map_or(0, |m| m.len());
        let modified = meta.and_then(|m| m.modified().ok()).and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64);
        self.str(&path.to_string_lossy()).bytes(&len.to_le_bytes()).bytes(&modified.to_le_bytes())
    }

    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The entry's tensors called `names`, in that order, on `device`; `None` when there is no
/// such entry or it lacks one of them (or cannot be read: a damaged entry is recomputed, not
/// an error).
pub fn load<const N: usize>(dir: &Path, key: Key, names: [&str; N], device: tch::Device) -> Option<[tch::Tensor; N]> {
    let path = entry_path(dir, key);
    if !path.is_file() {
        return None;
    }
    let entry = match tch::Tensor::read_safetensors(&path) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("ignoring unreadable cache entry {}: {e}", path.display());
            return None;
        }
    };
    let found: Option<Vec<tch::Tensor>> = names.iter().map(|name| entry.iter().find(|(n, _)| n == name).map(|(_, t)| t.to_device(device))).collect();
    found.and_then(|v| v.try_into().ok())
}

/// Writes an entry (temp file, then rename: a concurrent reader never sees half a file). A
/// cache that cannot be written only costs time, so failures are logged, not returned.
pub fn store(dir: &Path, key: Key, tensors: &[(&str, &tch::Tensor)]) {
    let path = entry_path(dir, key);
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::create_dir_all(dir).map_err(|e| e.to_string()).and_then(|()| {
        let cpu: Vec<(&str, tch::Tensor)> = tensors.iter().map(|(n, t)| (*n, t.to_device(tch::Device::Cpu).contiguous())).collect();
        tch::Tensor::write_safetensors(&cpu, &tmp).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, &path).map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => tracing::info!("cached template data in {}", path.display()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!("could not write the template cache {}: {e}", path.display());
        }
    }
}

pub fn entry_path(dir: &Path, key: Key) -> PathBuf {
    dir.join(format!("templates-{}.safetensors", key.hex()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_by_content_and_order() {
        let a = Key::default().str("ab").str("c").hex();
        let b = Key::default().str("a").str("bc").hex();
        assert_ne!(a, b);
        assert_eq!(a, Key::default().str("ab").str("c").hex());
        assert_ne!(Key::default().f32s(&[1.0, 2.0]).hex(), Key::default().f32s(&[2.0, 1.0]).hex());
        // FNV-1a of the empty input is its offset basis: the constant is right.
        assert_eq!(Key::default().hex(), "cbf29ce484222325");
        assert_eq!(Key::default().bytes(b"a").hex(), "af63dc4c8601ec8c");
        assert_eq!(Key::versioned().hex(), Key::default().bytes(&VERSION.to_le_bytes()).hex());
    }

    #[test]
    fn store_then_load_round_trips() {
        let dir = std::env::temp_dir().join(format!("sam6d-cache-test-{}", std::process::id()));
        let key = Key::default().str("entry");
        let cpu = tch::Device::Cpu;
        assert!(load(&dir, key, ["x"], cpu).is_none());
        let t = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]).view([3, 1]);
        store(&dir, key, &[("x", &t)]);
        let back = load(&dir, key, ["x"], cpu).expect("stored");
        assert_eq!(back.len(), 1);
        assert_eq!(Vec::<f32>::try_from(back[0].flatten(0, -1)).unwrap(), vec![1.0, 2.0, 3.0]);
        // An entry without every asked-for tensor reads as absent.
        assert!(load(&dir, key, ["x", "y"], cpu).is_none());
        // A damaged entry reads as absent.
        std::fs::write(entry_path(&dir, key), b"not safetensors").unwrap();
        assert!(load(&dir, key, ["x"], cpu).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
