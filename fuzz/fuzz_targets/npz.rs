//! `.npz` archives (zip container and every member's `.npy` header and data).
//!
//! Besides raw bytes, an input starting `NPZ\0` builds an archive: members of
//! `[flags: u8][name: u8][declared: u32 LE][len: u16 LE][len bytes: an RLE program (expand.rs)
//! of the member's content]`. Flags: bit 0 deflate, bit 1 write `declared` as the member's
//! uncompressed size (a lie, as in size bombs), bit 2 name it `kN` rather than `kN.npy` (the
//! same array to numpy). Names are `k0`..`k3`, so members repeat names (the zip writer refuses
//! that; they are renamed in place afterwards).
#![no_main]

use std::io::Write;

#[path = "expand.rs"]
mod expand;

/// Largest member content built (enough to exceed any small declared size).
const MEMBER_CAP: usize = 32 << 10;

struct Member {
    name: String,
    deflate: bool,
    declared: Option<u32>,
    content: Vec<u8>,
}

fn members(mut data: &[u8]) -> Vec<Member> {
    let mut out = Vec::new();
    while data.len() >= 8 && out.len() < 8 {
        let flags = data[0];
        let name = format!("k{}", data[1] % 4);
        let name = if flags & 4 != 0 {
            name
        } else {
            format!("{name}.npy")
        };
        let declared = u32::from_le_bytes([data[2], data[3], data[4], data[5]]);
        let len = (u16::from_le_bytes([data[6], data[7]]) as usize).min(data.len() - 8);
        let content = expand::run(&data[8..8 + len], MEMBER_CAP);
        data = &data[8 + len..];
        out.push(Member {
            name,
            deflate: flags & 1 != 0,
            declared: (flags & 2 != 0).then_some(declared),
            content,
        });
    }
    out
}

/// The archive of `members`: written under unique placeholder names of the same lengths, then
/// renamed and given their declared sizes in the local and central headers.
fn build(members: &[Member]) -> Option<Vec<u8>> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let placeholders: Vec<String> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            if m.name.len() == 2 {
                format!("{i}_")
            } else {
                format!("{i}_.npy")
            }
        })
        .collect();
    for (m, p) in members.iter().zip(&placeholders) {
        let method = if m.deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        w.start_file(
            p.as_str(),
            zip::write::SimpleFileOptions::default()
                .compression_method(method)
                .compression_level(Some(1)),
        )
        .ok()?;
        w.write_all(&m.content).ok()?;
    }
    let mut bytes = w.finish().ok()?.into_inner();
    // walk the central directory (no archive comment: the end record is the last 22 bytes)
    let end = bytes.len().checked_sub(22)?;
    let u16_at = |b: &[u8], at: usize| u16::from_le_bytes([b[at], b[at + 1]]) as usize;
    let u32_at =
        |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
    let mut at = u32_at(&bytes, end + 16);
    for m in members {
        if bytes.get(at..at + 4)? != b"PK\x01\x02" {
            return None;
        }
        let name_len = u16_at(&bytes, at + 28);
        let local = u32_at(&bytes, at + 42);
        let next = at + 46 + name_len + u16_at(&bytes, at + 30) + u16_at(&bytes, at + 32);
        bytes
            .get_mut(at + 46..at + 46 + name_len)?
            .copy_from_slice(m.name.as_bytes());
        bytes
            .get_mut(local + 30..local + 30 + name_len)?
            .copy_from_slice(m.name.as_bytes());
        if let Some(size) = m.declared {
            bytes[at + 24..at + 28].copy_from_slice(&size.to_le_bytes());
            bytes[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
        }
        at = next;
    }
    Some(bytes)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    match data.strip_prefix(b"NPZ\0") {
        Some(spec) => {
            if let Some(archive) = build(&members(spec)) {
                let _ = alexvgg_import::numpy::parse_npz(&archive, "fuzz");
            }
        }
        None => {
            let _ = alexvgg_import::numpy::parse_npz(data, "fuzz");
        }
    }
});
