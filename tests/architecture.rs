//! The core stays sans-IO: its modules name no socket, thread, runtime or clock; and each
//! runtime's glue stays as small as `docs/runtimes.md` says.

use std::path::Path;

const CORE: &[&str] = &[
    "src/protocol.rs",
    "src/users.rs",
    "src/client.rs",
    "src/server/mod.rs",
    "src/server/session.rs",
    "src/server/broadcast.rs",
    "src/transport.rs",
    "src/metrics/mod.rs",
];

const FORBIDDEN: &[&str] = &[
    "std::net",
    "async_net",
    "smol",
    "std::thread",
    "Instant::now",
    "SystemTime",
    "std::io",
    "std::fs",
];

#[test]
fn core_modules_do_no_io() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for file in CORE {
        let text = std::fs::read_to_string(root.join(file)).expect("core file exists");
        for word in FORBIDDEN {
            let hits: Vec<_> = text
                .lines()
                .enumerate()
                .filter(|(_, line)| line.contains(word))
                .map(|(n, line)| format!("{file}:{}: {line}", n + 1))
                .collect();
            assert!(
                hits.is_empty(),
                "`{word}` in the sans-IO core:\n{}",
                hits.join("\n")
            );
        }
    }
}

/// Each runtime's glue and the most lines it may have, as `docs/runtimes.md` states them
/// (`≤ N lines` in its sizes table). Everything else is the drivers', written once.
const GLUE: &[(&[&str], usize)] = &[
    (&["src/runtime/smol.rs", "src/runtime/client.rs"], 300),
    (&["src/runtime/client.rs"], 150),
    (&["src/runtime/threads/client.rs"], 150),
    // Larger: not behind the async trait, it carries its own blocking event loop.
    (&["src/runtime/threads/server.rs"], 420),
    (&["examples/tokio_server.rs"], 160),
    // Its own reactor, registering each socket once, not only the trait.
    (&["src/runtime/epoll.rs"], 400),
    // The largest: it is its own reactor (the ring, its buffers), not only the trait.
    (&["src/runtime/uring.rs"], 750),
    // The executor, timers and wake-up that epoll and uring share.
    (&["src/runtime/local.rs"], 350),
];

/// The rows of `docs/runtimes.md` that state a bound: the files named in backquotes, and `N`
/// of `≤ N lines`.
fn documented_bounds(doc: &str) -> Vec<(Vec<String>, usize)> {
    doc.lines()
        .filter(|line| line.starts_with('|'))
        .filter_map(|line| {
            let (_, after) = line.split_once("≤ ")?;
            let bound = after.strip_suffix(" lines |")?.trim().parse().ok()?;
            let files = line
                .split('`')
                .skip(1)
                .step_by(2)
                .filter(|name| name.ends_with(".rs"))
                .map(str::to_owned)
                .collect();
            Some((files, bound))
        })
        .collect()
}

#[test]
fn runtime_glue_stays_within_its_bounds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(root.join("docs/runtimes.md")).expect("docs/runtimes.md");
    let documented = documented_bounds(&doc);
    let expected: Vec<(Vec<String>, usize)> = GLUE
        .iter()
        .map(|(files, bound)| (files.iter().map(|f| f.to_string()).collect(), *bound))
        .collect();
    assert_eq!(
        documented, expected,
        "the sizes table of docs/runtimes.md and GLUE in tests/architecture.rs disagree"
    );
    let mut over = Vec::new();
    for (files, bound) in GLUE {
        let lines: usize = files
            .iter()
            .map(|file| {
                let text = std::fs::read_to_string(root.join(file)).expect("glue file exists");
                text.lines().count()
            })
            .sum();
        if lines > *bound {
            over.push(format!(
                "{}: {lines} lines, bound {bound}",
                files.join(" + ")
            ));
        }
    }
    assert!(
        over.is_empty(),
        "runtime glue past its bound in docs/runtimes.md:\n{}",
        over.join("\n")
    );
}
