//! Thumbnails: which size answers a request, and making one from an image's bytes.
//!
//! Sizes follow the spec's recommendation: a request is answered with the smallest of the
//! standard sizes of its method at least as large as asked (32×32 and 96×96 cropped;
//! 320×240, 640×480 and 800×600 scaled), and those are cached; a larger crop is made at the
//! asked aspect ratio (at most 800×600) on each request and not cached, so that the cache
//! holds at most five thumbnails per media item. Images are never upscaled.
//!
//! Images are decoded with bounds: the declared dimensions are read from the header first
//! and an image over [`MAX_PIXELS`] is refused before any pixel is decoded (a decompression
//! bomb), and the decoder's allocations are capped. Only PNG, JPEG, GIF and WebP are read;
//! anything else is [`ThumbnailError::NotAnImage`].

use std::io::Cursor;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// The most pixels (width × height) of an image this server thumbnails: 50 megapixels.
pub(crate) const MAX_PIXELS: u64 = 50_000_000;

/// The largest file thumbnails are made of (read whole to decode): 100 MiB. Larger: 413
/// `M_TOO_LARGE`.
pub(crate) const MAX_SOURCE_BYTES: u64 = 100 << 20;

/// The most bytes a decoder may allocate at once (the image itself included).
const MAX_DECODER_ALLOC: u64 = 512 << 20;

/// The content types thumbnails are made of.
pub(crate) const THUMBNAILED_TYPES: [&str; 4] =
    ["image/png", "image/jpeg", "image/gif", "image/webp"];

/// How a thumbnail fits the asked size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// Fills the size exactly, cutting what sticks out (the aspect ratio is the size's).
    Crop,
    /// Fits inside the size, keeping the image's aspect ratio.
    Scale,
}

impl Method {
    /// `crop` or `scale`.
    pub(crate) fn parse(text: &str) -> Option<Method> {
        match text {
            "crop" => Some(Method::Crop),
            "scale" => Some(Method::Scale),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Method::Crop => "crop",
            Method::Scale => "scale",
        }
    }
}

/// The sizes that are made and cached, smallest first within a method.
const STANDARD: [(u32, u32, Method); 5] = [
    (32, 32, Method::Crop),
    (96, 96, Method::Crop),
    (320, 240, Method::Scale),
    (640, 480, Method::Scale),
    (800, 600, Method::Scale),
];

/// The names of the thumbnails that may be cached of one item (see [`Target::name`]).
pub(crate) fn cached_names() -> impl Iterator<Item = String> {
    STANDARD
        .iter()
        .map(|&(width, height, method)| Target { width, height, method, cached: true }.name())
}

/// The largest box a thumbnail is made in.
const LARGEST: (u32, u32) = (800, 600);

/// The size and method a thumbnail is made at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Target {
    /// The box's width.
    pub(crate) width: u32,
    /// The box's height.
    pub(crate) height: u32,
    /// How the image fits the box.
    pub(crate) method: Method,
    /// Whether this is a standard size, kept once made.
    pub(crate) cached: bool,
}

impl Target {
    /// The size answering a request for `width` × `height` (each at least 1) by `method`.
    pub(crate) fn for_request(width: u32, height: u32, method: Method) -> Target {
        let standard = STANDARD
            .iter()
            .find(|(w, h, m)| *m == method && *w >= width && *h >= height)
            .map(|&(width, height, method)| Target { width, height, method, cached: true });
        if let Some(target) = standard {
            return target;
        }
        match method {
            Method::Scale => Target { width: LARGEST.0, height: LARGEST.1, method, cached: true },
            Method::Crop => {
                let (width, height) = fit_within(width, height, LARGEST.0, LARGEST.1);
                Target { width, height, method, cached: false }
            }
        }
    }

    /// The suffix naming this size among a media item's thumbnails (`96x96-crop`).
    pub(crate) fn name(&self) -> String {
        format!("{}x{}-{}", self.width, self.height, self.method.as_str())
    }
}

/// `width` × `height` shrunk (aspect kept, each side at least 1) to fit `max_w` × `max_h`;
/// unchanged when it fits.
fn fit_within(width: u32, height: u32, max_w: u32, max_h: u32) -> (u32, u32) {
    if width <= max_w && height <= max_h {
        return (width, height);
    }
    let scale = f64::min(f64::from(max_w) / f64::from(width), f64::from(max_h) / f64::from(height));
    let side = |n: u32| ((f64::from(n) * scale).round() as u32).max(1);
    (side(width).min(max_w), side(height).min(max_h))
}

/// Why no thumbnail was made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ThumbnailError {
    /// The content is not an image of a format read here.
    #[error("the content is not an image this server can thumbnail")]
    NotAnImage,
    /// The image's data is broken.
    #[error("the image could not be decoded: {0}")]
    Corrupt(String),
    /// The image is larger than [`MAX_PIXELS`] (or its decoder needs more memory than allowed).
    #[error("the image is {0}, too large to thumbnail")]
    TooLarge(String),
}

/// A thumbnail made: its bytes and content type.
#[derive(Debug, Clone)]
pub(crate) struct Thumbnail {
    /// `image/png` or `image/jpeg`.
    pub(crate) content_type: &'static str,
    /// The encoded image.
    pub(crate) bytes: Vec<u8>,
}

/// The content type of a thumbnail's bytes (made by [`make`]: PNG or JPEG).
pub(crate) fn content_type_of(bytes: &[u8]) -> &'static str {
    if bytes.starts_with(b"\x89PNG") { "image/png" } else { "image/jpeg" }
}

/// Makes a thumbnail of the image in `bytes` at `target`: JPEG when the image is a JPEG,
/// PNG otherwise (transparency kept). CPU-bound: call it off the async runtime.
pub(crate) fn make(bytes: &[u8], target: Target) -> Result<Thumbnail, ThumbnailError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ThumbnailError::Corrupt(e.to_string()))?;
    let format = match reader.format() {
        Some(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif | ImageFormat::WebP)) => {
            f
        }
        _ => return Err(ThumbnailError::NotAnImage),
    };
    let mut reader = reader;
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(decode_error)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ThumbnailError::TooLarge(format!("{width}×{height} pixels")));
    }
    let orientation = decoder.orientation().unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(decode_error)?;
    image.apply_orientation(orientation);
    let thumbnail = resize(&image, target);
    encode(&thumbnail, format == ImageFormat::Jpeg)
}

/// Sorts a decoder's error: a limit hit is "too large", anything else is broken data.
fn decode_error(error: image::ImageError) -> ThumbnailError {
    match error {
        image::ImageError::Limits(e) => ThumbnailError::TooLarge(e.to_string()),
        image::ImageError::Unsupported(_) => ThumbnailError::NotAnImage,
        other => ThumbnailError::Corrupt(other.to_string()),
    }
}

/// `image` fitted to `target`, never enlarged.
fn resize(image: &DynamicImage, target: Target) -> DynamicImage {
    let filter = image::imageops::FilterType::Triangle;
    let (width, height) = (image.width(), image.height());
    match target.method {
        Method::Scale => {
            if width <= target.width && height <= target.height {
                image.clone()
            } else {
                image.resize(target.width, target.height, filter)
            }
        }
        Method::Crop if width >= target.width && height >= target.height => {
            image.resize_to_fill(target.width, target.height, filter)
        }
        Method::Crop => {
            // Too small to fill the box: the largest centred part of the box's aspect ratio,
            // at the image's own scale.
            let scale = f64::min(
                f64::from(width) / f64::from(target.width),
                f64::from(height) / f64::from(target.height),
            );
            let crop_w = ((f64::from(target.width) * scale).round() as u32).clamp(1, width);
            let crop_h = ((f64::from(target.height) * scale).round() as u32).clamp(1, height);
            image.crop_imm((width - crop_w) / 2, (height - crop_h) / 2, crop_w, crop_h)
        }
    }
}

/// Encodes a thumbnail as JPEG (quality 85) or PNG.
fn encode(image: &DynamicImage, jpeg: bool) -> Result<Thumbnail, ThumbnailError> {
    let mut out = Cursor::new(Vec::new());
    let written = if jpeg {
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85);
        image.to_rgb8().write_with_encoder(encoder)
    } else {
        image.write_to(&mut out, ImageFormat::Png)
    };
    written.map_err(|e| ThumbnailError::Corrupt(format!("encoding the thumbnail: {e}")))?;
    let content_type = if jpeg { "image/jpeg" } else { "image/png" };
    Ok(Thumbnail { content_type, bytes: out.into_inner() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_up_to_a_standard_size_of_their_method() {
        let t = Target::for_request(20, 20, Method::Crop);
        assert_eq!((t.width, t.height, t.cached), (32, 32, true));
        let t = Target::for_request(50, 90, Method::Crop);
        assert_eq!((t.width, t.height, t.cached), (96, 96, true));
        let t = Target::for_request(100, 100, Method::Scale);
        assert_eq!((t.width, t.height, t.method), (320, 240, Method::Scale));
        let t = Target::for_request(641, 10, Method::Scale);
        assert_eq!((t.width, t.height), (800, 600));
        let t = Target::for_request(4000, 4000, Method::Scale);
        assert_eq!((t.width, t.height, t.cached), (800, 600, true));
    }

    #[test]
    fn large_crops_keep_the_asked_aspect_and_are_not_cached() {
        let t = Target::for_request(200, 100, Method::Crop);
        assert_eq!((t.width, t.height, t.cached), (200, 100, false));
        let t = Target::for_request(1600, 400, Method::Crop);
        assert_eq!((t.width, t.height), (800, 200));
        let t = Target::for_request(u32::MAX, 1, Method::Crop);
        assert_eq!((t.width, t.height), (800, 1));
    }

    #[test]
    fn small_images_are_never_enlarged() {
        let image = DynamicImage::new_rgb8(50, 20);
        let scaled = resize(&image, Target::for_request(320, 240, Method::Scale));
        assert_eq!((scaled.width(), scaled.height()), (50, 20));
        let cropped = resize(&image, Target::for_request(96, 96, Method::Crop));
        assert_eq!((cropped.width(), cropped.height()), (20, 20));
    }

    #[test]
    fn garbage_is_not_an_image() {
        assert_eq!(
            make(b"hello, world", Target::for_request(32, 32, Method::Crop))
                .expect_err("not an image"),
            ThumbnailError::NotAnImage
        );
    }
}
