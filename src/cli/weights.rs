//! `sam6d weights convert|check`: official PyTorch checkpoints → safetensors, and a check of
//! weights files against the networks that load them.
use anyhow::Context;
use sam6d::weights::check::{self, Expectations, Report};
use sam6d::weights::convert;
use sam6d::weights::pth::Checkpoint;
use sam6d::weights::registry::Network;
use std::collections::BTreeMap;
use std::io::{self, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Convert PyTorch checkpoints to safetensors and check weights files against our networks.
///
/// The SAM-6D networks are published as PyTorch checkpoints (`.pth`): Python pickles, which tch
/// cannot read and which can run arbitrary code when Python loads them. sam6d reads weights
/// from safetensors files instead; convert each checkpoint once (no Python needed), then check:
///
///   sam6d weights convert sam_vit_h_4b8939.pth --out weights/sam_vit_h.safetensors
///
///   sam6d weights check weights/
///
/// The checkpoints SAM-6D uses, and the files sam6d looks for in the weights folder
/// (`--weights-dir`, else $SAM6D_WEIGHTS, ./weights, ...):
///
///   SAM ViT-H (Meta, Apache-2.0; SAM-6D's segmenter), 2.6 GB → sam_vit_h.safetensors:
///   https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth
///   (also sam_vit_l_0b3195.pth → sam_vit_l.safetensors, sam_vit_b_01ec64.pth → sam_vit_b.safetensors)
///
///   DINOv2 ViT-L/14 (Meta, Apache-2.0; the ISM's descriptors), 1.2 GB → dinov2_vitl14.safetensors:
///   https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth
///   (also vits14, vitb14, vitg14 under the same pattern, for --dinov2)
///
///   SAM-6D's PEM, sam-6d-pem-base.pth (the SAM-6D repository's download_sam6d-pem.py fetches
///   it from Google Drive, id 1joW9IvwsaRJYxoUmGo68dBVg-HcFNyI7) → sam6d_pem_base.safetensors
///
/// Once DINOv2, the PEM and a segmenter are there, `sam6d infer` runs SAM-6D by default
/// (`--pipeline auto`); `sam6d info` lists what is installed.
#[derive(clap::Args)]
pub struct WeightsArgs {
    #[command(subcommand)]
    command: WeightsCommand,
}

#[derive(clap::Subcommand)]
enum WeightsCommand {
    Convert(ConvertArgs),
    Check(CheckArgs),
}

/// Convert a PyTorch checkpoint (`torch.save`, torch ≥ 1.6) to safetensors.
///
/// The checkpoint's pickle is read by a restricted unpickler that never executes anything: it
/// accepts only what rebuilds a state dict (collections.OrderedDict, torch's tensor-rebuild
/// functions and storage types, and plain data) and refuses any other pickle global — such as
/// os.system in a malicious file — naming it. The tensors' bytes are then copied as they are
/// (every dtype kept: f32, f16, bf16, i64, ...), row-major, one tensor at a time.
///
/// The state dict is the checkpoint itself, or the dict under `model` or `state_dict` (training
/// checkpoints such as SAM-6D's PEM), or the one `--key` names. A `module.` prefix on every name
/// (from DataParallel) is removed. The output is written under a temporary name and renamed
/// when complete, so an error or Ctrl-C never leaves a half-written file.
#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The checkpoint (`.pth`, `.pt`).
    #[arg(value_name = "IN.pth")]
    input: PathBuf,

    /// Output file [default: the input with the extension `.safetensors`, same folder].
    #[arg(long, value_name = "OUT.safetensors")]
    out: Option<PathBuf>,

    /// Top-level key of the checkpoint that holds the state dict (default: the top level, else
    /// `model`, else `state_dict`).
    #[arg(long, value_name = "K")]
    key: Option<String>,

    /// Remove this prefix from the tensor names that have it (default: `module.` when every
    /// name has it; `--strip-prefix ''` keeps names as they are).
    #[arg(long, value_name = "P")]
    strip_prefix: Option<String>,

    /// Replace the output file if it exists.
    #[arg(long)]
    force: bool,
}

/// Check weights files against the networks that load them.
///
/// For each file (a FILE, or every `.safetensors`, `.pth` and `.pt` in a DIR) print the network
/// it is for — detected from its tensor names and shapes, or given with --as — and either OK or
/// the tensors that are missing, unexpected, or of the wrong shape or dtype. Only the headers are
/// read. The expected tensors come from building our networks (for sam-vit-h about 2.5 GB of
/// memory for a few seconds). Exit status 1 when any file has a problem.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// A weights file, or a folder of them.
    #[arg(value_name = "FILE|DIR")]
    path: PathBuf,

    /// Compare with this network instead of detecting it.
    #[arg(long = "as", value_name = "NET")]
    network: Option<Network>,

    /// Print the reports as JSON (one array) on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: WeightsArgs) -> anyhow::Result<()> {
    match args.command {
        WeightsCommand::Convert(a) => run_convert(a),
        WeightsCommand::Check(a) => run_check(a),
    }
}

/// Files smaller than this convert too fast for a progress bar to help.
const PROGRESS_MIN_BYTES: u64 = 64 << 20;

fn run_convert(args: ConvertArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| args.input.with_extension("safetensors"));
    let ckpt = Checkpoint::open(&args.input)?;
    let sd = ckpt.state_dict(args.key.as_deref(), args.strip_prefix.as_deref())?;
    let infos = sd.infos();
    let network = Network::detect(&infos);

    let source = args.input.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut metadata = BTreeMap::from([("format".to_owned(), "pt".to_owned()), ("source".to_owned(), source), ("converter".to_owned(), format!("sam6d {} weights convert", env!("CARGO_PKG_VERSION")))]);
    if let Some(k) = &sd.key {
        metadata.insert("source_key".into(), k.clone());
    }
    if let Some(p) = &sd.stripped_prefix {
        metadata.insert("stripped_prefix".into(), p.clone());
    }

    // Ctrl-C / SIGTERM stop the copy between chunks, so the partial file is removed.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop)).context("installing the signal handler")?;
    }
    let total = convert::data_bytes(&sd);
    let bar = if total >= PROGRESS_MIN_BYTES && io::stderr().is_terminal() {
        let bar = indicatif::ProgressBar::new(total);
        bar.set_style(indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}").expect("valid template"));
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut tick = |n: u64| -> io::Result<()> {
        if stop.load(Ordering::Relaxed) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "interrupted"));
        }
        bar.inc(n);
        Ok(())
    };
    let result = convert::write_safetensors(&ckpt, &sd, &out, args.force, &metadata, &mut tick);
    bar.finish_and_clear();
    if stop.load(Ordering::Relaxed) {
        anyhow::bail!("interrupted: {} was not written", out.display());
    }
    let summary = result.with_context(|| format!("converting {}", args.input.display()))?;

    let secs = start.elapsed().as_secs_f64();
    let dtypes: Vec<String> = summary.dtypes.iter().map(|(d, n)| format!("{n} {d}")).collect();
    println!("wrote {}", out.display());
    println!("  tensors:  {} ({})", summary.tensors, dtypes.join(", "));
    println!("  elements: {}", summary.elements);
    println!("  bytes:    {} of tensor data, {} in the file ({:.1} MB/s, {secs:.2} s)", summary.bytes, summary.file_bytes, summary.bytes as f64 / 1e6 / secs.max(1e-9));
    if let Some(k) = &sd.key {
        println!("  from:     the checkpoint's '{k}'");
    }
    if let Some(p) = &sd.stripped_prefix {
        println!("  prefix:   '{p}' removed from every name");
    }
    match network {
        Some(n) => println!("  network:  {n} (detected; `sam6d weights check {}` compares every tensor)", out.display()),
        None => println!("  network:  not one sam6d knows ({})", Network::ALL.map(|n| n.name()).join(", ")),
    }
    Ok(())
}

/// Lines of each list shown in the text report.
const SHOW: usize = 10;

fn print_list<T>(title: &str, items: &[T], line: impl Fn(&T) -> String) {
    if items.is_empty() {
        return;
    }
    println!("  {title} ({}):", items.len());
    for it in items.iter().take(SHOW) {
        println!("    {}", line(it));
    }
    if items.len() > SHOW {
        println!("    ... and {} more (--json lists all)", items.len() - SHOW);
    }
}

fn print_report(r: &Report) {
    let net = match (&r.network, r.detected) {
        (Some(n), true) => format!("{n} (detected)"),
        (Some(n), false) => n.clone(),
        (None, _) => "unknown network".into(),
    };
    let parts = if r.parts.len() == 1 && r.parts[0] == "checkpoint" { String::new() } else { format!(", {} part", r.parts.join(" + ")) };
    if let Some(e) = &r.error {
        println!("{}: {net}: ERROR: {e}", r.file.display());
        return;
    }
    if r.ok() {
        println!("{}: {net}{parts}: OK, {} tensors", r.file.display(), r.tensors);
    } else {
        println!("{}: {net}{parts}: {} tensors, {} expected: PROBLEMS", r.file.display(), r.tensors, r.expected);
    }
    print_list("missing", &r.missing, |s| s.clone());
    print_list("unexpected", &r.unexpected, |s| s.clone());
    print_list("wrong shape", &r.shape_mismatches, |m| format!("{}: file {}, expected {}", m.name, m.file, m.expected));
    print_list("wrong dtype", &r.dtype_mismatches, |m| format!("{}: file {}, expected {}", m.name, m.file, m.expected));
    if let Some(m) = r.dtype_notes.first() {
        println!("  note: {} tensors are {} where the network uses {} (cast when loaded)", r.dtype_notes.len(), m.file, m.expected);
    }
}

fn run_check(args: CheckArgs) -> anyhow::Result<()> {
    let files = if args.path.is_dir() {
        let files = check::weight_files(&args.path).with_context(|| format!("listing {}", args.path.display()))?;
        anyhow::ensure!(!files.is_empty(), "{}: no .safetensors, .pth or .pt files", args.path.display());
        files
    } else {
        anyhow::ensure!(args.path.exists(), "{}: no such file or folder", args.path.display());
        vec![args.path.clone()]
    };
    let mut expectations = Expectations::default();
    let reports: Vec<Report> = files.iter().map(|f| check::check_file(Path::new(f), args.network, &mut expectations)).collect();
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        reports.iter().for_each(print_report);
    }
    let bad = reports.iter().filter(|r| !r.ok()).count();
    anyhow::ensure!(bad == 0, "{bad} of {} weights files have problems", reports.len());
    Ok(())
}
