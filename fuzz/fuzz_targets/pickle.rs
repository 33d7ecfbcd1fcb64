//! The allow-list pickle VM: any bytes give a value or an error, never a panic, a stack
//! overflow or a quadratic walk. Inputs starting `RLE\0` are run-length programs (see
//! `expand.rs`) for deep nesting and wide fan-out through the memo.
#![no_main]

#[path = "expand.rs"]
mod expand;

fn check(data: &[u8]) {
    if let Ok(value) = alexvgg_import::numpy::unpickle(data, "fuzz") {
        let _ = alexvgg_import::numpy::weight_dict(&value, "fuzz");
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match expand::expand(data, 16 << 10) {
        Some(expanded) => check(&expanded),
        None => check(data),
    }
});
