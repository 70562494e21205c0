//! One module per subcommand; each turns parsed arguments into calls on the library.
pub mod info;
pub mod infer;
pub mod man;
pub mod pending;

/// Logs go to stderr so that stdout stays clean for JSON.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SAM6D_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
}
