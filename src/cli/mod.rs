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

use std::time::Duration;

/// Logs go to stderr so that stdout stays clean for JSON. `default` is the level without -v.
pub fn init_logging(verbose: u8, default: &str) {
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
