//! Image sets held in memory as `u8` pixels: IDX files (MNIST, Fashion-MNIST) and folders of
//! PNG/JPEG images, with or without one sub-folder per class.
//!
//! Every image of a set has one size and one channel count, so a set is a single buffer and
//! an image is a slice of it; augmentation ([`crate::augment`]) turns slices into normalized
//! views. Any disagreement (mixed sizes, a corrupt file, a header that does not match the data)
//! is an error naming the file, never a silent resize.

use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::error::{DataError, Result};

/// File extensions read by [`ImageSet::open_folder`] (case-insensitive).
pub const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Images decoded in parallel before they are appended to the set.
const DECODE_CHUNK: usize = 2048;

/// IDX magic of unsigned-byte images `[n, rows, cols]`.
const IDX_IMAGES: u32 = 0x0000_0803;
/// IDX magic of unsigned-byte labels `[n]`.
const IDX_LABELS: u32 = 0x0000_0801;

/// Images of one size and channel count, optionally labeled.
///
/// # Shapes
/// - pixels: `[len * height * width * channels]`, images contiguous, each image row-major
///   with interleaved channels (HWC), as decoders produce them.
/// - `labels`: `[len]` class indices into `classes`, or `None` for unlabeled images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSet {
    /// Image height in pixels.
    pub height: usize,
    /// Image width in pixels.
    pub width: usize,
    /// Channels per pixel: 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    pixels: Vec<u8>,
    /// Class of each image, when the source has labels.
    pub labels: Option<Vec<u32>>,
    /// Class names, indexed by label (empty when unlabeled).
    pub classes: Vec<String>,
    /// Files skipped as unreadable (`skip_corrupt`), as `file: reason`.
    pub skipped: Vec<String>,
}

impl ImageSet {
    /// A set from raw HWC pixels (synthetic data, other loaders). With labels, the classes are
    /// `"0"` to the largest label; rename them with [`ImageSet::with_class_names`].
    ///
    /// # Errors
    /// Zero dimensions, a channel count other than 1 or 3, a pixel buffer that is not a whole
    /// number of images (or holds none), or a label count different from the image count.
    pub fn from_raw(height: usize, width: usize, channels: usize, pixels: Vec<u8>, labels: Option<Vec<u32>>) -> Result<Self> {
        let image_len = height * width * channels;
        if image_len == 0 || !matches!(channels, 1 | 3) {
            return Err(DataError::Invalid(format!("images must be non-empty with 1 or 3 channels, got {height}×{width}×{channels}")));
        }
        if pixels.is_empty() || !pixels.len().is_multiple_of(image_len) {
            return Err(DataError::Invalid(format!(
                "{} pixel bytes are not a positive whole number of {height}×{width}×{channels} images",
                pixels.len()
            )));
        }
        let n = pixels.len() / image_len;
        if let Some(labels) = &labels
            && labels.len() != n
        {
            return Err(DataError::Invalid(format!("{} labels for {n} images", labels.len())));
        }
        let classes = labels.as_deref().map(numbered_classes).unwrap_or_default();
        Ok(Self { height, width, channels, pixels, labels, classes, skipped: Vec::new() })
    }

    /// Opens `path`: a directory with [`ImageSet::open_folder`], a file with
    /// [`ImageSet::open_idx`] (`labels` names the IDX label file; it must be `None` for a
    /// folder, whose labels come from its sub-folders).
    ///
    /// # Errors
    /// A missing path, a labels file given with a folder, and the errors of the readers.
    pub fn open(path: &Path, labels: Option<&Path>, skip_corrupt: bool) -> Result<Self> {
        if !path.exists() {
            return Err(DataError::image(path, "does not exist"));
        }
        if path.is_dir() {
            if let Some(labels) = labels {
                return Err(DataError::image(
                    labels,
                    format!("a labels file applies only to IDX images, but {} is a folder (its labels are its class sub-folders)", path.display()),
                ));
            }
            Self::open_folder(path, skip_corrupt)
        } else {
            Self::open_idx(path, labels)
        }
    }

    /// Reads IDX images (magic `0x00000803`: unsigned bytes `[n, rows, cols]`) and optionally
    /// IDX labels (magic `0x00000801`: unsigned bytes `[n]`), the format of MNIST and
    /// Fashion-MNIST (LeCun et al. 1998, "THE MNIST DATABASE" file-format section). Files may
    /// be raw or gzip-compressed (a `.gz` extension or the gzip magic). Classes are `"0"` to the
    /// largest label.
    ///
    /// # Errors
    /// Naming the file: a missing or unreadable file, broken gzip, a wrong magic or element
    /// type, a header whose dimensions disagree with the data length (expected and actual
    /// bytes), no images, or a label count different from the image count.
    pub fn open_idx(images: &Path, labels: Option<&Path>) -> Result<Self> {
        let mut pixels = read_maybe_gzip(images)?;
        let (dims, data) = parse_idx(images, &pixels, IDX_IMAGES, "image")?;
        let header = pixels.len() - data.len();
        let (n, height, width) = (dims[0], dims[1], dims[2]);
        if n == 0 {
            return Err(DataError::image(images, "holds no images (the header says n = 0)"));
        }
        if height == 0 || width == 0 {
            return Err(DataError::image(images, format!("images of {height}×{width} pixels are empty")));
        }
        pixels.drain(..header);
        let labels = match labels {
            None => None,
            Some(path) => {
                let bytes = read_maybe_gzip(path)?;
                let (dims, data) = parse_idx(path, &bytes, IDX_LABELS, "label")?;
                if dims[0] != n {
                    return Err(DataError::image(path, format!("holds {} labels but {} holds {n} images", dims[0], images.display())));
                }
                Some(data.iter().map(|&l| u32::from(l)).collect::<Vec<u32>>())
            }
        };
        let classes = labels.as_deref().map(numbered_classes).unwrap_or_default();
        Ok(Self { height, width, channels: 1, pixels, labels, classes, skipped: Vec::new() })
    }

    /// Reads every PNG or JPEG image under `dir` (recursively, in sorted path order; hidden
    /// files and folders are ignored), decoding on worker threads.
    ///
    /// - If `dir` holds image files directly, all images are one unlabeled set.
    /// - Otherwise each sub-folder that holds images (at any depth) is a class, named after the
    ///   sub-folder; classes are sorted by name and labels index them.
    ///
    /// Grayscale images stay one channel and colour images become RGB; an alpha channel is
    /// dropped (RGBA → RGB, gray+alpha → gray). With `skip_corrupt`, images that fail to decode
    /// are left out and listed in [`ImageSet::skipped`] instead of failing the whole set.
    ///
    /// # Errors
    /// Naming the file(s): a missing folder, no images found, a corrupt or truncated image
    /// (without `skip_corrupt`), images of different sizes or channel counts.
    pub fn open_folder(dir: &Path, skip_corrupt: bool) -> Result<Self> {
        if !dir.is_dir() {
            let why = if dir.exists() { "is not a folder" } else { "does not exist" };
            return Err(DataError::image(dir, why));
        }
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| visible(p))
            .collect();
        // (path, class) in the order the set will hold them.
        let mut files: Vec<(PathBuf, Option<u32>)> = Vec::new();
        let mut classes = Vec::new();
        let loose = entries.iter().any(|p| p.is_file() && is_image(p));
        if loose {
            files.extend(images_under(dir).into_iter().map(|p| (p, None)));
        } else {
            let mut class_dirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
            class_dirs.sort();
            for class_dir in class_dirs {
                let found = images_under(class_dir);
                if found.is_empty() {
                    continue;
                }
                let label = classes.len() as u32;
                classes.push(class_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
                files.extend(found.into_iter().map(|p| (p, Some(label))));
            }
        }
        if files.is_empty() {
            return Err(DataError::image(dir, format!("no images found (looked for {} files, recursively)", IMAGE_EXTENSIONS.join(", "))));
        }

        let mut set = Self { height: 0, width: 0, channels: 0, pixels: Vec::new(), labels: None, classes, skipped: Vec::new() };
        let mut labels = Vec::new();
        let mut first: Option<&Path> = None;
        // Decode in parallel, a chunk at a time so that at most one chunk of decoded images
        // exists beside the set; `collect` keeps the sorted order, so errors and skips are
        // reported for the first bad file whatever the thread timing.
        let decoded = files.chunks(DECODE_CHUNK).flat_map(|chunk| chunk.par_iter().map(|(path, _)| decode(path)).collect::<Vec<_>>());
        for ((path, label), image) in files.iter().zip(decoded) {
            let image = match image {
                Ok(image) => image,
                Err(reason) if skip_corrupt => {
                    set.skipped.push(format!("{}: {reason}", path.display()));
                    continue;
                }
                Err(reason) => {
                    return Err(DataError::image(path, format!("cannot decode image: {reason} (pass skip_corrupt to leave such files out)")));
                }
            };
            match first {
                None => {
                    (set.height, set.width, set.channels) = (image.height, image.width, image.channels);
                    set.pixels.reserve(files.len() * image.pixels.len());
                    first = Some(path);
                }
                Some(first) => {
                    if (image.height, image.width) != (set.height, set.width) {
                        return Err(DataError::Invalid(format!(
                            "{} is {}×{} but {} is {}×{}: all images of a set must have one size (resize them first)",
                            first.display(),
                            set.height,
                            set.width,
                            path.display(),
                            image.height,
                            image.width
                        )));
                    }
                    if image.channels != set.channels {
                        return Err(DataError::Invalid(format!(
                            "{} has {} but {} has {}: all images of a set must be grayscale or all colour",
                            first.display(),
                            channel_words(set.channels),
                            path.display(),
                            channel_words(image.channels)
                        )));
                    }
                }
            }
            set.pixels.extend_from_slice(&image.pixels);
            if let Some(label) = label {
                labels.push(*label);
            }
        }
        if first.is_none() {
            return Err(DataError::image(dir, format!("none of the {} images could be decoded (first: {})", files.len(), set.skipped.join("; "))));
        }
        if !set.classes.is_empty() {
            set.labels = Some(labels);
        }
        Ok(set)
    }

    /// Renames the classes (e.g. Fashion-MNIST's `"T-shirt/top"`, … for IDX labels `0..10`).
    ///
    /// # Errors
    /// An unlabeled set, fewer names than classes, or duplicate names.
    pub fn with_class_names(mut self, names: Vec<String>) -> Result<Self> {
        if self.labels.is_none() {
            return Err(DataError::Invalid("class names given for an unlabeled image set".into()));
        }
        if names.len() < self.classes.len() {
            return Err(DataError::Invalid(format!(
                "{} class names for {} classes (labels 0..={}): every label needs a name",
                names.len(),
                self.classes.len(),
                self.classes.len().saturating_sub(1)
            )));
        }
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(DataError::Invalid(format!("class name {:?} appears twice", w[0])));
        }
        self.classes = names;
        Ok(self)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len() / self.image_len().max(1)
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image (`height * width * channels`).
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Image `i`, HWC.
    ///
    /// # Panics
    /// `i >= len()`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// All pixels, images contiguous, each HWC.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The class of image `i`, when labeled.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.as_ref().map(|l| l[i])
    }

    /// The images `indices` (in that order, repeats allowed) as a new set with the same
    /// classes and skip list.
    ///
    /// # Panics
    /// An index `>= len()`.
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut pixels = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        ImageSet {
            height: self.height,
            width: self.width,
            channels: self.channels,
            pixels,
            labels: self.labels.as_ref().map(|l| indices.iter().map(|&i| l[i]).collect()),
            classes: self.classes.clone(),
            skipped: self.skipped.clone(),
        }
    }
}

/// `"0"` to the largest label.
fn numbered_classes(labels: &[u32]) -> Vec<String> {
    let max = labels.iter().copied().max().map_or(0, |m| m as usize + 1);
    (0..max).map(|c| c.to_string()).collect()
}

fn channel_words(channels: usize) -> &'static str {
    if channels == 1 { "1 channel (grayscale)" } else { "3 channels (colour)" }
}

fn visible(p: &Path) -> bool {
    p.file_name().is_some_and(|n| !n.to_string_lossy().starts_with('.'))
}

fn is_image(p: &Path) -> bool {
    p.extension().is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// Image files under `dir`, recursively, sorted, skipping hidden entries.
fn images_under(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || visible(e.path()))
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && is_image(e.path()))
        .map(|e| e.into_path())
        .collect();
    files.sort();
    files
}

struct Decoded {
    height: usize,
    width: usize,
    channels: usize,
    pixels: Vec<u8>,
}

/// Decodes one file to gray or RGB `u8`, alpha dropped; the error is a reason for messages.
fn decode(path: &Path) -> std::result::Result<Decoded, String> {
    let image = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .decode()
        .map_err(|e| e.to_string())?;
    let (width, height) = (image.width() as usize, image.height() as usize);
    let (channels, pixels) = if image.color().has_color() { (3, image.into_rgb8().into_raw()) } else { (1, image.into_luma8().into_raw()) };
    if width == 0 || height == 0 {
        return Err(format!("image of {height}×{width} pixels is empty"));
    }
    Ok(Decoded { height, width, channels, pixels })
}

/// The file's bytes, gunzipped when it has a `.gz` extension or starts with the gzip magic.
fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let gz_extension = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    if !gz_extension && !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| DataError::image(path, format!("not a valid gzip file: {e}")))?;
    Ok(out)
}

/// Checks an IDX header against `magic` (unsigned bytes, `magic & 0xff` dimensions) and the
/// data length against the dimensions; returns the dimensions and the data.
fn parse_idx<'a>(path: &Path, bytes: &'a [u8], magic: u32, what: &str) -> Result<(Vec<usize>, &'a [u8])> {
    let ndims = (magic & 0xff) as usize;
    let header = 4 + 4 * ndims;
    let expected_magic = format!("0x{magic:08x} (unsigned bytes, {ndims} dimension{})", if ndims == 1 { "" } else { "s" });
    let Some(found) = bytes.get(..4) else {
        return Err(DataError::image(path, format!("{} bytes, too short for an IDX header", bytes.len())));
    };
    let found = u32::from_be_bytes([found[0], found[1], found[2], found[3]]);
    if found != magic {
        let detail = if found >> 16 == 0 && found & 0xff == magic & 0xff {
            format!("element type 0x{:02x} is not supported, only unsigned bytes (0x08)", (found >> 8) & 0xff)
        } else {
            "wrong magic number".to_string()
        };
        return Err(DataError::image(path, format!("not an IDX {what} file: magic 0x{found:08x}, expected {expected_magic}: {detail}")));
    }
    if bytes.len() < header {
        return Err(DataError::image(path, format!("{} bytes, too short for the {header}-byte IDX {what} header", bytes.len())));
    }
    let dims: Vec<usize> =
        bytes[4..header].chunks_exact(4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize).collect();
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let actual = bytes.len() - header;
    let shape = dims.iter().map(usize::to_string).collect::<Vec<_>>().join("×");
    match expected {
        Some(expected) if expected == actual => Ok((dims, &bytes[header..])),
        Some(expected) => {
            let why = if actual < expected { "truncated".to_string() } else { format!("{} trailing bytes", actual - expected) };
            Err(DataError::image(
                path,
                format!("the IDX header says {shape} = {expected} bytes of {what} data but the file holds {actual} ({why})"),
            ))
        }
        None => Err(DataError::image(path, format!("the IDX header's dimensions {shape} overflow"))),
    }
}
