//! `metrics.jsonl`: one JSON object per line, appended and flushed as the run goes.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Result, TrainError};

/// Appends metric records to a JSONL file.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
}

impl MetricsLog {
    /// Opens `path` for appending. With `keep_through = Some(step)`, lines whose `step` is
    /// above it are dropped first (they came after the checkpoint being resumed), so the log
    /// of a resumed run reads as if it had never stopped.
    ///
    /// # Errors
    /// The file cannot be read, rewritten or opened.
    pub fn open(path: &Path, keep_through: Option<u64>) -> Result<Self> {
        if let Some(limit) = keep_through {
            if path.exists() {
                let file = File::open(path).map_err(|e| TrainError::io(path, e))?;
                let mut kept = String::new();
                for line in BufReader::new(file).lines() {
                    let line = line.map_err(|e| TrainError::io(path, e))?;
                    let step = serde_json::from_str::<Value>(&line).ok().and_then(|v| v.get("step").and_then(Value::as_u64));
                    if step.is_some_and(|s| s <= limit) {
                        kept.push_str(&line);
                        kept.push('\n');
                    }
                }
                autodidact_core::fsutil::write_atomic(path, kept.as_bytes()).map_err(|e| TrainError::io(path, e))?;
            }
        } else if path.exists() {
            std::fs::remove_file(path).map_err(|e| TrainError::io(path, e))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path).map_err(|e| TrainError::io(path, e))?;
        Ok(Self { path: path.to_path_buf(), file })
    }

    /// Appends one record and flushes it.
    ///
    /// # Errors
    /// A write failure.
    pub fn write(&mut self, record: &Map<String, Value>) -> Result<()> {
        let mut line = serde_json::to_string(record).map_err(|e| TrainError::checkpoint(&self.path, e))?;
        line.push('\n');
        self.file.write_all(line.as_bytes()).and_then(|()| self.file.flush()).map_err(|e| TrainError::io(&self.path, e))
    }
}

/// Reads all records of a metrics file (for tests and reports).
///
/// # Errors
/// Unreadable file or a line that is not JSON.
pub fn read_all(path: &Path) -> Result<Vec<Map<String, Value>>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io(path, e))?;
    text.lines()
        .map(|l| match serde_json::from_str(l) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(TrainError::checkpoint(path, format!("not a JSON object line: {l}"))),
        })
        .collect()
}
