//! Data loading: local image datasets as ordered streams of labelled samples, and their
//! preprocessing into normalised tensors.
//!
//! A [`DataSpec`] names a source (see [`DataSpec::parse`] for the text syntax used by the CLI).
//! [`DataSpec::samples`] streams [`RawSample`]s in a fixed, documented order with bounded memory:
//! archives are read by a background thread through a bounded channel, folders file by file.
//! Every sample is decoded to RGB (grayscale replicated to 3 channels, like PIL's
//! `convert("RGB")`) and then preprocessed by [`Preprocess`].
//!
//! Orders (deterministic, independent of the file system or archive order):
//! * folder-per-class trees (directories and `.tar`/`.tar.gz`): classes are the sorted names of
//!   the images' parent directories (label = index), samples sorted by (class, path), i.e.
//!   class-major then file name, as torchvision's `ImageFolder` and `cifar10_test_order.txt`;
//! * Tiny-ImageNet val/test: sorted by file name (byte order); val labels from
//!   `val_annotations.txt`, as indices into the sorted `wnids.txt` (the `ImageFolder` order of
//!   the train folder); test images are unlabelled (`-1`);
//! * idx and CIFAR binary files: file order; image lists: line order.
//!
//! One file per format: folder trees (`folder.rs`), archives (`tar.rs`), idx (`idx.rs`), CIFAR
//! binary batches (`cifar_bin.rs`), Tiny-ImageNet val/test (`tiny_imagenet.rs`) and OpenOOD image
//! lists (`imglist.rs`); `spec.rs` holds [`DataSpec`], its text form and the dispatch to the
//! formats. This file holds the sample types and the helpers the formats share.

mod cifar_bin;
mod folder;
mod idx;
mod imglist;
pub mod jpeg;
pub mod npy;
pub mod preprocess;
mod spec;
mod tar;
mod tiny_imagenet;

pub use imglist::numbered_entries as imglist_entries;
pub use preprocess::{Interpolation, Preprocess};
pub use spec::DataSpec;

use crate::error::{Error, Result};
use image::RgbImage;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// A stream of samples in dataset order. Errors for single samples (unreadable file) are
/// reported in place; the stream continues after them where it can.
pub type SampleIter = Box<dyn Iterator<Item = Result<RawSample>> + Send>;

/// What to do with an image that cannot be read or decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// Stop with an error naming the file (the default).
    #[default]
    Fail,
    /// Skip the image and count it.
    Skip,
}

/// Pixels of one sample, encoded or already decoded.
#[derive(Debug, Clone)]
pub enum Pixels {
    /// An encoded image file (JPEG, PNG).
    Encoded(Vec<u8>),
    /// 8-bit grayscale, row-major.
    Gray {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// `width * height` values.
        data: Vec<u8>,
    },
    /// 8-bit RGB, row-major interleaved.
    Rgb(RgbImage),
}

/// One sample: a name (archive member or file path, unique within the dataset), a label
/// (`-1` when unknown) and its pixels.
#[derive(Debug, Clone)]
pub struct RawSample {
    /// File path or archive member name.
    pub name: String,
    /// Class index, `-1` when unlabelled.
    pub label: i64,
    /// The pixels.
    pub pixels: Pixels,
}

impl RawSample {
    /// Decodes to 8-bit RGB (grayscale and palette images are expanded to 3 channels).
    ///
    /// JPEGs go through [`jpeg::decode`] (bit-exact with Pillow's libjpeg-turbo), or through the
    /// `image` crate when `OOD_JPEG_DECODER=image` or for modes [`jpeg`] does not implement
    /// (progressive, arithmetic coding); other formats through the `image` crate.
    pub fn decode(self) -> Result<RgbImage> {
        match self.pixels {
            Pixels::Rgb(img) => Ok(img),
            Pixels::Gray {
                width,
                height,
                data,
            } => {
                let rgb: Vec<u8> = data.iter().flat_map(|&v| [v, v, v]).collect();
                RgbImage::from_raw(width, height, rgb).ok_or_else(|| Error::Data {
                    path: PathBuf::from(&self.name),
                    reason: format!("gray buffer does not hold {width}x{height} pixels"),
                })
            }
            Pixels::Encoded(bytes) => {
                if jpeg::is_jpeg(&bytes) && !image_crate_for_jpeg() {
                    match jpeg::decode(&bytes) {
                        Ok(p) => {
                            return RgbImage::from_raw(p.width, p.height, p.data).ok_or_else(
                                || Error::Data {
                                    path: PathBuf::from(&self.name),
                                    reason: "decoded JPEG buffer has the wrong size".into(),
                                },
                            );
                        }
                        Err(jpeg::JpegError::Corrupt(m)) => {
                            return Err(Error::Data {
                                path: PathBuf::from(&self.name),
                                reason: format!("cannot decode image: corrupt JPEG: {m}"),
                            });
                        }
                        // Progressive, arithmetic, CMYK...: the `image` crate below.
                        Err(jpeg::JpegError::Unsupported(_)) => {}
                    }
                }
                image::load_from_memory(&bytes)
                    .map(|img| img.to_rgb8())
                    .map_err(|e| Error::Data {
                        path: PathBuf::from(&self.name),
                        reason: format!("cannot decode image: {e}"),
                    })
            }
        }
    }
}

/// `true` when `OOD_JPEG_DECODER=image` asks for the `image` crate's JPEG decoder instead of
/// the default [`jpeg`] module (bit-exact with libjpeg-turbo / Pillow). Read once.
pub fn image_crate_for_jpeg() -> bool {
    static CHOICE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *CHOICE.get_or_init(|| {
        std::env::var("OOD_JPEG_DECODER").is_ok_and(|v| v.eq_ignore_ascii_case("image"))
    })
}

/// Lower-case hex of bytes.
pub(crate) fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// [`Error::Data`] for `path`.
fn data_err(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
    Error::Data {
        path: path.into(),
        reason: reason.into(),
    }
}

/// True for the file names the image sources read (`.jpg`, `.jpeg`, `.png`, any case).
fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// Opens a file, transparently gunzipping it when it starts with the gzip magic bytes.
fn open_maybe_gz(path: &Path) -> Result<Box<dyn Read + Send>> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(|e| Error::io(path, e))?;
    drop(f);
    let f = BufReader::new(std::fs::File::open(path).map_err(|e| Error::io(path, e))?);
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(f)))
    } else {
        Ok(Box::new(f))
    }
}
