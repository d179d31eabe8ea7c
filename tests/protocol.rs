//! The wire format of docs/protocol.md §1–§2: exact bytes, parse/format round trips, the
//! framer.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use simple_im_core::protocol::{
    is_content, is_token, Delivery, Frame, LineFramer, Request, Response, Unrecognized,
};

fn token() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("token byte", |b| is_token(&[*b])),
        1..12,
    )
}

/// Content that survives a trip through the framer: no `\n`, and no `\r` at its end (the
/// framer drops a `\r` before `\n`, as docs/protocol.md §1 says).
fn content() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
        1..40,
    )
    .prop_filter("no trailing CR", |c| c.last() != Some(&b'\r'))
}

#[derive(Clone, Debug)]
enum AnyRequest {
    Login(Vec<u8>, Vec<u8>),
    Port(u16),
    List,
    To(Vec<u8>, Vec<u8>),
    ToAll(Vec<u8>),
    Exit,
}

impl AnyRequest {
    fn as_request(&self) -> Request<'_> {
        match self {
            AnyRequest::Login(user, password) => Request::Login { user, password },
            AnyRequest::Port(port) => Request::Port(*port),
            AnyRequest::List => Request::List,
            AnyRequest::To(target, content) => Request::To { target, content },
            AnyRequest::ToAll(content) => Request::ToAll { content },
            AnyRequest::Exit => Request::Exit,
        }
    }
}

fn request() -> impl Strategy<Value = AnyRequest> {
    prop_oneof![
        (token(), token()).prop_map(|(u, p)| AnyRequest::Login(u, p)),
        (1u16..).prop_map(AnyRequest::Port),
        Just(AnyRequest::List),
        (token(), content()).prop_map(|(t, c)| AnyRequest::To(t, c)),
        content().prop_map(AnyRequest::ToAll),
        Just(AnyRequest::Exit),
    ]
}

/// Frames `bytes` fed in the given chunk sizes, collecting owned frames.
fn frame_all(max_line: usize, bytes: &[u8], chunks: &[usize]) -> Vec<Option<Vec<u8>>> {
    let mut framer = LineFramer::new(max_line);
    let mut frames = Vec::new();
    let mut rest = bytes;
    let mut sizes = chunks.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (chunk, after) = rest.split_at(size);
        rest = after;
        let mut input = chunk;
        while let Some(frame) = framer.next_frame(&mut input) {
            frames.push(match frame {
                Frame::Line(line) => Some(line.to_vec()),
                Frame::TooLong => None,
            });
        }
        assert!(
            framer.buffered() < max_line,
            "framer holds more than the bound"
        );
    }
    frames
}

/// A plain model of the framer: split at `\n`, drop one `\r`, over-long lines become `None`
/// as soon as they pass the bound, and their remainder is discarded.
fn frame_model(max_line: usize, bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut frames = Vec::new();
    let mut current = Vec::new();
    let mut discarding = false;
    for &b in bytes {
        if b == b'\n' {
            if !discarding {
                if current.last() == Some(&b'\r') {
                    current.pop();
                }
                frames.push(Some(std::mem::take(&mut current)));
            }
            discarding = false;
            current.clear();
        } else if !discarding {
            current.push(b);
            if current.len() >= max_line {
                frames.push(None);
                discarding = true;
                current.clear();
            }
        }
    }
    frames
}

proptest! {
    // Failures are kept in the repository's proptest-regressions/, replayed first.
    #![proptest_config(ProptestConfig {
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/proptest-regressions/protocol.txt"
        )))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn requests_round_trip(request in request()) {
        let request = request.as_request();
        let bytes = request.to_bytes();
        prop_assert_eq!(bytes.last(), Some(&b'\n'));
        prop_assert_eq!(Request::parse(&bytes[..bytes.len() - 1]), Ok(request));
    }

    /// The parser accepts exactly the formatter's output: any line it accepts formats back
    /// to itself, so every other line is answered `401`.
    #[test]
    fn parsing_is_exact(line in prop::collection::vec(any::<u8>(), 0..24)) {
        if let Ok(request) = Request::parse(&line) {
            let mut expected = line.clone();
            expected.push(b'\n');
            prop_assert_eq!(request.to_bytes(), expected);
        }
    }

    /// Near-miss lines built from real command words hit the parser's edges far more often
    /// than random bytes do.
    #[test]
    fn near_miss_lines_parse_exactly(
        words in prop::collection::vec(
            prop::sample::select(vec![
                &b"/login"[..], b"/port", b"/list", b"/to", b"/toall", b"/exit", b"bob",
                b"0", b"65535", b"65536", b"080", b"-1", b"", b" ", b"\r", b"x y",
            ]),
            1..5,
        ),
        separators in prop::collection::vec(prop::sample::select(vec![&b" "[..], b"  ", b""]), 5),
    ) {
        let mut line = Vec::new();
        for (word, separator) in words.iter().zip(&separators) {
            line.extend_from_slice(word);
            line.extend_from_slice(separator);
        }
        if let Ok(request) = Request::parse(&line) {
            let mut expected = line.clone();
            expected.push(b'\n');
            prop_assert_eq!(request.to_bytes(), expected);
        }
    }

    #[test]
    fn deliveries_round_trip(sender in token(), content in content(), broadcast in any::<bool>()) {
        let delivery = if broadcast {
            Delivery::BroadcastFrom { sender: &sender, content: &content }
        } else {
            Delivery::From { sender: &sender, content: &content }
        };
        let bytes = delivery.to_bytes();
        prop_assert_eq!(Delivery::parse(&bytes[..bytes.len() - 1]), Ok(delivery));
    }

    #[test]
    fn lists_round_trip(names in prop::collection::vec(token(), 1..6)) {
        let response = Response::List(names.iter().map(Vec::as_slice).collect());
        let bytes = response.to_bytes();
        prop_assert_eq!(Response::parse(&bytes[..bytes.len() - 1]), Ok(response));
    }

    /// However the stream is cut into reads, the framer yields the model's frames and never
    /// holds more than the bound.
    #[test]
    fn framer_matches_model(
        max_line in 2usize..24,
        bytes in prop::collection::vec(
            prop_oneof![4 => any::<u8>(), 2 => Just(b'\n'), 1 => Just(b'\r')], 0..200),
        chunks in prop::collection::vec(1usize..30, 1..8),
    ) {
        prop_assert_eq!(frame_all(max_line, &bytes, &chunks), frame_model(max_line, &bytes));
    }

    /// Content bytes of any kind (spaces, tabs, non-UTF-8) survive formatting, framing in
    /// arbitrary pieces and parsing, verbatim.
    #[test]
    fn content_survives_the_wire(target in token(), content in content(), chunks in prop::collection::vec(1usize..9, 1..5)) {
        let bytes = Request::To { target: &target, content: &content }.to_bytes();
        let frames = frame_all(1 << 16, &bytes, &chunks);
        prop_assert_eq!(frames.len(), 1);
        let line = frames[0].clone().unwrap_or_default();
        prop_assert_eq!(
            Request::parse(&line),
            Ok(Request::To { target: &target, content: &content })
        );
    }
}

#[test]
fn exact_response_bytes() {
    let cases: [(Response<'_>, &[u8]); 9] = [
        (Response::AuthOk, b"101 Authentication successful\n"),
        (Response::AuthFailed, b"102 Authentication failed\n"),
        (Response::LbOk, b"201 Build connection successful\n"),
        (Response::LbFailed, b"202 Build connection failed\n"),
        (
            Response::List(vec![b"jacky", b"bob", b"michael"]),
            b"301 jacky bob michael\n",
        ),
        (Response::Delivered, b"303 Message delivery successful\n"),
        (Response::DeliveryFailed, b"304 Message delivery failed\n"),
        (Response::Bye, b"310 Bye bye\n"),
        (Response::Unrecognized, b"401 Unrecognized message\n"),
    ];
    for (response, bytes) in cases {
        assert_eq!(response.to_bytes(), bytes);
        assert_eq!(response.to_shared(), bytes);
        assert_eq!(Response::parse(&bytes[..bytes.len() - 1]), Ok(response));
    }
    assert_eq!(
        simple_im_core::protocol::receipt_bytes(),
        b"302 Message receipt successful\n"
    );
    assert_eq!(
        simple_im_core::protocol::RECEIPT,
        b"302 Message receipt successful"
    );
}

#[test]
fn exact_request_forms() {
    let accepted: [(&[u8], Request<'_>); 8] = [
        (
            b"/login jacky 12345",
            Request::Login {
                user: b"jacky",
                password: b"12345",
            },
        ),
        (b"/port 30232", Request::Port(30232)),
        (b"/port 1", Request::Port(1)),
        (b"/port 65535", Request::Port(65535)),
        (b"/list", Request::List),
        (
            b"/to bob  hi",
            Request::To {
                target: b"bob",
                content: b" hi",
            },
        ),
        (
            b"/toall How about 3pm?",
            Request::ToAll {
                content: b"How about 3pm?",
            },
        ),
        (b"/exit", Request::Exit),
    ];
    for (line, request) in accepted {
        assert_eq!(
            Request::parse(line),
            Ok(request),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
    let refused: [&[u8]; 22] = [
        b"",
        b"/login a",
        b"/login a b c",
        b"/login  a b",
        b"/login a  b",
        b"/port",
        b"/port 0",
        b"/port 65536",
        b"/port -1",
        b"/port +5",
        b"/port 12ab",
        b"/port 080",
        b"/list x",
        b"/list ",
        b"/to bob",
        b"/to bob ",
        b"/toall",
        b"/toall ",
        b"/exit x",
        b"hello",
        b"/LIST",
        b"/to  bob hi",
    ];
    for line in refused {
        assert_eq!(
            Request::parse(line),
            Err(Unrecognized),
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn framer_reports_an_over_long_line_once_and_recovers() {
    let mut framer = LineFramer::new(8);
    let mut input: &[u8] = b"1234567\nabcdefgh";
    assert_eq!(framer.next_frame(&mut input), Some(Frame::Line(b"1234567")));
    assert_eq!(framer.next_frame(&mut input), Some(Frame::TooLong));
    let mut more: &[u8] = &[b'x'; 1000];
    assert_eq!(framer.next_frame(&mut more), None);
    let mut end: &[u8] = b"yyy\n/list\r\n";
    assert_eq!(framer.next_frame(&mut end), Some(Frame::Line(b"/list")));
    assert_eq!(framer.buffered(), 0);
}

#[test]
fn content_tokens_and_helpers_agree() {
    assert!(is_token(b"bob"));
    assert!(!is_token(b"b b"));
    assert!(!is_token(b""));
    assert!(is_content(b" a\tb \xff"));
    assert!(!is_content(b""));
}
