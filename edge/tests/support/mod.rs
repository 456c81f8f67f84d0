//! Fixtures shared by the edge's integration tests: a scripted origin, real HTTP clients, and
//! the edge itself, in-process or as a child process.

#![allow(dead_code, unreachable_pub)]

pub mod client;
pub mod edge;
pub mod h3client;
pub mod nats;
pub mod origin;

/// The lines a child process writes to `stderr`, read on a thread of their own (so the child
/// never blocks on a full pipe) and handed over as they come.
pub fn lines_of(stderr: std::process::ChildStderr) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead as _;
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// The Python of the venv `scripts/test.sh` makes (or `QUICDN_TEST_PYTHON`); `has` says what
/// the venv holds, for the message when it is missing.
pub fn test_python(has: &str) -> std::path::PathBuf {
    let python = std::env::var_os("QUICDN_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/test-venv/bin/python")
        });
    assert!(
        python.is_file(),
        "{} is missing: run ./scripts/test.sh, which makes a venv with {has}",
        python.display()
    );
    python
}
