//! [`NodeMessage`]s as stream entries: flat field/value pairs, every value bytes (a `line` is
//! passed through untouched).

use bytes::Bytes;

use simple_im_core::server::{ConnId, NodeId, NodeMessage, RequestId};

/// The entry's fields for `message` from node `from`, in XADD order.
pub(crate) fn encode(from: NodeId, message: &NodeMessage) -> Vec<(&'static str, Vec<u8>)> {
    let num = |n: u64| n.to_string().into_bytes();
    let mut fields = vec![("from", num(from.0))];
    match message {
        NodeMessage::Deliver {
            request,
            recipients,
            line,
        } => fields.extend([
            ("kind", b"deliver".to_vec()),
            ("request", num(request.0)),
            ("to", recipients_field(recipients)),
            ("line", line.to_vec()),
        ]),
        NodeMessage::Outcome {
            request,
            slot,
            delivered,
        } => fields.extend([
            ("kind", b"outcome".to_vec()),
            ("request", num(request.0)),
            ("slot", num(*slot as u64)),
            ("delivered", if *delivered { b"1" } else { b"0" }.to_vec()),
        ]),
        NodeMessage::Withdraw { request } => {
            fields.extend([("kind", b"withdraw".to_vec()), ("request", num(request.0))])
        }
    }
    fields
}

/// `slot:conn,slot:conn…`.
fn recipients_field(recipients: &[(usize, ConnId)]) -> Vec<u8> {
    let mut field = String::new();
    for (i, (slot, conn)) in recipients.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        field.push_str(&format!("{comma}{slot}:{}", conn.0));
    }
    field.into_bytes()
}

/// The recipients of a `to` field, or `None` if it is not one.
fn parse_recipients(field: &[u8]) -> Option<Vec<(usize, ConnId)>> {
    let field = std::str::from_utf8(field).ok()?;
    field
        .split(',')
        .map(|pair| {
            let (slot, conn) = pair.split_once(':')?;
            Some((slot.parse().ok()?, ConnId(conn.parse().ok()?)))
        })
        .collect()
}

/// The sender and message of one entry's fields, or `None` if they are not one of ours.
pub(crate) fn decode(fields: &[(Vec<u8>, Vec<u8>)]) -> Option<(NodeId, NodeMessage)> {
    let get = |name: &[u8]| {
        fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_slice())
    };
    let num = |name: &[u8]| -> Option<u64> { std::str::from_utf8(get(name)?).ok()?.parse().ok() };
    let from = NodeId(num(b"from")?);
    let request = RequestId(num(b"request")?);
    let message = match get(b"kind")? {
        b"deliver" => NodeMessage::Deliver {
            request,
            recipients: parse_recipients(get(b"to")?)?,
            line: Bytes::copy_from_slice(get(b"line")?),
        },
        b"outcome" => NodeMessage::Outcome {
            request,
            slot: usize::try_from(num(b"slot")?).ok()?,
            delivered: match get(b"delivered")? {
                b"1" => true,
                b"0" => false,
                _ => return None,
            },
        },
        b"withdraw" => NodeMessage::Withdraw { request },
        _ => return None,
    };
    Some((from, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(fields: Vec<(&'static str, Vec<u8>)>) -> Vec<(Vec<u8>, Vec<u8>)> {
        fields
            .into_iter()
            .map(|(field, value)| (field.as_bytes().to_vec(), value))
            .collect()
    }

    #[test]
    fn every_kind_round_trips() {
        let messages = [
            NodeMessage::Deliver {
                request: RequestId(7),
                recipients: vec![(3, ConnId(9))],
                line: Bytes::from_static(b"/from a \xff\x00 \r\n"),
            },
            NodeMessage::Deliver {
                request: RequestId(8),
                recipients: vec![(0, ConnId(1)), (4, ConnId(u64::MAX))],
                line: Bytes::from_static(b"/broadcastfrom a b,c:d\n"),
            },
            NodeMessage::Outcome {
                request: RequestId(7),
                slot: 3,
                delivered: true,
            },
            NodeMessage::Outcome {
                request: RequestId(u64::MAX),
                slot: 0,
                delivered: false,
            },
            NodeMessage::Withdraw {
                request: RequestId(1),
            },
        ];
        for message in messages {
            let fields = owned(encode(NodeId(4), &message));
            assert_eq!(decode(&fields), Some((NodeId(4), message)));
        }
    }

    #[test]
    fn foreign_entries_are_refused() {
        assert_eq!(decode(&[]), None);
        let mut fields = owned(encode(
            NodeId(1),
            &NodeMessage::Withdraw {
                request: RequestId(2),
            },
        ));
        fields[1].1 = b"shout".to_vec();
        assert_eq!(decode(&fields), None);
    }
}
