//! Any bytes as a pretraining, image or fine-tuning config file: an error or a config,
//! never a panic.
#![no_main]

mod scratch;

use autodidact_cli::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("config.toml", data);
    let _ = config::is_vision(&path, &[]);
    let _ = config::load(&path, &[]);
    let _ = config::load_vision(&path, &[]);
    let _ = config::load_finetune(&path, &[]);
    // The same text as a `--set` override.
    if let Ok(text) = std::str::from_utf8(data) {
        let ok = scratch::file("ok.toml", b"[run]\nname = \"f\"\n");
        let _ = config::load(&ok, &[text.to_string()]);
    }
});
