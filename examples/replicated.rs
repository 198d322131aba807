//! One partition replicated on three processes over TCP, with a failover.
//!
//! ```text
//! cargo run --release --example replicated
//! ```
//!
//! This process (the *parent*) starts three replica processes: copies of
//! this binary, run as `replicated replica <id> <dir> <controller-port>`.
//! Each keeps its own [`Log`] in its own temporary directory and serves
//! its [`Replica`] of partition 0 on a loopback TCP port. The parent plays
//! the two other roles:
//!
//! - the **controller**: an [`InMemoryController`] decides who leads and
//!   which replicas are in sync; replicas register with it and send it
//!   their ISR changes, and it pushes every state it decides to them;
//! - the **producer**: a [`ReplicatedProducer`] writes 2,000 records with
//!   `Acks::All`, idempotently, and notes where each acknowledged record
//!   landed.
//!
//! Once 40% of the records are acknowledged, the parent kills the leader's
//! process with SIGKILL and tells the controller, which elects a follower
//! from the in-sync replicas; the producer follows the new leader and
//! retries what was in flight, without duplicating it. At 70% the killed
//! replica is started again on its old directory: it cuts whatever the new
//! leader never had (truncation by leader epoch), catches up, and rejoins
//! the in-sync replicas.
//!
//! At the end the parent reads back every replica's records and checks
//! that each acknowledged record is on every replica exactly once, at the
//! offset it was acknowledged with, and that the replicas are identical.
//! It exits with a non-zero status if not. `REPLICATED_RECORDS` sets how
//! many records to write (default 2,000).
//!
//! Who talks to whom (all on 127.0.0.1):
//!
//! ```text
//!             parent: controller + producer
//!               ▲                      │
//!   Register,   │                      │  PushState (to all),
//!   AlterIsr,   │                      │  Produce (to the leader),
//!   GetState    │                      ▼  Status, Dump
//!          replica 0   replica 1   replica 2
//!                    ◀── Fetch ── (followers fetch from the leader)
//! ```
//!
//! The file reads top to bottom:
//!
//! 1. the wire protocol: one length-prefixed frame per message, and a code
//!    for each error a client acts on;
//! 2. `Peers`: connections to the replicas, and the [`Transport`] over them
//!    that [`Replica::fetch_once`] and [`ReplicatedProducer`] use;
//! 3. the replica process;
//! 4. the controller service, in the parent;
//! 5. the parent: starts, kills and restarts replicas, produces, checks.
//!
//! A real deployment differs in one place worth knowing: it learns that a
//! replica died from the replica's session with a coordination service
//! (an etcd lease, a ZooKeeper ephemeral node; see the `replication`
//! module's documentation), not by being the replica's parent process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::error::Error as StdError;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{self, Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use durable_log::replication::{
    Acks, AlterIsr, Controller, ControllerConfig, Fetch, FetchOutcome, FetchResponse,
    InMemoryController, LeaderEpoch, PartitionState, ProduceRequest, ProducerSequence, Replica,
    ReplicaId, ReplicatedProducer, ReplicationConfig, Transport,
};
use durable_log::{Appended, Config, Durability, Error, Header, Log, Record};

const PARTITION: u32 = 0;
const REPLICAS: [ReplicaId; 3] = [0, 1, 2];
/// An `Acks::All` write needs this many in-sync replicas, the leader
/// included: with three replicas, one may fail without losing anything or
/// refusing writes.
const MIN_INSYNC_REPLICAS: usize = 2;
const DEFAULT_RECORDS: u64 = 2_000;
const BATCH_RECORDS: u64 = 10;

/// How long a leader holds a produce request waiting for the followers
/// before answering `ReplicationTimeout` (the producer then retries).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the producer retries one batch before giving up.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(20);
/// A follower that has not caught up for this long leaves the ISR. Kafka's
/// default is 30 s; short here so that the demo is quick.
const REPLICA_LAG_MAX: Duration = Duration::from_secs(1);
/// An ISR change the controller did not answer is sent again after this.
const ISR_CHANGE_RETRY: Duration = Duration::from_millis(200);
/// How often each replica runs `Replica::maintain`.
const MAINTAIN_INTERVAL: Duration = Duration::from_millis(50);
/// A caught-up follower waits this long before fetching again.
const FETCH_PAUSE: Duration = Duration::from_millis(2);
/// After a failed fetch, or while there is no leader to fetch from.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// The controller sends every state to every replica this often, besides
/// at each change, so that a replica that missed a push catches up.
const REBROADCAST_INTERVAL: Duration = Duration::from_millis(500);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// For the answer to any request but a produce.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);
/// How long each phase of the parent may take before it gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("replica") {
        // A replica process, started by the parent (part 3).
        return match replica_main(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[replica] error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("\nerror: {e}");
            ExitCode::FAILURE
        }
    }
}

// ===========================================================================
// 1. The wire protocol
// ===========================================================================
//
// Each message is one frame: a u32 length, then that many bytes: a one-byte
// kind and the message's fields in order. Integers are little-endian;
// `bytes` are a u32 length and the bytes; an `Option` is a byte 0 or 1 and
// then the value; a list is a u32 count and the items. A connection carries
// one request and its answer at a time.

/// Frames larger than this are refused, before anything is allocated.
const MAX_FRAME_BYTES: usize = 64 << 20;

/// What a client asks.
#[derive(Debug)]
enum Request {
    /// A follower's fetch, to the leader.
    Fetch(Fetch),
    /// A producer's write, to the leader.
    Produce(ProduceRequest),
    /// A state the controller decided, with where every replica listens;
    /// from the controller to each replica.
    PushState(PartitionState, AddressBook),
    /// A replica's offsets and role (for the parent).
    Status,
    /// Every record a replica stores (for the final check).
    Dump,
    /// A replica process announces itself to the controller.
    Register { replica: ReplicaId, port: u16 },
    /// A leader's ISR change, to the controller.
    AlterIsr(AlterIsr),
    /// The current state of a partition, from the controller.
    GetState { partition: u32 },
}

/// What a server answers.
#[derive(Debug)]
enum Response {
    Fetched(FetchResponse),
    Appended(Appended),
    Done,
    Status(Status),
    Records(Vec<(u64, Option<Bytes>)>),
    State(PartitionState, AddressBook),
    Failed(Error),
}

/// A replica's view of itself.
#[derive(Debug, Clone)]
struct Status {
    is_leader: bool,
    leader: Option<ReplicaId>,
    leader_epoch: LeaderEpoch,
    log_end_offset: u64,
    high_watermark: u64,
}

/// Where each replica process listens: a port on 127.0.0.1, as the
/// controller knows it. `version` grows at every change, so that a book
/// that arrives late does not replace a newer one.
#[derive(Debug, Clone, Default)]
struct AddressBook {
    version: u64,
    ports: BTreeMap<ReplicaId, u16>,
}

impl AddressBook {
    fn update(&mut self, newer: AddressBook) {
        if newer.version > self.version {
            *self = newer;
        }
    }
}

// Message kinds: requests, then answers.
const KIND_FETCH: u8 = 1;
const KIND_PRODUCE: u8 = 2;
const KIND_PUSH_STATE: u8 = 3;
const KIND_STATUS: u8 = 4;
const KIND_DUMP: u8 = 5;
const KIND_REGISTER: u8 = 6;
const KIND_ALTER_ISR: u8 = 7;
const KIND_GET_STATE: u8 = 8;
const KIND_FETCHED: u8 = 101;
const KIND_APPENDED: u8 = 102;
const KIND_DONE: u8 = 103;
const KIND_STATUS_IS: u8 = 104;
const KIND_RECORDS: u8 = 105;
const KIND_STATE: u8 = 106;
const KIND_FAILED: u8 = 107;

// The errors a client acts on travel as a code and their fields. Any other
// error travels as its message and arrives as `Error::Io`, which
// `ReplicatedProducer` retries until its delivery timeout.
const ERROR_OTHER: u8 = 0;
const ERROR_NOT_LEADER: u8 = 1;
const ERROR_NOT_ENOUGH_REPLICAS: u8 = 2;
const ERROR_REPLICATION_TIMEOUT: u8 = 3;
const ERROR_LEADER_EPOCH_MISMATCH: u8 = 4;
const ERROR_CONTROLLER_REFUSED: u8 = 5;

/// Builds one frame.
struct Writer(Vec<u8>);

impl Writer {
    /// Starts a frame of `kind`, with room for the length in front.
    fn new(kind: u8) -> Writer {
        let mut w = Writer(vec![0; 4]);
        w.u8(kind);
        w
    }

    /// Writes the length in front: the frame is ready to send.
    fn finish(mut self) -> io::Result<Vec<u8>> {
        let body = self.0.len() - 4;
        if body > MAX_FRAME_BYTES {
            return Err(invalid("message too large for one frame"));
        }
        let length = u32::try_from(body).map_err(|_| invalid("message too large"))?;
        self.0[..4].copy_from_slice(&length.to_le_bytes());
        Ok(self.0)
    }

    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }

    fn bool(&mut self, v: bool) {
        self.u8(u8::from(v));
    }

    fn u16(&mut self, v: u16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i16(&mut self, v: i16) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i32(&mut self, v: i32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn usize(&mut self, v: usize) {
        self.u64(u64::try_from(v).unwrap_or(u64::MAX));
    }

    /// A count or a length. One that does not fit a u32 makes the frame
    /// larger than `MAX_FRAME_BYTES`, which `finish` refuses.
    fn len(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    fn bytes(&mut self, v: &[u8]) {
        self.len(v.len());
        self.0.extend_from_slice(v);
    }

    fn opt<T>(&mut self, v: Option<T>, put: impl FnOnce(&mut Writer, T)) {
        self.bool(v.is_some());
        if let Some(v) = v {
            put(self, v);
        }
    }

    fn list<T>(&mut self, items: &[T], mut put: impl FnMut(&mut Writer, &T)) {
        self.len(items.len());
        for item in items {
            put(self, item);
        }
    }
}

/// Reads one frame. Every read is bounds-checked: a short or malformed
/// frame is an `InvalidData` error, never a panic, and no allocation is
/// sized by a count before the frame holds that many bytes.
struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> io::Result<Bytes> {
        if n > self.0.len() {
            return Err(invalid("frame ends early"));
        }
        Ok(self.0.split_to(n))
    }

    fn array<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut a = [0; N];
        a.copy_from_slice(&self.take(N)?);
        Ok(a)
    }

    fn u8(&mut self) -> io::Result<u8> {
        Ok(self.array::<1>()?[0])
    }

    fn bool(&mut self) -> io::Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(invalid("bad boolean")),
        }
    }

    fn u16(&mut self) -> io::Result<u16> {
        self.array().map(u16::from_le_bytes)
    }

    fn i16(&mut self) -> io::Result<i16> {
        self.array().map(i16::from_le_bytes)
    }

    fn u32(&mut self) -> io::Result<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i32(&mut self) -> io::Result<i32> {
        self.array().map(i32::from_le_bytes)
    }

    fn u64(&mut self) -> io::Result<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn i64(&mut self) -> io::Result<i64> {
        self.array().map(i64::from_le_bytes)
    }

    fn usize(&mut self) -> io::Result<usize> {
        usize::try_from(self.u64()?).map_err(|_| invalid("size out of range"))
    }

    fn len(&mut self) -> io::Result<usize> {
        usize::try_from(self.u32()?).map_err(|_| invalid("length out of range"))
    }

    fn bytes(&mut self) -> io::Result<Bytes> {
        let n = self.len()?;
        self.take(n)
    }

    fn string(&mut self) -> io::Result<String> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| invalid("bad UTF-8"))
    }

    fn opt<T>(&mut self, get: impl FnOnce(&mut Reader) -> io::Result<T>) -> io::Result<Option<T>> {
        if self.bool()? {
            get(self).map(Some)
        } else {
            Ok(None)
        }
    }

    fn list<T>(&mut self, mut get: impl FnMut(&mut Reader) -> io::Result<T>) -> io::Result<Vec<T>> {
        let n = self.len()?;
        // Every item takes at least a byte.
        if n > self.0.len() {
            return Err(invalid("list longer than its frame"));
        }
        (0..n).map(|_| get(self)).collect()
    }

    fn end(self) -> io::Result<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(invalid("bytes after the message"))
        }
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

// The library's messages, field by field.

fn put_fetch(w: &mut Writer, f: &Fetch) {
    w.u32(f.replica);
    w.u32(f.partition);
    w.i32(f.leader_epoch);
    w.u64(f.fetch_offset);
    w.opt(f.last_fetched_epoch, Writer::i32);
    w.u64(f.durable_offset);
    w.usize(f.max_bytes);
}

fn get_fetch(r: &mut Reader) -> io::Result<Fetch> {
    Ok(Fetch {
        replica: r.u32()?,
        partition: r.u32()?,
        leader_epoch: r.i32()?,
        fetch_offset: r.u64()?,
        last_fetched_epoch: r.opt(Reader::i32)?,
        durable_offset: r.u64()?,
        max_bytes: r.usize()?,
    })
}

fn put_fetch_response(w: &mut Writer, f: &FetchResponse) {
    w.u32(f.partition);
    w.u32(f.leader);
    w.i32(f.leader_epoch);
    w.u64(f.fetch_offset);
    w.u64(f.high_watermark);
    w.u64(f.log_start_offset);
    match &f.outcome {
        // The batches exactly as the leader stores them: the follower
        // checks their checksums and appends them with the leader's offsets.
        FetchOutcome::Batches(batches) => {
            w.u8(0);
            w.list(batches, |w, b| w.bytes(b));
        }
        FetchOutcome::Diverging { epoch, end_offset } => {
            w.u8(1);
            w.i32(*epoch);
            w.u64(*end_offset);
        }
        FetchOutcome::OffsetOutOfRange => w.u8(2),
    }
}

fn get_fetch_response(r: &mut Reader) -> io::Result<FetchResponse> {
    Ok(FetchResponse {
        partition: r.u32()?,
        leader: r.u32()?,
        leader_epoch: r.i32()?,
        fetch_offset: r.u64()?,
        high_watermark: r.u64()?,
        log_start_offset: r.u64()?,
        outcome: match r.u8()? {
            0 => FetchOutcome::Batches(r.list(Reader::bytes)?),
            1 => FetchOutcome::Diverging {
                epoch: r.i32()?,
                end_offset: r.u64()?,
            },
            2 => FetchOutcome::OffsetOutOfRange,
            _ => return Err(invalid("unknown fetch outcome")),
        },
    })
}

fn put_produce(w: &mut Writer, p: &ProduceRequest) {
    w.u32(p.partition);
    w.u8(match p.acks {
        Acks::None => 0,
        Acks::Leader => 1,
        Acks::All => 2,
    });
    w.u64(u64::try_from(p.timeout.as_millis()).unwrap_or(u64::MAX));
    w.opt(p.producer, |w, s| {
        w.i64(s.producer_id);
        w.i16(s.producer_epoch);
        w.i32(s.base_sequence);
    });
    w.list(&p.records, |w, record| {
        w.opt(record.key.as_deref(), Writer::bytes);
        w.opt(record.value.as_deref(), Writer::bytes);
        w.opt(record.timestamp, Writer::i64);
        w.list(&record.headers, |w, h| {
            w.bytes(h.key.as_bytes());
            w.opt(h.value.as_deref(), Writer::bytes);
        });
    });
}

fn get_produce(r: &mut Reader) -> io::Result<ProduceRequest> {
    Ok(ProduceRequest {
        partition: r.u32()?,
        acks: match r.u8()? {
            0 => Acks::None,
            1 => Acks::Leader,
            2 => Acks::All,
            _ => return Err(invalid("unknown acks")),
        },
        timeout: Duration::from_millis(r.u64()?),
        producer: r.opt(|r| {
            Ok(ProducerSequence {
                producer_id: r.i64()?,
                producer_epoch: r.i16()?,
                base_sequence: r.i32()?,
            })
        })?,
        records: r.list(|r| {
            Ok(Record {
                key: r.opt(Reader::bytes)?,
                value: r.opt(Reader::bytes)?,
                timestamp: r.opt(Reader::i64)?,
                headers: r.list(|r| {
                    Ok(Header {
                        key: r.string()?,
                        value: r.opt(Reader::bytes)?,
                    })
                })?,
            })
        })?,
    })
}

fn put_appended(w: &mut Writer, a: &Appended) {
    w.u32(a.partition);
    w.u64(a.base_offset);
    w.u64(a.last_offset);
    w.i64(a.max_timestamp);
}

fn get_appended(r: &mut Reader) -> io::Result<Appended> {
    Ok(Appended {
        partition: r.u32()?,
        base_offset: r.u64()?,
        last_offset: r.u64()?,
        max_timestamp: r.i64()?,
    })
}

fn put_state(w: &mut Writer, s: &PartitionState) {
    w.u32(s.partition);
    w.list(&s.replicas, |w, &r| w.u32(r));
    w.opt(s.leader, Writer::u32);
    w.i32(s.leader_epoch);
    w.list(&s.isr, |w, &r| w.u32(r));
    w.list(&s.elr, |w, &r| w.u32(r));
    w.i32(s.partition_epoch);
}

fn get_state(r: &mut Reader) -> io::Result<PartitionState> {
    Ok(PartitionState {
        partition: r.u32()?,
        replicas: r.list(Reader::u32)?,
        leader: r.opt(Reader::u32)?,
        leader_epoch: r.i32()?,
        isr: r.list(Reader::u32)?,
        elr: r.list(Reader::u32)?,
        partition_epoch: r.i32()?,
    })
}

fn put_alter_isr(w: &mut Writer, a: &AlterIsr) {
    w.u32(a.partition);
    w.u32(a.leader);
    w.i32(a.leader_epoch);
    w.i32(a.partition_epoch);
    w.list(&a.isr, |w, &r| w.u32(r));
}

fn get_alter_isr(r: &mut Reader) -> io::Result<AlterIsr> {
    Ok(AlterIsr {
        partition: r.u32()?,
        leader: r.u32()?,
        leader_epoch: r.i32()?,
        partition_epoch: r.i32()?,
        isr: r.list(Reader::u32)?,
    })
}

fn put_book(w: &mut Writer, book: &AddressBook) {
    w.u64(book.version);
    let ports: Vec<(ReplicaId, u16)> = book.ports.iter().map(|(&r, &p)| (r, p)).collect();
    w.list(&ports, |w, &(replica, port)| {
        w.u32(replica);
        w.u16(port);
    });
}

fn get_book(r: &mut Reader) -> io::Result<AddressBook> {
    Ok(AddressBook {
        version: r.u64()?,
        ports: r.list(|r| Ok((r.u32()?, r.u16()?)))?.into_iter().collect(),
    })
}

fn put_error(w: &mut Writer, error: &Error, server: &str) {
    match error {
        Error::NotLeader {
            partition,
            replica,
            leader,
            leader_epoch,
        } => {
            w.u8(ERROR_NOT_LEADER);
            w.u32(*partition);
            w.u32(*replica);
            w.opt(*leader, Writer::u32);
            w.i32(*leader_epoch);
        }
        Error::NotEnoughReplicas {
            partition,
            in_sync,
            required,
        } => {
            w.u8(ERROR_NOT_ENOUGH_REPLICAS);
            w.u32(*partition);
            w.usize(*in_sync);
            w.usize(*required);
        }
        Error::ReplicationTimeout {
            partition,
            offset,
            high_watermark,
        } => {
            w.u8(ERROR_REPLICATION_TIMEOUT);
            w.u32(*partition);
            w.u64(*offset);
            w.u64(*high_watermark);
        }
        Error::LeaderEpochMismatch {
            partition,
            requested,
            current,
        } => {
            w.u8(ERROR_LEADER_EPOCH_MISMATCH);
            w.u32(*partition);
            w.i32(*requested);
            w.i32(*current);
        }
        Error::ControllerRefused { partition, reason } => {
            w.u8(ERROR_CONTROLLER_REFUSED);
            w.u32(*partition);
            w.bytes(reason.as_bytes());
        }
        other => {
            w.u8(ERROR_OTHER);
            w.bytes(server.as_bytes());
            w.bytes(other.to_string().as_bytes());
        }
    }
}

fn get_error(r: &mut Reader) -> io::Result<Error> {
    Ok(match r.u8()? {
        ERROR_NOT_LEADER => Error::NotLeader {
            partition: r.u32()?,
            replica: r.u32()?,
            leader: r.opt(Reader::u32)?,
            leader_epoch: r.i32()?,
        },
        ERROR_NOT_ENOUGH_REPLICAS => Error::NotEnoughReplicas {
            partition: r.u32()?,
            in_sync: r.usize()?,
            required: r.usize()?,
        },
        ERROR_REPLICATION_TIMEOUT => Error::ReplicationTimeout {
            partition: r.u32()?,
            offset: r.u64()?,
            high_watermark: r.u64()?,
        },
        ERROR_LEADER_EPOCH_MISMATCH => Error::LeaderEpochMismatch {
            partition: r.u32()?,
            requested: r.i32()?,
            current: r.i32()?,
        },
        ERROR_CONTROLLER_REFUSED => Error::ControllerRefused {
            partition: r.u32()?,
            reason: r.string()?,
        },
        ERROR_OTHER => {
            let server = r.string()?;
            network_error(&server, io::Error::other(r.string()?))
        }
        _ => return Err(invalid("unknown error code")),
    })
}

impl Request {
    fn encode(&self) -> io::Result<Vec<u8>> {
        let mut w;
        match self {
            Request::Fetch(fetch) => {
                w = Writer::new(KIND_FETCH);
                put_fetch(&mut w, fetch);
            }
            Request::Produce(produce) => {
                w = Writer::new(KIND_PRODUCE);
                put_produce(&mut w, produce);
            }
            Request::PushState(state, book) => {
                w = Writer::new(KIND_PUSH_STATE);
                put_state(&mut w, state);
                put_book(&mut w, book);
            }
            Request::Status => w = Writer::new(KIND_STATUS),
            Request::Dump => w = Writer::new(KIND_DUMP),
            Request::Register { replica, port } => {
                w = Writer::new(KIND_REGISTER);
                w.u32(*replica);
                w.u16(*port);
            }
            Request::AlterIsr(change) => {
                w = Writer::new(KIND_ALTER_ISR);
                put_alter_isr(&mut w, change);
            }
            Request::GetState { partition } => {
                w = Writer::new(KIND_GET_STATE);
                w.u32(*partition);
            }
        }
        w.finish()
    }

    fn decode(mut r: Reader) -> io::Result<Request> {
        let request = match r.u8()? {
            KIND_FETCH => Request::Fetch(get_fetch(&mut r)?),
            KIND_PRODUCE => Request::Produce(get_produce(&mut r)?),
            KIND_PUSH_STATE => Request::PushState(get_state(&mut r)?, get_book(&mut r)?),
            KIND_STATUS => Request::Status,
            KIND_DUMP => Request::Dump,
            KIND_REGISTER => Request::Register {
                replica: r.u32()?,
                port: r.u16()?,
            },
            KIND_ALTER_ISR => Request::AlterIsr(get_alter_isr(&mut r)?),
            KIND_GET_STATE => Request::GetState {
                partition: r.u32()?,
            },
            _ => return Err(invalid("unknown request")),
        };
        r.end()?;
        Ok(request)
    }
}

impl Response {
    /// `server` names the process answering, for errors sent as text.
    fn encode(&self, server: &str) -> io::Result<Vec<u8>> {
        let mut w;
        match self {
            Response::Fetched(response) => {
                w = Writer::new(KIND_FETCHED);
                put_fetch_response(&mut w, response);
            }
            Response::Appended(appended) => {
                w = Writer::new(KIND_APPENDED);
                put_appended(&mut w, appended);
            }
            Response::Done => w = Writer::new(KIND_DONE),
            Response::Status(s) => {
                w = Writer::new(KIND_STATUS_IS);
                w.bool(s.is_leader);
                w.opt(s.leader, Writer::u32);
                w.i32(s.leader_epoch);
                w.u64(s.log_end_offset);
                w.u64(s.high_watermark);
            }
            Response::Records(records) => {
                w = Writer::new(KIND_RECORDS);
                w.list(records, |w, (offset, value)| {
                    w.u64(*offset);
                    w.opt(value.as_deref(), Writer::bytes);
                });
            }
            Response::State(state, book) => {
                w = Writer::new(KIND_STATE);
                put_state(&mut w, state);
                put_book(&mut w, book);
            }
            Response::Failed(error) => {
                w = Writer::new(KIND_FAILED);
                put_error(&mut w, error, server);
            }
        }
        w.finish()
    }

    fn decode(mut r: Reader) -> io::Result<Response> {
        let response = match r.u8()? {
            KIND_FETCHED => Response::Fetched(get_fetch_response(&mut r)?),
            KIND_APPENDED => Response::Appended(get_appended(&mut r)?),
            KIND_DONE => Response::Done,
            KIND_STATUS_IS => Response::Status(Status {
                is_leader: r.bool()?,
                leader: r.opt(Reader::u32)?,
                leader_epoch: r.i32()?,
                log_end_offset: r.u64()?,
                high_watermark: r.u64()?,
            }),
            KIND_RECORDS => Response::Records(r.list(|r| Ok((r.u64()?, r.opt(Reader::bytes)?)))?),
            KIND_STATE => Response::State(get_state(&mut r)?, get_book(&mut r)?),
            KIND_FAILED => Response::Failed(get_error(&mut r)?),
            _ => return Err(invalid("unknown response")),
        };
        r.end()?;
        Ok(response)
    }

    /// The error of a `Failed` answer; any other answer to a request that
    /// expected something else is a protocol error.
    fn into_error(self, server: &str) -> Error {
        match self {
            Response::Failed(error) => error,
            other => network_error(server, invalid(&format!("unexpected answer {other:?}"))),
        }
    }
}

/// Reads one frame; `None` when the other side closed the connection.
fn receive_frame(stream: &mut TcpStream) -> io::Result<Option<Reader>> {
    let mut length = [0; 4];
    match stream.read_exact(&mut length) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let length = usize::try_from(u32::from_le_bytes(length)).unwrap_or(usize::MAX);
    if length > MAX_FRAME_BYTES {
        return Err(invalid("frame too large"));
    }
    let mut frame = vec![0; length];
    stream.read_exact(&mut frame)?;
    Ok(Some(Reader(Bytes::from(frame))))
}

/// The library reports a transport failure as `Error::Io`; the "path" it
/// carries names the other side.
fn network_error(other_side: &str, error: io::Error) -> Error {
    Error::Io(PathBuf::from(other_side), Arc::new(error))
}

/// Serves `listener`: a thread per connection reads a request, answers it
/// with `handle`, and so on until the client hangs up.
fn serve<H>(listener: TcpListener, server: String, handle: H)
where
    H: Fn(Request) -> Response + Clone + Send + 'static,
{
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        let (handle, server) = (handle.clone(), server.clone());
        thread::spawn(move || {
            // Small request/answer messages: Nagle's algorithm would hold
            // each back for tens of milliseconds.
            let _ = stream.set_nodelay(true);
            while let Ok(Some(frame)) = receive_frame(&mut stream) {
                let response = match Request::decode(frame) {
                    Ok(request) => handle(request),
                    Err(e) => Response::Failed(network_error(&server, e)),
                };
                let sent = response
                    .encode(&server)
                    .and_then(|frame| stream.write_all(&frame));
                if sent.is_err() {
                    return;
                }
            }
        });
    }
}

// ===========================================================================
// 2. Peers: connections to the replicas, and the Transport over them
// ===========================================================================

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Sends `request` on `stream` and reads the answer.
fn exchange(stream: &mut TcpStream, request: &Request, timeout: Duration) -> io::Result<Response> {
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(&request.encode()?)?;
    let frame = receive_frame(stream)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed"))?;
    Response::decode(frame)
}

/// This process's connections to the replicas: one per replica, opened on
/// first use at the address the address book gives, and dropped after any
/// error, so that the next call connects again (perhaps to a restarted
/// replica at a new port).
///
/// Each user (the producer, the controller's pushes, a follower's fetches)
/// has its own `Peers`: a produce the leader holds for a second must not
/// delay a state the controller is pushing to it.
struct Peers {
    book: Arc<Mutex<AddressBook>>,
    idle: Mutex<BTreeMap<ReplicaId, (u16, TcpStream)>>,
}

impl Peers {
    fn new(book: Arc<Mutex<AddressBook>>) -> Peers {
        Peers {
            book,
            idle: Mutex::new(BTreeMap::new()),
        }
    }

    fn call(&self, to: ReplicaId, request: &Request, timeout: Duration) -> Result<Response, Error> {
        let name = format!("replica {to}");
        let port = lock(&self.book).ports.get(&to).copied().ok_or_else(|| {
            network_error(
                &name,
                io::Error::new(io::ErrorKind::NotFound, "no address known"),
            )
        })?;
        // Taken out while in use, so that calls from several threads each
        // get a connection of their own.
        let cached = lock(&self.idle).remove(&to).filter(|&(p, _)| p == port);
        let mut stream = match cached {
            Some((_, stream)) => stream,
            None => connect(port).map_err(|e| network_error(&name, e))?,
        };
        let response =
            exchange(&mut stream, request, timeout).map_err(|e| network_error(&name, e))?;
        lock(&self.idle).insert(to, (port, stream));
        Ok(response)
    }
}

/// What `Replica::fetch_once` and `ReplicatedProducer` need: a fetch and a
/// produce, sent to a replica, answered with its result, the replica's
/// errors arriving as they were (`NotLeader` with its hint, ...).
impl Transport for Peers {
    fn fetch(&self, to: ReplicaId, request: Fetch) -> durable_log::Result<FetchResponse> {
        match self.call(to, &Request::Fetch(request), CALL_TIMEOUT)? {
            Response::Fetched(response) => Ok(response),
            other => Err(other.into_error(&format!("replica {to}"))),
        }
    }

    fn produce(&self, to: ReplicaId, request: ProduceRequest) -> durable_log::Result<Appended> {
        // The leader answers once the batch is replicated, or after the
        // request's own timeout.
        let timeout = request.timeout + CALL_TIMEOUT;
        match self.call(to, &Request::Produce(request), timeout)? {
            Response::Appended(appended) => Ok(appended),
            other => Err(other.into_error(&format!("replica {to}"))),
        }
    }
}

// ===========================================================================
// 3. The replica process: `replicated replica <id> <dir> <controller-port>`
// ===========================================================================

fn replica_main(args: &[String]) -> Result<(), Box<dyn StdError>> {
    let [id, dir, controller_port] = args else {
        return Err("usage: replicated replica <id> <dir> <controller-port>".into());
    };
    let id: ReplicaId = id.parse()?;
    let controller_port: u16 = controller_port.parse()?;

    // The parent keeps our stdin open. It closes it when it is done, and
    // the kernel closes it if the parent dies in any way: either way, we
    // exit too. Whatever was acknowledged is synced already.
    thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        process::exit(0);
    });

    // A replica is a plain `Log` with a `Replica` around one of its
    // partitions. `Durability::Sync` (the default, spelled out): a replica
    // counts toward the high watermark only what it has synced.
    let log = Log::open(dir, Config::default().durability(Durability::Sync))?;
    let config = ReplicationConfig::default()
        .min_insync_replicas(MIN_INSYNC_REPLICAS)
        .replica_lag_max(REPLICA_LAG_MAX)
        .isr_change_retry(ISR_CHANGE_RETRY)
        .high_watermark_checkpoint_interval(Duration::from_millis(500));
    let replica = Replica::open(id, log.partition(PARTITION)?, config)?;

    let book = Arc::new(Mutex::new(AddressBook::default()));
    let node = Arc::new(Node {
        id,
        replica: replica.clone(),
        book: Arc::clone(&book),
        applying: Mutex::new(()),
    });
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let port = listener.local_addr()?.port();
    let serving = Arc::clone(&node);
    thread::spawn(move || {
        serve(listener, format!("replica {id}"), move |r| {
            serving.handle(r)
        })
    });

    // Register with the controller; it answers with the partition's state.
    let controller = Arc::new(ControllerClient {
        port: controller_port,
        book: Arc::clone(&book),
        connection: Mutex::new(None),
    });
    println!(
        "[replica {id}] pid {}, port {port}, log end offset {}, leader epochs {:?}",
        process::id(),
        replica.log_end_offset(),
        replica.leader_epochs(),
    );
    let state = controller.call_for_state(&Request::Register { replica: id, port })?;
    node.apply(&state);

    // The leader's periodic work: `maintain` drops followers that lag for
    // longer than REPLICA_LAG_MAX from the ISR and adds those that caught
    // up, by asking the controller (an `AlterIsr`); on followers it only
    // checkpoints the high watermark.
    let maintained = replica.clone();
    let controller_for_ticks = Arc::clone(&controller);
    thread::spawn(move || {
        let mut last_error = None;
        loop {
            let result = maintained.maintain(&*controller_for_ticks, Instant::now());
            report_changes(id, "maintain", result.err(), &mut last_error);
            thread::sleep(MAINTAIN_INTERVAL);
        }
    });

    // This thread fetches until the parent closes our stdin.
    follow(&node, &controller)
}

/// One replica process's shared parts.
struct Node {
    id: ReplicaId,
    replica: Replica,
    /// Where the other replicas listen, from the controller.
    book: Arc<Mutex<AddressBook>>,
    /// States are applied one at a time, so that role changes print in order.
    applying: Mutex<()>,
}

impl Node {
    fn handle(&self, request: Request) -> Response {
        let result = match request {
            // On the leader: the follower's progress counts toward the
            // high watermark, and the answer holds the batches after it.
            Request::Fetch(fetch) => self
                .replica
                .handle_fetch(&fetch, Instant::now())
                .map(Response::Fetched),
            // On the leader: writes, then waits for the acknowledgement
            // level the request asks for.
            Request::Produce(produce) => self.replica.produce(&produce).map(Response::Appended),
            Request::PushState(state, book) => {
                lock(&self.book).update(book);
                self.apply(&state);
                Ok(Response::Done)
            }
            Request::Status => Ok(Response::Status(Status {
                is_leader: self.replica.is_leader(),
                leader: self.replica.leader(),
                leader_epoch: self.replica.leader_epoch(),
                log_end_offset: self.replica.log_end_offset(),
                high_watermark: self.replica.high_watermark(),
            })),
            Request::Dump => {
                let partition = self.replica.partition();
                partition
                    .reader(partition.start_offset())
                    .map(|r| r.map(|r| (r.offset, r.value)))
                    .collect::<Result<_, _>>()
                    .map(Response::Records)
            }
            Request::Register { .. } | Request::AlterIsr(_) | Request::GetState { .. } => Err(
                network_error("controller request", invalid("sent to a replica")),
            ),
        };
        result.unwrap_or_else(Response::Failed)
    }

    /// Acts on a state from the controller, and says when the role changes.
    /// States older than the one held are ignored by the replica, so pushes
    /// may arrive late, twice or out of order.
    fn apply(&self, state: &PartitionState) {
        let _one_at_a_time = lock(&self.applying);
        let before = (self.replica.is_leader(), self.replica.leader_epoch());
        if let Err(e) = self.replica.apply(state) {
            eprintln!("[replica {}] cannot apply {state:?}: {e}", self.id);
            return;
        }
        let (leads, epoch) = (self.replica.is_leader(), self.replica.leader_epoch());
        if (leads, epoch) == before {
            return;
        }
        match state.leader {
            _ if leads => println!("[replica {}] leads epoch {epoch}", self.id),
            Some(leader) => println!(
                "[replica {}] follows replica {leader} in epoch {epoch}",
                self.id
            ),
            None => println!("[replica {}] epoch {epoch} has no leader", self.id),
        }
    }
}

/// The follower loop: fetch from the leader, again at once while there is
/// more, after a short pause when caught up. `fetch_once` does nothing
/// while this replica leads.
fn follow(node: &Node, controller: &ControllerClient) -> ! {
    let peers = Peers::new(Arc::clone(&node.book));
    let mut last_error = None;
    loop {
        let before = node.replica.log_end_offset();
        let result = node.replica.fetch_once(&peers);
        let after = node.replica.log_end_offset();
        if after < before {
            println!(
                "[replica {}] truncated its log from offset {before} to {after}, where it \
                 diverges from the leader's (by leader epoch)",
                node.id
            );
        }
        match result {
            Ok(true) if after > before => {}
            Ok(true) => thread::sleep(FETCH_PAUSE),
            // Leading, or no leader known.
            Ok(false) => thread::sleep(RETRY_PAUSE),
            Err(e) => {
                if matches!(
                    e,
                    Error::NotLeader { .. } | Error::LeaderEpochMismatch { .. }
                ) {
                    // One of us has not heard of the latest election: ask
                    // the controller (a push will tell the other).
                    if let Ok(state) = controller.state(PARTITION) {
                        node.apply(&state);
                    }
                }
                report_changes(node.id, "fetch", Some(e), &mut last_error);
                thread::sleep(RETRY_PAUSE);
                continue;
            }
        }
        last_error = None;
    }
}

/// Prints an error when it differs from the previous one: a follower whose
/// leader was killed fails every fetch the same way until the controller
/// names a new leader, and one line says so.
fn report_changes(id: ReplicaId, what: &str, error: Option<Error>, last: &mut Option<String>) {
    let message = error.map(|e| e.to_string());
    if let Some(message) = &message
        && last.as_ref() != Some(message)
    {
        eprintln!("[replica {id}] {what}: {message}");
    }
    *last = message;
}

/// The controller as the replicas see it: calls to the parent. Every
/// answer carries the address book, which the client keeps.
struct ControllerClient {
    port: u16,
    book: Arc<Mutex<AddressBook>>,
    connection: Mutex<Option<TcpStream>>,
}

impl ControllerClient {
    fn call_for_state(&self, request: &Request) -> durable_log::Result<PartitionState> {
        let failed = |e| network_error("the controller", e);
        let cached = lock(&self.connection).take();
        let mut stream = match cached {
            Some(stream) => stream,
            None => connect(self.port).map_err(failed)?,
        };
        let response = exchange(&mut stream, request, CALL_TIMEOUT).map_err(failed)?;
        *lock(&self.connection) = Some(stream);
        match response {
            Response::State(state, book) => {
                lock(&self.book).update(book);
                Ok(state)
            }
            other => Err(other.into_error("the controller")),
        }
    }
}

/// What `Replica::maintain` needs.
impl Controller for ControllerClient {
    fn state(&self, partition: u32) -> durable_log::Result<PartitionState> {
        self.call_for_state(&Request::GetState { partition })
    }

    fn alter_isr(&self, request: &AlterIsr) -> durable_log::Result<PartitionState> {
        self.call_for_state(&Request::AlterIsr(request.clone()))
    }
}

// ===========================================================================
// 4. The controller service, in the parent
// ===========================================================================

/// The `InMemoryController` behind a TCP port. It alone decides who leads:
/// replicas never elect themselves. Every state it decides is pushed to
/// every replica it knows of.
struct ControllerService {
    controller: InMemoryController,
    port: u16,
    book: Arc<Mutex<AddressBook>>,
    registered: Mutex<BTreeSet<ReplicaId>>,
    /// Connections for pushes, apart from the producer's.
    pushes: Peers,
}

impl ControllerService {
    fn start() -> Result<Arc<ControllerService>, Box<dyn StdError>> {
        let controller = InMemoryController::new(
            1,
            &REPLICAS,
            ControllerConfig::default().min_insync_replicas(MIN_INSYNC_REPLICAS),
        )?;
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let book = Arc::new(Mutex::new(AddressBook::default()));
        let service = Arc::new(ControllerService {
            controller,
            port: listener.local_addr()?.port(),
            pushes: Peers::new(Arc::clone(&book)),
            book,
            registered: Mutex::new(BTreeSet::new()),
        });
        let serving = Arc::clone(&service);
        thread::spawn(move || {
            serve(listener, "the controller".into(), move |r| {
                serving.handle(r)
            })
        });
        Ok(service)
    }

    fn handle(&self, request: Request) -> Response {
        match request {
            Request::Register { replica, port } => {
                self.register(replica, port);
                self.answer(self.controller.state(PARTITION))
            }
            Request::AlterIsr(change) => {
                // A compare-and-set: refused unless based on the current
                // state, in which case the leader asks for that state.
                let result = self.controller.alter_isr(&change);
                if let Ok(state) = &result {
                    announce(&format!("replica {} changes the ISR", change.leader), state);
                    self.push(std::slice::from_ref(state));
                }
                self.answer(result)
            }
            Request::GetState { partition } => self.answer(self.controller.state(partition)),
            _ => Response::Failed(network_error(
                "replica request",
                invalid("sent to the controller"),
            )),
        }
    }

    fn answer(&self, state: durable_log::Result<PartitionState>) -> Response {
        match state {
            Ok(state) => Response::State(state, lock(&self.book).clone()),
            Err(e) => Response::Failed(e),
        }
    }

    /// The state of the one partition.
    fn state(&self) -> PartitionState {
        self.controller.states().swap_remove(0)
    }

    fn register(&self, replica: ReplicaId, port: u16) {
        {
            let mut book = lock(&self.book);
            book.version += 1;
            book.ports.insert(replica, port);
        }
        let first_time = lock(&self.registered).insert(replica);
        println!("[controller] replica {replica} registered, port {port}");
        // The controller counts every replica as alive from the start, so
        // a first registration changes nothing. Any later one is a new
        // incarnation, which never resumes an old leadership.
        if !first_time || !self.controller.live_replicas().contains(&replica) {
            for state in self.controller.replica_online(replica) {
                announce(&format!("replica {replica} is back"), &state);
            }
        }
        // Everyone learns the new address with the current states.
        self.push(&self.controller.states());
    }

    /// The replica is gone: it leaves the ISR, and if it led, the
    /// controller elects a new leader from the ISR (or the ELR) and a new
    /// leader epoch starts.
    fn replica_offline(&self, replica: ReplicaId) {
        {
            let mut book = lock(&self.book);
            if book.ports.remove(&replica).is_some() {
                book.version += 1;
            }
        }
        let changed = self.controller.replica_offline(replica);
        for state in &changed {
            announce(&format!("replica {replica} is offline"), state);
        }
        self.push(&changed);
    }

    /// Sends `states` to every replica with an address. One that is down
    /// misses them; the periodic rebroadcast repairs any other miss.
    fn push(&self, states: &[PartitionState]) {
        let book = lock(&self.book).clone();
        for &replica in book.ports.keys() {
            for state in states {
                let request = Request::PushState(state.clone(), book.clone());
                let _ = self.pushes.call(replica, &request, CALL_TIMEOUT);
            }
        }
    }
}

fn announce(why: &str, state: &PartitionState) {
    println!("[controller] {why}: {}", describe(state));
}

fn describe(state: &PartitionState) -> String {
    let leader = state
        .leader
        .map_or_else(|| "none".to_owned(), |l| l.to_string());
    let elr = if state.elr.is_empty() {
        String::new()
    } else {
        format!(", ELR {:?}", state.elr)
    };
    format!(
        "leader {leader}, leader epoch {}, ISR {:?}{elr} (partition epoch {})",
        state.leader_epoch, state.isr, state.partition_epoch
    )
}

// ===========================================================================
// 5. The parent
// ===========================================================================

/// The replica processes. Dropping it stops them, on every way out of
/// `run`, a panic included.
struct Cluster {
    exe: PathBuf,
    root: PathBuf,
    service: Arc<ControllerService>,
    children: BTreeMap<ReplicaId, Child>,
    /// For status and dump requests.
    admin: Peers,
    last_rebroadcast: Instant,
    /// Replicas that exited without being killed: a bug, which fails the run.
    exited_on_their_own: Vec<String>,
}

impl Cluster {
    fn spawn(&mut self, id: ReplicaId) -> io::Result<()> {
        let child = Command::new(&self.exe)
            .arg("replica")
            .arg(id.to_string())
            .arg(self.root.join(format!("replica-{id}")))
            .arg(self.service.port.to_string())
            .stdin(Stdio::piped())
            .spawn()?;
        self.children.insert(id, child);
        Ok(())
    }

    /// SIGKILL: no clean shutdown, nothing flushed that was not already.
    /// Then the controller hears of it, as it would when the replica's
    /// session expired.
    fn kill(&mut self, id: ReplicaId) -> io::Result<()> {
        if let Some(mut child) = self.children.remove(&id) {
            child.kill()?;
            child.wait()?;
        }
        self.service.replica_offline(id);
        Ok(())
    }

    /// Supervision, run while the parent waits: a replica that exits on its
    /// own is reported offline, and every state is pushed again now and then.
    fn tick(&mut self) {
        let exited: Vec<_> = self
            .children
            .iter_mut()
            .filter_map(|(&id, child)| child.try_wait().ok().flatten().map(|s| (id, s)))
            .collect();
        for (id, status) in exited {
            self.children.remove(&id);
            println!("[parent] replica {id} exited on its own ({status})");
            self.exited_on_their_own
                .push(format!("replica {id} exited on its own ({status})"));
            self.service.replica_offline(id);
        }
        if self.last_rebroadcast.elapsed() >= REBROADCAST_INTERVAL {
            self.last_rebroadcast = Instant::now();
            self.service.push(&self.service.controller.states());
        }
    }

    /// Waits until `done` holds, supervising meanwhile.
    fn wait_until(
        &mut self,
        what: &str,
        mut done: impl FnMut(&mut Cluster) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while !done(self) {
            if Instant::now() >= deadline {
                return Err(format!("gave up waiting until {what}"));
            }
            self.tick();
            thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn live(&self) -> Vec<ReplicaId> {
        self.children.keys().copied().collect()
    }

    fn status(&self, id: ReplicaId) -> durable_log::Result<Status> {
        match self.admin.call(id, &Request::Status, CALL_TIMEOUT)? {
            Response::Status(status) => Ok(status),
            other => Err(other.into_error(&format!("replica {id}"))),
        }
    }

    fn dump(&self, id: ReplicaId) -> durable_log::Result<Vec<(u64, Option<Bytes>)>> {
        match self.admin.call(id, &Request::Dump, CALL_TIMEOUT)? {
            Response::Records(records) => Ok(records),
            other => Err(other.into_error(&format!("replica {id}"))),
        }
    }

    /// Every live replica is in the ISR and has the same log end, and the
    /// high watermark has reached it everywhere.
    fn converged(&self) -> bool {
        let isr = self.service.state().isr;
        let live = self.live();
        let statuses: Result<Vec<Status>, _> = live.iter().map(|&id| self.status(id)).collect();
        let Ok(statuses) = statuses else {
            return false;
        };
        !live.is_empty()
            && live.iter().all(|id| isr.contains(id))
            && statuses.iter().all(|s| {
                s.log_end_offset == statuses[0].log_end_offset
                    && s.high_watermark == s.log_end_offset
            })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Closing a replica's stdin asks it to exit; one that has not within
        // a second is killed. The leader goes last, so that no follower
        // reports a leader that vanished.
        let leader = self.service.state().leader;
        let mut children: Vec<(ReplicaId, Child)> =
            std::mem::take(&mut self.children).into_iter().collect();
        children.sort_by_key(|&(id, _)| Some(id) == leader);
        for (_, mut child) in children {
            drop(child.stdin.take());
            let deadline = Instant::now() + Duration::from_secs(1);
            while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                thread::sleep(Duration::from_millis(5));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What the producer was told.
struct Produced {
    /// Each acknowledged record's value, with its offset.
    acknowledged: Vec<(u64, Bytes)>,
    batches: u64,
    retries: u64,
}

/// Sends `records` records in batches, one batch at a time; counts the
/// acknowledged ones in `progress`.
fn produce(
    mut producer: ReplicatedProducer<Peers>,
    records: u64,
    progress: &AtomicU64,
) -> Result<Produced, String> {
    let mut acknowledged = Vec::new();
    let mut batches = 0;
    let mut next = 0;
    while next < records {
        let values: Vec<Bytes> = (next..records.min(next + BATCH_RECORDS))
            .map(|i| Bytes::from(format!("record-{i:06}")))
            .collect();
        next += values.len() as u64;
        // NotLeader, NotEnoughReplicas, timeouts and broken connections are
        // retried inside `send`, with the same producer sequence numbers:
        // a batch the old leader wrote before it died is answered with its
        // original offsets, never written twice.
        let appended = producer
            .send(values.iter().cloned().map(Record::new).collect())
            .map_err(|e| format!("the producer gave up: {e}"))?;
        if appended.record_count() != values.len() as u64 {
            return Err(format!(
                "{} records acknowledged as {appended:?}",
                values.len()
            ));
        }
        batches += 1;
        for (value, offset) in values.into_iter().zip(appended.base_offset..) {
            acknowledged.push((offset, value));
        }
        progress.store(acknowledged.len() as u64, Ordering::Release);
    }
    Ok(Produced {
        acknowledged,
        batches,
        retries: producer.retries(),
    })
}

fn records_to_send() -> u64 {
    std::env::var("REPLICATED_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RECORDS)
        .max(1)
}

fn run() -> Result<bool, Box<dyn StdError>> {
    let started = Instant::now();
    let records = records_to_send();
    // Declared before the cluster, so dropped after it: the replicas are
    // stopped before their directories are removed.
    let root = tempfile::tempdir()?;
    let service = ControllerService::start()?;
    let mut cluster = Cluster {
        exe: std::env::current_exe()?,
        root: root.path().to_path_buf(),
        admin: Peers::new(Arc::clone(&service.book)),
        service: Arc::clone(&service),
        children: BTreeMap::new(),
        last_rebroadcast: Instant::now(),
        exited_on_their_own: Vec::new(),
    };
    println!(
        "durable-log replication: {} replica processes, min_insync_replicas {MIN_INSYNC_REPLICAS}, \
         data in {}",
        REPLICAS.len(),
        root.path().display()
    );
    println!("[parent] controller on port {}", service.port);
    for id in REPLICAS {
        cluster.spawn(id)?;
    }
    cluster.wait_until("every replica registered and the leader leads", |c| {
        let leader = c.service.state().leader;
        let ready = lock(&c.service.registered).len() == REPLICAS.len()
            && leader.is_some_and(|l| c.status(l).is_ok_and(|s| s.is_leader));
        ready || !c.exited_on_their_own.is_empty()
    })?;
    if let Some(exit) = cluster.exited_on_their_own.first() {
        return Err(format!("{exit} while starting").into());
    }
    let first = service.state();
    println!("[parent] ready: {}", describe(&first));

    // The producer: idempotent (a producer id from the controller, sequence
    // numbers per batch), every write acknowledged only once it is on the
    // disks of the in-sync replicas.
    let producer = ReplicatedProducer::new(
        Peers::new(Arc::clone(&service.book)),
        PARTITION,
        &REPLICAS,
        service.controller.allocate_producer_id(),
    )?
    .acks(Acks::All)
    .request_timeout(REQUEST_TIMEOUT)
    .delivery_timeout(DELIVERY_TIMEOUT);
    let progress = Arc::new(AtomicU64::new(0));
    let producing = {
        let progress = Arc::clone(&progress);
        thread::spawn(move || produce(producer, records, &progress))
    };
    let acked = || progress.load(Ordering::Acquire);

    // Kill the leader while the producer is busy.
    cluster.wait_until("40% is acknowledged", |_| {
        acked() >= records * 4 / 10 || producing.is_finished()
    })?;
    let old_leader = service.state().leader.ok_or("no leader to kill")?;
    let killed_at = Instant::now();
    let acked_at_kill = acked();
    println!(
        "[parent] {acked_at_kill} of {records} records acknowledged: SIGKILL to replica \
         {old_leader}, the leader"
    );
    cluster.kill(old_leader)?;
    let after_kill = service.state();
    let new_leader = after_kill
        .leader
        .ok_or("the controller elected no leader")?;

    // Bring the killed replica back while the producer is still busy.
    cluster.wait_until("70% is acknowledged", |_| {
        acked() >= records * 7 / 10 || producing.is_finished()
    })?;
    println!(
        "[parent] {} of {records} records acknowledged ({} since the kill): restarting replica \
         {old_leader} on its old directory",
        acked(),
        acked().saturating_sub(acked_at_kill),
    );
    cluster.spawn(old_leader)?;

    cluster.wait_until("the producer is done", |_| producing.is_finished())?;
    let produced = producing.join().map_err(|_| "the producer panicked")??;
    println!(
        "[parent] producer done: {records} records acknowledged, {:.1} s after the kill",
        killed_at.elapsed().as_secs_f64()
    );
    cluster.wait_until("the replicas agree", |c| c.converged())?;

    // The check.
    let mut dumps = BTreeMap::new();
    let mut statuses = BTreeMap::new();
    for id in cluster.live() {
        statuses.insert(id, cluster.status(id)?);
        dumps.insert(id, cluster.dump(id)?);
    }
    let mut failures = check(&produced.acknowledged, &dumps);
    failures.extend(cluster.exited_on_their_own.iter().cloned());
    if dumps.len() < MIN_INSYNC_REPLICAS {
        failures.push(format!("only {} replicas running", dumps.len()));
    }
    let last = service.state();

    println!("\nSummary ({:.1} s)", started.elapsed().as_secs_f64());
    println!(
        "  records: {records} sent in {} batches, {} acknowledged, {} retries",
        produced.batches,
        produced.acknowledged.len(),
        produced.retries
    );
    println!(
        "  leader: replica {old_leader} (epoch {}) until killed, then replica {new_leader} \
         (epoch {}); now replica {} (epoch {}), ISR {:?}",
        first.leader_epoch,
        after_kill.leader_epoch,
        last.leader.map_or_else(|| "none".into(), |l| l.to_string()),
        last.leader_epoch,
        last.isr,
    );
    for (id, status) in &statuses {
        println!(
            "  replica {id}{}: end offset {}, high watermark {}, {} records",
            if status.is_leader { " (leader)" } else { "" },
            status.log_end_offset,
            status.high_watermark,
            dumps[id].len(),
        );
    }
    if failures.is_empty() {
        println!(
            "OK: every acknowledged record present exactly once on every live replica, at its \
             acknowledged offset; the replicas are identical"
        );
        Ok(true)
    } else {
        println!("FAILED: {} problems", failures.len());
        for failure in failures.iter().take(20) {
            println!("  {failure}");
        }
        Ok(false)
    }
}

/// Every acknowledged record must be on every replica exactly once, at
/// the offset it was acknowledged with; the replicas must hold the same
/// records; and nothing else (every record sent was acknowledged).
fn check(
    acknowledged: &[(u64, Bytes)],
    dumps: &BTreeMap<ReplicaId, Vec<(u64, Option<Bytes>)>>,
) -> Vec<String> {
    let mut failures = Vec::new();
    for (id, records) in dumps {
        let mut offsets: HashMap<&[u8], Vec<u64>> = HashMap::new();
        for (offset, value) in records {
            if let Some(value) = value {
                offsets.entry(value).or_default().push(*offset);
            }
        }
        for (offset, value) in acknowledged {
            let shown = String::from_utf8_lossy(value);
            match offsets.get(&value[..]).map(Vec::as_slice) {
                Some([found]) if found == offset => {}
                None => failures.push(format!(
                    "replica {id}: {shown}, acknowledged at offset {offset}, is missing"
                )),
                Some(found) => failures.push(format!(
                    "replica {id}: {shown}, acknowledged at offset {offset}, is at {found:?}"
                )),
            }
        }
        if records.len() != acknowledged.len() {
            failures.push(format!(
                "replica {id} stores {} records, {} were acknowledged",
                records.len(),
                acknowledged.len()
            ));
        }
    }
    let mut replicas = dumps.iter();
    if let Some((first, expected)) = replicas.next() {
        for (id, records) in replicas {
            if records != expected {
                failures.push(format!(
                    "replica {id}'s records differ from replica {first}'s"
                ));
            }
        }
    }
    failures
}
