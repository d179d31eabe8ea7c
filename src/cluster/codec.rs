//! [`NodeMessage`]s as stream entries. An entry has one field, [`FIELD`], whose value is a
//! short text header and, for a delivery, the line itself untouched:
//!
//! - `d <from> <request> <slot>:<conn>[,<slot>:<conn>…]\n<line>` — a `Deliver`; with `@` for
//!   the recipients, a `/to`'s, for slot 0 and the session in the entry's [`AT`] field (the
//!   `DELIVER_TO` script puts there the `"<node>:<conn>"` it found);
//! - `o <from> <request>:<slot>:<0|1>[,…]` — one or more `Outcome`s;
//! - `w <from> <request>` — a `Withdraw`.
//!
//! One field rather than one per part, and a node's outcomes for one other node sent together
//! in one entry, because every field and every entry costs Redis and both nodes a parse and an
//! allocation per message; a `/toall` settles every recipient with an outcome.
//! Every node of a cluster must therefore run a version that speaks this format.

use std::collections::HashMap;

use bytes::Bytes;

use simple_im_core::server::{ConnId, NodeId, NodeMessage, RequestId};

/// The field of an inbox entry that holds the message.
pub(crate) const FIELD: &str = "m";
/// The field of a `/to`'s entry that holds its recipient's `"<node>:<conn>"`.
pub(crate) const AT: &str = "at";

/// The inbox entries for `messages` sent by node `from`, in order, each with its receiving
/// node. Outcomes that follow one another among the messages to one node share an entry, so
/// what each node reads stays in the order it was sent.
pub(crate) fn entries<'m>(
    from: NodeId,
    messages: impl IntoIterator<Item = (NodeId, &'m NodeMessage)>,
) -> Vec<(NodeId, Vec<u8>)> {
    let mut out: Vec<(NodeId, Vec<u8>)> = Vec::new();
    // Per receiving node, its outcome entry still open to more outcomes.
    let mut open: HashMap<NodeId, usize> = HashMap::new();
    for (to, message) in messages {
        if let NodeMessage::Outcome {
            request,
            slot,
            delivered,
        } = *message
        {
            if let Some(&at) = open.get(&to) {
                let entry = &mut out[at].1;
                entry.push(b',');
                push_outcome(entry, request, slot, delivered);
                continue;
            }
            let mut entry = header(b'o', from);
            push_outcome(&mut entry, request, slot, delivered);
            open.insert(to, out.len());
            out.push((to, entry));
            continue;
        }
        open.remove(&to);
        out.push((to, encode(from, message)));
    }
    out
}

/// A `/to`'s `Deliver` of `line` for `request`'s slot 0, its session left to the entry's
/// [`AT`] field, which the `DELIVER_TO` script fills with what it looks up.
pub(crate) fn deliver_to(from: NodeId, request: RequestId, line: &[u8]) -> Vec<u8> {
    let mut entry = header(b'd', from);
    push_num(&mut entry, request.0);
    entry.extend_from_slice(b" @\n");
    entry.extend_from_slice(line);
    entry
}

/// One entry for `message` alone.
fn encode(from: NodeId, message: &NodeMessage) -> Vec<u8> {
    match message {
        NodeMessage::Deliver {
            request,
            recipients,
            line,
        } => {
            let mut entry = header(b'd', from);
            push_num(&mut entry, request.0);
            entry.push(b' ');
            for (i, &(slot, conn)) in recipients.iter().enumerate() {
                if i > 0 {
                    entry.push(b',');
                }
                push_num(&mut entry, slot as u64);
                entry.push(b':');
                push_num(&mut entry, conn.0);
            }
            entry.push(b'\n');
            entry.extend_from_slice(line);
            entry
        }
        &NodeMessage::Outcome {
            request,
            slot,
            delivered,
        } => {
            let mut entry = header(b'o', from);
            push_outcome(&mut entry, request, slot, delivered);
            entry
        }
        NodeMessage::Withdraw { request } => {
            let mut entry = header(b'w', from);
            push_num(&mut entry, request.0);
            entry
        }
    }
}

/// `<kind> <from> `.
fn header(kind: u8, from: NodeId) -> Vec<u8> {
    let mut entry = Vec::with_capacity(64);
    entry.extend_from_slice(&[kind, b' ']);
    push_num(&mut entry, from.0);
    entry.push(b' ');
    entry
}

fn push_outcome(entry: &mut Vec<u8>, request: RequestId, slot: usize, delivered: bool) {
    push_num(entry, request.0);
    entry.push(b':');
    push_num(entry, slot as u64);
    entry.extend_from_slice(if delivered { b":1" } else { b":0" });
}

/// `n` in decimal; by hand because `format!` costs an allocation and the formatting machinery
/// for every number of every message.
fn push_num(entry: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    entry.extend_from_slice(&digits[at..]);
}

/// The sender and messages of one entry's value, and its [`AT`] field if it has one, or
/// `None` if it is not one of ours.
pub(crate) fn decode(entry: Vec<u8>, at: Option<&[u8]>) -> Option<(NodeId, Vec<NodeMessage>)> {
    let head_end = entry
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(entry.len());
    let head = std::str::from_utf8(&entry[..head_end]).ok()?;
    let mut parts = head.splitn(3, ' ');
    let (kind, from, body) = (parts.next()?, parts.next()?, parts.next()?);
    let from = NodeId(from.parse().ok()?);
    let messages = match kind {
        "d" => {
            let (request, recipients) = body.split_once(' ')?;
            let request = RequestId(request.parse().ok()?);
            let recipients = match (recipients, at) {
                ("@", Some(at)) => {
                    let (_, conn) = std::str::from_utf8(at).ok()?.split_once(':')?;
                    vec![(0, ConnId(conn.parse().ok()?))]
                }
                ("@", None) => return None,
                (recipients, _) => recipients
                    .split(',')
                    .map(|pair| {
                        let (slot, conn) = pair.split_once(':')?;
                        Some((slot.parse().ok()?, ConnId(conn.parse().ok()?)))
                    })
                    .collect::<Option<Vec<_>>>()?,
            };
            if head_end == entry.len() {
                return None;
            }
            let line = Bytes::from(entry).slice(head_end + 1..);
            vec![NodeMessage::Deliver {
                request,
                recipients,
                line,
            }]
        }
        _ if head_end != entry.len() => return None,
        "o" if !body.contains(' ') => body
            .split(',')
            .map(|outcome| {
                let mut fields = outcome.split(':');
                let request = RequestId(fields.next()?.parse().ok()?);
                let slot = fields.next()?.parse().ok()?;
                let delivered = match fields.next()? {
                    "1" => true,
                    "0" => false,
                    _ => return None,
                };
                fields.next().is_none().then_some(NodeMessage::Outcome {
                    request,
                    slot,
                    delivered,
                })
            })
            .collect::<Option<Vec<_>>>()?,
        "w" if !body.contains(' ') => vec![NodeMessage::Withdraw {
            request: RequestId(body.parse().ok()?),
        }],
        _ => return None,
    };
    Some((from, messages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(request: u64, slot: usize, delivered: bool) -> NodeMessage {
        NodeMessage::Outcome {
            request: RequestId(request),
            slot,
            delivered,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let messages = [
            NodeMessage::Deliver {
                request: RequestId(7),
                recipients: vec![(3, ConnId(9))],
                line: Bytes::from_static(b"/from a \xff\x00 \n\r\n"),
            },
            NodeMessage::Deliver {
                request: RequestId(8),
                recipients: vec![(0, ConnId(1)), (4, ConnId(u64::MAX))],
                line: Bytes::from_static(b"/broadcastfrom a b,c:d\n"),
            },
            outcome(7, 3, true),
            outcome(u64::MAX, 0, false),
            NodeMessage::Withdraw {
                request: RequestId(1),
            },
        ];
        for message in messages {
            let entry = encode(NodeId(4), &message);
            assert_eq!(decode(entry, None), Some((NodeId(4), vec![message])));
        }
    }

    #[test]
    fn outcomes_in_a_row_to_one_node_share_an_entry_and_keep_their_order() {
        let deliver = NodeMessage::Deliver {
            request: RequestId(2),
            recipients: vec![(0, ConnId(5))],
            line: Bytes::from_static(b"/from a b\n"),
        };
        let (a, b) = (NodeId(1), NodeId(2));
        let messages = [
            (a, outcome(1, 0, true)),
            (b, outcome(9, 1, false)),
            (a, outcome(1, 1, false)),
            (a, deliver.clone()),
            (a, outcome(3, 0, true)),
            (b, outcome(9, 2, true)),
        ];
        let entries = entries(NodeId(7), messages.iter().map(|(to, m)| (*to, m)));
        let decoded: Vec<(NodeId, Vec<NodeMessage>)> = entries
            .into_iter()
            .map(|(to, entry)| (to, decode(entry, None).unwrap().1))
            .collect();
        assert_eq!(
            decoded,
            vec![
                (a, vec![outcome(1, 0, true), outcome(1, 1, false)]),
                (b, vec![outcome(9, 1, false), outcome(9, 2, true)]),
                (a, vec![deliver]),
                (a, vec![outcome(3, 0, true)]),
            ]
        );
    }

    #[test]
    fn a_to_s_delivery_goes_to_the_session_in_its_at_field() {
        let line = Bytes::from_static(b"/from a \xff b\n");
        let entry = deliver_to(NodeId(3), RequestId(11), &line);
        let deliver = NodeMessage::Deliver {
            request: RequestId(11),
            recipients: vec![(0, ConnId(42))],
            line,
        };
        let decoded = decode(entry.clone(), Some(b"5:42"));
        assert_eq!(decoded, Some((NodeId(3), vec![deliver])));
        assert_eq!(decode(entry.clone(), None), None, "no session");
        assert_eq!(decode(entry, Some(b"5")), None, "not a session");
    }

    #[test]
    fn foreign_entries_are_refused() {
        for entry in [
            &b""[..],
            b"x 1 2",
            b"w 1",
            b"w 1 2 3",
            b"w one 2",
            b"w 1 2\nline",
            b"d 1 2 0:3",
            b"d 1 2 0-3\nline\n",
            b"o 1 2:0:2",
            b"o 1 2:0:1:1",
            b"o 1 2:0:1,",
        ] {
            assert_eq!(decode(entry.to_vec(), None), None, "{:?}", entry);
        }
    }
}
