//! `edge::config::EdgeConfig` from TOML text: parse (as `edge -c` does, through
//! `shared::config::parse`) and `validate`; a valid config must render (`--print-config`) to
//! text that parses and validates again, and rendering must be stable from then on.
//!
//! Exact equality after a round trip is not asserted: sizes render through `bytesize`'s
//! one-decimal display ("1025 B" prints as "1.0 KiB"), so `--print-config` is lossy for
//! sizes that are not round (see the Fuzzing section of bench/README.md).
//!
//! Input: the config file's bytes (non-UTF-8 input is skipped, as `load` rejects it).
#![no_main]

use edge::config::EdgeConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = shared::config::parse::<EdgeConfig>(text) else {
        return;
    };
    if config.validate().is_err() {
        return;
    }
    let rendered = shared::config::render(&config).expect("a valid config renders");
    let back: EdgeConfig = shared::config::parse(&rendered)
        .unwrap_or_else(|e| panic!("--print-config output does not parse: {e}\n{rendered}"));
    back.validate()
        .unwrap_or_else(|e| panic!("--print-config output does not validate: {e}\n{rendered}"));
    let again = shared::config::render(&back).expect("renders");
    let last: EdgeConfig = shared::config::parse(&again).expect("parses");
    assert_eq!(
        last, back,
        "rendering is not stable:\n{rendered}\n---\n{again}"
    );
});
