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

/// `(a(), b())`, `b` on a helper thread while this thread runs `a` (both here, one after the
/// other, when no helper can be started or there is one core): two independent pieces of
/// work of different kinds, which `par_map` cannot hand out.
pub fn join<A, B: Send>(a: impl FnOnce() -> A, b: impl FnOnce() -> B + Send) -> (A, B) {
    let cores = std::thread::available_parallelism().map_or(1, |p| p.get());
    if cores < 2 {
        return (a(), b());
    }
    // `b` waits here: a helper that cannot be started leaves it for this thread.
    let cell = std::sync::Mutex::new(Some(b));
    let take = || {
        cell.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    };
    std::thread::scope(|s| {
        let helper = std::thread::Builder::new()
            .name("ildiff-par".into())
            .spawn_scoped(s, || take().map(|b| b()))
            .ok();
        let ra = a();
        let done = helper.and_then(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)));
        let rb = match done {
            Some(rb) => rb,
            None => take()
                .map(|b| b())
                .expect("b is taken by exactly one thread"),
        };
        (ra, rb)
    })
}

/// Splits two buffers of `n` items (`per_a` and `per_b` values per item) at the same item and
/// runs `f(first item, part of a, part of b)` on the two halves at once, the second on a
/// helper thread (a per-item fill whose items are independent).
pub fn split2<X: Send, Y: Send>(
    a: &mut [X],
    b: &mut [Y],
    n: usize,
    f: impl Fn(usize, &mut [X], &mut [Y]) + Sync,
) {
    let mid = n / 2;
    let per_a = a.len() / n.max(1);
    let per_b = b.len() / n.max(1);
    if n < 2 {
        f(0, a, b);
        return;
    }
    let (a0, a1) = a.split_at_mut(mid * per_a);
    let (b0, b1) = b.split_at_mut(mid * per_b);
    join(|| f(0, a0, b0), || f(mid, a1, b1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_and_split2_run_both_sides() {
        let (a, b) = join(|| 2 + 2, || "four".len());
        assert_eq!((a, b), (4, 4));
        for n in [0usize, 1, 2, 5, 8] {
            let mut xs = vec![0usize; 3 * n];
            let mut ys = vec![0usize; n];
            split2(&mut xs, &mut ys, n, |first, x, y| {
                for (i, v) in y.iter_mut().enumerate() {
                    *v = first + i;
                }
                for (i, v) in x.iter_mut().enumerate() {
                    *v = 3 * first + i;
                }
            });
            assert_eq!(ys, (0..n).collect::<Vec<_>>());
            assert_eq!(xs, (0..3 * n).collect::<Vec<_>>());
        }
    }

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
