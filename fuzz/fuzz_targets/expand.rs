//! Structured fuzz inputs. Raw mutation seldom builds a pickle nested 1000 deep or one value
//! referenced thousands of times, so an input that starts with `RLE\0` is a run-length program
//! instead: records `[count: u16 LE][len: u8][len bytes]`, each chunk appended `count` times.
//! A few bytes then reach the readers' limits (`fuzz/make_seeds.py` writes such seeds).
#![allow(dead_code)]

/// The expansion of an `RLE\0` program, at most `cap` bytes; `None` for any other input.
pub fn expand(data: &[u8], cap: usize) -> Option<Vec<u8>> {
    data.strip_prefix(b"RLE\0").map(|program| run(program, cap))
}

/// The expansion of a program without its prefix, at most `cap` bytes.
pub fn run(mut program: &[u8], cap: usize) -> Vec<u8> {
    let mut out = Vec::new();
    while program.len() >= 3 {
        let count = u16::from_le_bytes([program[0], program[1]]) as usize;
        let len = (program[2] as usize).min(program.len() - 3);
        let chunk = &program[3..3 + len];
        program = &program[3 + len..];
        if chunk.is_empty() {
            continue;
        }
        let room = (cap - out.len()) / chunk.len();
        for _ in 0..count.min(room) {
            out.extend_from_slice(chunk);
        }
    }
    out
}
