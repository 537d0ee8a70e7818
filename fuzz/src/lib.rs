//! Linked by every fuzz target (`use readyfd_proto_fuzz as _;`) to install
//! the harness's bounded allocator, in its aborting mode: an allocation
//! over the bound an entry point publishes aborts with the sizes, which
//! libFuzzer reports as a crash. The targets' logic is all in
//! `readyfd-proto-harness` (`proto/harness/`).

use readyfd_proto_harness::BoundedAlloc;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc::aborting();
