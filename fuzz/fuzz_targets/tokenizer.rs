//! Any bytes as a `tokenizer.json`: an error naming the file or a tokenizer that encodes,
//! never a panic.
#![no_main]

mod scratch;

use autodidact_data::tokenizer::TextTokenizer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch::file("tokenizer.json", data);
    if let Ok(tokenizer) = TextTokenizer::load(&path) {
        let _ = tokenizer.vocab_size();
        let _ = tokenizer.encode_batch(vec!["the quick brown fox", "", "ünïcödé 漢字 🦀"]);
    }
});
