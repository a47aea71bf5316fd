//! Data parallelism on the machine's cores: one helper instead of a thread-scope block in
//! every caller (the APNG writer, the plate, the auto-fit probes, pack export, evaluation).

use std::sync::atomic::{AtomicUsize, Ordering};

/// `f(0..n)` on up to `max_threads` threads (never more than the cores), results in order.
/// Items are taken in turn from a shared counter, so long and short ones balance. The calling
/// thread works too, so a helper thread that cannot be started only costs speed; a panic in
/// a helper is passed on.
pub fn par_map<T: Send>(n: usize, max_threads: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(max_threads)
        .min(n)
        .max(1);
    if threads == 1 {
        return (0..n).map(f).collect();
    }
    let next = AtomicUsize::new(0);
    let work = || {
        let mut done = Vec::new();
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= n {
                return done;
            }
            done.push((i, f(i)));
        }
    };
    let mut parts: Vec<(usize, T)> = std::thread::scope(|s| {
        let helpers: Vec<_> = (1..threads)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("ildiff-par".into())
                    .spawn_scoped(s, work)
                    .ok()
            })
            .collect();
        let mut all = work();
        for h in helpers {
            all.extend(h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        }
        all
    });
    parts.sort_by_key(|(i, _)| *i);
    parts.into_iter().map(|(_, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_keep_their_order_whatever_the_threads() {
        for max in [1, 2, 8] {
            for n in [0, 1, 2, 7, 100] {
                let got = par_map(n, max, |i| i * i);
                assert_eq!(got, (0..n).map(|i| i * i).collect::<Vec<_>>(), "{n} {max}");
            }
        }
    }
}
