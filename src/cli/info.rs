//! `sam6d info`: what this build links and what it can use here.

use sam6d::pipeline::ism::dinov2::{self, DinoKind};
use sam6d::pipeline::pem::model as pem_model;
use sam6d::pipeline::segment::segmenter::{weights_dir, SegmenterKind};
use std::path::PathBuf;

/// Print the version, the libtorch it links, whether CUDA is usable, the installed weights
/// and the pipeline `--pipeline auto` runs with them.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,

    /// The weights directory to look in [default: as `infer`: $SAM6D_WEIGHTS, else the first
    /// existing of ./weights, the checkout's weights/ and ~/.local/share/sam6d/weights].
    #[arg(long, value_name = "DIR")]
    weights_dir: Option<PathBuf>,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let cuda = sam6d::device::cuda_device_count();
    let dir = weights_dir(args.weights_dir.as_deref());
    let mut installed: Vec<String> = super::stages::SAM6D_SEGMENTERS.iter().filter(|k| k.installed(&dir)).map(|k| k.to_string()).collect();
    installed.extend(DinoKind::ALL.iter().filter(|&&k| dir.join(dinov2::file_name(k)).is_file()).map(|k| k.model_name().to_string()));
    if dir.join(pem_model::FILE_NAME).is_file() {
        installed.push("sam6d-pem".into());
    }
    let (auto, why) = match super::stages::sam6d_missing(&dir, DinoKind::VitL14, true, None::<SegmenterKind>) {
        None => ("sam6d", "DINOv2 ViT-L, the PEM and a segmenter are installed".to_string()),
        Some(m) => ("geometric", format!("for sam6d, missing: {m}")),
    };
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "libtorch_version": env!("SAM6D_LIBTORCH_VERSION"),
        "libtorch_dir": env!("SAM6D_LIBTORCH_DIR"),
        "cuda_available": cuda > 0,
        "cuda_devices": cuda,
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "cpu_threads": rayon::current_num_threads(),
        "default_device": if cuda > 0 { "cuda:0" } else { "cpu" },
        "pipelines": ["geometric", "sam6d"],
        "weights_dir": dir.display().to_string(),
        "weights_installed": installed,
        "auto_pipeline": auto,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("sam6d {}", info["version"].as_str().unwrap_or_default());
        println!("libtorch {} ({})", info["libtorch_version"].as_str().unwrap_or_default(), info["libtorch_dir"].as_str().unwrap_or_default());
        println!("CUDA usable: {}{}", if cuda > 0 { "yes" } else { "no" }, if cuda > 0 { format!(" ({cuda} device(s))") } else { String::new() });
        println!("CPU threads: {}", rayon::current_num_threads());
        println!("pipelines: geometric (weights-free PPF + ICP + verification), sam6d (segmenter + ISM + PEM)");
        println!("weights: {} ({})", dir.display(), if installed.is_empty() { "none installed".to_string() } else { installed.join(", ") });
        println!("--pipeline auto runs, with the default --dinov2 and --pose-stage: {auto} ({why})");
    }
    Ok(())
}
