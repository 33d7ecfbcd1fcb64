//! `.npz` archives (zip container and every member's `.npy` header and data).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = alexvgg_import::numpy::parse_npz(data, "fuzz");
});
