//! Checkpoints: complete or absent.
//!
//! A checkpoint is a directory `checkpoints/step-NNNNNNNN/` holding
//! - `model.safetensors`: the objective's parameters (encoder + head),
//! - `optimizer.bpk`: AdamW moments (burnpack, keyed by path-derived parameter ids),
//! - `state.json`: step, counters and evaluation history ([`TrainState`]),
//! - `manifest.json`: size and SHA-256 of each file above.
//!
//! It is written under a temporary name, every file fsynced, then renamed into place and the
//! parent fsynced. On load, the manifest is checked; a damaged checkpoint is skipped with a
//! warning in favour of the previous one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Result, TrainError};

/// Name of the best-model checkpoint of an early-stopped run.
const BEST_DIR: &str = "best";
/// The weights file of a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.bpk";
const STATE_FILE: &str = "state.json";
const MANIFEST_FILE: &str = "manifest.json";

/// Everything besides tensors needed to continue a run exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Optimizer steps completed. The data position and every random stream derive from it.
    pub step: u64,
    /// Examples (sequences, images) consumed.
    pub examples_seen: u64,
    /// Tokens consumed (text).
    pub tokens_seen: u64,
    /// Training wall time so far, in seconds (evaluation and checkpointing included).
    pub elapsed_s: f64,
    /// Evaluation loss before any training (step 0).
    pub initial_eval_loss: Option<f64>,
    /// Most recent evaluation: metric name → value.
    pub last_eval: BTreeMap<String, f64>,
    /// Non-finite steps skipped (when so configured).
    pub skipped_steps: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct FileEntry {
    bytes: u64,
    sha256: String,
}

fn hash_file(path: &Path) -> Result<FileEntry> {
    let mut file = File::open(path).map_err(|e| TrainError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(|e| TrainError::io(path, e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        hasher.update(&buf[..n]);
    }
    Ok(FileEntry { bytes, sha256: format!("{:x}", hasher.finalize()) })
}

/// The checkpoints directory of a run.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    dir: PathBuf,
}

/// A checkpoint found on disk.
#[derive(Debug, Clone)]
pub struct CheckpointDir {
    /// Its directory.
    pub path: PathBuf,
    /// The step it was taken at.
    pub step: u64,
}

impl Checkpoints {
    /// The checkpoints under `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory holding the checkpoints.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn step_dir(&self, step: u64) -> PathBuf {
        self.dir.join(format!("step-{step:08}"))
    }

    /// Writes a checkpoint atomically and removes all but the newest `keep_last`.
    ///
    /// # Errors
    /// Any I/O or serialization failure; the previous checkpoints are left as they were.
    pub fn save<M: Module>(&self, model: &M, optimizer: &ModuleOptimizer, state: &TrainState, keep_last: usize) -> Result<PathBuf> {
        let dir = self.write(&self.step_dir(state.step), model, optimizer, state)?;
        self.prune(keep_last)?;
        Ok(dir)
    }

    /// Writes the best model of an early-stopped run as `checkpoints/best/` (a complete
    /// checkpoint; never pruned and never picked by resume, which uses `step-N`).
    ///
    /// # Errors
    /// Any I/O or serialization failure.
    pub fn save_best<M: Module>(&self, model: &M, optimizer: &ModuleOptimizer, state: &TrainState) -> Result<PathBuf> {
        self.write(&self.dir.join(BEST_DIR), model, optimizer, state)
    }

    /// `checkpoints/best/` when the run kept one.
    pub fn best(&self) -> Option<PathBuf> {
        let dir = self.dir.join(BEST_DIR);
        dir.join(MANIFEST_FILE).is_file().then_some(dir)
    }

    fn write<M: Module>(&self, dir: &Path, model: &M, optimizer: &ModuleOptimizer, state: &TrainState) -> Result<PathBuf> {
        // burn commits a BatchNorm running-statistics update lazily (`RunningState` keeps the
        // latest one pending until the next training forward or `valid()`), and saving reads the
        // committed value: commit it, or the file holds statistics one step old and a resumed
        // run drifts from an uninterrupted one. `valid()` commits in place (the state is shared).
        let _ = model.valid();
        autodidact_core::fsutil::write_dir_atomic(dir, |tmp| self.write_into(tmp, model, optimizer, state), |p, e| TrainError::io(p, e))?;
        Ok(dir.to_path_buf())
    }

    fn write_into<M: Module>(&self, dir: &Path, model: &M, optimizer: &ModuleOptimizer, state: &TrainState) -> Result<()> {
        let model_path = dir.join(MODEL_FILE);
        // One metadata entry only: burn keeps metadata in a hash map, and several entries
        // would be written in a random order, making identical checkpoints differ in bytes.
        let mut store = SafetensorsStore::from_file(&model_path).overwrite(true).clear_metadata().metadata("producer", "autodidact");
        model.save_into(&mut store).map_err(|e| TrainError::checkpoint(&model_path, e))?;
        let opt_path = dir.join(OPTIMIZER_FILE);
        optimizer.save(&opt_path).map_err(|e| TrainError::checkpoint(&opt_path, format!("{e:?}")))?;
        let state_path = dir.join(STATE_FILE);
        let json = serde_json::to_vec_pretty(state).map_err(|e| TrainError::checkpoint(&state_path, e))?;
        std::fs::write(&state_path, json).map_err(|e| TrainError::io(&state_path, e))?;
        let mut files = BTreeMap::new();
        for name in [MODEL_FILE, OPTIMIZER_FILE, STATE_FILE] {
            files.insert(name.to_string(), hash_file(&dir.join(name))?);
        }
        let manifest_path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(&Manifest { files }).map_err(|e| TrainError::checkpoint(&manifest_path, e))?;
        std::fs::write(&manifest_path, json).map_err(|e| TrainError::io(&manifest_path, e))
    }

    /// Complete checkpoints, oldest first (partial writes are ignored).
    pub fn list(&self) -> Vec<CheckpointDir> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut out: Vec<CheckpointDir> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let step = name.strip_prefix("step-")?.parse().ok()?;
                Some(CheckpointDir { path: e.path(), step })
            })
            .collect();
        out.sort_by_key(|c| c.step);
        out
    }

    fn prune(&self, keep_last: usize) -> Result<()> {
        let all = self.list();
        let excess = all.len().saturating_sub(keep_last.max(1));
        for old in &all[..excess] {
            std::fs::remove_dir_all(&old.path).map_err(|e| TrainError::io(&old.path, e))?;
        }
        Ok(())
    }

    /// The newest checkpoint whose files match its manifest. Damaged ones are reported in
    /// the returned warnings and skipped.
    pub fn latest_valid(&self) -> (Option<CheckpointDir>, Vec<String>) {
        let mut warnings = Vec::new();
        for ckpt in self.list().into_iter().rev() {
            match verify(&ckpt.path) {
                Ok(()) => return (Some(ckpt), warnings),
                Err(e) => warnings.push(format!("skipping damaged checkpoint: {e}")),
            }
        }
        (None, warnings)
    }
}

/// Checks every file of a checkpoint against its manifest.
///
/// # Errors
/// A missing manifest or file, or a size or hash mismatch (e.g. a truncated write).
pub fn verify(dir: &Path) -> Result<()> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = std::fs::read(&manifest_path).map_err(|e| TrainError::io(&manifest_path, e))?;
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| TrainError::checkpoint(&manifest_path, e))?;
    for (name, expected) in &manifest.files {
        let p = dir.join(name);
        let actual = hash_file(&p)?;
        if &actual != expected {
            return Err(TrainError::checkpoint(&p, format!("has {} bytes (sha256 {}), the manifest says {} bytes (sha256 {})", actual.bytes, actual.sha256, expected.bytes, expected.sha256)));
        }
    }
    Ok(())
}

/// Loads model weights, optimizer state and train state from a checkpoint directory into a
/// freshly built model (with stable ids) and optimizer (with the same parameter groups).
///
/// # Errors
/// Unreadable files, or tensors that do not fit the model (a checkpoint of another shape).
pub fn load<M: Module>(dir: &Path, mut model: M, optimizer: ModuleOptimizer) -> Result<(M, ModuleOptimizer, TrainState)> {
    verify(dir)?;
    load_weights(&dir.join(MODEL_FILE), &mut model)?;
    let opt_path = dir.join(OPTIMIZER_FILE);
    let optimizer = optimizer.load(&opt_path).map_err(|e| TrainError::checkpoint(&opt_path, format!("{e:?}")))?;
    let state_path = dir.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|e| TrainError::io(&state_path, e))?;
    let state = serde_json::from_slice(&bytes).map_err(|e| TrainError::checkpoint(&state_path, e))?;
    Ok((model, optimizer, state))
}

/// Loads a `model.safetensors` into `model`, failing on any missing, unused or mis-shaped
/// tensor with the list of offenders.
///
/// # Errors
/// Unreadable or malformed file, or tensors that do not match the model.
pub fn load_weights<M: Module>(path: &Path, model: &mut M) -> Result<()> {
    let mut store = SafetensorsStore::from_file(path);
    let result = model.load_from(&mut store).map_err(|e| TrainError::checkpoint(path, e))?;
    check_fit(path, &result, true)
}

/// Loads the tensors under `prefix` (e.g. `model.bert`) of a `model.safetensors` into
/// `module`, which must match them exactly; other tensors are ignored. Returns false, loading
/// nothing, when the file has no tensor under `prefix`.
///
/// # Errors
/// Unreadable or malformed file, or prefixed tensors that do not fit `module`.
pub fn load_prefixed<M: Module>(path: &Path, prefix: &str, module: &mut M) -> Result<bool> {
    let pattern = format!("^{}\\.", prefix.replace('.', "\\."));
    // Remapping happens before matching, so stripping the prefix selects the tensors under it.
    let mut store = SafetensorsStore::from_file(path).with_key_remapping(&pattern, "").allow_partial(true);
    let result = module.load_from(&mut store).map_err(|e| TrainError::checkpoint(path, e))?;
    if result.applied.is_empty() {
        return Ok(false);
    }
    check_fit(path, &result, false)?;
    Ok(true)
}

/// Fails on any missing or mis-shaped tensor (and, when `exact`, any unused one), listing them.
fn check_fit(path: &Path, result: &burn::store::ApplyResult, exact: bool) -> Result<()> {
    let mut problems = Vec::new();
    problems.extend(result.errors.iter().map(|e| format!("{e:?}")));
    problems.extend(result.missing.iter().map(|(name, _)| format!("missing {name}")));
    if exact {
        problems.extend(result.unused.iter().map(|name| format!("unexpected {name}")));
    }
    if problems.is_empty() {
        return Ok(());
    }
    let shown: Vec<_> = problems.iter().take(8).cloned().collect();
    Err(TrainError::checkpoint(path, format!("does not fit the model ({} problem(s)): {}", problems.len(), shown.join("; "))))
}
