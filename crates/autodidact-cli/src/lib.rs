//! The `autodidact` command as a library: config files (parsed with `deny_unknown_fields`
//! and validated, errors naming the file and key) and the work of each command. The binary
//! (`src/main.rs`) is the clap front end over it; the fuzz targets call the config parser
//! through it.

// The config sections mirror the TOML keys, which the README's config reference documents.
#[allow(missing_docs)]
pub mod config;
pub mod embed;
pub mod export;
pub mod finetune;
pub mod init;
pub mod pretrain;
pub mod vision;
