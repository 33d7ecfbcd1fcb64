//! numpy's formats: `.npy` files (numeric arrays, and pickled object arrays such as
//! `bvlc_alexnet.npy`), `.npz` archives (`vgg16_weights.npz`), and the restricted unpickler
//! that object arrays need.
//!
//! [`read_npy`] and [`read_npz`] are all that loading weights needs (re-exported at the crate
//! root); the parsers of in-memory bytes and the unpickler's values are public for the fuzz
//! targets (`fuzz/` at the repository root) and tests.
//!
//! `dtype` (element types, byte decoding) is shared by `npy` and `pickle`; `npy` reads
//! pickles through `pickle`, which knows nothing of `.npy` files.

mod dtype;
mod npy;
mod pickle;

pub use dtype::Dtype;
pub use npy::{NpyContent, parse_npy, parse_npz, read_npy, read_npz, weight_dict};
pub use pickle::{Array, Global, MAX_DEPTH, MAX_OPS, Value, unpickle};
