//! `sam6d completions SHELL`: shell completion scripts, generated from the clap definitions so
//! they never drift from the real flags.
use clap::CommandFactory;

/// Print a shell completion script on stdout.
///
/// Install it where your shell looks for completions, for example:
///   bash: sam6d completions bash > ~/.local/share/bash-completion/completions/sam6d
///   zsh:  sam6d completions zsh > "${fpath[1]}/_sam6d"
///   fish: sam6d completions fish > ~/.config/fish/completions/sam6d.fish
#[derive(clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn run(args: CompletionsArgs) -> anyhow::Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "sam6d", &mut std::io::stdout());
    Ok(())
}
