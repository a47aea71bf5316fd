//! The threads: each [`Worker`] is one named, long-lived thread with its job queue, and
//! [`Workers`] pairs the inference and I/O workers behind one event stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, unbounded};

use super::events::{Emitter, Event, Job, JobId, NO_JOB, Waker};
use super::jobs;

/// One named background thread with its job queue.
pub struct Worker {
    jobs: Option<Sender<Job>>,
    cancel: Arc<AtomicU64>,
    running: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts the thread `name`; its events go to `events`, and `waker` runs after each.
    pub fn spawn(name: &str, events: Sender<Event>, waker: Waker) -> std::io::Result<Worker> {
        let (tx, rx) = unbounded::<Job>();
        let cancel = Arc::new(AtomicU64::new(NO_JOB));
        let running = Arc::new(AtomicU64::new(NO_JOB));
        let (c, r) = (cancel.clone(), running.clone());
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(rx, events, waker, c, r))?;
        Ok(Worker {
            jobs: Some(tx),
            cancel,
            running,
            thread: Some(thread),
        })
    }

    /// Queues a job.
    pub fn submit(&self, job: Job) {
        if let Some(tx) = &self.jobs {
            let _ = tx.send(job);
        }
    }

    /// Cancels job `id` whether it is running or still queued.
    pub fn cancel(&self, id: JobId) {
        self.cancel.store(id, Ordering::SeqCst);
    }

    /// The job running now, if any.
    pub fn running(&self) -> Option<JobId> {
        Some(self.running.load(Ordering::SeqCst)).filter(|&id| id != NO_JOB)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None; // closes the queue: the thread ends after the current job
        if let Some(id) = self.running() {
            self.cancel(id);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(
    rx: Receiver<Job>,
    events: Sender<Event>,
    waker: Waker,
    cancel: Arc<AtomicU64>,
    running: Arc<AtomicU64>,
) {
    let mut state = jobs::WorkerState::default();
    for job in rx.iter() {
        let id = job.id();
        let emit = Emitter::new(events.clone(), waker.clone(), cancel.clone(), id);
        if emit.cancelled() {
            emit.send(Event::Cancelled { id });
            continue;
        }
        running.store(id, Ordering::SeqCst);
        // A panic in a job must not take the worker (and every later job) down with it.
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            jobs::execute(job, &mut state, &emit)
        }));
        running.store(NO_JOB, Ordering::SeqCst);
        let last = match outcome {
            Ok(Ok(event)) => event,
            Ok(Err(crate::Error::Cancelled)) => Event::Cancelled { id },
            Ok(Err(e)) => Event::Failed {
                id,
                kind: e.kind(),
                error: e.to_string(),
            },
            Err(panic) => Event::Failed {
                id,
                kind: "internal",
                error: format!(
                    "internal error: {}",
                    panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "the job panicked".into())
                ),
            },
        };
        emit.send(last);
    }
}

/// The studio's two workers with one event stream: "ildiff-infer" runs model jobs,
/// "ildiff-io" imports, analyses and exports.
pub struct Workers {
    infer: Worker,
    io: Worker,
    events: Receiver<Event>,
    next_id: JobId,
}

impl Workers {
    pub fn spawn(waker: Waker) -> std::io::Result<Workers> {
        let (tx, rx) = unbounded();
        Ok(Workers {
            infer: Worker::spawn("ildiff-infer", tx.clone(), waker.clone())?,
            io: Worker::spawn("ildiff-io", tx, waker)?,
            events: rx,
            next_id: NO_JOB,
        })
    }

    /// A fresh job id.
    pub fn next_id(&mut self) -> JobId {
        self.next_id += 1;
        self.next_id
    }

    pub fn submit(&self, job: Job) {
        if job.needs_model() {
            self.infer.submit(job);
        } else {
            self.io.submit(job);
        }
    }

    pub fn cancel(&self, id: JobId) {
        self.infer.cancel(id);
        self.io.cancel(id);
    }

    /// The next event, without waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The next event, waiting at most `timeout` (tests and benchmarks).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Whether the inference worker is busy.
    pub fn inference_running(&self) -> Option<JobId> {
        self.infer.running()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::Limits;
    use crate::worker::GenerateJob;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn collect_until_final(w: &Workers, id: JobId) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = w.recv_timeout(Duration::from_secs(30)) {
            let done = e.id() == id && e.is_final();
            out.push(e);
            if done {
                return out;
            }
        }
        panic!("no final event for job {id}: {out:?}");
    }

    #[test]
    fn generate_with_the_default_finishes_or_says_none_is_installed_and_wakes_the_ui() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let w2 = wakes.clone();
        let mut w = Workers::spawn(Arc::new(move || {
            w2.fetch_add(1, Ordering::SeqCst);
        }))
        .expect("spawn");
        let id = w.next_id();
        let job = GenerateJob {
            request: crate::pipeline::generate::GenerateRequest {
                prompt: "a cat".into(),
                steps: 2,
                frames: 4,
                ..Default::default()
            },
            ..GenerateJob::default()
        };
        w.submit(Job::Generate {
            id,
            job: Box::new(job),
        });
        let installed = crate::pipeline::generate::default_vocabulary()
            .expect("readable")
            .is_some();
        let events = collect_until_final(&w, id);
        match events.last() {
            Some(Event::Generated { clip, unknown, .. }) if installed => {
                assert_eq!(clip.len(), 4);
                assert!(unknown.is_empty(), "{unknown:?}");
            }
            Some(Event::Failed { error, kind, .. }) if !installed => {
                assert!(
                    error.contains("no default generator is installed"),
                    "{error}"
                );
                assert_eq!(*kind, "model");
            }
            Some(Event::Failed { error, .. }) => panic!("installed: {installed}, failed: {error}"),
            _ => panic!("installed: {installed}, the job ended with another event"),
        }
        assert!(wakes.load(Ordering::SeqCst) >= 1);
    }

    #[test]
    fn import_reports_decode_errors_with_the_path_and_a_queued_cancel_skips_the_job() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = dir.path().join("broken.gif");
        std::fs::write(&bad, b"GIF89a nonsense").expect("write");
        let mut w = Workers::spawn(Arc::new(|| {})).expect("spawn");
        let id = w.next_id();
        w.submit(Job::Import {
            id,
            path: bad.clone(),
            limits: Limits::default(),
        });
        let events = collect_until_final(&w, id);
        match events.last() {
            Some(Event::Failed { error, .. }) => assert!(error.contains("broken.gif"), "{error}"),
            other => panic!("{other:?}"),
        }
        // Cancelled before it starts: answered with Cancelled, nothing decoded.
        let id = w.next_id();
        w.cancel(id);
        w.submit(Job::Import {
            id,
            path: bad,
            limits: Limits::default(),
        });
        let events = collect_until_final(&w, id);
        assert!(matches!(events.last(), Some(Event::Cancelled { .. })));
        assert!(!events.iter().any(|e| matches!(e, Event::Started { .. })));
    }
}
