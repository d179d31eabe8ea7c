//! The core stays sans-IO: its modules name no socket, thread, runtime or clock.

use std::path::Path;

const CORE: &[&str] = &[
    "src/protocol.rs",
    "src/users.rs",
    "src/client.rs",
    "src/server/mod.rs",
    "src/server/session.rs",
    "src/server/broadcast.rs",
    "src/transport.rs",
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
