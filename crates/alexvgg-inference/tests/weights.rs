//! The weights cache: download over HTTP, resume an interrupted download, verify by checksum or
//! by structure, convert to burnpack, rename into place; never a partial or unverified file
//! under the final name. Everything is served from loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[path = "../../../tests/common/support.rs"]
mod support;

use alexvgg_import::load_model;
use alexvgg_inference::preprocess::Preset;
use alexvgg_inference::weights::{
    Checksum, FetchOptions, Source, WeightsEntry, WeightsError, fetch_in_table, fetch_into,
    fetch_with, known,
};
use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape};
use sha2::{Digest, Sha256};
use support::{fixture, scratch};

const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);

/// How the test server answers one connection.
#[derive(Clone, Copy)]
enum Reply {
    /// The whole body (200), ignoring any range.
    Whole,
    /// Announces the whole body, sends this many bytes, and hangs up.
    DropAfter(usize),
    /// Honours `Range: bytes=N-` with 206 (200 without a range).
    Ranges,
}

/// Serves `body` on loopback, one reply per connection; returns the base URL and the request
/// heads it received.
fn serve(body: Vec<u8>, replies: Vec<Reply>) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        for (stream, reply) in listener.incoming().zip(replies) {
            let mut stream = stream.unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let from = head
                .lines()
                .find_map(|l| l.strip_prefix("range: bytes="))
                .and_then(|r| {
                    r.trim_end_matches('-')
                        .trim()
                        .trim_end_matches('-')
                        .parse()
                        .ok()
                });
            seen.lock().unwrap().push(head);
            let (status, part) = match (reply, from) {
                (Reply::Ranges, Some(n)) => ("206 Partial Content", &body[n..]),
                _ => ("200 OK", &body[..]),
            };
            let _ = stream.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    part.len()
                )
                .as_bytes(),
            );
            let send = match reply {
                Reply::DropAfter(n) => &part[..n],
                _ => part,
            };
            let _ = stream.write_all(send);
        }
    });
    (format!("http://{addr}"), log)
}

/// The network of the reduced fixtures (`*_w8`, `*_w16`): 10 classes, narrow.
fn fixture_shape(name: &str, arch: Architecture) -> NetworkShape {
    let device = alexvgg_inference::device::make_device(Some("cpu"))
        .unwrap()
        .1;
    load_model(&fixture(name), &arch, &device).unwrap().1
}

/// A test entry for a file of the AlexNet w8 fixture's shape, at most 10 MB.
fn entry(url: &str, checksum: Option<Checksum>, file: &str, arch: Architecture) -> WeightsEntry {
    WeightsEntry {
        name: format!("test_{}", file.replace('.', "_")),
        file: file.to_string(),
        architecture: arch,
        sources: vec![source(&format!("{url}/{file}"))],
        checksum,
        checksum_note: String::new(),
        recorded_sha256: None,
        recorded_note: String::new(),
        fallback: None,
        fallback_note: String::new(),
        size: 10_000_000,
        size_note: "a test bound".into(),
        shape: fixture_shape("alexnet_tf_w8.py2.npy", TF),
        licence: "test".into(),
        accuracy: None,
        preset: Preset::Caffe,
        classes: "test".into(),
        source: "test".into(),
    }
}

fn source(url: &str) -> Source {
    Source {
        url: url.to_string(),
        found_in: "test".into(),
    }
}

/// The failure of the one source of a failed fetch.
fn only_failure(result: Result<alexvgg_inference::weights::Fetched, WeightsError>) -> WeightsError {
    match result {
        Err(WeightsError::Unavailable { mut tried, .. }) if tried.len() == 1 => {
            *tried.pop().unwrap().error
        }
        other => panic!("expected one failed source, got {other:?}"),
    }
}

fn cache(tag: &str) -> PathBuf {
    scratch(&format!("cache-{tag}"))
}

fn fixture_bytes(name: &str) -> Vec<u8> {
    std::fs::read(fixture(name)).unwrap()
}

fn sha256(body: &[u8]) -> String {
    Sha256::digest(body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn downloads_verify_convert_and_land_atomically() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("ok");
    let (url, _) = serve(body.clone(), vec![Reply::Whole]);
    let prefix = Checksum::Sha256Prefix(sha256(&body)[..8].to_string());
    let good = entry(&url, Some(prefix), "good.npy", TF);
    let fetched = fetch_into(&good, &dir, false).unwrap();
    assert_eq!(std::fs::read(&fetched.original).unwrap(), body);
    let native = fetched.native.clone().expect("converted to burnpack");
    let (_, shape, format) = load_model(
        &native,
        &TF,
        &alexvgg_inference::device::make_device(Some("cpu"))
            .unwrap()
            .1,
    )
    .unwrap();
    assert_eq!((format.name(), shape.width_divisor), ("burnpack", 8));
    // second call: served from the cache (the server takes no second connection)
    let again = fetch_into(&good, &dir, false).unwrap();
    assert_eq!(
        (&again.original, &again.native),
        (&fetched.original, &fetched.native)
    );
    assert_eq!(
        fetched.source.as_deref(),
        Some(good.sources[0].url.as_str())
    );
    assert_eq!(again.source, None, "served from the cache");
    assert_eq!(files_in(&dir), ["good.npy", "test_good_npy.bpk"]);
}

#[test]
fn a_dropped_connection_is_resumed_with_a_range_request() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let cut = body.len() / 3;
    let dir = cache("resume");
    let (url, log) = serve(body.clone(), vec![Reply::DropAfter(cut), Reply::Ranges]);
    let sha1 = {
        use sha1::Digest as _;
        sha1::Sha1::digest(&body)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let e = entry(&url, Some(Checksum::Sha1(sha1)), "w.npy", TF);
    match only_failure(fetch_into(&e, &dir, false)) {
        WeightsError::Download { reason, .. } => {
            assert!(reason.contains("resumes"), "{reason}")
        }
        other => panic!("expected a download error, got {other:?}"),
    }
    assert_eq!(files_in(&dir), ["w.npy.partial"], "only the partial file");
    assert_eq!(
        std::fs::metadata(dir.join("w.npy.partial")).unwrap().len(),
        cut as u64
    );
    let fetched = fetch_into(&e, &dir, false).unwrap();
    assert_eq!(std::fs::read(&fetched.original).unwrap(), body);
    let heads = log.lock().unwrap().clone();
    assert!(!heads[0].contains("range:"), "{}", heads[0]);
    assert!(
        heads[1].contains(&format!("range: bytes={cut}-")),
        "{}",
        heads[1]
    );
    assert_eq!(files_in(&dir), ["test_w_npy.bpk", "w.npy"]);
}

#[test]
fn corrupt_and_foreign_downloads_are_discarded() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("bad");
    // wrong checksum
    let (url, _) = serve(body.clone(), vec![Reply::Whole]);
    let bad = entry(
        &url,
        Some(Checksum::Sha256Prefix("00000000".into())),
        "bad.npy",
        TF,
    );
    match only_failure(fetch_into(&bad, &dir, false)) {
        e @ WeightsError::Checksum { .. } => {
            assert!(e.to_string().contains(&sha256(&body)), "{e}")
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    // no checksum published: a file that is no weights at all, and weights of another network
    let mut garbage = body.clone();
    garbage.truncate(body.len() / 2);
    for (served, file) in [
        (garbage, "cut.npy"),
        (fixture_bytes("vgg16_w16.npz"), "vgg.npz"),
    ] {
        let (url, _) = serve(served, vec![Reply::Whole]);
        match only_failure(fetch_into(&entry(&url, None, file, TF), &dir, false)) {
            e @ WeightsError::Structure { .. } => {
                assert!(e.to_string().contains(file), "{e}");
                if file == "vgg.npz" {
                    assert!(e.to_string().contains("looks like VGG"), "{e}");
                }
            }
            other => panic!("{file}: expected a structure error, got {other:?}"),
        }
    }
    // nothing answers
    let refused = entry("http://127.0.0.1:9", None, "refused.npy", TF);
    assert!(matches!(
        only_failure(fetch_into(&refused, &dir, false)),
        WeightsError::Download { .. }
    ));
    assert!(
        files_in(&dir).is_empty(),
        "left behind: {:?}",
        files_in(&dir)
    );
}

fn by_size(name: &str, table: &[WeightsEntry]) -> u64 {
    table.iter().find(|w| w.name == name).unwrap().size
}

#[test]
fn the_known_weights_table_is_complete() {
    let table = known();
    assert!(table.len() >= 6);
    let mut names: Vec<&str> = table.iter().map(|w| w.name.as_str()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), table.len(), "names are unique");
    for w in &table {
        assert!(!w.sources.is_empty(), "{}", w.name);
        for s in &w.sources {
            assert!(s.url.starts_with("http"), "{}: {}", w.name, s.url);
            assert!(
                !s.found_in.is_empty(),
                "{}: where {} was found",
                w.name,
                s.url
            );
        }
        assert!(
            w.sources.len() == 1 || w.has_hash() || !w.recorded_note.is_empty(),
            "{}: mirrors need a hash, or a note saying none is recorded",
            w.name
        );
        if let Some(h) = &w.recorded_sha256 {
            assert_eq!(h.len(), 64, "{}", w.name);
            if let Some(Checksum::Sha256Prefix(p)) = &w.checksum {
                assert!(h.starts_with(p.as_str()), "{}", w.name);
            }
        }
        if let Some(f) = &w.fallback {
            let other = table
                .iter()
                .find(|o| &o.name == f)
                .expect("fallback is known");
            assert_ne!(other.file, w.file, "{}", w.name);
        }
        assert!(!w.licence.is_empty() && !w.source.is_empty(), "{}", w.name);
        assert_eq!(w.classes, "imagenet-1k");
        assert!(
            w.checksum.is_some() || w.checksum_note.contains("structure"),
            "{}: a checksum, or say how it is checked",
            w.name
        );
        // downloads are capped at the file's size (or a stated upper bound of it)
        assert!(
            (100_000_000..1_000_000_000).contains(&w.size),
            "{}: size {}",
            w.name,
            w.size
        );
        assert!(
            w.size_note.starts_with("exact") || w.size_note.starts_with("an upper bound"),
            "{}: {}",
            w.name,
            w.size_note
        );
        // the published weights are the full networks
        assert_eq!(w.shape, NetworkShape::default(), "{}", w.name);
    }
    assert_eq!(by_size("alexnet_torchvision", &table), 244_408_911);
    let by_name = |n: &str| table.iter().find(|w| w.name == n).unwrap();
    assert_eq!(by_name("bvlc_alexnet").architecture, TF);
    assert_eq!(
        by_name("bvlc_alexnet_caffe").checksum,
        Some(Checksum::Sha1(
            "9116a64c0fbe4459d18f4bb6b56d647b63920377".into()
        ))
    );
    assert_eq!(by_name("vgg16_torchvision").preset, Preset::Torchvision);
}

/// Serves `connections` connections on loopback, each handed to `handle` on its own thread
/// after its request head was read; returns the base URL.
fn serve_with(
    connections: usize,
    handle: impl Fn(std::net::TcpStream) + Send + Sync + 'static,
) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(connections) {
            let mut stream = stream.unwrap();
            let handle = handle.clone();
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                handle(stream);
            });
        }
    });
    format!("http://{addr}")
}

fn options(timeout_ms: u64) -> FetchOptions {
    FetchOptions {
        progress: false,
        timeout: std::time::Duration::from_millis(timeout_ms),
    }
}

#[test]
fn a_server_that_never_answers_times_out() {
    let dir = cache("silent");
    // accepts, reads the request, and says nothing for a minute
    let url = serve_with(1, |stream| {
        std::thread::sleep(std::time::Duration::from_secs(60));
        drop(stream);
    });
    let e = entry(&url, None, "silent.npy", TF);
    let started = std::time::Instant::now();
    match only_failure(fetch_with(&e, &dir, &options(500))) {
        WeightsError::Download { reason, .. } => {
            assert!(reason.to_lowercase().contains("timeout"), "{reason}")
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    // nothing left behind, the lock included
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_download_is_stopped_at_the_entry_s_size() {
    let dir = cache("endless");
    // a server that never stops sending (no length announced)
    let url = serve_with(1, |mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
        let block = vec![7u8; 1 << 16];
        while stream.write_all(&block).is_ok() {}
    });
    let mut e = entry(&url, None, "endless.npy", TF);
    e.size = 300_000;
    match only_failure(fetch_with(&e, &dir, &options(5000))) {
        WeightsError::Download { reason, .. } => assert!(
            reason.contains("more than the 300000 bytes") && reason.contains("discarded"),
            "{reason}"
        ),
        other => panic!("expected the download to be stopped, got {other:?}"),
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    // a server announcing more than the size: refused before the body is read
    let url = serve_with(1, |mut stream| {
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000000\r\n\r\n");
        std::thread::sleep(std::time::Duration::from_secs(5));
    });
    let mut e = entry(&url, None, "announced.npy", TF);
    e.size = 300_000;
    match only_failure(fetch_with(&e, &dir, &options(5000))) {
        WeightsError::Download { reason, .. } => {
            assert!(reason.contains("announces 4000000000 bytes"), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_reduced_network_is_not_installed_as_the_known_weights() {
    let dir = cache("reduced");
    let (url, _) = serve(fixture_bytes("alexnet_tf_w8.py2.npy"), vec![Reply::Whole]);
    // the entry expects the full network, as every published entry does
    let mut e = entry(&url, None, "bvlc_alexnet.npy", TF);
    e.shape = NetworkShape::default();
    match only_failure(fetch_into(&e, &dir, false)) {
        err @ WeightsError::Structure { .. } => {
            let msg = err.to_string();
            assert!(
                msg.contains("reduced network") && msg.contains("10 classes"),
                "{msg}"
            );
        }
        other => panic!("expected a structure error, got {other:?}"),
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
    // the same file placed in the cache by hand is refused too
    std::fs::write(
        dir.join("bvlc_alexnet.npy"),
        fixture_bytes("alexnet_tf_w8.py2.npy"),
    )
    .unwrap();
    assert!(matches!(
        fetch_into(&e, &dir, false),
        Err(WeightsError::Structure { .. })
    ));
    assert_eq!(files_in(&dir), ["bvlc_alexnet.npy"], "no burnpack made");
}

#[test]
fn a_second_fetch_of_the_same_file_waits_its_turn() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("lock");
    // a live process holds the lock (this one): the fetch is refused without downloading
    let lock = dir.join("l.npy.partial.lock");
    std::fs::write(&lock, format!("{}\n", std::process::id())).unwrap();
    let refused = entry("http://127.0.0.1:9", None, "l.npy", TF);
    match fetch_into(&refused, &dir, false) {
        Err(err @ WeightsError::Busy { .. }) => {
            let msg = err.to_string();
            assert!(msg.contains(&std::process::id().to_string()), "{msg}");
        }
        other => panic!("expected the lock to be respected, got {other:?}"),
    }
    assert_eq!(files_in(&dir), ["l.npy.partial.lock"]);
    // a lock whose process is gone is taken over
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    std::fs::write(&lock, format!("{dead}\n")).unwrap();
    let (url, _) = serve(body.clone(), vec![Reply::Whole]);
    let fetched = fetch_into(&entry(&url, None, "l.npy", TF), &dir, false).unwrap();
    assert_eq!(std::fs::read(&fetched.original).unwrap(), body);
    assert_eq!(
        files_in(&dir),
        ["l.npy", "test_l_npy.bpk"],
        "the lock is gone"
    );
}

/// A test entry with several sources (no file name appended).
fn entry_from(urls: &[String], checksum: Option<Checksum>, file: &str) -> WeightsEntry {
    let mut e = entry("unused", checksum, file, TF);
    e.sources = urls.iter().map(|u| source(u)).collect();
    e
}

#[test]
fn sources_are_tried_in_order_until_one_serves_a_verified_file() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("sources");
    // first: nothing listens; second: another file (wrong checksum); third: the file
    let (wrong, wrong_log) = serve(fixture_bytes("alexnet_tf_w8.py3.npy"), vec![Reply::Whole]);
    let (good, good_log) = serve(body.clone(), vec![Reply::Whole]);
    let urls = [
        "http://127.0.0.1:9/m.npy".to_string(),
        format!("{wrong}/m.npy"),
        format!("{good}/m.npy"),
    ];
    let e = entry_from(&urls, Some(Checksum::Sha256(sha256(&body))), "m.npy");
    let fetched = fetch_into(&e, &dir, false).unwrap();
    assert_eq!(
        fetched.source.as_deref(),
        Some(urls[2].as_str()),
        "served by the third"
    );
    assert_eq!(std::fs::read(&fetched.original).unwrap(), body);
    assert_eq!(wrong_log.lock().unwrap().len(), 1, "the second was asked");
    assert_eq!(good_log.lock().unwrap().len(), 1);
    // the wrong copy left nothing behind, not even as the start of a resumed download
    assert_eq!(files_in(&dir), ["m.npy", "test_m_npy.bpk"]);
}

#[test]
fn every_failed_source_is_listed_with_how_to_proceed() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("all-fail");
    let (wrong, _) = serve(fixture_bytes("vgg16_w16.npz"), vec![Reply::Whole]);
    let urls = [
        "http://127.0.0.1:9/f.npy".to_string(),
        format!("{wrong}/f.npy"),
        "http://127.0.0.1:1/f.npy".to_string(),
    ];
    let e = entry_from(&urls, Some(Checksum::Sha256(sha256(&body))), "f.npy");
    let err = fetch_into(&e, &dir, false).unwrap_err();
    let WeightsError::Unavailable { tried, .. } = &err else {
        panic!("expected every source to fail, got {err:?}")
    };
    assert_eq!(tried.len(), 3);
    assert!(matches!(*tried[0].error, WeightsError::Download { .. }));
    assert!(matches!(*tried[1].error, WeightsError::Checksum { .. }));
    assert!(matches!(*tried[2].error, WeightsError::Download { .. }));
    let msg = err.to_string();
    for (i, url) in urls.iter().enumerate() {
        assert!(msg.contains(&format!("{}. {url}", i + 1)), "{msg}");
    }
    for hint in [
        "--weights PATH",
        "ALEXVGG_MIRROR",
        &dir.join("f.npy").display().to_string(),
    ] {
        assert!(msg.contains(hint), "{hint}: {msg}");
    }
    assert!(files_in(&dir).is_empty(), "{:?}", files_in(&dir));
}

#[test]
fn a_mirror_copy_of_a_file_without_any_hash_is_refused_unread() {
    let body = fixture_bytes("alexnet_tf_w8.py2.npy");
    let dir = cache("unhashed");
    let (mirror, log) = serve(body.clone(), vec![Reply::Whole]);
    let urls = [
        "http://127.0.0.1:9/u.npy".to_string(),
        format!("{mirror}/u.npy"),
    ];
    // no checksum published or recorded: only the original host is trusted on structure
    let mut e = entry_from(&urls, None, "u.npy");
    let err = fetch_into(&e, &dir, false).unwrap_err();
    match &err {
        WeightsError::Unavailable { tried, .. } => {
            assert!(matches!(*tried[1].error, WeightsError::Unverifiable { .. }))
        }
        other => panic!("expected the mirror to be refused, got {other:?}"),
    }
    assert!(err.to_string().contains("cannot be verified"), "{err}");
    assert!(
        log.lock().unwrap().is_empty(),
        "the mirror was not even asked"
    );
    // with a recorded SHA-256 the same mirror serves it
    e.recorded_sha256 = Some(sha256(&body));
    let fetched = fetch_into(&e, &dir, false).unwrap();
    assert_eq!(fetched.source.as_deref(), Some(urls[1].as_str()));
    // and a copy that does not match the recorded hash is refused like a wrong checksum
    let dir = cache("recorded-mismatch");
    let (other, _) = serve(fixture_bytes("alexnet_tf_w8.py3.npy"), vec![Reply::Whole]);
    let mut e = entry_from(&[format!("{other}/r.npy")], None, "r.npy");
    e.recorded_sha256 = Some(sha256(&body));
    match only_failure(fetch_into(&e, &dir, false)) {
        err @ WeightsError::Checksum { .. } => {
            assert!(err.to_string().contains("recorded SHA-256"), "{err}")
        }
        other => panic!("expected a recorded-hash mismatch, got {other:?}"),
    }
}

#[test]
fn the_note_s_alexnet_falls_back_to_the_caffe_release_with_identical_tensors() {
    let caffemodel = fixture_bytes("alexnet_tf_w8.caffemodel");
    let dir = cache("fallback");
    let (url, _) = serve(caffemodel.clone(), vec![Reply::Whole]);
    // the .npy: nothing answers; the Caffe file: served and verified by its SHA-256
    let mut npy = entry_from(
        &["http://127.0.0.1:9/note.npy".to_string()],
        None,
        "note.npy",
    );
    npy.name = "note".into();
    npy.fallback = Some("note_caffe".into());
    let mut caffe = entry(
        &url,
        Some(Checksum::Sha256(sha256(&caffemodel))),
        "note.caffemodel",
        Architecture::AlexNet(AlexNetVariant::Caffe),
    );
    caffe.name = "note_caffe".into();
    let table = [npy.clone(), caffe];
    let options = options(5000);
    let fetched = fetch_in_table(&npy, &table, &dir, &options).unwrap();
    assert_eq!(fetched.via.as_deref(), Some("note_caffe"));
    assert_eq!(fetched.original, dir.join("note.caffemodel"));
    let native = fetched.native.clone().unwrap();
    assert_eq!(
        native,
        dir.join("note.bpk"),
        "the .npy entry's own burnpack"
    );
    // the burnpack holds exactly the tensors the .npy would have given
    let device = alexvgg_inference::device::make_device(Some("cpu"))
        .unwrap()
        .1;
    let tensors = |path: &Path| {
        let (model, _, _) = load_model(path, &TF, &device).unwrap();
        alexvgg_import::module_tensors(&model).unwrap()
    };
    let from_npy = tensors(&fixture("alexnet_tf_w8.py2.npy"));
    assert_eq!(from_npy.len(), 16);
    assert_eq!(tensors(&native), from_npy);
    // the next call finds it in the cache (nothing listens any more)
    let again = fetch_in_table(&npy, &table, &dir, &options).unwrap();
    assert_eq!(
        (again.via, again.native),
        (Some("note_caffe".into()), Some(native))
    );
    // when the fallback fails too, the error lists both entries' sources
    let dir = cache("fallback-fails");
    let mut table = table;
    table[1].sources = vec![source("http://127.0.0.1:1/note.caffemodel")];
    let err = fetch_in_table(&npy, &table, &dir, &options).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("1. http://127.0.0.1:9/note.npy")
            && msg.contains("2. http://127.0.0.1:1/note.caffemodel"),
        "{msg}"
    );
}
