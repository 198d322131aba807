//! Tailing from async code: `Partition::wait_for_async` and
//! `Partition::stream`, driven by a minimal executor (a thread that parks)
//! and by hand-made wakers that record whether they were woken.
//!
//! The race tests run `DURABLE_LOG_ASYNC_ROUNDS` rounds (default 2000) of
//! an append or a close racing with a task registering its waker, and
//! check after each that a task left pending was woken.

#![cfg(feature = "async")]

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::task::{Context, Poll, Wake, Waker};

use durable_log::{
    Config, Durability, Error, Log, Partition, Record, RecordStream, StoredRecord, WaitFor,
};
use futures_core::{FusedStream, Stream};

/// Runs a future on this thread, parking while it is pending.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}

async fn next(stream: &mut RecordStream) -> Option<durable_log::Result<StoredRecord>> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

/// A waker that remembers that it was woken, and how often.
#[derive(Default)]
struct Flag {
    woken: AtomicBool,
    wakes: AtomicUsize,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        self.woken.store(true, Ordering::SeqCst);
    }
}

fn flag() -> (Arc<Flag>, Waker) {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    (flag, waker)
}

fn poll_future(future: &mut WaitFor, waker: &Waker) -> Poll<durable_log::Result<bool>> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

fn poll_stream(
    stream: &mut RecordStream,
    waker: &Waker,
) -> Poll<Option<durable_log::Result<StoredRecord>>> {
    Pin::new(stream).poll_next(&mut Context::from_waker(waker))
}

fn open(dir: &std::path::Path, config: Config) -> (Log, Partition) {
    let log = Log::open(dir, config).expect("open");
    let p = log.partition(0).expect("partition");
    (log, p)
}

fn rounds() -> u32 {
    std::env::var("DURABLE_LOG_ASYNC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

#[test]
fn futures_and_streams_can_move_to_other_threads() {
    fn send_static<T: Send + 'static>() {}
    send_static::<WaitFor>();
    send_static::<RecordStream>();
}

#[test]
fn streams_receive_records_appended_later_from_another_thread_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Small segments, so the tail crosses rolls while it waits.
    let config = Config::default()
        .segment_bytes(4096)
        .max_index_bytes(4096)
        .durability(Durability::None);
    let (_log, p) = open(dir.path(), config);
    p.append(&[Record::new("before-0"), Record::new("before-1")])
        .expect("append");
    let total = 300u64;

    // Four tasks, each on its own thread and executor, start at different
    // offsets; one starts at the end, before anything more exists.
    let tails: Vec<_> = [0, 1, 2, 2]
        .into_iter()
        .map(|start| {
            let mut stream = p.stream(start);
            std::thread::spawn(move || {
                block_on(async {
                    let mut got = Vec::new();
                    while (got.len() as u64) < total - start {
                        let record = next(&mut stream).await.expect("no end").expect("record");
                        got.push(record);
                    }
                    (start, got)
                })
            })
        })
        .collect();
    let appender = {
        let p = p.clone();
        std::thread::spawn(move || {
            let mut i = 2;
            while i < total {
                // Batches of one to three records.
                let n = (i % 3 + 1).min(total - i);
                let batch: Vec<Record> = (i..i + n)
                    .map(|j| Record::new(format!("value-{j}")))
                    .collect();
                p.append(&batch).expect("append");
                i += n;
            }
        })
    };
    appender.join().expect("appender");
    for tail in tails {
        let (start, got) = tail.join().expect("tail");
        let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, (start..total).collect::<Vec<_>>());
        for r in &got {
            let expected = if r.offset < 2 {
                format!("before-{}", r.offset)
            } else {
                format!("value-{}", r.offset)
            };
            assert_eq!(r.value.as_deref(), Some(expected.as_bytes()));
        }
    }
    assert!(p.segment_count() > 1, "the test should cross a roll");
}

#[test]
fn a_future_is_ready_at_once_for_an_offset_below_the_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, p) = open(dir.path(), Config::default());
    p.append(&[Record::new("a"), Record::new("b")])
        .expect("append");
    let (flag, waker) = flag();
    for offset in [0, 1] {
        let mut future = p.wait_for_async(offset);
        assert!(matches!(
            poll_future(&mut future, &waker),
            Poll::Ready(Ok(true))
        ));
    }
    assert!(poll_future(&mut p.wait_for_async(2), &waker).is_pending());
    assert!(!flag.woken.load(Ordering::SeqCst));
}

#[test]
fn an_append_wakes_every_waiting_task_and_nothing_else_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config::default().partitions(2);
    let (log, p) = open(dir.path(), config);
    p.append(&[Record::new("a")]).expect("append");

    let waiting: Vec<_> = (0..8)
        .map(|_| {
            let (flag, waker) = flag();
            let mut future = p.wait_for_async(1);
            assert!(poll_future(&mut future, &waker).is_pending());
            (flag, waker, future)
        })
        .collect();
    let (stream_flag, stream_waker) = flag();
    let mut stream = p.stream(0);
    assert!(matches!(
        poll_stream(&mut stream, &stream_waker),
        Poll::Ready(Some(Ok(r))) if r.offset == 0
    ));
    assert!(poll_stream(&mut stream, &stream_waker).is_pending());

    // Appends to another partition, reads and syncs do not wake them: a
    // pending task is not polled again until there is something to read.
    log.partition(1)
        .expect("partition 1")
        .append(&[Record::new("elsewhere")])
        .expect("append");
    p.sync().expect("sync");
    assert_eq!(p.reader(0).count(), 1);
    assert!(!stream_flag.woken.load(Ordering::SeqCst));
    for (flag, _, _) in &waiting {
        assert!(!flag.woken.load(Ordering::SeqCst));
    }

    p.append(&[Record::new("b")]).expect("append");
    assert_eq!(stream_flag.wakes.load(Ordering::SeqCst), 1);
    assert!(matches!(
        poll_stream(&mut stream, &stream_waker),
        Poll::Ready(Some(Ok(r))) if r.offset == 1 && r.value.as_deref() == Some(&b"b"[..])
    ));
    for (flag, waker, mut future) in waiting {
        assert_eq!(flag.wakes.load(Ordering::SeqCst), 1);
        assert!(matches!(
            poll_future(&mut future, &waker),
            Poll::Ready(Ok(true))
        ));
    }
    // A further append does not wake what already resolved.
    p.append(&[Record::new("c")]).expect("append");
    assert_eq!(stream_flag.wakes.load(Ordering::SeqCst), 1);
}

#[test]
fn a_future_wakes_on_an_append_from_another_thread() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, p) = open(dir.path(), Config::default());
    let appender = {
        let p = p.clone();
        std::thread::spawn(move || p.append(&[Record::new("x")]).expect("append"))
    };
    assert!(block_on(p.wait_for_async(0)).expect("woken"));
    assert_eq!(appender.join().expect("appender").base_offset, 0);
}

#[test]
fn closing_the_log_wakes_waiting_tasks_with_closed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, p) = open(dir.path(), Config::default());
    p.append(&[Record::new("a")]).expect("append");
    let (future_flag, future_waker) = flag();
    let mut future = p.wait_for_async(5);
    assert!(poll_future(&mut future, &future_waker).is_pending());
    let (stream_flag, stream_waker) = flag();
    let mut stream = p.stream(1);
    assert!(poll_stream(&mut stream, &stream_waker).is_pending());

    log.close().expect("close");
    assert!(future_flag.woken.load(Ordering::SeqCst));
    assert!(stream_flag.woken.load(Ordering::SeqCst));
    assert!(matches!(
        poll_future(&mut future, &future_waker),
        Poll::Ready(Err(Error::Closed))
    ));
    assert!(matches!(
        poll_stream(&mut stream, &stream_waker),
        Poll::Ready(Some(Err(Error::Closed)))
    ));
    assert!(stream.is_terminated());
    assert!(matches!(
        poll_stream(&mut stream, &stream_waker),
        Poll::Ready(None)
    ));

    // Made after the close: answered at once.
    assert!(matches!(
        poll_future(&mut p.wait_for_async(5), &future_waker),
        Poll::Ready(Err(Error::Closed))
    ));
    // An offset already reached is still reached.
    assert!(matches!(
        poll_future(&mut p.wait_for_async(0), &future_waker),
        Poll::Ready(Ok(true))
    ));
    assert!(matches!(
        poll_stream(&mut p.stream(0), &stream_waker),
        Poll::Ready(Some(Err(Error::Closed)))
    ));
}

#[test]
fn dropping_the_log_wakes_a_blocked_executor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, p) = open(dir.path(), Config::default());
    let mut stream = p.stream(0);
    let dropper = std::thread::spawn(move || drop(log));
    let item = block_on(next(&mut stream));
    assert!(matches!(item, Some(Err(Error::Closed))), "{item:?}");
    assert!(block_on(next(&mut stream)).is_none());
    dropper.join().expect("dropper");
}

#[test]
fn a_stream_from_outside_the_partition_ends_with_offset_out_of_range() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, p) = open(dir.path(), Config::default());
    p.append(&[Record::new("a")]).expect("append");
    let mut stream = p.stream(7);
    match block_on(next(&mut stream)) {
        Some(Err(Error::OffsetOutOfRange {
            requested,
            start,
            end,
        })) => assert_eq!((requested, start, end), (7, 0, 1)),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
    assert!(block_on(next(&mut stream)).is_none());
}

/// What one round of a race found.
#[derive(Default, Debug)]
struct Outcomes {
    ready_at_once: u32,
    woken: u32,
}

/// An append races with a task's first poll; a task left pending must have
/// been woken by the time the append returns (`append` wakes waiters
/// before it returns). Futures and streams take turns.
#[test]
fn an_append_racing_with_a_registration_never_loses_the_wake_up() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_log, p) = open(dir.path(), Config::default().durability(Durability::None));
    let (go, go_rx) = mpsc::channel::<()>();
    let (appended_tx, appended) = mpsc::channel::<()>();
    let appender = {
        let p = p.clone();
        std::thread::spawn(move || {
            for () in go_rx {
                p.append(&[Record::new("r")]).expect("append");
                appended_tx.send(()).expect("send");
            }
        })
    };
    let mut outcomes = Outcomes::default();
    for round in 0..rounds() {
        let end = p.end_offset();
        let (flag, waker) = flag();
        let use_stream = round % 2 == 1;
        let mut future = p.wait_for_async(end);
        let mut stream = p.stream(end);
        go.send(()).expect("go");
        // Vary where the first poll lands relative to the append.
        for _ in 0..(round % 97) * 8 {
            std::hint::spin_loop();
        }
        // The task's answer: from its first poll, or after a wake-up.
        let mut poll = || {
            if use_stream {
                match poll_stream(&mut stream, &waker) {
                    Poll::Ready(Some(Ok(r))) => Poll::Ready(r.offset == end),
                    Poll::Ready(other) => panic!("round {round}: {other:?}"),
                    Poll::Pending => Poll::Pending,
                }
            } else {
                match poll_future(&mut future, &waker) {
                    Poll::Ready(Ok(true)) => Poll::Ready(true),
                    Poll::Ready(other) => panic!("round {round}: {other:?}"),
                    Poll::Pending => Poll::Pending,
                }
            }
        };
        let first = poll();
        appended.recv().expect("appended");
        let answer = match first {
            Poll::Ready(answer) => {
                outcomes.ready_at_once += 1;
                answer
            }
            Poll::Pending => {
                assert!(
                    flag.woken.load(Ordering::SeqCst),
                    "lost wake-up in round {round} (stream: {use_stream})"
                );
                outcomes.woken += 1;
                poll() == Poll::Ready(true)
            }
        };
        assert!(answer, "round {round}: wrong answer after the wake-up");
    }
    drop(go);
    appender.join().expect("appender");
    println!("{outcomes:?}");
}

/// The same race with a close: a task left pending must have been woken by
/// the time `close` returns, and then answers `Closed`.
#[test]
fn a_close_racing_with_a_registration_never_loses_the_wake_up() {
    let mut outcomes = Outcomes::default();
    for round in 0..rounds().div_ceil(20) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, p) = open(
            dir.path(),
            Config::default()
                .durability(Durability::None)
                .max_index_bytes(4096),
        );
        let (flag, waker) = flag();
        let mut future = p.wait_for_async(0);
        let barrier = Arc::new(std::sync::Barrier::new(2));
        let closer = {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                log.close().expect("close");
            })
        };
        barrier.wait();
        // A close takes an fsync or two: land the first poll anywhere from
        // before it starts to after it ends.
        for _ in 0..(round % 50) * 200 {
            std::hint::spin_loop();
        }
        let first = poll_future(&mut future, &waker);
        closer.join().expect("closer");
        match first {
            Poll::Pending => {
                assert!(
                    flag.woken.load(Ordering::SeqCst),
                    "lost wake-up at close in round {round}"
                );
                outcomes.woken += 1;
            }
            Poll::Ready(result) => {
                assert!(matches!(result, Err(Error::Closed)), "{result:?}");
                outcomes.ready_at_once += 1;
            }
        }
        assert!(matches!(
            poll_future(&mut future, &waker),
            Poll::Ready(Err(Error::Closed))
        ));
    }
    println!("{outcomes:?}");
}
