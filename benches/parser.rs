//! Framer + parser throughput: `cargo bench --bench parser`.

use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use simple_im_core::protocol::{LineFramer, Request, DEFAULT_MAX_LINE};

fn main() {
    divan::main();
}

const LINES: usize = 10_000;

/// A realistic mix of commands, as a server reads them off La.
fn command_stream() -> Vec<u8> {
    let forms: [&[u8]; 5] = [
        b"/to bob Hello! Nice to meet you!\n",
        b"/toall How about meeting at 3pm today?\n",
        b"/list\n",
        b"/login jacky 12345\r\n",
        b"/port 30232\n",
    ];
    forms
        .iter()
        .cycle()
        .take(LINES)
        .flat_map(|f| f.iter().copied())
        .collect()
}

/// Frames and parses a whole stream fed in 8 KiB reads, as the adapter does.
#[divan::bench]
fn frame_and_parse(bencher: Bencher) {
    let stream = command_stream();
    bencher
        .counter(ItemsCount::new(LINES))
        .counter(BytesCount::of_slice(&stream))
        .bench_local(|| {
            let mut framer = LineFramer::new(DEFAULT_MAX_LINE);
            let mut parsed = 0usize;
            for chunk in stream.chunks(8192) {
                let mut input = chunk;
                while let Some(frame) = framer.next_frame(&mut input) {
                    if let simple_im_core::protocol::Frame::Line(line) = frame {
                        parsed += usize::from(Request::parse(black_box(line)).is_ok());
                    }
                }
            }
            assert_eq!(parsed, LINES);
        });
}

/// Parsing alone, one line at a time.
#[divan::bench]
fn parse_to_line(bencher: Bencher) {
    let line: &[u8] = b"/to bob Hello! Nice to meet you!";
    bencher
        .counter(ItemsCount::new(1usize))
        .bench_local(|| Request::parse(black_box(line)));
}
