//! The uring reactor's receive path against a real loopback socket.
#![cfg(test)]

use super::*;
use std::io::Write;

/// A multishot Lb that outruns a pool of 4 buffers (the loop sleeps between reads, so
/// arrivals pile up): every byte still comes out once and in order, through the queue of
/// completed receives, the direct reads after `ENOBUFS` and the rearmed receive.
#[test]
fn a_multishot_read_outrunning_the_pool_keeps_every_byte_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let sent = data.clone();
    let writer = std::thread::spawn(move || {
        let mut peer = TcpStream::connect(addr).unwrap();
        peer.set_nodelay(true).unwrap();
        for chunk in sent.chunks(1_000) {
            peer.write_all(chunk).unwrap();
        }
    });
    let (stream, _) = listener.accept().unwrap();
    let (got, went_direct) = Uring::block_on_with(4, move |runtime| {
        Box::pin(async move {
            let stream = UringStream::new(&runtime.reactor, stream).unwrap();
            stream.read_always();
            let (mut got, mut went_direct) = (Vec::new(), false);
            let mut buffer = [0; 3_000];
            loop {
                std::future::poll_fn(|cx| stream.poll_readable(cx))
                    .await
                    .unwrap();
                went_direct |= runtime.reactor.0.borrow().slots[stream.slot].direct;
                match stream.try_read(&mut buffer) {
                    Ok(0) => return (got, went_direct),
                    Ok(n) => got.extend_from_slice(&buffer[..n]),
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(error) => panic!("read failed: {error}"),
                }
                if got.len() < 100_000 {
                    std::thread::sleep(std::time::Duration::from_micros(300));
                }
            }
        })
    })
    .unwrap();
    writer.join().unwrap();
    assert!(
        went_direct,
        "the pool never ran dry: the test proves less than it says"
    );
    assert_eq!(got.len(), data.len());
    assert!(got == data, "bytes out of order or changed");
}
