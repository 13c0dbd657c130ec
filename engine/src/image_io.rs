//! Images in and out: JPEG/PNG files to `[1, 3, H, W]` tensors in [0, 1] and back.

use std::io::Write;
use std::path::Path;

use image::imageops::FilterType;
use image::{ImageReader, RgbImage};
use pastiche_spec::upright;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Kind, Tensor};

use crate::error::{EngineError, Result};

/// Width and height of an image in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub width: u32,
    pub height: u32,
}

impl Extent {
    /// This extent scaled so that its longer side is `longer` (at least 1 px each way).
    pub fn with_longer_side(self, longer: u32) -> Extent {
        let scale = f64::from(longer) / f64::from(self.width.max(self.height));
        let side = |v: u32| ((f64::from(v) * scale).round() as u32).max(1);
        Extent {
            width: side(self.width),
            height: side(self.height),
        }
    }
}

/// A `[N, 3, H, W]` image resized to `extent`: by area averaging where it
/// shrinks (PyTorch's `interpolate(mode="area")`, which does not alias), and
/// bilinearly where it grows, as the scales of a multi-scale render are made.
pub fn resize(image: &Tensor, extent: Extent) -> Result<Tensor> {
    let (_, _, height, width) = image.size4()?;
    let (to_height, to_width) = (i64::from(extent.height), i64::from(extent.width));
    if (to_height, to_width) == (height, width) {
        return Ok(image.shallow_clone());
    }
    let resized = if to_height <= height && to_width <= width {
        image.f_adaptive_avg_pool2d([to_height, to_width])?
    } else {
        image.f_upsample_bilinear2d([to_height, to_width], false, None, None)?
    };
    Ok(resized.f_clamp(0.0, 1.0)?)
}

/// Uniform noise in [0, 1] from `seed`, identical on every device.
pub fn white_noise(seed: u64, extent: Extent) -> Result<Tensor> {
    let (height, width) = (i64::from(extent.height), i64::from(extent.width));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let values: Vec<f32> = (0..3 * height * width).map(|_| rng.random()).collect();
    Ok(Tensor::f_from_slice(&values)?.f_view([1, 3, height, width])?)
}

/// Reads a JPEG or PNG (the format is sniffed from the content, not the name),
/// turned upright as its EXIF orientation says.
pub fn read_rgb(path: &Path) -> Result<RgbImage> {
    let bad = |reason: String| EngineError::Image {
        path: path.to_owned(),
        reason,
    };
    let reader = ImageReader::open(path).map_err(|e| bad(e.to_string()))?;
    let image = upright::decode(reader).map_err(|e| bad(e.to_string()))?;
    Ok(image.to_rgb8())
}

/// An image's size as shown (upright), from its header alone (nothing is decoded).
pub fn dimensions(path: &Path) -> Result<Extent> {
    let bad = |reason: String| EngineError::Image {
        path: path.to_owned(),
        reason,
    };
    let reader = ImageReader::open(path).map_err(|e| bad(e.to_string()))?;
    let (width, height) = upright::dimensions(reader).map_err(|e| bad(e.to_string()))?;
    Ok(Extent { width, height })
}

/// Reads an image and resizes it to exactly `target` (Lanczos, like a photo editor).
pub fn load_resized(path: &Path, target: impl FnOnce(Extent) -> Extent) -> Result<Tensor> {
    let image = read_rgb(path)?;
    let target = target(Extent {
        width: image.width(),
        height: image.height(),
    });
    let image = if (image.width(), image.height()) == (target.width, target.height) {
        image
    } else {
        image::imageops::resize(&image, target.width, target.height, FilterType::Lanczos3)
    };
    Ok(rgb_to_tensor(&image))
}

/// `[1, 3, H, W]` float tensor in [0, 1] on the CPU.
pub fn rgb_to_tensor(image: &RgbImage) -> Tensor {
    let (w, h) = (i64::from(image.width()), i64::from(image.height()));
    Tensor::from_slice(image.as_raw())
        .view([h, w, 3])
        .permute([2, 0, 1])
        .unsqueeze(0)
        .to_kind(Kind::Float)
        .contiguous()
        / 255.0
}

/// The inverse of [`rgb_to_tensor`]: values are clamped to [0, 1] and rounded.
pub fn tensor_to_rgb(image: &Tensor) -> Result<RgbImage> {
    let image = image.f_to_device(tch::Device::Cpu)?.f_squeeze_dim(0)?;
    let (c, h, w) = image.size3()?;
    assert_eq!(c, 3, "expected an RGB tensor");
    let bytes = (image.f_clamp(0.0, 1.0)? * 255.0)
        .f_round()?
        .f_to_kind(Kind::Uint8)?
        .f_permute([1, 2, 0])?
        .f_contiguous()?;
    let len = (h * w * 3) as usize;
    let mut raw = vec![0u8; len];
    bytes.f_copy_data(&mut raw, len)?;
    Ok(RgbImage::from_raw(w as u32, h as u32, raw).expect("buffer sized from the tensor"))
}

/// `image` encoded as a PNG file.
pub fn png_bytes(image: &Tensor) -> Result<Vec<u8>> {
    let rgb = tensor_to_rgb(image)?;
    let mut png = Vec::new();
    rgb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| EngineError::Write {
            path: "pastiche.png".into(),
            cause: std::io::Error::other(e),
        })?;
    Ok(png)
}

/// Writes `image` as a PNG, whole or not at all (see [`write_atomically`]).
pub fn save_png(image: &Tensor, path: &Path) -> Result<()> {
    write_atomically(path, &png_bytes(image)?)
}

/// Writes to a temporary file beside `path` and renames it into place, so a reader
/// (or a crash) never sees half a file. Creates missing parent directories.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let failed = |cause| EngineError::Write {
        path: path.to_owned(),
        cause,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(failed)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".pastiche-");
    // Temporary files are private (0600); the result is an ordinary file.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut file = builder.tempfile_in(dir).map_err(failed)?;
    file.write_all(bytes).map_err(failed)?;
    file.as_file().sync_all().map_err(failed)?;
    file.persist(path).map_err(|e| failed(e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longer_side_scaling_keeps_the_aspect_ratio() {
        let e = Extent {
            width: 451,
            height: 300,
        };
        assert_eq!(
            e.with_longer_side(64),
            Extent {
                width: 64,
                height: 43
            }
        );
        let tall = Extent {
            width: 300,
            height: 600,
        };
        assert_eq!(
            tall.with_longer_side(32),
            Extent {
                width: 16,
                height: 32
            }
        );
        let line = Extent {
            width: 1000,
            height: 1,
        };
        assert_eq!(line.with_longer_side(32).height, 1);
    }

    #[test]
    fn tensors_and_images_round_trip_pixel_for_pixel() {
        let mut image = RgbImage::new(5, 3);
        for (x, y, p) in image.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 50) as u8, (y * 100) as u8, (x * y * 17) as u8]);
        }
        let tensor = rgb_to_tensor(&image);
        assert_eq!(tensor.size(), [1, 3, 3, 5]);
        assert_eq!(tensor_to_rgb(&tensor).unwrap(), image);
    }

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/out.csv");
        write_atomically(&path, b"first").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o644, "readable by others, like any output");
        }
        let entries: Vec<_> = std::fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn unreadable_images_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let corrupt = dir.path().join("corrupt.jpg");
        std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 this is not a jpeg").unwrap();
        let err = read_rgb(&corrupt).unwrap_err().to_string();
        assert!(err.contains("corrupt.jpg"), "{err}");
        let err = read_rgb(&dir.path().join("missing.png"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.png"), "{err}");
    }
}
