//! The allocation bound: the one bounded global allocator, and the per-thread
//! limit each entry point publishes while it runs.
//!
//! While an entry point runs, it publishes a bound on the size of any single
//! allocation it may legitimately make; [`limit`] reads it. [`BoundedAlloc`],
//! installed as the global allocator by the fuzz crate (aborting) and by this
//! crate's tests (recording), checks every allocation against it, which turns
//! a hostile length that makes `readyfd-proto` reserve memory it has not
//! received into a finding. With `max` the frame maximum in force and `n`
//! the input length, the bounds are built from three facts:
//!
//! - byte buffers (`BytesMut` read buffers, `Vec` write buffers) hold at most
//!   one frame plus unread input, with `READ_AHEAD` bytes of room beyond an
//!   incomplete frame (the frame decoder leaves it so that a driver's reads
//!   never move a partial payload), and amortised growth at most doubles
//!   them: `2 * (max + HEADER_LEN + READ_AHEAD + n)`;
//! - bincode's decode limit is the smallest power of two at least the
//!   payload length (`proto/src/codec.rs`), and a `String` that claims up to
//!   that limit gets its zeroed buffer before the read runs out of payload:
//!   less than `2 * payload` bytes;
//! - a decoded `Ready` holds one [`Endpoint`] (64 bytes in memory on 64-bit
//!   targets) per at least 20 payload bytes, doubled by growth:
//!   [`DECODE_EXPANSION`] times the payload.
//!
//! [`SLACK`] covers fixed-size allocations (hash tables, panic messages).
//!
//! The allocator also keeps, per thread, the largest single allocation since
//! [`peak_of`] started measuring, which the allocation tests read.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

use readyfd_proto::Endpoint;

/// Room for allocations whose size does not depend on the input.
pub const SLACK: usize = 64 * 1024;

/// The fewest payload bytes one [`Endpoint`] takes: an empty name (8-byte
/// length), the `Address` variant (4) and an empty path or text (8).
const MIN_ENDPOINT_WIRE: usize = 8 + 4 + 8;

/// How many times its payload length a decoded message may occupy in one
/// allocation: the `Vec<Endpoint>` of a `Ready` (see the module docs). At
/// least 2, which covers bincode's power-of-two limit.
pub const DECODE_EXPANSION: usize = {
    let e = 2 * std::mem::size_of::<Endpoint>().div_ceil(MIN_ENDPOINT_WIRE);
    if e < 2 { 2 } else { e }
};

/// serde's `Vec`, `HashMap` and friends reserve up to 1 MiB for whatever
/// element count the input claims (`serde::__private::size_hint::cautious`).
/// readyfd's own messages avoid that (see `Ready`), application types do
/// not, so [`app_body`](crate::app_body) allows it.
pub const SERDE_PREALLOC: usize = 1024 * 1024;

thread_local! {
    static LIMIT: Cell<usize> = const { Cell::new(usize::MAX) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static EXCESS: Cell<Option<Excess>> = const { Cell::new(None) };
}

/// The largest single allocation the entry point running on this thread may
/// make, or `usize::MAX` outside of one. It never allocates, so a global
/// allocator may call it.
pub fn limit() -> usize {
    LIMIT.try_with(Cell::get).unwrap_or(usize::MAX)
}

/// An allocation over the [`limit`] in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Excess {
    /// The size asked for.
    pub size: usize,
    /// The limit it exceeded.
    pub limit: usize,
}

/// Returns and clears the first allocation over the limit that this thread
/// made since the last call, under a [`BoundedAlloc::recording`] allocator.
pub fn take_excess() -> Option<Excess> {
    EXCESS.try_with(Cell::take).unwrap_or(None)
}

/// Runs `f` and returns its result with the largest single allocation this
/// thread made meanwhile (0 when it made none), as seen by a
/// [`BoundedAlloc`] installed as the global allocator.
pub fn peak_of<T>(f: impl FnOnce() -> T) -> (T, usize) {
    PEAK.with(|p| p.set(0));
    let r = f();
    (r, PEAK.with(Cell::get))
}

/// Runs `f` with `limit` as this thread's [`limit`], then restores the
/// previous one (also when `f` panics).
pub fn with_limit<T>(limit: usize, f: impl FnOnce() -> T) -> T {
    let _guard = LimitGuard::set(limit);
    f()
}

/// Publishes a limit for the guard's lifetime, restoring the previous one
/// on drop (also when an invariant panics).
pub(crate) struct LimitGuard(usize);

impl LimitGuard {
    pub(crate) fn set(limit: usize) -> Self {
        LimitGuard(LIMIT.with(|l| l.replace(limit)))
    }
}

impl Drop for LimitGuard {
    fn drop(&mut self) {
        let _ = LIMIT.try_with(|l| l.set(self.0));
    }
}

/// The global allocator of the fuzz targets and of this crate's tests:
/// [`System`], plus a check of every allocation against [`limit`] and a
/// record of the [peak](peak_of).
///
/// ```
/// use readyfd_proto_harness::{BoundedAlloc, alloc, frame_decoder};
///
/// #[global_allocator]
/// static ALLOC: BoundedAlloc = BoundedAlloc::recording(); // `aborting()` under libFuzzer
///
/// frame_decoder(b"\x05\x01\x05\0\0\0\x07hello");
/// assert_eq!(alloc::take_excess(), None);
/// ```
#[derive(Debug)]
pub struct BoundedAlloc {
    abort: bool,
}

impl BoundedAlloc {
    /// Prints the sizes and aborts on an allocation over the limit, which
    /// libFuzzer reports as a crash with the input that caused it and a
    /// backtrace at the allocation.
    pub const fn aborting() -> Self {
        BoundedAlloc { abort: true }
    }

    /// Records the first allocation over the limit for [`take_excess`] and
    /// lets it proceed, so that a test can name the input that caused it.
    pub const fn recording() -> Self {
        BoundedAlloc { abort: false }
    }

    fn check(&self, size: usize) {
        let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
        let limit = limit();
        // A failed invariant's panic message and backtrace are not the
        // input's doing: let them allocate what they need.
        if size <= limit || std::thread::panicking() {
            return;
        }
        if self.abort {
            // No allocation from here on: format into a stack buffer.
            let mut buf = [0u8; 160];
            let mut w = &mut buf[..];
            let _ = writeln!(
                w,
                "readyfd-proto-harness: allocation of {size} bytes over the limit of {limit}"
            );
            let len = 160 - w.len();
            let _ = std::io::stderr().write_all(&buf[..len]);
            std::process::abort();
        }
        let _ = EXCESS.try_with(|e| {
            if e.get().is_none() {
                e.set(Some(Excess { size, limit }));
            }
        });
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; `check` touches only const-initialised thread-locals without
// destructors and writes to stderr from a stack buffer: it never allocates.
unsafe impl GlobalAlloc for BoundedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: forwarded unchanged, as the caller guaranteed for us.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        self.check(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        self.check(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}
