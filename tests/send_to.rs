//! Streaming batches to a file or socket with `send_to`.

use std::io::Read;
use std::net::{TcpListener, TcpStream};

use durable_log::{Config, Log, Record};

fn filled_log(dir: &std::path::Path) -> Log {
    let log = Log::open(
        dir,
        Config::default().durability(durable_log::Durability::None),
    )
    .unwrap();
    let p = log.partition(0).unwrap();
    for b in 0..10 {
        let batch: Vec<_> = (0..10)
            .map(|i| Record::new(format!("batch {b} record {i}")))
            .collect();
        p.append(&batch).unwrap();
    }
    log
}

/// The batches of the only segment, without the space the open log has
/// reserved past them for appends (which reads as zeros).
fn segment_bytes(dir: &std::path::Path, log: &Log) -> Vec<u8> {
    let mut bytes = std::fs::read(dir.join("0").join(format!("{:020}.log", 0))).unwrap();
    let size = log.partition(0).unwrap().size_bytes();
    assert!(bytes[size as usize..].iter().all(|&b| b == 0));
    bytes.truncate(size as usize);
    bytes
}

#[test]
fn whole_batches_go_to_a_file_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path());
    let p = log.partition(0).unwrap();
    let on_disk = segment_bytes(dir.path(), &log);
    let batch_len = on_disk.len() as u64 / 10;
    let mut out = tempfile::tempfile().unwrap();
    // Offset 25 is inside the third batch; two batches fit in the budget.
    let sent = p.send_to(25, 2 * batch_len + 1, &mut out).unwrap();
    assert_eq!(
        (sent.base_offset, sent.next_offset, sent.bytes),
        (20, 40, 2 * batch_len)
    );
    let mut got = Vec::new();
    std::io::Seek::rewind(&mut out).unwrap();
    out.read_to_end(&mut got).unwrap();
    assert_eq!(got, on_disk[2 * batch_len as usize..4 * batch_len as usize]);
    // At least one batch even when the budget is smaller; nothing at the end.
    assert_eq!(p.send_to(40, 1, &mut out).unwrap().next_offset, 50);
    assert_eq!(p.send_to(100, 1 << 20, &mut out).unwrap().bytes, 0);
}

#[test]
fn batches_stream_over_a_socket_to_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path());
    let p = log.partition(0).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    let reader = std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        socket.read_to_end(&mut got).unwrap();
        got
    });
    let mut socket = TcpStream::connect(address).unwrap();
    let mut offset = 0;
    while offset < p.end_offset() {
        offset = p.send_to(offset, 300, &mut socket).unwrap().next_offset;
    }
    drop(socket);
    assert_eq!(reader.join().unwrap(), segment_bytes(dir.path(), &log));
}

#[test]
fn an_append_only_file_gets_the_bytes_by_copy() {
    // sendfile refuses descriptors opened for appending; the bytes are
    // written from the mapping instead.
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path());
    let path = dir.path().join("out");
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap();
    let sent = log
        .partition(0)
        .unwrap()
        .send_to(0, 1 << 20, &mut out)
        .unwrap();
    assert_eq!(sent.next_offset, 100);
    assert_eq!(
        std::fs::read(&path).unwrap(),
        segment_bytes(dir.path(), &log)
    );
}

#[test]
fn a_corrupt_batch_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let log = filled_log(dir.path());
    log.close().unwrap();
    let path = dir.path().join("0").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&path).unwrap();
    let batch_len = bytes.len() / 10;
    bytes[batch_len + 70] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let log = Log::open(dir.path(), Config::default()).unwrap();
    let mut out = tempfile::tempfile().unwrap();
    let err = log
        .partition(0)
        .unwrap()
        .send_to(10, 1 << 20, &mut out)
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert_eq!(out.metadata().unwrap().len(), 0);
}
