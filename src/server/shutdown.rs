//! Graceful shutdown: one flag that the `shutdown` request, SIGINT and SIGTERM all set.
//!
//! The listener blocks in `accept`, so triggering also makes one connection to our own port to
//! wake it; it then stops accepting, closes the reading side of every connection (idle ones end,
//! busy ones still write their answer) and waits for them and for the pipeline worker.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub struct Shutdown {
    triggered: AtomicBool,
    wake: SocketAddr,
}

impl Shutdown {
    /// `bound` is the listener's address; an unspecified IP (0.0.0.0, ::) is woken on loopback.
    pub fn new(bound: SocketAddr) -> Shutdown {
        let ip = match bound.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Shutdown { triggered: AtomicBool::new(false), wake: SocketAddr::new(ip, bound.port()) }
    }

    pub fn is_triggered(&self) -> bool {
        self.triggered.load(Ordering::SeqCst)
    }

    /// Starts the shutdown; returns false if it had already started.
    pub fn trigger(&self) -> bool {
        if self.triggered.swap(true, Ordering::SeqCst) {
            return false;
        }
        // Wake the accept loop. If this fails the listener is already gone, which is fine.
        let _ = TcpStream::connect_timeout(&self.wake, Duration::from_secs(1));
        true
    }

    /// SIGINT and SIGTERM trigger the shutdown; a second signal exits at once.
    pub fn on_signals(self: &std::sync::Arc<Self>) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let me = self.clone();
        std::thread::Builder::new().name("signals".into()).spawn(move || {
            for sig in signals.forever() {
                let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
                if me.trigger() {
                    tracing::info!("{name}: finishing the requests already received, then exiting (send it again to exit now)");
                } else {
                    tracing::warn!("{name} again: exiting now");
                    std::process::exit(128 + sig);
                }
            }
        })?;
        Ok(())
    }
}
