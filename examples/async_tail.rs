//! Tails a partition from async code: a task reads `Partition::stream` while
//! a thread appends, and stops when the log is closed. No thread blocks on
//! the log: the task is woken by the appends.
//!
//! ```text
//! cargo run --example async_tail --features async
//! ```
//!
//! The futures are runtime-agnostic. This example drives them with a
//! twenty-line executor (`block_on` below) to show that nothing else is
//! needed; on tokio or async-std the same task is spawned as is, and with
//! `futures::StreamExt` or `tokio_stream::StreamExt` in scope `next` below
//! is `stream.next()`.

use std::error::Error;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use durable_log::{Config, Log, Record, RecordStream, StoredRecord};
use futures_core::Stream;

/// Runs a future to completion on this thread, parking while it waits.
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
            // Spurious wake-ups only cost a poll.
            Poll::Pending => std::thread::park(),
        }
    }
}

/// The stream's next item.
async fn next(stream: &mut RecordStream) -> Option<durable_log::Result<StoredRecord>> {
    poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), Config::default())?;
    let p = log.partition(0)?;

    let appender = {
        let p = p.clone();
        std::thread::spawn(move || -> durable_log::Result<()> {
            for i in 0..10 {
                p.append(&[Record::new(format!("event {i}"))])?;
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        })
    };

    let mut stream = p.stream(0);
    block_on(async {
        for _ in 0..10 {
            let record = next(&mut stream)
                .await
                .expect("a tailing stream does not end")?;
            let value = record.value.unwrap_or_default();
            println!("{}: {}", record.offset, String::from_utf8_lossy(&value));
        }
        Ok::<(), durable_log::Error>(())
    })?;
    appender.join().expect("appender thread")?;

    // Closing the log wakes the waiting task with `Error::Closed`, and the
    // stream ends.
    let closer = std::thread::spawn(move || log.close());
    let last = block_on(next(&mut stream));
    println!("then: {last:?}");
    assert!(matches!(last, Some(Err(durable_log::Error::Closed))));
    assert!(block_on(next(&mut stream)).is_none());
    closer.join().expect("closer thread")?;
    Ok(())
}
