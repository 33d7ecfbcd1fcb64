//! Hostile and broken input (issue 16): image bombs refused from their headers, folders with
//! symlink loops and FIFOs walked without hanging, labels files checked against the network,
//! and a network without classes reported instead of a panic. The crafted files are made here.

#[path = "../../../tests/common/devices.rs"]
mod devices;
#[path = "../../../tests/common/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use alexvgg_import::load_model;
use alexvgg_inference::classify::{collect_images, prepare_with};
use alexvgg_inference::memory::{bytes_per_image, check_batch_within};
use alexvgg_inference::preprocess::{
    ImageError, ImageLimits, ImageWarning, Preset, jpeg_truncated, load_image_checked,
    load_image_with,
};
use alexvgg_inference::pretrained::{Pretrained, PretrainedError};
use alexvgg_inference::runner::{ConvChoice, EngineKind, Runner, RunnerError};
use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape};
use support::{fixture, scratch};

const TF: Architecture = Architecture::AlexNet(AlexNetVariant::Tf);

/// CRC-32 (ISO-HDLC), as PNG chunks carry it.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let mut body = kind.to_vec();
    body.extend(data);
    out.extend(&body);
    out.extend(crc32(&body).to_be_bytes());
}

/// A grayscale 8-bit PNG of `width` x `height` whose header is true only when `rows` holds
/// every row: the pixel data (zlib with stored blocks) is `rows` rows of zeros.
fn png(width: u32, height: u32, rows: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 0, 0, 0, 0]); // 8-bit grayscale, no interlace
    chunk(&mut out, b"IHDR", &ihdr);
    let raw = vec![0u8; (rows * (width + 1)) as usize]; // filter byte 0 + pixels, per row
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65521;
        b = (b + a) % 65521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A baseline JPEG header claiming `width` x `height` (one grey component, trivial tables),
/// followed by a few bytes of scan data: the header is valid, the image is not there.
fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8];
    let mut segment = |marker: u8, body: &[u8]| {
        out.extend([0xFF, marker]);
        out.extend(((body.len() + 2) as u16).to_be_bytes());
        out.extend(body);
    };
    let mut dqt = vec![0u8];
    dqt.extend([1u8; 64]);
    segment(0xDB, &dqt);
    let mut sof = vec![8];
    sof.extend(height.to_be_bytes());
    sof.extend(width.to_be_bytes());
    sof.extend([1, 1, 0x11, 0]);
    segment(0xC0, &sof);
    for class in [0x00u8, 0x10] {
        let mut dht = vec![class, 1];
        dht.extend([0u8; 15]);
        dht.push(0);
        segment(0xC4, &dht);
    }
    segment(0xDA, &[1, 1, 0x00, 0, 63, 0]);
    out.extend([0u8; 64]);
    out.extend([0xFF, 0xD9]);
    out
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs` (a hang).
fn within<T: Send + 'static>(secs: u64, what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("{what} did not finish within {secs} s"))
}

#[test]
fn image_bombs_are_refused_from_their_headers() {
    let dir = scratch("bombs");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        // 30,000 pixels, but 256x7,680,000 once the shorter side is scaled to 256
        ("tall.png", png(1, 30000, 30000), "aspect ratio"),
        // 69 bytes claiming 10^10 pixels
        ("huge.png", png(100_000, 100_000, 0), "more than the limit"),
        // a JPEG header claiming 65500x65500
        ("huge.jpg", jpeg(65500, 65500), "more than the limit"),
    ];
    for (name, bytes, why) in cases {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).unwrap();
        let limits = ImageLimits::default();
        let err = within(20, name, move || {
            load_image_with(&path, &limits).unwrap_err()
        });
        assert!(matches!(err, ImageError::Refused { .. }), "{name}: {err}");
        let msg = err.to_string();
        assert!(msg.contains(name) && msg.contains(why), "{name}: {msg}");
        assert!(msg.contains("--max-image-pixels"), "{name}: {msg}");
    }
    // an ordinary image passes, and a lower limit refuses it
    let cat = fixture("images").join("cat_rgb.png"); // 181x120
    assert!(load_image_with(&cat, &ImageLimits::default()).is_ok());
    let err = load_image_with(&cat, &ImageLimits::new(20_000)).unwrap_err();
    assert!(err.to_string().contains("21720 pixels"), "{err}");
    // and a limit high enough lets the tall image through to the preprocessing
    let tall = dir.join("tall.png");
    let img = load_image_with(&tall, &ImageLimits::new(2_000_000_000)).unwrap();
    assert_eq!((img.width(), img.height()), (1, 30000));
    std::fs::remove_dir_all(dir).unwrap();
}

#[cfg(unix)]
#[test]
fn symlink_loops_end_and_fifos_are_refused_unopened() {
    use std::os::unix::fs::symlink;
    let dir = scratch("loops");
    std::fs::create_dir(dir.join("sub")).unwrap();
    for name in ["a.png", "sub/b.png"] {
        std::fs::copy(fixture("images").join("cat_rgb.png"), dir.join(name)).unwrap();
    }
    // `ln -s . a; ln -s . b`, and a link back up from the sub-folder
    symlink(".", dir.join("loop_a")).unwrap();
    symlink(".", dir.join("loop_b")).unwrap();
    symlink("..", dir.join("sub/up")).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.join("pipe.png"))
        .status()
        .unwrap();
    assert!(status.success(), "mkfifo");
    let root = dir.clone();
    let files = within(20, "walking a folder with symlink loops", move || {
        collect_images(&[root])
    });
    let rel: Vec<String> = files
        .iter()
        .map(|p| p.strip_prefix(&dir).unwrap().display().to_string())
        .collect();
    assert_eq!(rel, ["a.png", "pipe.png", "sub/b.png"], "each image once");
    // the FIFO is refused without being opened (opening it would block)
    let results = within(20, "reading a FIFO", move || {
        prepare_with(&files, Preset::Caffe, 227, &ImageLimits::default())
    });
    assert!(results[0].is_ok() && results[2].is_ok());
    let err = results[1].as_ref().unwrap_err().to_string();
    assert!(err.contains("pipe.png") && err.contains("FIFO"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn labels_files_must_name_exactly_the_network_s_classes() {
    let dir = scratch("labels");
    let device = devices::cpu();
    let weights = fixture("alexnet_tf_w8.py2.npy");
    let p = Pretrained::load(Some(weights.to_str().unwrap()), TF, &device).unwrap();
    assert_eq!(p.shape.num_classes, 10);
    assert_eq!(p.labels(Some(&fixture("labels10.txt"))).unwrap().len(), 10);
    let ten_tsv: String = (0..10).map(|i| format!("{i}\tn{i}\tclass {i}\n")).collect();
    let cases = [
        (
            "empty.txt",
            String::new(),
            "names 0 classes, but the network has 10",
        ),
        (
            "three.txt",
            "a\nb\nc\n".to_string(),
            "names 3 classes, but the network has 10",
        ),
        (
            "twenty.txt",
            (0..20).map(|i| format!("c{i}\n")).collect(),
            "names 20 classes, but the network has 10",
        ),
        (
            "dup.txt",
            ten_tsv.replace("3\tn3", "2\tn3"),
            "index 2 appears twice",
        ),
        (
            "tabs.txt",
            ten_tsv.replace("4\tn4\tclass 4", "4\tclass 4"),
            "expected index<TAB>synset<TAB>label",
        ),
    ];
    for (name, text, want) in cases {
        let path = write(&dir, name, &text);
        let err = p.labels(Some(&path)).unwrap_err();
        assert!(
            matches!(
                err,
                PretrainedError::Labels { .. } | PretrainedError::LabelsCount { .. }
            ),
            "{name}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(want) && msg.contains(name), "{name}: {msg}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_network_without_classes_is_an_error_not_a_panic() {
    let device = devices::cpu();
    let shape = NetworkShape {
        num_classes: 10,
        hidden: 16,
        width_divisor: 8,
    };
    for kind in [EngineKind::Burn, EngineKind::Kernels] {
        // an fc8 with 0 outputs, as a weight file can declare it (`init` refuses the shape)
        let model = TF.init(&shape, &device).unwrap().with_classes(0, &device);
        let backend = alexvgg_inference::device::default_cpu().unwrap();
        let runner = match Runner::new(model, &device, backend, kind, ConvChoice::Auto) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{kind:?} refuses the network: {e}");
                continue;
            }
        };
        let input = vec![0f32; 2 * 3 * 227 * 227];
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runner.probabilities(input, [2, 3, 227, 227])
        }));
        match result {
            Ok(Err(RunnerError::NoClasses {
                values: 0,
                batch: 2,
            })) => {}
            Ok(Err(RunnerError::Engine(e))) if kind == EngineKind::Kernels => {
                eprintln!("the engine refuses it: {e}")
            }
            Ok(other) => panic!("{kind:?}: expected an error, got {other:?}"),
            Err(_) => panic!("{kind:?}: panicked on a network without classes"),
        }
    }
}

#[test]
fn batches_beyond_memory_are_refused_with_what_they_need() {
    let device = devices::cpu();
    let (model, _, _) = load_model(&fixture("alexnet_tf_w8.py2.npy"), &TF, &device).unwrap();
    let per_image = bytes_per_image(&model.layers([3, 227, 227]).unwrap());
    // the input alone: 3 x 227 x 227 floats, twice
    assert!(per_image >= 2 * 4 * 3 * 227 * 227, "{per_image}");
    assert!(check_batch_within(8, per_image, 1 << 30, "test").is_ok());
    let err = check_batch_within(100_000, per_image, 1 << 30, "this test allows").unwrap_err();
    assert_eq!(err.fit, (1u64 << 30) / per_image);
    let msg = err.to_string();
    assert!(
        msg.contains("a batch of 100000 images needs at least") && msg.contains("GiB"),
        "{msg}"
    );
}

#[test]
fn truncated_jpegs_are_found_by_their_missing_end_marker_and_still_decode() {
    let whole = std::fs::read(fixture("images").join("cat_exif6.jpg")).unwrap();
    assert_eq!(jpeg_truncated(&whole), Some(false));
    // padding or garbage after the end marker is allowed
    let mut padded = whole.clone();
    padded.extend_from_slice(&[0u8; 64]);
    padded.extend_from_slice(b"trailing bytes \xff\xd8");
    assert_eq!(jpeg_truncated(&padded), Some(false));
    // cut anywhere, in the headers or the scan data: truncated
    for cut in [
        4,
        30,
        whole.len() / 2,
        whole.len() * 9 / 10,
        whole.len() - 2,
        whole.len() - 1,
    ] {
        assert_eq!(jpeg_truncated(&whole[..cut]), Some(true), "cut at {cut}");
    }
    // an end marker inside a segment (an EXIF thumbnail's own) does not count
    let with_thumbnail = |body: &[u8]| {
        let mut v = vec![
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x08, 0xFF, 0xD8, 0xFF, 0xD9, 0x00, 0x00,
        ];
        v.extend_from_slice(body);
        v
    };
    assert_eq!(jpeg_truncated(&with_thumbnail(&whole[2..])), Some(false));
    let half = with_thumbnail(&whole[2..whole.len() / 2]);
    assert_eq!(jpeg_truncated(&half), Some(true));
    // other formats are not judged
    let png = std::fs::read(fixture("images").join("cat_rgb.png")).unwrap();
    assert_eq!(jpeg_truncated(&png), None);
    assert_eq!(jpeg_truncated(&[]), None);

    // loading: the cut file decodes, with the warning; the whole one without
    let dir = scratch("truncated");
    let (cut, intact) = (dir.join("cut.jpg"), dir.join("intact.jpg"));
    std::fs::write(&cut, &whole[..whole.len() * 3 / 5]).unwrap();
    std::fs::write(&intact, &whole).unwrap();
    let limits = ImageLimits::default();
    let good = load_image_checked(&intact, &limits).unwrap();
    assert!(good.warnings.is_empty(), "{:?}", good.warnings);
    let bad = load_image_checked(&cut, &limits).unwrap();
    assert_eq!(
        bad.warnings,
        [ImageWarning::Truncated {
            path: cut.display().to_string()
        }]
    );
    let msg = bad.warnings[0].to_string();
    assert!(
        msg.contains("cut.jpg looks truncated: its missing part decodes grey"),
        "{msg}"
    );
    let size = |img: &image::DynamicImage| (img.width(), img.height());
    assert_eq!(size(&bad.image), size(&good.image));
    // what the warning says: the missing part is uniform grey
    let grey = |img: &image::DynamicImage| {
        img.to_rgb8()
            .pixels()
            .filter(|p| p.0.iter().all(|&c| c.abs_diff(128) <= 2))
            .count()
    };
    let pixels = (good.image.width() * good.image.height()) as usize;
    assert!(
        grey(&bad.image) > pixels / 5,
        "{} of {pixels}",
        grey(&bad.image)
    );
    assert!(
        grey(&good.image) < pixels / 20,
        "{} of {pixels}",
        grey(&good.image)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
