//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and the kept crash inputs
//! through the same harness functions the cargo-fuzz targets call, so `cargo test` checks them
//! without libFuzzer. To fuzz further: `RUSTC_BOOTSTRAP=1 cargo fuzz run <target>` in `fuzz/`
//! (see `docs/hardening.md`).

mod common;

use std::path::{Path, PathBuf};

use common::fuzz_harness::{framer_parser, server_hub, ModelFrame, ModelFramer};

/// Every file of one target's corpus, sorted so failures name the same file on every run.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("{}: {error}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `harness` on every corpus file of `target`, naming the file that fails.
fn replay(target: &str, harness: fn(&[u8])) {
    let files = corpus(target);
    assert!(!files.is_empty(), "the {target} corpus is empty");
    for file in files {
        let data = std::fs::read(&file).unwrap();
        let outcome = std::panic::catch_unwind(|| harness(&data));
        assert!(outcome.is_ok(), "{target} fails on {}", file.display());
    }
}

#[test]
fn framer_parser_corpus() {
    replay("framer_parser", framer_parser);
}

#[test]
fn server_hub_corpus() {
    replay("server_hub", server_hub);
}

/// The model framer itself, on the cases docs/protocol.md §1 names (the bound counts the `\n`), so
/// the fuzz target's reference is known to be right.
#[test]
fn the_model_framer_follows_the_protocol() {
    let line = |text: &[u8]| ModelFrame::Line(text.to_vec());
    let mut frames = Vec::new();
    let mut model = ModelFramer::new(5);
    model.push(b"abc\r\nabcd\nabcde\nab", &mut frames);
    model.push(b"\r\r\n\n", &mut frames);
    assert_eq!(
        frames,
        [
            line(b"abc"),
            line(b"abcd"),
            ModelFrame::TooLong,
            line(b"ab\r"),
            line(b""),
        ]
    );
}

/// A few hand-made inputs, so both harnesses run even before a corpus exists.
#[test]
fn hand_made_inputs() {
    framer_parser(b"");
    framer_parser(b"\x10\x08/login a\x05 b\n/l\x03ist\x01\n");
    server_hub(b"");
    // Two clients log in, open Lb, and one sends to the other, who acknowledges.
    server_hub(&[
        0x02, 0, 0, 0, 0, 0, 0, // flags and limits
        0, 0, // accept twice
        2, 0, 0, 0, 0x00, // #0: /login u0 p0
        2, 1, 0, 0, 0x01, // #1: /login u1 p1
        2, 0, 0, 2, 0, 0xc7, // #0: /port 200
        7, 0, // Lb of #0 connected
        2, 1, 0, 2, 0, 0x07, // #1: /port 8
        7, 0, // Lb of #1 connected
        2, 1, 0, 4, 0, 0, // #1: /to u0 hi
        9, 0, 3, // #0 acknowledges
        2, 1, 0, 3, 0, // #1: /list
    ]);
}
