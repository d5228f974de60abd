//! The AdamW step (`fused::adamw`) on plain flex tensors, updating the parameter and the moments
//! in place when nothing else holds their buffers (copy-on-write otherwise).

use super::glue::{Input, classify, contiguous, slice};
use crate::fused::adamw;
use crate::fused::inputs::{AdamWInputs, AdamWStep, Unfused};
use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor};

/// A plain f32 flex tensor whose whole buffer is its elements from the start, as `storage_mut`
/// hands it out (glue's `contiguous` also keeps views that start further in).
fn owned(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 { t } else { t.to_contiguous() }
}

/// One AdamW step; the moments start at zero when `moments` is `None`. Returns the new parameter
/// and moments, or the inputs back when any is not a plain f32 flex tensor.
pub fn adamw_step<const D: usize>(
    h: AdamWStep,
    param: Tensor<D>,
    grad: Tensor<D>,
    moments: Option<(Tensor<D>, Tensor<D>)>,
) -> Result<(Tensor<D>, Tensor<D>, Tensor<D>), Unfused<AdamWInputs<D>>> {
    let plain = |x: &Tensor<D>| match classify(x.clone()) {
        Input::Plain(t) => Some(t),
        _ => None,
    };
    let (Some(p), Some(g)) = (plain(&param), plain(&grad)) else {
        return Err(Box::new((param, grad, moments)));
    };
    let shape = p.layout().shape().clone();
    let (m, v) = match &moments {
        Some((m, v)) => match (plain(m), plain(v)) {
            (Some(m), Some(v)) => (m, v),
            _ => return Err(Box::new((param, grad, moments))),
        },
        None => {
            (FlexTensor::zeros(shape.clone(), DType::F32), FlexTensor::zeros(shape, DType::F32))
        }
    };
    // Drop the caller's handles so the buffers are ours alone and update in place.
    drop((param, grad, moments));
    let (mut p, g, mut m, mut v) = (owned(p), contiguous(&g), owned(m), owned(v));
    adamw::step(
        h,
        p.storage_mut::<f32>(),
        slice(&g),
        m.storage_mut::<f32>(),
        v.storage_mut::<f32>(),
    );
    let out = |t: FlexTensor| Tensor::from_primitive::<Flex>(t);
    Ok((out(p), out(m), out(v)))
}
