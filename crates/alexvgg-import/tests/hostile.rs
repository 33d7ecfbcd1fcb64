//! Hostile and broken weight files (issue 16): every case is an error naming the file (and the
//! tensor or member), never a crash, a hang or a memory bomb. The crafted files are made here.

#[path = "../../../tests/common/support.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use alexvgg_import::numpy::{MAX_DEPTH, MAX_OPS, Value, unpickle};
use alexvgg_import::{
    ImportError, TensorMap, convert, load_model, parse_caffemodel, read_for, read_npz,
    read_tensors, write_tensors,
};
use alexvgg_models::{AlexNetVariant, Architecture, NetworkShape, VggDepth};
use burn::tensor::Device;
use support::*;

const CAFFE: Architecture = Architecture::AlexNet(AlexNetVariant::Caffe);
const VGG16: Architecture = Architecture::Vgg {
    depth: VggDepth::Vgg16,
    batch_norm: false,
};

fn cpu() -> Device {
    Device::flex()
}

/// An `.npy` (version 1) of `descr` and `shape` (numpy's text, e.g. `(2, 3)`) holding `body`.
fn npy(descr: &str, shape: &str, body: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.as_bytes());
    out.extend(body);
    out
}

/// The object `.npy` of the issue: a 0-d object array whose pickle is `pickle`.
fn object_npy(pickle: &[u8]) -> Vec<u8> {
    let header = b"{'descr': '|O', 'fortran_order': False, 'shape': (), }";
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header);
    out.extend(pickle);
    out
}

/// A zip of `members`, deflated or stored.
fn zip_of(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let method = if deflate {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        w.start_file(
            *name,
            zip::write::SimpleFileOptions::default().compression_method(method),
        )
        .unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Offsets of every `sig` in `bytes`.
fn find_all(bytes: &[u8], sig: &[u8]) -> Vec<usize> {
    bytes
        .windows(sig.len())
        .enumerate()
        .filter(|(_, w)| *w == sig)
        .map(|(i, _)| i)
        .collect()
}

/// Rewrites the uncompressed size of every member (local and central headers) to `size`.
fn set_declared_size(zip: &mut [u8], size: u32) {
    for at in find_all(zip, b"PK\x03\x04") {
        zip[at + 22..at + 26].copy_from_slice(&size.to_le_bytes());
    }
    for at in find_all(zip, b"PK\x01\x02") {
        zip[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// A safetensors file of f32 tensors.
fn safetensors_of(map: &TensorMap) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = map
        .iter()
        .map(|(k, t)| {
            let b = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (k.clone(), t.shape.clone(), b)
        })
        .collect();
    let views = bytes.iter().map(|(k, shape, b)| {
        (
            k.clone(),
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), b)
                .unwrap(),
        )
    });
    safetensors::serialize(views, None).unwrap()
}

fn no_control_chars(msg: &str) {
    assert!(
        !msg.chars().any(|c| c.is_control() && c != '\n'),
        "raw control characters in: {msg:?}"
    );
}

// ---- item 2: the pickle reader -------------------------------------------------------------

#[test]
fn deeply_nested_tuples_are_refused_not_a_stack_overflow() {
    // the issue's file: `N` wrapped in 1,000,000 one-tuples, inside an object .npy
    let mut pickle = b"\x80\x02N".to_vec();
    pickle.extend(std::iter::repeat_n(0x85u8, 1_000_000));
    pickle.push(b'.');
    let dir = scratch("hostile-nested");
    let path = write(&dir, "nested.npy", &object_npy(&pickle));
    let err = alexvgg_import::read_npy(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("nested deeper than 1000 levels") && msg.contains("nested.npy"),
        "{msg}"
    );
    let err = load_model(&path, &CAFFE, &cpu()).unwrap_err();
    assert!(err.to_string().contains("nested deeper"), "{err}");
    // the limit itself is allowed, one more is not
    for (levels, ok) in [(MAX_DEPTH, true), (MAX_DEPTH + 1, false)] {
        let mut pickle = b"\x80\x02N".to_vec();
        pickle.extend(std::iter::repeat_n(0x85u8, levels));
        pickle.push(b'.');
        let got = unpickle(&pickle, "t.npy");
        assert_eq!(got.is_ok(), ok, "{levels} levels: {got:?}");
    }
}

#[test]
fn nested_lists_built_by_appends_stop_at_the_depth_limit() {
    // 100k empty lists, then 100k APPENDs: each list into the one below it (a chain 100k deep,
    // and a quadratic cycle check before)
    let mut pickle = b"\x80\x02".to_vec();
    pickle.extend(std::iter::repeat_n(b']', 100_000));
    pickle.extend(std::iter::repeat_n(b'a', 100_000));
    pickle.push(b'.');
    let err = unpickle(&pickle, "chain.npy").unwrap_err();
    assert!(err.to_string().contains("nested deeper than 1000"), "{err}");
    // dicts nest the same way
    let mut pickle = b"\x80\x02".to_vec();
    for _ in 0..1999 {
        pickle.extend(b"}K\x01");
    }
    pickle.push(b'}');
    pickle.extend(std::iter::repeat_n(b's', 1999));
    pickle.push(b'.');
    let err = unpickle(&pickle, "dicts.npy").unwrap_err();
    assert!(err.to_string().contains("nested deeper than 1000"), "{err}");
}

#[test]
fn fan_out_through_the_memo_is_linear() {
    // a list of 100k items, memoised, then stored into 100k fresh lists (each store walked the
    // whole shared list to look for a cycle before: 10^10 steps); all gathered into one list
    let mut full = b"\x80\x02(]q\x00(".to_vec();
    full.extend(std::iter::repeat_n(b'N', 100_000));
    full.push(b'e');
    for _ in 0..100_000 {
        full.extend(b"]h\x00a");
    }
    full.extend(b"l.");
    let value = unpickle(&full, "fan.npy").unwrap();
    let Value::List(items) = value else {
        panic!("expected a list, got {value:?}");
    };
    let items = items.borrow();
    assert_eq!(items.len(), 100_001);
    let Value::List(last) = &items[100_000] else {
        panic!("expected lists");
    };
    let Value::List(shared) = &last.borrow()[0] else {
        panic!("expected the shared list");
    };
    assert_eq!(shared.borrow().len(), 100_000);
}

#[test]
fn the_opcode_budget_bounds_memory() {
    // `]` x 30 million would build 30 million lists (3.3 GB); the reader stops at MAX_OPS
    let mut pickle = b"\x80\x02".to_vec();
    pickle.extend(std::iter::repeat_n(b']', MAX_OPS + 1));
    pickle.push(b'.');
    let err = unpickle(&pickle, "lists.npy").unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("more than {MAX_OPS} opcodes")),
        "{err}"
    );
    // a long stream of small values within the budget is fine
    let mut pickle = b"\x80\x02(".to_vec();
    pickle.extend(std::iter::repeat_n(b'N', 100_000));
    pickle.extend(b"l.");
    assert!(unpickle(&pickle, "nones.npy").is_ok());
}

#[test]
fn indirect_cycles_are_refused() {
    // L0 = []; L1 = [L0]; L0.append(L1): a cycle through another list
    let err = unpickle(b"\x80\x02]q\x00]h\x00aa.", "cycle.npy").unwrap_err();
    assert!(err.to_string().contains("recursive containers"), "{err}");
    // through a tuple: L0 = []; T = (L0,); L0.append(T)
    let err = unpickle(b"\x80\x02]q\x00h\x00\x85a.", "cycle.npy").unwrap_err();
    assert!(err.to_string().contains("recursive container"), "{err}");
    // a shared (not recursive) value is fine: [L0, L0]
    assert!(unpickle(b"\x80\x02]q\x00(h\x00h\x00l.", "dag.npy").is_ok());
}

#[test]
fn one_array_for_many_layers_is_refused() {
    // a weight dict whose every layer names the same array through the memo would copy it once
    // per use
    let dir = scratch("hostile-shared");
    // _reconstruct(ndarray, (0,), b'b') then BUILD (1, (2,), dtype('f4'), False, 8 bytes)
    let array = b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b\x87R\
(K\x01K\x02\x85cnumpy\ndtype\nU\x02f4K\x00K\x01\x87R(K\x03U\x01<NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x08\x00\x00\x80?\x00\x00\x00@tb";
    let mut pickle = b"\x80\x02}(U\x05conv1".to_vec();
    pickle.extend(array);
    pickle.extend(b"q\x01h\x01\x86");
    pickle.extend(b"u.");
    let path = write(&dir, "shared.npy", &object_npy(&pickle));
    let err = alexvgg_import::read_npy(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("layer 'conv1'") && msg.contains("already used"),
        "{msg}"
    );
}

// ---- item 6: .npz members are read up to what their headers declare ---------------------------

#[test]
fn an_npz_member_is_read_no_further_than_it_declares() {
    let dir = scratch("hostile-npz");
    // a member whose .npy header declares 100 float64 (and the zip 928 bytes), followed by
    // 16 MB more data in the deflate stream
    let mut member = npy("<f8", "(100,)", &[0u8; 800]);
    let declared = member.len() as u32;
    member.extend(vec![0u8; 16 << 20]);
    let mut bytes = zip_of(&[("bomb.npy", member)], true);
    set_declared_size(&mut bytes, declared);
    let path = write(&dir, "bomb.npz", &bytes);
    let msg = read_npz(&path).unwrap_err().to_string();
    assert!(
        msg.contains("bomb.npz: member 'bomb.npy'")
            && msg.contains(&format!("more data than the {declared} bytes it declares")),
        "{msg}"
    );
    // a declared size that its compressed bytes could never hold
    set_declared_size(&mut bytes, u32::MAX - 1);
    let msg = parse_npz_err(&bytes);
    assert!(
        msg.contains("member 'bomb.npy'") && msg.contains("compressed bytes can hold"),
        "{msg}"
    );
    // an .npy header asking for more than the member holds
    let small = zip_of(
        &[("big.npy", npy("<f4", "(1000000000,)", &[0u8; 64]))],
        true,
    );
    let msg = parse_npz_err(&small);
    assert!(
        msg.contains("member 'big.npy'") && msg.contains("needs 4000000000 bytes"),
        "{msg}"
    );
    // members of every dtype are bounded: object arrays and unknown dtypes are refused before
    // any of their data is read
    for (descr, what) in [("|O", "object array"), ("<i4", "dtype '<i4'")] {
        let mut member = npy(descr, "(2,)", &[0u8; 8]);
        member.extend(vec![0u8; 1 << 20]);
        let mut z = zip_of(&[("odd.npy", member)], true);
        set_declared_size(&mut z, 200);
        let msg = parse_npz_err(&z);
        assert!(
            msg.contains("member 'odd.npy'") && msg.contains(what),
            "{msg}"
        );
    }
    // honest members of every float type still read (float16, big-endian float64)
    let half: Vec<u8> = [1.0f32, -2.0]
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect();
    let big: Vec<u8> = [3.0f64, 4.5].iter().flat_map(|v| v.to_be_bytes()).collect();
    let good = zip_of(
        &[
            ("h.npy", npy("<f2", "(2,)", &half)),
            ("b.npy", npy(">f8", "(1, 2)", &big)),
        ],
        true,
    );
    let map = alexvgg_import::numpy::parse_npz(&good, "good.npz").unwrap();
    assert_eq!(map["h"].data, vec![1.0, -2.0]);
    assert_eq!(
        (map["b"].shape.clone(), map["b"].data.clone()),
        (vec![1, 2], vec![3.0, 4.5])
    );
}

fn parse_npz_err(bytes: &[u8]) -> String {
    alexvgg_import::numpy::parse_npz(bytes, "x.npz")
        .unwrap_err()
        .to_string()
}

#[test]
fn duplicate_npz_members_are_refused() {
    // the zip writer refuses duplicate names: write two, then rename the second in place
    let one = npy("<f4", "(1,)", &1f32.to_le_bytes());
    let mut bytes = zip_of(&[("w.npy", one.clone()), ("x.npy", one.clone())], false);
    for at in find_all(&bytes, b"x.npy") {
        bytes[at] = b'w';
    }
    let msg = parse_npz_err(&bytes);
    assert!(
        msg.contains("x.npz") && msg.contains("member 'w.npy' appears twice"),
        "{msg}"
    );
    // `w` and `w.npy` are the same array to numpy
    let bytes = zip_of(&[("w.npy", one.clone()), ("w", one)], false);
    let msg = parse_npz_err(&bytes);
    assert!(
        msg.contains("member 'w'") && msg.contains("array 'w'"),
        "{msg}"
    );
}

// ---- item 7: a classifier of 0 classes ------------------------------------------------------

#[test]
fn a_classifier_of_zero_classes_is_refused_at_load_and_convert() {
    let dir = scratch("hostile-fc8");
    let (_, mut map) = read_tensors(&fixture("alexnet_caffe_w8.safetensors")).unwrap();
    let fc8 = map.get_mut("fc8.weight").unwrap();
    let inputs = fc8.shape[1];
    fc8.shape = vec![0, inputs];
    fc8.data.clear();
    let bias = map.get_mut("fc8.bias").unwrap();
    bias.shape = vec![0];
    bias.data.clear();
    let path = write(&dir, "zero.safetensors", &safetensors_of(&map));
    let device = cpu();
    let err = load_model(&path, &CAFFE, &device).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("zero.safetensors") && msg.contains("fc8.weight has 0 outputs"),
        "{msg}"
    );
    let out = dir.join("zero.bpk");
    let err = convert(&path, &CAFFE, &out, &device).unwrap_err();
    assert!(
        err.to_string().contains("fc8.weight has 0 outputs"),
        "{err}"
    );
    assert!(!out.exists(), "no output after a refused conversion");
    // a burnpack written some other way is refused when loaded
    let (_, mapped) = read_for(&fixture("alexnet_caffe_w8.safetensors"), &CAFFE).unwrap();
    let mut mapped = mapped;
    let w = mapped.get_mut("fc8.weight").unwrap();
    w.shape = vec![w.shape[0], 0];
    w.data.clear();
    let b = mapped.get_mut("fc8.bias").unwrap();
    b.shape = vec![0];
    b.data.clear();
    let shape = NetworkShape {
        num_classes: 0,
        hidden: 64,
        width_divisor: 8,
    };
    write_tensors(mapped, &CAFFE, &shape, &out).unwrap();
    let err = load_model(&out, &CAFFE, &device).unwrap_err();
    assert!(
        err.to_string().contains("fc8.weight has 0 outputs"),
        "{err}"
    );
}

// ---- item 11: NaN and infinite weights ---------------------------------------------------------

#[test]
fn non_finite_weights_are_refused_naming_file_and_tensor() {
    let dir = scratch("hostile-nan");
    let device = cpu();
    let (_, mut map) = read_tensors(&fixture("alexnet_caffe_w8.safetensors")).unwrap();
    let w = map.get_mut("fc7.weight").unwrap();
    w.data[3] = f32::NAN;
    w.data[10] = f32::NEG_INFINITY;
    let path = write(&dir, "nan.safetensors", &safetensors_of(&map));
    let err = load_model(&path, &CAFFE, &device).unwrap_err();
    assert!(
        matches!(&err, ImportError::NonFinite { tensor, count: 2, index: 3, .. } if tensor == "fc7.weight"),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("nan.safetensors") && msg.contains("tensor 'fc7.weight'"),
        "{msg}"
    );
    let out = dir.join("nan.bpk");
    let err = convert(&path, &CAFFE, &out, &device).unwrap_err();
    assert!(matches!(err, ImportError::NonFinite { .. }), "{err}");
    assert!(!out.exists());
    // TensorFlow files are checked under their own names, before any layout change
    let (_, mut map) = read_tensors(&fixture("vgg16_w16.npz")).unwrap();
    map.get_mut("conv1_1_b").unwrap().data[0] = f32::INFINITY;
    let members: Vec<(String, Vec<u8>)> = map
        .iter()
        .map(|(k, t)| {
            let shape = format!(
                "({})",
                t.shape.iter().map(|d| format!("{d},")).collect::<String>()
            );
            let body: Vec<u8> = t.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            (format!("{k}.npy"), npy("<f4", &shape, &body))
        })
        .collect();
    let members: Vec<(&str, Vec<u8>)> = members
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    let path = write(&dir, "inf.npz", &zip_of(&members, true));
    let err = load_model(&path, &VGG16, &device).unwrap_err();
    assert!(err.to_string().contains("tensor 'conv1_1_b'"), "{err}");
    // and a burnpack (e.g. a checkpoint) with a NaN
    let (_, mut mapped) = read_for(&fixture("alexnet_caffe_w8.safetensors"), &CAFFE).unwrap();
    mapped.get_mut("convs.0.conv.bias").unwrap().data[0] = f32::NAN;
    let shape = NetworkShape {
        num_classes: 10,
        hidden: 64,
        width_divisor: 8,
    };
    let bpk = dir.join("nan.bpk");
    write_tensors(mapped, &CAFFE, &shape, &bpk).unwrap();
    let err = load_model(&bpk, &CAFFE, &device).unwrap_err();
    assert!(
        err.to_string().contains("tensor 'convs.0.conv.bias'"),
        "{err}"
    );
}

// ---- low: errors that name neither file nor tensor; wrong dtypes; control characters ---------

#[test]
fn layout_errors_name_the_file_and_tensor() {
    let dir = scratch("hostile-0d");
    // a 0-d conv1_1_W in an otherwise good VGG16 .npz
    let (_, map) = read_tensors(&fixture("vgg16_w16.npz")).unwrap();
    let mut members = Vec::new();
    for (k, t) in &map {
        let (shape, data) = if k == "conv1_1_W" {
            ("()".to_string(), vec![1.0f32])
        } else {
            (
                format!(
                    "({})",
                    t.shape.iter().map(|d| format!("{d},")).collect::<String>()
                ),
                t.data.clone(),
            )
        };
        let body: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
        members.push((format!("{k}.npy"), npy("<f4", &shape, &body)));
    }
    let members: Vec<(&str, Vec<u8>)> = members
        .iter()
        .map(|(k, b)| (k.as_str(), b.clone()))
        .collect();
    let path = write(&dir, "zero_d.npz", &zip_of(&members, false));
    let msg = load_model(&path, &VGG16, &cpu()).unwrap_err().to_string();
    assert!(
        msg.contains("zero_d.npz: tensor 'conv1_1_W' is corrupt")
            && msg.contains("expected 4 dimensions (HWIO), found []"),
        "{msg}"
    );
}

#[test]
fn an_integer_tensor_in_a_pth_is_named_not_missing() {
    // the legacy checkpoint's one storage type, made int32 (same element size)
    let bytes = std::fs::read(fixture("vgg11_bn_w16.legacy.pth")).unwrap();
    let at = find_all(&bytes, b"ctorch\nFloatStorage\n")[0];
    let mut changed = bytes[..at].to_vec();
    changed.extend(b"ctorch\nIntStorage\n");
    changed.extend(&bytes[at + b"ctorch\nFloatStorage\n".len()..]);
    let dir = scratch("hostile-pth");
    let path = write(&dir, "ints.pth", &changed);
    let err = read_tensors(&path).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ImportError::NotFloat { .. })
            && msg.contains("ints.pth: tensor '")
            && msg.contains("has dtype int32, expected float"),
        "{msg}"
    );
}

/// A protobuf length-delimited field.
fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![(number << 3) | 2];
    let mut n = bytes.len();
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        out.push(if n > 0 { b | 0x80 } else { b });
        if n == 0 {
            break;
        }
    }
    out.extend(bytes);
    out
}

/// A V2 caffemodel layer (field 100) with one blob of `shape` holding `values`.
fn caffe_layer(name: &[u8], shape: &[u8], values: &[f32]) -> Vec<u8> {
    let data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut blob = field(7, &field(1, shape));
    blob.extend(field(5, &data));
    let mut layer = field(1, name);
    layer.extend(field(7, &blob));
    // field 100, wire type 2: key 802 as a varint
    let mut out = vec![0xa2, 0x06];
    out.extend(&field(1, &layer)[1..]);
    out
}

#[test]
fn control_characters_from_files_are_escaped_in_errors() {
    // a blob that does not fill its shape, in a layer named with a terminal escape
    let bytes = caffe_layer(b"evil\x1b[2J\x07\n\xe2\x80\xae", &[2, 2], &[1.0, 2.0, 3.0]);
    let msg = parse_caffemodel(&bytes, "net.caffemodel")
        .unwrap_err()
        .to_string();
    no_control_chars(&msg);
    assert!(
        msg.contains(r"layer 'evil\u{1b}[2J\u{7}\n\u{202e}' weight"),
        "{msg}"
    );
    // an unexpected layer in the list of what does not fit
    let dir = scratch("hostile-escape");
    let mut bytes = caffe_layer(b"conv1", &[1], &[1.0]);
    bytes.extend(caffe_layer(b"x\x1b]0;owned\x07", &[1], &[1.0]));
    let path = write(&dir, "net.caffemodel", &bytes);
    let msg = read_for(&path, &CAFFE).unwrap_err().to_string();
    no_control_chars(&msg.replace('\n', " "));
    assert!(
        msg.contains(r"unexpected key: x\u{1b}]0;owned\u{7}.weight"),
        "{msg}"
    );
    // a pickle global
    let err = unpickle(b"\x80\x02cos\x1b[31m\nsystem\n.", "evil.npy").unwrap_err();
    let msg = err.to_string();
    no_control_chars(&msg);
    assert!(msg.contains(r"os\u{1b}[31m.system"), "{msg}");
}
