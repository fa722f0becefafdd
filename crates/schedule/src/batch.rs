//! Batch helpers: shape checks, and per-sample coefficients shaped to
//! broadcast over the other dimensions of a batch.

use tch::Tensor;

use crate::error::{Error, Result};

/// An error naming both tensors unless `a` and `b` have the same shape.
pub(crate) fn same_shape(a: &Tensor, b: &Tensor, a_name: &str, b_name: &str) -> Result<()> {
    if a.size() != b.size() {
        return Err(Error::Shape(format!(
            "{a_name} has shape {:?} but {b_name} has shape {:?}",
            a.size(),
            b.size()
        )));
    }
    Ok(())
}

/// Per-sample values as a tensor of shape `[len, 1, ..]` of `like`'s kind,
/// device and rank (`len` is 1 or the batch size), rounded once from f64.
pub fn per_sample(values: &[f64], like: &Tensor) -> Result<Tensor> {
    let mut shape = vec![values.len() as i64];
    shape.extend(std::iter::repeat_n(1, like.dim().saturating_sub(1)));
    Ok(Tensor::from_slice(values)
        .f_to_kind(like.kind())?
        .f_to_device(like.device())?
        .f_reshape(shape)?)
}
