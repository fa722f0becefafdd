//! Memory formats of 4-d tensors: contiguous NCHW (libtorch's default) and
//! channels-last (NHWC in memory, still indexed `[N, C, H, W]`), which
//! oneDNN's CPU convolutions and cuDNN's tensor-core kernels prefer.
//! Convolutions keep the format of their input, so a model whose conv
//! weights and input are channels-last runs channels-last throughout.

use tch::Tensor;

/// `t` with channels-last strides (a copy unless it already has them);
/// tensors that are not 4-d come back as they are (shared).
pub fn to_channels_last(t: &Tensor) -> Tensor {
    if t.dim() != 4 || is_channels_last(t) {
        return t.shallow_clone();
    }
    // NCHW -> NHWC in memory, then viewed back as NCHW.
    t.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

/// Whether a 4-d tensor is laid out channels-last: strides, outermost to
/// innermost, N > H > W > C (sizes of one are ignored, as libtorch does).
pub fn is_channels_last(t: &Tensor) -> bool {
    if t.dim() != 4 {
        return false;
    }
    let (size, stride) = (t.size(), t.stride());
    let mut expected = 1;
    for d in [1usize, 3, 2, 0] {
        if size[d] != 1 && stride[d] != expected {
            return false;
        }
        expected *= size[d];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn channels_last_keeps_values_and_changes_strides() {
        let t = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        assert!(!is_channels_last(&t));
        let cl = to_channels_last(&t);
        assert!(is_channels_last(&cl));
        assert_eq!(cl.stride(), [60, 1, 15, 3]);
        assert!(cl.equal(&t));
        // Contiguous again: the default layout, same values.
        let back = cl.contiguous();
        assert_eq!(back.stride(), [60, 20, 5, 1]);
        assert!(back.equal(&t));
        // 2-d tensors are left alone.
        let m = Tensor::ones([3, 3], (Kind::Float, Device::Cpu));
        assert_eq!(to_channels_last(&m).stride(), [3, 1]);
    }

    #[test]
    fn convolution_keeps_channels_last() {
        let x = to_channels_last(&Tensor::randn([1, 4, 6, 6], (Kind::Float, Device::Cpu)));
        let w = to_channels_last(&Tensor::randn([8, 4, 3, 3], (Kind::Float, Device::Cpu)));
        let y = x.conv2d(&w, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert!(is_channels_last(&y));
        let reference =
            x.contiguous()
                .conv2d(&w.contiguous(), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        assert!(y.allclose(&reference, 1e-5, 1e-5, false));
    }
}
