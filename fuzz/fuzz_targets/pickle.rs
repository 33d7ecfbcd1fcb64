//! The allow-list pickle VM: any bytes give a value or an error, never a panic.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(value) = alexvgg_import::numpy::unpickle(data, "fuzz") {
        let _ = alexvgg_import::numpy::weight_dict(&value, "fuzz");
    }
});
