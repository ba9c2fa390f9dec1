//! A single-file SQLite3 (.db3) bag: open, info, and every message decoded.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bag_common.rs"]
mod bag_common;

fuzz_target!(|data: &[u8]| {
    bag_common::read_bag_file(data, "fuzz.db3");
});
