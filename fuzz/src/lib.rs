//! Shared by every fuzz target: a global allocator that enforces
//! `readyfd_proto::fuzzing::alloc_limit()`.
//!
//! Each `readyfd_proto::fuzzing` entry point publishes, while it runs, the
//! largest single allocation it may legitimately make (twice the frame
//! maximum plus the input, and so on: see that module). An allocation over
//! it means a length taken from the input reserved memory the input never
//! delivered, so this allocator prints the sizes and aborts, which libFuzzer
//! reports as a crash with the input that caused it. The largest allocation
//! seen inside an entry point is kept in [`peak`] for the curious.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The allocator; installed by linking this crate (`use readyfd_proto_fuzz as _;`).
pub struct BoundedAlloc;

static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The largest single allocation made under a limit so far.
pub fn peak() -> usize {
    PEAK.load(Ordering::Relaxed)
}

fn check(size: usize) {
    let limit = readyfd_proto::fuzzing::alloc_limit();
    // A failed invariant's panic message and backtrace are not the input's
    // doing: let them allocate what they need.
    if limit == usize::MAX || std::thread::panicking() {
        return;
    }
    PEAK.fetch_max(size, Ordering::Relaxed);
    if size > limit {
        // No allocation from here on: format into a stack buffer.
        let mut buf = [0u8; 160];
        let mut w = &mut buf[..];
        let _ = writeln!(
            w,
            "readyfd-proto-fuzz: allocation of {size} bytes over the limit of {limit}"
        );
        let len = 160 - w.len();
        let _ = std::io::stderr().write_all(&buf[..len]);
        std::process::abort();
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; `check` only reads a thread-local and writes to stderr, and
// never allocates.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: forwarded unchanged, as the caller guaranteed for us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;
