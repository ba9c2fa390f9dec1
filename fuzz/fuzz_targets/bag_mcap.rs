//! A single-file MCAP bag: open, info, and every message decoded as the pipeline would.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "bag_common.rs"]
mod bag_common;

fuzz_target!(|data: &[u8]| {
    bag_common::read_bag_file(data, "fuzz.mcap");
});
