//! The pipeline workers: inference requests wait in one bounded queue and each of N worker
//! threads takes the next one when it is free. Each worker owns its pipeline, loaded once on
//! its device (one GPU each, or the CPU), and answers every job on the job's own channel, so
//! answers cannot be mixed up however the workers interleave.
use crate::pipeline::{Estimate, Frame, Options, Pipeline};
use super::Loaded;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Which worker ran it (its device is `Loaded::devices[worker]`).
    pub worker: usize,
}

pub enum SubmitError {
    /// The queue is full.
    Busy { capacity: usize },
    /// The workers are gone (shutting down).
    Closed,
}

/// What `ping` reports about one worker.
#[derive(Default)]
pub struct WorkerState {
    busy: AtomicBool,
    done: AtomicU64,
    failed: AtomicU64,
}

impl WorkerState {
    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    /// Jobs answered, and of those the ones answered with an error.
    pub fn counts(&self) -> (u64, u64) {
        (self.done.load(Ordering::Relaxed), self.failed.load(Ordering::Relaxed))
    }
}

type Queue = Arc<Mutex<Receiver<(Job, Instant)>>>;

pub struct Pool {
    tx: Mutex<Option<SyncSender<(Job, Instant)>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    states: Vec<Arc<WorkerState>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
}

impl Pool {
    /// One worker thread per pipeline, `pipelines[i]` loaded on `loaded.devices[i]`. With
    /// `threads`, each worker runs its pipeline's parallel parts on its own pool of that many
    /// threads (CPU workers: N workers × cores/N threads beat N workers sharing every core);
    /// without, all workers share the process's pool.
    pub fn spawn(pipelines: Vec<Pipeline>, loaded: Arc<Loaded>, capacity: usize, pool_threads: Option<usize>) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::sync_channel(capacity);
        let queue: Queue = Arc::new(Mutex::new(rx));
        let waiting = Arc::new(AtomicUsize::new(0));
        let mut threads = Vec::new();
        let mut states = Vec::new();
        for (id, pipeline) in pipelines.into_iter().enumerate() {
            let state = Arc::new(WorkerState::default());
            let (queue, loaded, waiting, mine) = (queue.clone(), loaded.clone(), waiting.clone(), state.clone());
            let own = match pool_threads {
                Some(n) => Some(
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(n)
                        .thread_name(move |i| format!("worker-{id}-{i}"))
                        .build()
                        .map_err(std::io::Error::other)?,
                ),
                None => None,
            };
            let name = format!("worker-{id}");
            let work = move || {
                let serve = || run(id, pipeline, &loaded, &queue, &waiting, &mine);
                match own {
                    Some(pool) => pool.install(serve),
                    None => serve(),
                }
            };
            threads.push(std::thread::Builder::new().name(name).spawn(work)?);
            states.push(state);
        }
        Ok(Pool { tx: Mutex::new(Some(tx)), threads: Mutex::new(threads), states, waiting, capacity })
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

    pub fn states(&self) -> &[Arc<WorkerState>] {
        &self.states
    }

    /// Lets the queue run dry, then stops the threads.
    pub fn close(&self) {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        for t in std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner())) {
            let _ = t.join();
        }
    }
}

fn run(id: usize, pipeline: Pipeline, loaded: &Loaded, queue: &Queue, waiting: &AtomicUsize, state: &WorkerState) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((job, queued_at)) = next else { break };
        state.busy.store(true, Ordering::Relaxed);
        waiting.fetch_sub(1, Ordering::SeqCst);
        let queue_ms = queued_at.elapsed().as_secs_f64() * 1e3;
        // A panic in one frame must not take the worker down: it becomes that request's error.
        let estimate = || pipeline.estimate_with(&job.frame, &loaded.models[job.model], &job.options);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(estimate));
        let result = match result {
            Ok(Ok(est)) => Ok(est),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Err(panic) => {
                let what = panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                tracing::error!("worker {id}: the pipeline panicked: {}", what.as_deref().unwrap_or("?"));
                Err(format!("internal error in the pipeline: {}", what.as_deref().unwrap_or("panic")))
            }
        };
        state.done.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            state.failed.fetch_add(1, Ordering::Relaxed);
        }
        state.busy.store(false, Ordering::Relaxed);
        // The client may have gone; then nobody waits for this answer.
        let _ = job.reply.send(Done { frame: job.frame, result, queue_ms, worker: id });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Device;
    use crate::io::{image::{DepthMm, RgbImage}, Camera};

    fn frame() -> Frame {
        let camera = Camera::new(500.0, 500.0, 16.0, 12.0, 1.0).unwrap();
        Frame::new(RgbImage::new(32, 24), DepthMm { width: 32, height: 24, mm: vec![0.0; 32 * 24] }, camera).unwrap()
    }

    /// A job that panics (here: a model index the server does not have) is answered with an
    /// error, and the workers go on to the next jobs.
    #[test]
    fn a_panicking_job_is_answered_and_the_workers_keep_serving() {
        let loaded = Arc::new(Loaded { models: Vec::new(), camera: None, devices: vec![Device::Cpu; 2], pipeline: "geometric".into() });
        let pipelines = (0..2).map(|_| Pipeline::new(Options::default())).collect();
        let pool = Pool::spawn(pipelines, loaded, 8, Some(1)).unwrap();
        let replies: Vec<_> = (0..6)
            .map(|_| {
                let (tx, rx) = mpsc::channel();
                assert!(pool.submit(Job { frame: frame(), model: 3, options: Options::default(), reply: tx }).is_ok());
                rx
            })
            .collect();
        for rx in replies {
            let done = rx.recv().expect("every job is answered");
            let err = done.result.expect_err("no such model");
            assert!(err.contains("internal error in the pipeline"), "{err}");
            assert!(done.worker < 2);
        }
        let total: u64 = pool.states().iter().map(|s| s.counts().1).sum();
        assert_eq!(total, 6);
        pool.close();
        let (tx, _rx) = mpsc::channel();
        assert!(matches!(pool.submit(Job { frame: frame(), model: 0, options: Options::default(), reply: tx }), Err(SubmitError::Closed)));
    }
}
