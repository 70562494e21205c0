//! `sam6d ping` and `sam6d shutdown`: the two small clients of a running server.
use super::ServerAddr;
use sam6d::client::Client;
use sam6d::protocol::message;
use serde_json::{json, Value};
use std::time::Instant;

/// Check that a server answers: prints pong, the round-trip time and the server's status.
///
/// Exits 0 when the server answers, 1 when it cannot be reached or answers an error, so it
/// works as a health check in scripts and containers.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  sam6d ping\n  sam6d ping --host 10.0.0.5 --port 9000 --json\n  until sam6d ping -q; do sleep 1; done   # wait for a server to be ready")]
pub struct PingArgs {
    #[command(flatten)]
    server: ServerAddr,

    /// Print the answer as JSON: {"address", "round_trip_ms", "status": {...}}.
    #[arg(long)]
    json: bool,

    /// Print nothing; only the exit status tells.
    #[arg(long, short)]
    quiet: bool,
}

pub fn run(args: PingArgs) -> anyhow::Result<()> {
    let addr = args.server.address();
    let t0 = Instant::now();
    let mut client = Client::connect(&addr, args.server.timeout()?)?;
    let connect_ms = t0.elapsed().as_secs_f64() * 1e3;
    let t1 = Instant::now();
    let answer = client.ping()?.into_result()?;
    let rtt_ms = t1.elapsed().as_secs_f64() * 1e3;
    if args.quiet {
        return Ok(());
    }
    let data = answer.data();
    if args.json {
        let out = json!({"address": addr, "message": answer.message(), "round_trip_ms": rtt_ms, "connect_ms": connect_ms, "status": data});
        println!("{out}");
        return Ok(());
    }
    println!("{} from {addr} in {rtt_ms:.2} ms (connect {connect_ms:.2} ms)", answer.message());
    println!("{}", describe(&data));
    Ok(())
}

/// `d[k]` as text: strings without quotes, other values as JSON, `?` when absent.
fn field(d: &Value, k: &str) -> String {
    d.get(k).map(|v| v.as_str().map_or(v.to_string(), str::to_string)).unwrap_or_else(|| "?".into())
}

/// One line a person reads: what the server runs and how busy it has been.
fn describe(d: &Value) -> String {
    let s = |k: &str| field(d, k);
    let models: Vec<String> = d
        .get("models")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|m| m.get("name").and_then(Value::as_str).map(str::to_string)).collect())
        .unwrap_or_default();
    let queue = d
        .get("queue")
        .map(|q| format!(", queue {}/{}", q.get("waiting").unwrap_or(&json!("?")), q.get("capacity").unwrap_or(&json!("?"))))
        .unwrap_or_default();
    // One entry per worker: `0 cpu busy 12 done`.
    let workers: Vec<String> = d
        .get("workers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|w| format!("{} {} {} {} done", field(w, "id"), field(w, "device"), field(w, "state"), field(w, "done")))
                .collect()
        })
        .unwrap_or_default();
    let workers = if workers.is_empty() { String::new() } else { format!(" · workers: {}", workers.join(", ")) };
    format!(
        "sam6d {} · pipeline {} on {} · models: {} · up {} s · {} requests ({} inferences, {} errors) · {} connection(s){queue}{workers}",
        s("version"),
        s("pipeline"),
        s("device"),
        if models.is_empty() { "-".into() } else { models.join(", ") },
        s("uptime_s"),
        s("requests"),
        s("inferences"),
        s("errors"),
        s("connections"),
    )
}

/// Stop a running server: it answers the requests it has already received, then exits.
///
/// Accepted from the server's own machine (loopback), or from elsewhere with the server's
/// --shutdown-token.
#[derive(clap::Args)]
#[command(after_help = "Examples:\n  sam6d shutdown\n  sam6d shutdown --host 10.0.0.5 --token \"$SAM6D_SHUTDOWN_TOKEN\"")]
pub struct ShutdownArgs {
    #[command(flatten)]
    server: ServerAddr,

    /// The server's --shutdown-token (needed from a non-loopback address).
    #[arg(long, value_name = "TOKEN", env = "SAM6D_SHUTDOWN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

pub fn run_shutdown(args: ShutdownArgs) -> anyhow::Result<()> {
    let addr = args.server.address();
    let mut client = Client::connect(&addr, args.server.timeout()?)?;
    let mut request = json!({"action": message::ACTION_SHUTDOWN});
    if let Some(t) = &args.token {
        request["token"] = json!(t);
    }
    let answer = client.call(&request)?.into_result()?;
    println!("{addr}: {}", answer.message());
    Ok(())
}
