#![no_main]
use readyfd_proto_fuzz as _; // the bounded allocator
libfuzzer_sys::fuzz_target!(|data: &[u8]| readyfd_proto_harness::session(data));
