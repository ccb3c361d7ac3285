//! Order-preserving parallel map over a slice on every core (scoped threads), for decoding
//! and admitting many manifests.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Fewest items worth a thread of their own.
const MIN_PER_THREAD: usize = 32;
/// Work pieces per thread, so that uneven items still spread evenly.
const PIECES_PER_THREAD: usize = 8;

/// `items.iter().map(f).collect()`, computed on up to `available_parallelism` threads;
/// small inputs stay on the calling thread. A panic in `f` is re-raised here.
pub(crate) fn map_ordered<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(items.len() / MIN_PER_THREAD);
    if threads <= 1 {
        return items.iter().map(f).collect();
    }
    let piece = items.len().div_ceil(threads * PIECES_PER_THREAD);
    let pieces: Vec<&[T]> = items.chunks(piece).collect();
    let done: Vec<Mutex<Vec<R>>> = pieces.iter().map(|_| Mutex::new(Vec::new())).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(piece) = pieces.get(i) else { break };
                    let out: Vec<R> = piece.iter().map(&f).collect();
                    *done[i].lock().expect("no panic while holding the lock") = out;
                }
            });
        }
    });
    done.into_iter()
        .flat_map(|m| m.into_inner().expect("no panic while holding the lock"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_for_small_and_large_inputs() {
        for n in [0, 1, 31, 32, 33, 1000, 4099] {
            let items: Vec<usize> = (0..n).collect();
            let out = map_ordered(&items, |i| i * 2);
            assert_eq!(
                out,
                items.iter().map(|i| i * 2).collect::<Vec<_>>(),
                "n = {n}"
            );
        }
    }
}
