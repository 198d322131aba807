//! Tailing a partition from async code, on any executor: a future that
//! resolves when a record at an offset exists, and a stream of records that
//! waits for appends.
//!
//! # How a waiting task is woken
//!
//! A future that has to wait registers its task's waker with the partition
//! and adds one to the partition's waiter count, the count blocking
//! [`Partition::wait_for`] callers add to as well. An append publishes the
//! new end offset, then (after a `SeqCst` fence) loads the count: while
//! nobody waits, that load is all an append pays. Otherwise it takes every
//! registered waker out, subtracts them from the count and wakes them.
//!
//! A registration adds to the count (under the registry's lock), then, after
//! a `SeqCst` fence, loads the end offset again. Of the two fenced store-load
//! pairs at least one sees the other's store: either the future sees the new
//! end offset and is ready, or the append sees the count and, taking the
//! registry's lock after the registration released it, finds the waker. No
//! wake-up is lost. Closing the log sets the closed flag before it wakes
//! every registered waker under the same lock, so a registration either is
//! woken or sees the flag when it looks again.
//!
//! A future removes its waker when it is dropped or resolves, so futures
//! that are created and dropped leave nothing behind, and a task that has
//! stopped waiting does not keep appends off their fast path.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::task::{Context, Poll, Waker};

use futures_core::{FusedStream, Stream};
use parking_lot::Mutex;

use crate::error::Result;
use crate::partition::{Partition, Reader};
use crate::record::StoredRecord;

/// The wakers of the tasks waiting for one partition's end offset to grow.
#[derive(Default)]
pub(crate) struct Wakers {
    registry: Mutex<Registry>,
}

#[derive(Default)]
struct Registry {
    /// The key of the next new registration. Keys are never reused, so a
    /// future can only ever remove its own waker.
    next_key: u64,
    wakers: BTreeMap<u64, Waker>,
}

impl Wakers {
    /// Registers `waker` under `key` (giving it a key the first time), or
    /// refreshes the waker still registered there. Every registration added
    /// is counted in `waiters`.
    fn register(&self, key: &mut Option<u64>, waker: &Waker, waiters: &AtomicUsize) {
        let mut registry = self.registry.lock();
        if let Some(registered) = key.and_then(|k| registry.wakers.get_mut(&k)) {
            if !registered.will_wake(waker) {
                registered.clone_from(waker);
            }
            return;
        }
        let k = *key.get_or_insert_with(|| {
            let k = registry.next_key;
            registry.next_key += 1;
            k
        });
        registry.wakers.insert(k, waker.clone());
        waiters.fetch_add(1, Ordering::SeqCst);
    }

    /// Removes the waker registered under `key`, if an append has not
    /// taken it out already.
    fn deregister(&self, key: u64, waiters: &AtomicUsize) {
        if self.registry.lock().wakers.remove(&key).is_some() {
            waiters.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Takes every registered waker out and wakes it. The wakers run after
    /// the registry's lock is released, so one that polls its future at
    /// once can register again.
    pub(crate) fn wake_all(&self, waiters: &AtomicUsize) {
        let wakers = {
            let mut registry = self.registry.lock();
            if registry.wakers.is_empty() {
                return;
            }
            let wakers = std::mem::take(&mut registry.wakers);
            waiters.fetch_sub(wakers.len(), Ordering::SeqCst);
            wakers
        };
        for waker in wakers.into_values() {
            waker.wake();
        }
    }

    /// How many wakers are registered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.registry.lock().wakers.len()
    }
}

/// A task's place among a partition's waiters, given up when dropped.
struct Registration {
    partition: Partition,
    key: Option<u64>,
}

impl Registration {
    fn new(partition: Partition) -> Registration {
        Registration {
            partition,
            key: None,
        }
    }

    /// Ready when `end_offset() > offset`; an error once the partition is
    /// closed; otherwise registers the task to be woken by the next append
    /// (or the close).
    fn poll_past(&mut self, cx: &mut Context<'_>, offset: u64) -> Poll<Result<()>> {
        if let Some(ready) = self.check(offset) {
            return Poll::Ready(ready);
        }
        let (wakers, waiters) = self.partition.tail_wakers();
        wakers.register(&mut self.key, cx.waker(), waiters);
        // Pairs with the fence in `Partition::notify_tail`: either this
        // sees the new end offset, or the append sees the registration.
        fence(Ordering::SeqCst);
        match self.check(offset) {
            Some(ready) => Poll::Ready(ready),
            None => Poll::Pending,
        }
    }

    /// The answer if there is one now, with the waker given up.
    fn check(&mut self, offset: u64) -> Option<Result<()>> {
        let ready = if self.partition.end_offset() > offset {
            Ok(())
        } else if let Err(closed) = self.partition.check_open() {
            Err(closed)
        } else {
            return None;
        };
        self.clear();
        Some(ready)
    }

    fn clear(&mut self) {
        if let Some(key) = self.key.take() {
            let (wakers, waiters) = self.partition.tail_wakers();
            wakers.deregister(key, waiters);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.clear();
    }
}

/// The future [`Partition::wait_for_async`] returns.
///
/// Resolves to `Ok(true)` once the partition's end offset is past the
/// offset it was given, and to [`Error::Closed`](crate::Error::Closed) if
/// the log is closed first. Polling it again after that answers again.
#[must_use = "futures do nothing unless polled"]
pub struct WaitFor {
    registration: Registration,
    offset: u64,
}

impl std::fmt::Debug for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitFor")
            .field("partition", &self.registration.partition.id())
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl Future for WaitFor {
    type Output = Result<bool>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<bool>> {
        let this = self.get_mut();
        this.registration
            .poll_past(cx, this.offset)
            .map(|ready| ready.map(|()| true))
    }
}

/// The stream [`Partition::stream`] returns: the partition's records in
/// offset order, waiting for appends when it reaches the end.
///
/// It reads as [`Partition::reader`] does (records up to the end offset,
/// which on a log that syncs every append may include records whose fsync
/// is still under way). It never ends on its own: after the last record it
/// is pending until a record is appended. An error (the log was closed, the
/// offset is out of range, a batch is corrupt) is its last item; the stream
/// ends after it.
pub struct RecordStream {
    reader: Reader,
    registration: Registration,
    ended: bool,
}

impl std::fmt::Debug for RecordStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStream")
            .field("partition", &self.registration.partition.id())
            .field("next_offset", &self.reader.next_offset())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl RecordStream {
    /// The offset of the next record this stream yields.
    pub fn next_offset(&self) -> u64 {
        self.reader.next_offset()
    }
}

impl Stream for RecordStream {
    type Item = Result<StoredRecord>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let end = this.registration.partition.end_offset();
            match this.reader.next() {
                Some(Ok(record)) => return Poll::Ready(Some(Ok(record))),
                Some(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {}
            }
            // The reader has returned every record below `end` (the end
            // only moves back with a truncation, which the reader handles):
            // wait for one at or after it. Waiting on the reader's own next
            // offset alone could spin where the records at the end of the
            // log leave a gap in the offsets.
            let wanted = end.max(this.reader.next_offset());
            match this.registration.poll_past(cx, wanted) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(error)) => {
                    this.ended = true;
                    return Poll::Ready(Some(Err(error)));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl FusedStream for RecordStream {
    fn is_terminated(&self) -> bool {
        self.ended
    }
}

/// Async tailing, with the `async` feature.
impl Partition {
    /// A future that resolves once `end_offset() > offset`: the
    /// non-blocking form of [`Partition::wait_for`], for tailing the log
    /// from async code on any executor. It resolves to `Ok(true)` (there is
    /// no timeout to report; put one around it with your runtime's timer).
    ///
    /// The future is woken by the thread that appends (or closes the log);
    /// it never polls. Dropping it before it resolves withdraws it.
    ///
    /// # Errors
    ///
    /// [`Error::Closed`](crate::Error::Closed) if the log is closed before
    /// the offset is reached.
    ///
    /// ```
    /// use std::future::Future;
    /// use std::pin::pin;
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake, Waker};
    /// use durable_log::{Config, Log, Record};
    ///
    /// /// Runs a future on this thread: any executor will do.
    /// fn block_on<F: Future>(future: F) -> F::Output {
    ///     struct Unpark(std::thread::Thread);
    ///     impl Wake for Unpark {
    ///         fn wake(self: Arc<Self>) {
    ///             self.0.unpark();
    ///         }
    ///     }
    ///     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    ///     let mut cx = Context::from_waker(&waker);
    ///     let mut future = pin!(future);
    ///     loop {
    ///         match future.as_mut().poll(&mut cx) {
    ///             Poll::Ready(output) => return output,
    ///             Poll::Pending => std::thread::park(),
    ///         }
    ///     }
    /// }
    ///
    /// # fn main() -> durable_log::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), Config::default())?;
    /// let p = log.partition(0)?;
    /// let appender = {
    ///     let p = p.clone();
    ///     std::thread::spawn(move || p.append(&[Record::new("first")]))
    /// };
    /// assert!(block_on(p.wait_for_async(0))?);
    /// appender.join().unwrap()?;
    /// assert_eq!(p.end_offset(), 1);
    /// # Ok(()) }
    /// ```
    pub fn wait_for_async(&self, offset: u64) -> WaitFor {
        WaitFor {
            registration: Registration::new(self.clone()),
            offset,
        }
    }

    /// A stream of the records from `offset` on that, once it has yielded
    /// the last one, waits for the next append: a tailing
    /// [`reader`](Partition::reader) for async code on any executor. See
    /// [`RecordStream`] for how it reads and ends.
    ///
    /// ```
    /// use std::future::{Future, poll_fn};
    /// use std::pin::{Pin, pin};
    /// use std::sync::Arc;
    /// use std::task::{Context, Poll, Wake, Waker};
    /// use durable_log::{Config, Log, Record, RecordStream};
    /// use futures_core::Stream;
    ///
    /// # fn block_on<F: Future>(future: F) -> F::Output {
    /// #     struct Unpark(std::thread::Thread);
    /// #     impl Wake for Unpark {
    /// #         fn wake(self: Arc<Self>) { self.0.unpark(); }
    /// #     }
    /// #     let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    /// #     let mut cx = Context::from_waker(&waker);
    /// #     let mut future = pin!(future);
    /// #     loop {
    /// #         match future.as_mut().poll(&mut cx) {
    /// #             Poll::Ready(output) => return output,
    /// #             Poll::Pending => std::thread::park(),
    /// #         }
    /// #     }
    /// # }
    /// // With `futures::StreamExt` or `tokio_stream::StreamExt` in scope this
    /// // is `stream.next().await`.
    /// async fn next(stream: &mut RecordStream) -> Option<durable_log::Result<u64>> {
    ///     let item = poll_fn(|cx| Pin::new(&mut *stream).poll_next(cx)).await?;
    ///     Some(item.map(|record| record.offset))
    /// }
    ///
    /// # fn main() -> durable_log::Result<()> {
    /// # let dir = tempfile::tempdir().unwrap();
    /// let log = Log::open(dir.path(), Config::default())?;
    /// let p = log.partition(0)?;
    /// p.append(&[Record::new("a")])?;
    /// let mut stream = p.stream(0);
    /// let appender = {
    ///     let p = p.clone();
    ///     std::thread::spawn(move || p.append(&[Record::new("b"), Record::new("c")]))
    /// };
    /// let offsets = block_on(async {
    ///     let mut offsets = Vec::new();
    ///     while offsets.len() < 3 {
    ///         offsets.push(next(&mut stream).await.expect("the stream does not end")?);
    ///     }
    ///     Ok::<_, durable_log::Error>(offsets)
    /// })?;
    /// assert_eq!(offsets, [0, 1, 2]);
    /// appender.join().unwrap()?;
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, offset: u64) -> RecordStream {
        RecordStream {
            reader: self.reader(offset),
            registration: Registration::new(self.clone()),
            ended: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::Ordering;
    use std::task::{Context, Poll, Wake, Waker};

    use futures_core::Stream;

    use crate::{Config, Durability, Log, Partition, Record};

    struct Noop;

    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }

    fn open() -> (tempfile::TempDir, Log, Partition) {
        let dir = tempfile::tempdir().expect("tempdir");
        let log =
            Log::open(dir.path(), Config::default().durability(Durability::None)).expect("open");
        let p = log.partition(0).expect("partition");
        (dir, log, p)
    }

    fn registered(p: &Partition) -> (usize, usize) {
        let (wakers, waiters) = p.tail_wakers();
        (wakers.len(), waiters.load(Ordering::SeqCst))
    }

    #[test]
    fn dropped_futures_and_streams_leave_no_waker_behind() {
        let (_dir, _log, p) = open();
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        for round in 0..10_000 {
            let mut future = p.wait_for_async(0);
            assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
            let mut stream = p.stream(0);
            assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
            assert_eq!(registered(&p), (2, 2), "round {round}");
        }
        assert_eq!(registered(&p), (0, 0));

        // Many at once, dropped in any order.
        let mut futures: Vec<_> = (0..1000).map(|_| p.wait_for_async(0)).collect();
        for future in &mut futures {
            assert!(Pin::new(future).poll(&mut cx).is_pending());
        }
        assert_eq!(registered(&p), (1000, 1000));
        let mut index = 0;
        futures.retain(|_| {
            index += 1;
            index % 2 == 0
        });
        assert_eq!(registered(&p), (500, 500));
        while let Some(future) = futures.pop() {
            drop(future);
        }
        assert_eq!(registered(&p), (0, 0));
    }

    #[test]
    fn polling_again_refreshes_the_waker_instead_of_adding_one() {
        let (_dir, _log, p) = open();
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut future = p.wait_for_async(0);
        for _ in 0..100 {
            assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        }
        let other = Waker::from(Arc::new(Noop));
        assert!(
            Pin::new(&mut future)
                .poll(&mut Context::from_waker(&other))
                .is_pending()
        );
        assert_eq!(registered(&p), (1, 1));
        drop(future);
        assert_eq!(registered(&p), (0, 0));
    }

    #[test]
    fn an_append_takes_the_wakers_out_and_a_resolved_future_holds_none() {
        let (_dir, _log, p) = open();
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut futures: Vec<_> = (0..10).map(|_| p.wait_for_async(0)).collect();
        for future in &mut futures {
            assert!(Pin::new(future).poll(&mut cx).is_pending());
        }
        assert_eq!(registered(&p), (10, 10));
        p.append(&[Record::new("x")]).expect("append");
        // Back on the fast path: nobody is counted as waiting.
        assert_eq!(registered(&p), (0, 0));
        for future in &mut futures {
            assert!(matches!(
                Pin::new(future).poll(&mut cx),
                Poll::Ready(Ok(true))
            ));
        }
        assert_eq!(registered(&p), (0, 0));

        // A stream that read the record and waits again registers once.
        let mut stream = p.stream(0);
        assert!(matches!(
            Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Ready(Some(Ok(_)))
        ));
        assert!(Pin::new(&mut stream).poll_next(&mut cx).is_pending());
        assert_eq!(registered(&p), (1, 1));
        p.append(&[Record::new("y")]).expect("append");
        assert!(matches!(
            Pin::new(&mut stream).poll_next(&mut cx),
            Poll::Ready(Some(Ok(r))) if r.offset == 1
        ));
        assert_eq!(registered(&p), (0, 0));
    }

    #[test]
    fn a_blocking_waiter_and_a_task_share_the_count() {
        let (_dir, _log, p) = open();
        let waker = Waker::from(Arc::new(Noop));
        let mut cx = Context::from_waker(&waker);
        let mut future = p.wait_for_async(0);
        assert!(Pin::new(&mut future).poll(&mut cx).is_pending());
        let blocked = {
            let p = p.clone();
            std::thread::spawn(move || p.wait_for(0, std::time::Duration::MAX))
        };
        // Both are woken by one append, whichever registered first.
        p.append(&[Record::new("x")]).expect("append");
        assert!(blocked.join().expect("waiter").expect("wait_for"));
        assert!(matches!(
            Pin::new(&mut future).poll(&mut cx),
            Poll::Ready(Ok(true))
        ));
        assert_eq!(registered(&p), (0, 0));
    }
}
