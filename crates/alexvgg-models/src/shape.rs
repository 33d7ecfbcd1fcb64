//! Pure output-size arithmetic for convolution and pooling windows.
//!
//! These are the study note's formulas (section 1.1 of the digest) plus the Caffe/PyTorch
//! explicit-padding rule, written once so that the layer tables, the CLI's `layers` command and
//! the tests all agree with what the modules really compute.

use burn::nn::PaddingConfig2d;

/// How a window (convolution kernel or pooling window) is padded along one axis pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pad {
    /// TensorFlow `padding="SAME"`: `out = ceil(in / stride)`; the total padding is split with
    /// the smaller half before (top/left) and the larger half after (bottom/right).
    Same,
    /// TensorFlow `padding="VALID"`: no padding, `out = ceil((in - k + 1) / stride)`.
    Valid,
    /// Caffe/PyTorch explicit symmetric padding `p` on every side.
    Explicit(usize),
}

impl Pad {
    /// The burn padding configuration that computes the same thing.
    pub fn to_burn(self) -> PaddingConfig2d {
        match self {
            Pad::Same => PaddingConfig2d::Same,
            Pad::Valid => PaddingConfig2d::Valid,
            Pad::Explicit(p) => PaddingConfig2d::Explicit(p, p, p, p),
        }
    }

    /// Reads back a burn padding configuration as `(before, after)` for an input of `input`
    /// elements, a window of `kernel` and a stride of `stride`, along the height axis (`axis = 0`)
    /// or the width axis (`axis = 1`).
    pub fn burn_pair(
        padding: &PaddingConfig2d,
        axis: usize,
        input: usize,
        kernel: usize,
        stride: usize,
    ) -> (usize, usize) {
        match padding {
            PaddingConfig2d::Same => same_padding(input, kernel, stride),
            PaddingConfig2d::Valid => (0, 0),
            PaddingConfig2d::Explicit(top, left, bottom, right) => {
                if axis == 0 {
                    (*top, *bottom)
                } else {
                    (*left, *right)
                }
            }
        }
    }
}

/// TensorFlow SAME padding `(before, after)` for one axis.
///
/// Total padding is `max((out - 1) * stride + kernel - input, 0)` with `out = ceil(input/stride)`;
/// the extra pixel of an odd total goes after. 227 with k=11, s=4 gives (4, 4); 224 gives (3, 4).
pub fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Output size of a window along one axis, or `None` when the window does not fit.
///
/// - `Same`: `ceil(input / stride)` (the note's formula).
/// - `Valid`: `ceil((input - kernel + 1) / stride)` (the note's formula).
/// - `Explicit(p)`: `floor((input + 2p - kernel) / stride) + 1`, or with `ceil_mode` the
///   ceiling, dropping a last window that would start inside the right padding (PyTorch's rule,
///   which agrees with Caffe's pooling for the networks here).
pub fn output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    pad: Pad,
    ceil_mode: bool,
) -> Option<usize> {
    match pad {
        Pad::Same => (input > 0).then(|| input.div_ceil(stride)),
        Pad::Valid => (input >= kernel).then(|| (input - kernel + 1).div_ceil(stride)),
        Pad::Explicit(p) => padded_output_size(input, kernel, stride, (p, p), ceil_mode),
    }
}

/// Output size for explicit `(before, after)` padding, floor or ceil mode; `None` when the
/// window does not fit.
pub fn padded_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    (before, after): (usize, usize),
    ceil_mode: bool,
) -> Option<usize> {
    let span = (input + before + after).checked_sub(kernel)?;
    let mut out = if ceil_mode {
        span.div_ceil(stride) + 1
    } else {
        span / stride + 1
    };
    if ceil_mode && (out - 1) * stride >= input + before {
        out -= 1;
    }
    Some(out)
}

/// A window (convolution kernel or pooling window) laid on an input: its padding
/// `[top, left, bottom, right]` and output size `[height, width]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Padding actually applied, `[top, left, bottom, right]`.
    pub padding: [usize; 4],
    /// Output size, `[height, width]`.
    pub output: [usize; 2],
}

/// Lays a window of burn's `padding`, `kernel` and `stride` on an `[h, w]` input, as burn's
/// convolution and pooling modules compute it; `None` when it does not fit.
pub fn window(
    padding: &PaddingConfig2d,
    [h, w]: [usize; 2],
    kernel: [usize; 2],
    stride: [usize; 2],
    ceil_mode: bool,
) -> Option<Window> {
    let (top, bottom) = Pad::burn_pair(padding, 0, h, kernel[0], stride[0]);
    let (left, right) = Pad::burn_pair(padding, 1, w, kernel[1], stride[1]);
    let oh = padded_output_size(h, kernel[0], stride[0], (top, bottom), ceil_mode)?;
    let ow = padded_output_size(w, kernel[1], stride[1], (left, right), ceil_mode)?;
    Some(Window {
        padding: [top, left, bottom, right],
        output: [oh, ow],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_padding_matches_the_note_and_tensorflow() {
        assert_eq!(same_padding(227, 11, 4), (4, 4));
        assert_eq!(same_padding(224, 11, 4), (3, 4));
        assert_eq!(same_padding(28, 5, 1), (2, 2));
        assert_eq!(same_padding(13, 3, 1), (1, 1));
        assert_eq!(same_padding(10, 2, 2), (0, 0));
        assert_eq!(same_padding(11, 2, 2), (0, 1));
    }

    #[test]
    fn output_sizes_follow_the_note() {
        assert_eq!(output_size(227, 11, 4, Pad::Same, false), Some(57));
        assert_eq!(output_size(57, 3, 2, Pad::Valid, false), Some(28));
        assert_eq!(output_size(28, 3, 2, Pad::Valid, false), Some(13));
        assert_eq!(output_size(13, 3, 2, Pad::Valid, false), Some(6));
        assert_eq!(output_size(227, 11, 4, Pad::Explicit(0), false), Some(55));
        assert_eq!(output_size(55, 3, 2, Pad::Explicit(0), true), Some(27));
        assert_eq!(output_size(224, 11, 4, Pad::Explicit(2), false), Some(55));
        assert_eq!(output_size(2, 3, 1, Pad::Valid, false), None);
    }

    #[test]
    fn ceil_mode_rounds_up_but_never_starts_in_padding() {
        // 6 -> (6-3)/2 = 1.5: floor 2, ceil 3.
        assert_eq!(padded_output_size(6, 3, 2, (0, 0), false), Some(2));
        assert_eq!(padded_output_size(6, 3, 2, (0, 0), true), Some(3));
        // PyTorch: input 5, k 2, s 2, pad 1 ceil -> 3 windows start at -1, 1, 3; a 4th would start at 5 (padding).
        assert_eq!(padded_output_size(5, 2, 2, (1, 1), true), Some(3));
    }
}
