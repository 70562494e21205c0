//! `sam6d`: command-line entry point. clap definitions here, one function per subcommand in
//! `cli/`. Exit codes: 0 success, 1 runtime failure (bad input, unreachable server), 2 usage.
mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    "\nlibtorch ",
    env!("SAM6D_LIBTORCH_VERSION"),
    "\nrun `sam6d info` to see whether CUDA is usable on this machine"
);

/// Zero-shot 6D object pose estimation (SAM-6D) from an RGB-D frame and a CAD model.
///
/// Give it a colour image, a registered 16-bit depth image, the camera intrinsics and the CAD
/// model (PLY, millimetres) of an object it was never trained on; it answers where the object
/// is: a rotation, a translation in millimetres (x_cam = R · x_model + t, OpenCV camera) and a
/// confidence per instance.
///
/// Example (the official SAM-6D demo frame):
///
///   sam6d infer --rgb rgb.png --depth depth.png --cam camera.json --cad obj_000005.ply
#[derive(Parser)]
#[command(name = "sam6d", version, long_version = LONG_VERSION, propagate_version = true)]
struct Cli {
    /// More log output on stderr (-v info, -vv debug). SAM6D_LOG=<filter> overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Infer(Box<cli::infer::InferArgs>),
    Serve(Box<cli::serve::ServeArgs>),
    Ping(cli::ping::PingArgs),
    Shutdown(cli::ping::ShutdownArgs),
    Viz(cli::viz::VizArgs),
    Info(cli::info::InfoArgs),
    Eval(cli::eval::EvalArgs),
    Completions(cli::completions::CompletionsArgs),
    Weights(cli::weights::WeightsArgs),
    Templates(cli::templates::TemplatesArgs),
    #[command(hide = true)]
    Man(cli::man::ManArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A server logs one line per request by default; the other commands only warnings.
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    cli::init_logging(cli.verbose, default_level);
    let result = match cli.command {
        Command::Infer(args) => cli::infer::run(*args),
        Command::Serve(args) => cli::serve::run(*args),
        Command::Ping(args) => cli::ping::run(args),
        Command::Shutdown(args) => cli::ping::run_shutdown(args),
        Command::Viz(args) => cli::viz::run(args),
        Command::Info(args) => cli::info::run(args),
        Command::Eval(args) => cli::eval::run(args),
        Command::Completions(args) => cli::completions::run(args),
        Command::Weights(args) => cli::weights::run(args),
        Command::Templates(args) => cli::templates::run(args),
        Command::Man(args) => cli::man::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
