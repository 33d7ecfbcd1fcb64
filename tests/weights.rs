//! The weights cache: download once over HTTP, verify, rename into place; never a partial file.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use alexvgg::models::{AlexNetVariant, Architecture};
use alexvgg::preprocess::Preset;
use alexvgg::weights::{WeightsEntry, WeightsError, fetch};
use sha2::{Digest, Sha256};

/// Serves `body` to `requests` HTTP requests on loopback; returns the base URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let mut stream = stream.unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        }
    });
    format!("http://{addr}")
}

fn entry(url: String, sha256: Option<&'static str>, file: &'static str) -> WeightsEntry {
    WeightsEntry {
        name: "test_weights",
        file,
        url: Box::leak(url.into_boxed_str()),
        sha256,
        arch: Architecture::AlexNet(AlexNetVariant::Tf),
        preset: Preset::Caffe,
        accuracy: None,
        source: "test",
    }
}

fn cache(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("alexvgg-cache-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn downloads_verify_and_land_atomically() {
    let body = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/alexnet_tf_w8.py2.npy"),
    )
    .unwrap();
    let hash: String = Sha256::digest(&body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let prefix: &'static str = Box::leak(hash[..8].to_string().into_boxed_str());

    // SAFETY: this test binary sets the variable once, before any thread reads it.
    let dir = cache("ok");
    unsafe { std::env::set_var("ALEXVGG_CACHE", &dir) };
    let url = serve(body.clone(), 1);
    let good = entry(format!("{url}/w.npy"), Some(prefix), "good.npy");
    let path = fetch(&good).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), body);
    // second call: served from the cache (the server would refuse a second connection)
    assert_eq!(fetch(&good).unwrap(), path);

    let url = serve(body, 1);
    let bad = entry(format!("{url}/w.npy"), Some("00000000"), "bad.npy");
    match fetch(&bad) {
        Err(WeightsError::Checksum { found, .. }) => assert!(found.starts_with(prefix)),
        other => panic!("expected a checksum error, got {other:?}"),
    }
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("good.npy")],
        "no partial or unverified file stays"
    );

    let refused = entry("http://127.0.0.1:9/nothing.npy".into(), None, "refused.npy");
    assert!(matches!(
        fetch(&refused),
        Err(WeightsError::Download { .. })
    ));
    assert!(!dir.join("refused.npy").exists());
}
