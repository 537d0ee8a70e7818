#![no_main]
use readyfd_proto_harness::{ExampleBody, app_body};
use readyfd_proto_fuzz as _; // the bounded allocator
libfuzzer_sys::fuzz_target!(|data: &[u8]| app_body::<ExampleBody>(data));
