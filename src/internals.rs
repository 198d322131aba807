//! Building blocks exposed for benches, fuzz targets and simulation tests
//! (the `internals` feature). Not a stable API.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CorruptKind, Result};
use crate::record::StoredRecord;
use crate::record::batch::{Records, verify_batch};
use crate::storage::Storage;
use crate::{Config, Log};

/// Checks one batch (header, bounds, checksum) and decodes its records, as
/// every read does. Never panics, whatever the bytes.
pub fn decode_batch(bytes: &[u8]) -> Result<Vec<StoredRecord>, CorruptKind> {
    let header = verify_batch(bytes, u32::MAX)?;
    Records::new(header, Bytes::copy_from_slice(bytes)).collect()
}

/// Opens a log whose files live on `storage` (for example a
/// [`SimStorage`](crate::storage::sim::SimStorage)).
pub fn open_log_on(dir: &Path, config: Config, storage: Arc<dyn Storage>) -> Result<Log> {
    Log::open_with_storage(dir, config, storage)
}

pub use crate::fuzzing::*;
