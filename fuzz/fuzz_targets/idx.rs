//! Any bytes as an IDX image file (raw, or gzip when they start with the gzip magic), and as
//! its label file: an error naming the file or an image set, never a panic.
#![no_main]

mod scratch;

use autodidact_data::images::ImageSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let images = scratch::file("images.idx", data);
    let _ = ImageSet::open_idx(&images, None);
    // A valid 2-image file with the input as its labels.
    let good = scratch::file("good.idx", &[0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 1, 7, 9]);
    let _ = ImageSet::open_idx(&good, Some(&images));
});
