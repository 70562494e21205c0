//! `sam6d man` (hidden): writes the man pages, generated from the clap definitions, into a
//! directory. The pages in the repo's `man/` come from here; a cli-test checks they are current
//! (regenerate with `cargo run --release -- man --out-dir man`).
use anyhow::Context;
use clap::CommandFactory;
use std::path::PathBuf;

/// Write the man pages (sam6d.1 and one sam6d-<command>.1 per subcommand) into a directory.
#[derive(clap::Args)]
pub struct ManArgs {
    /// Directory to write the pages into (created if missing).
    #[arg(long, value_name = "DIR")]
    out_dir: PathBuf,
}

pub fn run(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    // The long version names the libtorch found at build time; the pages must not depend on
    // the machine that generates them, so they carry the crate version only.
    let cmd = crate::Cli::command().long_version(None);
    clap_mangen::generate_to(cmd, &args.out_dir).with_context(|| format!("writing man pages into {}", args.out_dir.display()))?;
    eprintln!("man pages written to {}", args.out_dir.display());
    Ok(())
}
