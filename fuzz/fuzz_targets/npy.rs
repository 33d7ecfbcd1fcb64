//! `.npy` files (numeric and pickled object arrays, then the weight-dict reading).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(alexvgg_import::numpy::NpyContent::Object(value)) = alexvgg_import::numpy::parse_npy(data, "fuzz") {
        let _ = alexvgg_import::numpy::weight_dict(&value, "fuzz");
    }
});
