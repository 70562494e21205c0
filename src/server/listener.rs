//! Accepts connections, gives each its own thread, and on shutdown drains them in order:
//! stop accepting → close every connection's reading side → wait for their answers → let the
//! pipeline queue run dry.
use super::shutdown::Shutdown;
use super::worker::Pool;
use super::{connection, Config, Loaded, Shared, Stats};
use crate::pipeline::Pipeline;
use crate::protocol::message::{self, ErrorCode};
use anyhow::Context;
use std::collections::HashMap;
use std::net::{Shutdown as Direction, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Live connections: a handle to each (to close its reading side on shutdown) and a condition
/// to wait for the last one to finish.
#[derive(Default)]
struct Connections {
    open: Mutex<HashMap<u64, TcpStream>>,
    closed: Condvar,
}

impl Server {
    /// Binds the socket. Done before loading models so a taken port fails fast.
    pub fn bind(addr: &str) -> anyhow::Result<TcpListener> {
        let listener = TcpListener::bind(addr).with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        if !local.ip().to_canonical().is_loopback() {
            tracing::warn!(
                "listening on {local}: this protocol has no authentication or encryption; anyone who can reach this port can send \
                 frames (pickles are decoded safely, but they can use the pipeline); prefer --host 127.0.0.1 behind an SSH tunnel"
            );
        }
        Ok(listener)
    }

    /// Starts one pipeline worker per pipeline, `pipelines[i]` loaded on `loaded.devices[i]`,
    /// around what was loaded. After this, `run` serves.
    pub fn new(listener: TcpListener, config: Config, loaded: Loaded, pipelines: Vec<Pipeline>) -> anyhow::Result<Server> {
        let local = listener.local_addr()?;
        let loaded = Arc::new(loaded);
        let workers = if config.bench_noop {
            None
        } else {
            anyhow::ensure!(!pipelines.is_empty(), "a server needs at least one pipeline worker");
            anyhow::ensure!(pipelines.len() == loaded.devices.len(), "{} pipelines for {} devices", pipelines.len(), loaded.devices.len());
            Some(Pool::spawn(pipelines, loaded.clone(), config.queue_size, config.worker_threads).context("starting the pipeline workers")?)
        };
        let shared = Shared {
            config,
            loaded,
            shutdown: Arc::new(Shutdown::new(local)),
            started: Instant::now(),
            stats: Stats::default(),
            workers,
        };
        Ok(Server { listener, shared: Arc::new(shared) })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    pub fn shutdown_handle(&self) -> Arc<Shutdown> {
        self.shared.shutdown.clone()
    }

    /// Serves until shut down, then returns once every received request is answered.
    pub fn run(self) -> anyhow::Result<()> {
        let shared = self.shared;
        let connections = Arc::new(Connections::default());
        let mut next_id = 0u64;
        for stream in self.listener.incoming() {
            if shared.shutdown.is_triggered() {
                break;
            }
            let stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                    continue;
                }
            };
            let Ok(peer) = stream.peer_addr() else { continue };
            let open = connections.open.lock().unwrap_or_else(|e| e.into_inner()).len();
            if open >= shared.config.max_connections {
                refuse(stream, peer, open);
                continue;
            }
            let Ok(handle) = stream.try_clone() else { continue };
            next_id += 1;
            let id = next_id;
            connections.open.lock().unwrap_or_else(|e| e.into_inner()).insert(id, handle);
            shared.stats.connections.fetch_add(1, Ordering::Relaxed);
            let (theirs, conns) = (shared.clone(), connections.clone());
            let spawned = std::thread::Builder::new().name(format!("conn-{id}")).spawn(move || {
                // Deregisters even if the handler panics.
                let _guard = Registered { id, conns: &conns, stats: &theirs.stats };
                connection::serve(stream, peer, &theirs);
            });
            if let Err(e) = spawned {
                tracing::warn!("cannot start a thread for {peer}: {e}");
                connections.open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                shared.stats.connections.fetch_sub(1, Ordering::Relaxed);
            }
        }
        drop(self.listener);

        // Idle connections end at once; a connection whose request is being served writes its
        // answer first (only the reading side is closed), then finds end-of-stream.
        let mut open = connections.open.lock().unwrap_or_else(|e| e.into_inner());
        tracing::info!("shutting down: {} connection(s) to finish", open.len());
        for stream in open.values() {
            let _ = stream.shutdown(Direction::Read);
        }
        while !open.is_empty() {
            open = connections.closed.wait(open).unwrap_or_else(|e| e.into_inner());
        }
        drop(open);
        if let Some(workers) = &shared.workers {
            workers.close();
        }
        tracing::info!("stopped after {} request(s)", shared.stats.requests.load(Ordering::Relaxed));
        Ok(())
    }
}

struct Registered<'a> {
    id: u64,
    conns: &'a Connections,
    stats: &'a Stats,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        let mut open = self.conns.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
        self.stats.connections.fetch_sub(1, Ordering::Relaxed);
        self.conns.closed.notify_all();
    }
}

fn refuse(mut stream: TcpStream, peer: SocketAddr, open: usize) {
    let msg = format!("busy: the server already has {open} connections (--max-connections); retry later");
    tracing::warn!(%peer, "{msg}");
    let _ = stream.set_write_timeout(Some(std::time::Duration::from_secs(1)));
    let _ = connection::send(&mut stream, &message::error(ErrorCode::Busy, &msg));
}
