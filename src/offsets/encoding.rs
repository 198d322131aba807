//! The records of the offset store's internal log.
//!
//! One record per committed offset. All integers are little-endian.
//!
//! Key (which group, which partition):
//!
//! | bytes | field |
//! |---|---|
//! | 1 | key version, `0` |
//! | 2 | group id length `n`, 1 to [`MAX_GROUP_ID_BYTES`] |
//! | n | group id, UTF-8 |
//! | 4 | partition |
//!
//! Value (the commit), or no value at all for a deleted commit:
//!
//! | bytes | field |
//! |---|---|
//! | 1 | value version, `0` |
//! | 8 | offset: the next offset the group reads |
//! | 2 | metadata length `m`, 0 to [`MAX_METADATA_BYTES`] |
//! | m | metadata, UTF-8 |
//!
//! Nothing may follow the last field. Decoding checks every length before
//! using it and never panics.

const KEY_VERSION: u8 = 0;
const VALUE_VERSION: u8 = 0;

const VERSION_BYTES: usize = 1;
const GROUP_LEN_BYTES: usize = 2;
const PARTITION_BYTES: usize = 4;
const OFFSET_BYTES: usize = 8;
const METADATA_LEN_BYTES: usize = 2;

const KEY_FIXED_BYTES: usize = VERSION_BYTES + GROUP_LEN_BYTES + PARTITION_BYTES;
const VALUE_FIXED_BYTES: usize = VERSION_BYTES + OFFSET_BYTES + METADATA_LEN_BYTES;
const _: () = assert!(KEY_FIXED_BYTES == 7 && VALUE_FIXED_BYTES == 11);

/// Longest group id, in bytes.
pub(crate) const MAX_GROUP_ID_BYTES: usize = 255;
/// Longest metadata string of a commit, in bytes (Kafka's default
/// `offset.metadata.max.bytes`).
pub(crate) const MAX_METADATA_BYTES: usize = 4096;
const _: () = assert!(MAX_GROUP_ID_BYTES <= u16::MAX as usize);
const _: () = assert!(MAX_METADATA_BYTES <= u16::MAX as usize);

/// Largest encoded key plus value: what one commit entry can add to a batch.
pub(crate) const MAX_ENTRY_BYTES: usize =
    KEY_FIXED_BYTES + MAX_GROUP_ID_BYTES + VALUE_FIXED_BYTES + MAX_METADATA_BYTES;

/// Why a stored key or value does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// A version this build does not know (written by a newer one).
    Version(u8),
    /// A length that does not match the bytes.
    Length,
    /// A group id or metadata that is not UTF-8.
    Utf8,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Version(v) => write!(f, "unknown record version {v}"),
            Malformed::Length => f.write_str("a length does not match the record"),
            Malformed::Utf8 => f.write_str("a string is not UTF-8"),
        }
    }
}

/// The key of `group`'s commit for `partition`. The caller has checked the
/// group id's length.
pub(crate) fn encode_key(group: &str, partition: u32) -> Vec<u8> {
    let len = u16::try_from(group.len()).expect("group id length checked by the caller");
    let mut out = Vec::with_capacity(KEY_FIXED_BYTES + group.len());
    out.push(KEY_VERSION);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(group.as_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out
}

/// The value of a commit. The caller has checked the metadata's length.
pub(crate) fn encode_value(offset: u64, metadata: &str) -> Vec<u8> {
    let len = u16::try_from(metadata.len()).expect("metadata length checked by the caller");
    let mut out = Vec::with_capacity(VALUE_FIXED_BYTES + metadata.len());
    out.push(VALUE_VERSION);
    out.extend_from_slice(&offset.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(metadata.as_bytes());
    out
}

/// A bounds-checked reader over a byte slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.0.len() < n {
            return Err(Malformed::Length);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let bytes = self.take(N)?;
        bytes.try_into().map_err(|_| Malformed::Length)
    }

    fn string(&mut self, len: usize) -> Result<String, Malformed> {
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| Malformed::Utf8)
    }

    fn finish(self) -> Result<(), Malformed> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(Malformed::Length)
        }
    }
}

/// The group and partition a key names.
pub(crate) fn decode_key(bytes: &[u8]) -> Result<(String, u32), Malformed> {
    let mut cursor = Cursor(bytes);
    let [version] = cursor.array::<VERSION_BYTES>()?;
    if version != KEY_VERSION {
        return Err(Malformed::Version(version));
    }
    let len = usize::from(u16::from_le_bytes(cursor.array::<GROUP_LEN_BYTES>()?));
    if len == 0 || len > MAX_GROUP_ID_BYTES {
        return Err(Malformed::Length);
    }
    let group = cursor.string(len)?;
    let partition = u32::from_le_bytes(cursor.array::<PARTITION_BYTES>()?);
    cursor.finish()?;
    Ok((group, partition))
}

/// The offset and metadata a value holds.
pub(crate) fn decode_value(bytes: &[u8]) -> Result<(u64, String), Malformed> {
    let mut cursor = Cursor(bytes);
    let [version] = cursor.array::<VERSION_BYTES>()?;
    if version != VALUE_VERSION {
        return Err(Malformed::Version(version));
    }
    let offset = u64::from_le_bytes(cursor.array::<OFFSET_BYTES>()?);
    let len = usize::from(u16::from_le_bytes(cursor.array::<METADATA_LEN_BYTES>()?));
    if len > MAX_METADATA_BYTES {
        return Err(Malformed::Length);
    }
    let metadata = cursor.string(len)?;
    cursor.finish()?;
    Ok((offset, metadata))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// The example in FORMAT.md.
    #[test]
    fn the_documented_example_bytes() {
        assert_eq!(
            encode_key("billing", 3),
            [
                0, 7, 0, b'b', b'i', b'l', b'l', b'i', b'n', b'g', 3, 0, 0, 0
            ]
        );
        assert_eq!(
            encode_value(42, "ok"),
            [0, 42, 0, 0, 0, 0, 0, 0, 0, 2, 0, b'o', b'k']
        );
    }

    #[test]
    fn keys_and_values_round_trip() {
        let key = encode_key("billing", 7);
        assert_eq!(key.len(), KEY_FIXED_BYTES + 7);
        assert_eq!(decode_key(&key), Ok(("billing".to_owned(), 7)));
        let value = encode_value(u64::MAX, "host-3");
        assert_eq!(decode_value(&value), Ok((u64::MAX, "host-3".to_owned())));
        assert_eq!(decode_value(&encode_value(0, "")), Ok((0, String::new())));
    }

    #[test]
    fn the_layout_is_little_endian_with_a_leading_version() {
        assert_eq!(encode_key("g", 0x0102_0304), [0, 1, 0, b'g', 4, 3, 2, 1]);
        assert_eq!(
            encode_value(0x0102, "m"),
            [0, 2, 1, 0, 0, 0, 0, 0, 0, 1, 0, b'm']
        );
    }

    #[test]
    fn bad_bytes_are_refused() {
        let key = encode_key("group", 1);
        for len in 0..key.len() {
            assert_eq!(decode_key(&key[..len]), Err(Malformed::Length), "{len}");
        }
        let mut longer = key.clone();
        longer.push(0);
        assert_eq!(decode_key(&longer), Err(Malformed::Length));
        let mut newer = key.clone();
        newer[0] = 1;
        assert_eq!(decode_key(&newer), Err(Malformed::Version(1)));
        assert_eq!(decode_key(&[0, 0, 0, 1, 0, 0, 0]), Err(Malformed::Length));
        assert_eq!(
            decode_key(&[0, 1, 0, 0xff, 0, 0, 0, 0]),
            Err(Malformed::Utf8)
        );

        let value = encode_value(5, "meta");
        for len in 0..value.len() {
            assert_eq!(decode_value(&value[..len]), Err(Malformed::Length), "{len}");
        }
        let mut newer = value.clone();
        newer[0] = 9;
        assert_eq!(decode_value(&newer), Err(Malformed::Version(9)));
        let mut too_long = encode_value(5, "");
        too_long[9..11].copy_from_slice(&u16::MAX.to_le_bytes());
        too_long.resize(too_long.len() + usize::from(u16::MAX), b'a');
        assert_eq!(decode_value(&too_long), Err(Malformed::Length));
    }

    #[test]
    fn the_largest_entry_fits_the_bound() {
        let group = "g".repeat(MAX_GROUP_ID_BYTES);
        let metadata = "m".repeat(MAX_METADATA_BYTES);
        let size = encode_key(&group, u32::MAX).len() + encode_value(u64::MAX, &metadata).len();
        assert_eq!(size, MAX_ENTRY_BYTES);
    }

    proptest! {
        #[test]
        fn whatever_decodes_encodes_back_to_the_same_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            if let Ok((group, partition)) = decode_key(&bytes) {
                prop_assert_eq!(encode_key(&group, partition), bytes.clone());
            }
            if let Ok((offset, metadata)) = decode_value(&bytes) {
                prop_assert_eq!(encode_value(offset, &metadata), bytes);
            }
        }

        #[test]
        fn keys_with_a_valid_head_decode_or_fail_cleanly(
            group in proptest::collection::vec(any::<u8>(), 1..8),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            // A correct length prefix over arbitrary bytes: decoding either
            // gives back exactly those bytes or names what is wrong.
            let mut key = vec![KEY_VERSION];
            key.extend_from_slice(&u16::try_from(group.len()).unwrap().to_le_bytes());
            key.extend_from_slice(&group);
            key.extend_from_slice(&tail);
            match decode_key(&key) {
                Ok((decoded, _)) => {
                    prop_assert_eq!(decoded.as_bytes(), &group[..]);
                    prop_assert_eq!(tail.len(), PARTITION_BYTES);
                }
                Err(Malformed::Utf8) => prop_assert!(std::str::from_utf8(&group).is_err()),
                Err(Malformed::Length) => prop_assert!(tail.len() != PARTITION_BYTES),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }

        #[test]
        fn any_commit_round_trips(
            group in "[a-z0-9._-]{1,40}",
            partition in any::<u32>(),
            offset in any::<u64>(),
            metadata in ".{0,20}",
        ) {
            prop_assert_eq!(decode_key(&encode_key(&group, partition)), Ok((group, partition)));
            prop_assert_eq!(decode_value(&encode_value(offset, &metadata)), Ok((offset, metadata)));
        }
    }
}
