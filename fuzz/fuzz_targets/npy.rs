//! `.npy` files (numeric and pickled object arrays, then the weight-dict reading). Inputs
//! starting `RLE\0` are run-length programs (see `expand.rs`): an object header followed by a
//! pickle nested past the depth limit costs a dozen bytes.
#![no_main]

#[path = "expand.rs"]
mod expand;

fn check(data: &[u8]) {
    if let Ok(alexvgg_import::numpy::NpyContent::Object(value)) =
        alexvgg_import::numpy::parse_npy(data, "fuzz")
    {
        let _ = alexvgg_import::numpy::weight_dict(&value, "fuzz");
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match expand::expand(data, 16 << 10) {
        Some(expanded) => check(&expanded),
        None => check(data),
    }
});
