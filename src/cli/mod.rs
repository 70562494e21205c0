//! One module per subcommand; each turns parsed arguments into calls on the library.
pub mod completions;
pub mod eval;
pub mod info;
pub mod infer;
pub mod man;
pub mod ping;
pub mod stages;
pub mod serve;
pub mod templates;
pub mod viz;
pub mod weights;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether logging is at its default quietness (no -v, no SAM6D_LOG): only then may a status
/// spinner share stderr, which log lines would otherwise break up.
static QUIET_LOGS: AtomicBool = AtomicBool::new(false);

/// Logs go to stderr so that stdout stays clean for JSON. `default` is the level without -v.
pub fn init_logging(verbose: u8, default: &str) {
    QUIET_LOGS.store(verbose == 0 && std::env::var_os("SAM6D_LOG").is_none(), Ordering::Relaxed);
    let default = match verbose {
        0 => default,
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAM6D_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colour codes only for a person at a terminal; log files and pipes get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).with_ansi(ansi).init();
}

/// A spinner with the elapsed time on stderr for work that takes seconds to minutes without
/// other output (SAM-6D's networks on a CPU). Hidden unless a person watches stderr (a
/// terminal) and logs are quiet, so pipes, files and -v output stay clean.
pub fn status_spinner(message: String) -> indicatif::ProgressBar {
    if !QUIET_LOGS.load(Ordering::Relaxed) || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return indicatif::ProgressBar::hidden();
    }
    // Cleared when dropped too, so that an error message starts on a clean line.
    let bar = indicatif::ProgressBar::new_spinner().with_finish(indicatif::ProgressFinish::AndClear);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("valid template"));
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

pub fn parse_unit_interval(s: &str) -> Result<f32, String> {
    let v: f32 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) { Ok(v) } else { Err(format!("{v} is outside [0, 1]")) }
}

/// Where a client finds the server.
#[derive(clap::Args)]
pub struct ServerAddr {
    /// Server host name or address.
    #[arg(long, default_value = "127.0.0.1", env = "SAM6D_HOST")]
    host: String,

    /// Server port.
    #[arg(long, default_value_t = 8000, env = "SAM6D_PORT")]
    port: u16,

    /// Seconds to wait for the connection and for the answer.
    #[arg(long, default_value_t = 5.0, value_name = "SECS")]
    timeout: f64,
}

impl ServerAddr {
    pub fn address(&self) -> String {
        format!("{}:{}", serve::bracket_ipv6(&self.host), self.port)
    }

    pub fn timeout(&self) -> anyhow::Result<Duration> {
        anyhow::ensure!(self.timeout > 0.0 && self.timeout.is_finite(), "--timeout must be a positive number of seconds");
        Ok(Duration::from_secs_f64(self.timeout))
    }
}
