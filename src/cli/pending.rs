//! Subcommands whose implementation lands with a later issue. They are listed now so the
//! command line is stable; running one says so and exits 2.
use std::process::ExitCode;

/// Not available yet in this build: the subcommand is part of the command line already so
/// that scripts can rely on it, but a later issue implements it (serve, ping, shutdown: #4,
/// the socket server; viz: #5, the viewer). Running it exits with status 2.
#[derive(clap::Args)]
pub struct PendingArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, hide = true)]
    rest: Vec<String>,
}

pub fn run(name: &str, issue: u32) -> ExitCode {
    eprintln!("error: `sam6d {name}` is not implemented yet in this build (tracked in issue #{issue}); use `sam6d infer` for now");
    ExitCode::from(2)
}
