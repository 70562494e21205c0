//! `sam6d info`: what this build links and what it can use here.

/// Print the version, the libtorch it links and whether CUDA is usable.
#[derive(clap::Args)]
pub struct InfoArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InfoArgs) -> anyhow::Result<()> {
    let cuda = sam6d::device::cuda_device_count();
    let info = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "libtorch_version": env!("SAM6D_LIBTORCH_VERSION"),
        "libtorch_dir": env!("SAM6D_LIBTORCH_DIR"),
        "cuda_available": cuda > 0,
        "cuda_devices": cuda,
        "cudnn_available": tch::Cuda::cudnn_is_available(),
        "cpu_threads": rayon::current_num_threads(),
        "default_device": if cuda > 0 { "cuda:0" } else { "cpu" },
        "pipelines": ["geometric"],
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        println!("sam6d {}", info["version"].as_str().unwrap_or_default());
        println!("libtorch {} ({})", info["libtorch_version"].as_str().unwrap_or_default(), info["libtorch_dir"].as_str().unwrap_or_default());
        println!("CUDA usable: {}{}", if cuda > 0 { "yes" } else { "no" }, if cuda > 0 { format!(" ({cuda} device(s))") } else { String::new() });
        println!("CPU threads: {}", rayon::current_num_threads());
        println!("pipelines: geometric (weights-free PPF + ICP + verification)");
    }
    Ok(())
}
