//! Input images as people see them. Phones store a photo as the sensor read it and
//! say in its EXIF `Orientation` tag how to turn it for display; every viewer
//! does, so a render, its size and its thumbnails must too, or a portrait comes
//! out lying on its side.

use std::io::{BufRead, Seek};

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageReader, ImageResult};

/// Decodes a JPEG or PNG (told apart by its content) and turns it upright.
pub fn decode<R: BufRead + Seek>(reader: ImageReader<R>) -> ImageResult<DynamicImage> {
    let mut decoder = reader.with_guessed_format()?.into_decoder()?;
    let orientation = decoder.orientation()?;
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}

/// Width and height of the upright image, from its header alone.
pub fn dimensions<R: BufRead + Seek>(reader: ImageReader<R>) -> ImageResult<(u32, u32)> {
    let mut decoder = reader.with_guessed_format()?.into_decoder()?;
    let (width, height) = decoder.dimensions();
    Ok(if turns_sideways(decoder.orientation()?) {
        (height, width)
    } else {
        (width, height)
    })
}

/// Whether showing the image upright swaps its width and height.
fn turns_sideways(orientation: Orientation) -> bool {
    matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    )
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use image::codecs::jpeg::JpegEncoder;
    use image::{ImageEncoder, Rgb, RgbImage};

    use super::*;

    /// A TIFF-structured EXIF block (big-endian) holding only `Orientation`.
    fn exif_orientation(value: u16) -> Vec<u8> {
        let mut exif = b"MM\x00\x2a\x00\x00\x00\x08".to_vec(); // header, IFD0 at 8
        exif.extend_from_slice(&1u16.to_be_bytes()); // one entry
        exif.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        exif.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        exif.extend_from_slice(&1u32.to_be_bytes()); // count
        exif.extend_from_slice(&value.to_be_bytes());
        exif.extend_from_slice(&[0, 0]); // padding of the value field
        exif.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
        exif
    }

    /// An upright 48x32 picture: red on top, a green column on the left, blue
    /// elsewhere, so that every turn and flip shows.
    fn upright() -> RgbImage {
        RgbImage::from_fn(48, 32, |x, y| match (x, y) {
            (_, 0..8) => Rgb([230, 20, 20]),
            (0..8, _) => Rgb([20, 230, 20]),
            _ => Rgb([20, 20, 230]),
        })
    }

    /// `stored` as a JPEG whose EXIF says to apply `orientation` for display.
    fn jpeg(stored: &RgbImage, orientation: u16) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = JpegEncoder::new_with_quality(&mut bytes, 95);
        encoder
            .set_exif_metadata(exif_orientation(orientation))
            .unwrap();
        encoder
            .write_image(
                stored.as_raw(),
                stored.width(),
                stored.height(),
                image::ExtendedColorType::Rgb8,
            )
            .unwrap();
        bytes
    }

    fn assert_close(got: &RgbImage, want: &RgbImage) {
        assert_eq!(got.dimensions(), want.dimensions());
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // JPEG's loss near the colour edges; a wrong turn differs by ~200.
        assert!(worst < 60, "pixels differ by up to {worst}");
    }

    #[test]
    fn a_phone_photo_stored_sideways_reads_upright() {
        let picture = upright();
        // A camera held in portrait stores the picture turned a quarter to the
        // left and tags it 6: "turn 90 degrees clockwise to display".
        let stored = image::imageops::rotate270(&picture);
        let bytes = jpeg(&stored, 6);

        let reader = || ImageReader::new(Cursor::new(&bytes));
        assert_eq!(dimensions(reader()).unwrap(), (48, 32));
        assert_close(&decode(reader()).unwrap().to_rgb8(), &picture);
    }

    #[test]
    fn mirrored_and_upside_down_photos_read_upright() {
        let picture = upright();
        let cases = [
            (1, picture.clone()),
            (2, image::imageops::flip_horizontal(&picture)),
            (3, image::imageops::rotate180(&picture)),
            (8, image::imageops::rotate90(&picture)),
        ];
        for (orientation, stored) in cases {
            let bytes = jpeg(&stored, orientation);
            let image = decode(ImageReader::new(Cursor::new(&bytes))).unwrap();
            assert_close(&image.to_rgb8(), &picture);
        }
    }
}
