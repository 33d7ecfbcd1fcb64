//! Caffe `.caffemodel` protobuf (V1 and V2 layers, blobs, shapes).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = alexvgg_import::parse_caffemodel(data, "fuzz");
});
