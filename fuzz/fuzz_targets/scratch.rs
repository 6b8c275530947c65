//! A per-process scratch file: the parsers under test read paths, as they do in use.

use std::path::PathBuf;

/// Writes `data` to this process's scratch file named `name` and returns its path.
pub fn file(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("autodidact-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let path = dir.join(name);
    std::fs::write(&path, data).expect("scratch file");
    path
}
