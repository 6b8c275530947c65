//! Durable file writes, shared by every crate that writes run files.

use std::fs::File;
use std::io::Write;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, fsynced, then
/// renamed over the target, then the directory fsynced. A crash leaves the old file or the new
/// one, never a torn one.
///
/// # Errors
/// Any I/O failure (the temporary file is removed).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_path(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a file, or a directory so that a rename inside it is durable.
///
/// # Errors
/// The path cannot be opened or synced.
pub fn sync_path(path: &Path) -> std::io::Result<()> {
    File::open(path)?.sync_all()
}

/// Builds a directory atomically: `fill` writes into a fresh temporary sibling directory,
/// whose files are then fsynced, and which is renamed to `path` (an existing directory there
/// is moved aside first and removed after). A crash or an error leaves the old directory or
/// the complete new one, never a partial one; on error the temporary directory is removed.
///
/// # Errors
/// The error of `fill`, or an I/O failure mapped through `io_err` with the path involved.
pub fn write_dir_atomic<E>(path: &Path, fill: impl FnOnce(&Path) -> Result<(), E>, io_err: impl Fn(&Path, std::io::Error) -> E) -> Result<(), E> {
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let pid = std::process::id();
    let (tmp, old) = (parent.join(format!(".{name}.partial-{pid}")), parent.join(format!(".{name}.old-{pid}")));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        let io_err = &io_err;
        move |e| io_err(&p, e)
    };
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
    }
    std::fs::create_dir(&tmp).map_err(io(&tmp))?;
    let result = fill(&tmp).and_then(|()| {
        for entry in std::fs::read_dir(&tmp).map_err(io(&tmp))? {
            let p = entry.map_err(io(&tmp))?.path();
            if p.is_file() {
                sync_path(&p).map_err(io(&p))?;
            }
        }
        sync_path(&tmp).map_err(io(&tmp))?;
        let replacing = path.exists();
        if replacing {
            std::fs::rename(path, &old).map_err(io(path))?;
        }
        std::fs::rename(&tmp, path).map_err(io(path))?;
        sync_path(parent).map_err(io(parent))?;
        if replacing {
            std::fs::remove_dir_all(&old).map_err(io(&old))?;
        }
        Ok(())
    });
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

/// Cleans up after writes that a killed process left half done in `dir` (non-recursive):
/// temporary files of [`write_atomic`] and partial directories of [`write_dir_atomic`] are
/// removed; a directory moved aside by [`write_dir_atomic`] is put back when its replacement
/// never arrived, else removed. Returns one line per action, for the user. A missing `dir` is
/// not an error.
///
/// # Errors
/// `dir` cannot be listed, or a leftover cannot be removed or restored.
pub fn recover_interrupted_writes(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut notes = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(notes),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let file_name = entry.file_name().to_string_lossy().into_owned();
        let Some((target, kind)) = leftover(&file_name) else { continue };
        let path = entry.path();
        match kind {
            "tmp" | "partial" => {
                remove_any(&path)?;
                notes.push(format!("removed {}, left by an interrupted write", path.display()));
            }
            _ => {
                let original = dir.join(target);
                if original.exists() {
                    remove_any(&path)?;
                } else {
                    std::fs::rename(&path, &original)?;
                    sync_path(dir)?;
                    notes.push(format!("restored {} from {}, whose replacement was interrupted", original.display(), path.display()));
                }
            }
        }
    }
    Ok(notes)
}

fn remove_any(path: &Path) -> std::io::Result<()> {
    if path.is_dir() { std::fs::remove_dir_all(path) } else { std::fs::remove_file(path) }
}

/// `.{target}.{tmp|partial|old}-{pid}` → (target, kind).
fn leftover(file_name: &str) -> Option<(&str, &str)> {
    let rest = file_name.strip_prefix('.')?;
    let (target, suffix) = rest.rsplit_once('.')?;
    let (kind, pid) = suffix.split_once('-')?;
    let known = matches!(kind, "tmp" | "partial" | "old");
    (known && !target.is_empty() && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit())).then_some((target, kind))
}
