//! The one pipeline worker: inference requests wait in a bounded queue and run one at a time
//! (one GPU or one set of CPU cores serves them best in order), each answered on its own channel.
use crate::pipeline::{Estimate, Frame, Options, Pipeline};
use super::Loaded;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

pub struct Job {
    pub frame: Frame,
    /// Index into `Loaded::models`.
    pub model: usize,
    pub options: Options,
    pub reply: mpsc::Sender<Done>,
}

pub struct Done {
    pub frame: Frame,
    pub result: Result<Estimate, String>,
    /// Time spent waiting in the queue.
    pub queue_ms: f64,
}

pub enum SubmitError {
    /// The queue is full.
    Busy { capacity: usize },
    /// The worker is gone (shutting down).
    Closed,
}

pub struct Worker {
    tx: Mutex<Option<SyncSender<(Job, Instant)>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl Worker {
    pub fn spawn(pipeline: Pipeline, loaded: Arc<Loaded>, capacity: usize) -> std::io::Result<Worker> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let waiting = Arc::new(AtomicUsize::new(0));
        let w = waiting.clone();
        let thread = std::thread::Builder::new().name("pipeline".into()).spawn(move || run(pipeline, loaded, rx, w))?;
        Ok(Worker { tx: Mutex::new(Some(tx)), thread: Mutex::new(Some(thread)), waiting, capacity })
    }

    /// Queues a job without blocking; its answer arrives on `job.reply`.
    pub fn submit(&self, job: Job) -> Result<(), SubmitError> {
        let guard = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        let Some(tx) = guard.as_ref() else { return Err(SubmitError::Closed) };
        self.waiting.fetch_add(1, Ordering::SeqCst);
        match tx.try_send((job, Instant::now())) {
            Ok(()) => Ok(()),
            Err(e) => {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                Err(match e {
                    TrySendError::Full(_) => SubmitError::Busy { capacity: self.capacity },
                    TrySendError::Disconnected(_) => SubmitError::Closed,
                })
            }
        }
    }

    /// Requests waiting (not yet running).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Lets the queue run dry, then stops the thread.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn run(pipeline: Pipeline, loaded: Arc<Loaded>, rx: Receiver<(Job, Instant)>, waiting: Arc<AtomicUsize>) {
    for (job, queued_at) in rx {
        waiting.fetch_sub(1, Ordering::SeqCst);
        let queue_ms = queued_at.elapsed().as_secs_f64() * 1e3;
        let model = &loaded.models[job.model];
        // A panic in one frame must not take the server down: it becomes that request's error.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pipeline.estimate_with(&job.frame, model, &job.options)));
        let result = match result {
            Ok(Ok(est)) => Ok(est),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => {
                let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                tracing::error!("the pipeline panicked: {}", what.as_deref().unwrap_or("?"));
                Err(format!("internal error in the pipeline: {}", what.as_deref().unwrap_or("panic")))
            }
        };
        // The client may have gone; then nobody waits for this answer.
        let _ = job.reply.send(Done { frame: job.frame, result, queue_ms });
    }
}
