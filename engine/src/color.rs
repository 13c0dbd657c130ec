//! Keeping the content's colours (`original_colors`, neural-style's
//! `-original_colors`): the pastiche's luminance with the content's chroma, in
//! YUV (BT.601, the matrix neural-style's `image.rgb2yuv` uses).

use tch::{Kind, Tensor};

use crate::error::Result;

/// Rows Y, U, V of the RGB to YUV map.
const RGB_TO_YUV: [f32; 9] = [
    0.299, 0.587, 0.114, //
    -0.14713, -0.28886, 0.436, //
    0.615, -0.51499, -0.10001,
];

fn rgb_to_yuv_matrix(image: &Tensor) -> Result<Tensor> {
    Ok(Tensor::f_from_slice(&RGB_TO_YUV)?
        .f_view([3, 3])?
        .f_to_device(image.device())?)
}

/// `[N, 3, H, W]` RGB to YUV.
pub fn rgb_to_yuv(image: &Tensor) -> Result<Tensor> {
    let matrix = rgb_to_yuv_matrix(image)?;
    Ok(Tensor::f_einsum(
        "ij,njhw->nihw",
        &[&matrix, image],
        None::<i64>,
    )?)
}

/// `[N, 3, H, W]` YUV to RGB: the exact inverse of [`rgb_to_yuv`].
pub fn yuv_to_rgb(image: &Tensor) -> Result<Tensor> {
    let inverse = rgb_to_yuv_matrix(image)?
        .f_to_kind(Kind::Double)?
        .f_inverse()?
        .f_to_kind(Kind::Float)?;
    Ok(Tensor::f_einsum(
        "ij,njhw->nihw",
        &[&inverse, image],
        None::<i64>,
    )?)
}

/// The pastiche's luminance (Y) with the content's chroma (U, V), clamped to
/// [0, 1]: both `[N, 3, H, W]` RGB of one size.
pub fn keep_content_colors(pastiche: &Tensor, content: &Tensor) -> Result<Tensor> {
    let luminance = rgb_to_yuv(pastiche)?.f_narrow(1, 0, 1)?;
    let chroma = rgb_to_yuv(content)?.f_narrow(1, 1, 2)?;
    Ok(yuv_to_rgb(&Tensor::f_cat(&[luminance, chroma], 1)?)?.f_clamp(0.0, 1.0)?)
}
