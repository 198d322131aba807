//! Compression of a batch's records block: none, LZ4 or Zstandard.
//!
//! The whole records block of a batch is compressed as one unit, after the
//! header, and the codec is recorded in the header's attributes, so one
//! partition may hold batches of different codecs. Compression is skipped
//! when it does not make the block smaller.
//!
//! Decompressed blocks go into a 64-byte-aligned buffer that the decoded
//! records then point into, so reading a compressed batch copies its
//! payload exactly once, and into aligned memory. Each thread keeps the
//! buffer of its last block and reuses it for the next once no record
//! points into it any more.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

use crate::config::Compression;
use crate::error::CorruptKind;

/// The codec numbers stored in bits 0..=2 of a batch's attributes.
pub(crate) const CODEC_NONE: u16 = 0;
pub(crate) const CODEC_LZ4: u16 = 1;
pub(crate) const CODEC_ZSTD: u16 = 2;

/// Largest records block a batch may decompress to. Batches are written
/// no larger than `max_batch_bytes` (at most 4 GiB - 1) before compression;
/// this bound keeps a crafted size from asking for more memory than any
/// batch this crate writes with sane settings.
pub(crate) const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// The attribute bits for a compression setting.
pub(crate) fn codec_of(compression: Compression) -> u16 {
    match compression {
        Compression::None => CODEC_NONE,
        Compression::Lz4 => CODEC_LZ4,
        Compression::Zstd { .. } => CODEC_ZSTD,
    }
}

/// True if this build can read blocks of this codec.
pub(crate) fn is_known(codec: u16) -> bool {
    matches!(codec, CODEC_NONE | CODEC_LZ4 | CODEC_ZSTD)
}

/// Compresses `block`; `None` when the codec is `None`, fails, or does not
/// shrink the block.
pub(crate) fn compress(compression: Compression, block: &[u8]) -> Option<Vec<u8>> {
    let compressed = match compression {
        Compression::None => return None,
        Compression::Lz4 => lz4_flex::block::compress_prepend_size(block),
        Compression::Zstd { level } => zstd::bulk::compress(block, level).ok()?,
    };
    (compressed.len() < block.len()).then_some(compressed)
}

/// Decompresses a block written by [`compress`] with the given codec.
pub(crate) fn decompress(codec: u16, block: &[u8]) -> Result<Bytes, CorruptKind> {
    let bad = |what| CorruptKind::Record(what);
    match codec {
        CODEC_LZ4 => {
            let (size, rest) = block
                .split_first_chunk::<4>()
                .ok_or(bad("lz4 block too short"))?;
            let size = u32::from_le_bytes(*size) as usize;
            check_size(size)?;
            let mut out = output(size);
            let written = lz4_flex::block::decompress_into(rest, &mut out)
                .map_err(|_| bad("lz4 block does not decompress"))?;
            if written != size {
                return Err(bad("lz4 block has the wrong size"));
            }
            Ok(keep(out))
        }
        CODEC_ZSTD => {
            let size = zstd::zstd_safe::get_frame_content_size(block)
                .ok()
                .flatten()
                .ok_or(bad("zstd frame without a content size"))?;
            let size = usize::try_from(size).map_err(|_| bad("zstd frame too large"))?;
            check_size(size)?;
            let mut out = output(size);
            let written = zstd::bulk::decompress_to_buffer(block, &mut out)
                .map_err(|_| bad("zstd frame does not decompress"))?;
            if written != size {
                return Err(bad("zstd frame has the wrong size"));
            }
            Ok(keep(out))
        }
        _ => Err(bad("unknown compression codec")),
    }
}

fn check_size(size: usize) -> Result<(), CorruptKind> {
    if size > MAX_DECOMPRESSED_BYTES {
        return Err(CorruptKind::Length {
            length: size as u64,
        });
    }
    Ok(())
}

/// Blocks up to this size decompress into a buffer the thread keeps.
const KEPT_BYTES: usize = 1 << 20;

thread_local! {
    /// The buffer of the last block this thread decompressed. The records
    /// read from that block point into it; once they are all dropped, the
    /// next block reuses it instead of allocating and zeroing another.
    static LAST: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// A 64-byte-aligned buffer of `size` initialized bytes to decompress into:
/// the thread's last one when nothing points into it any more and it is
/// large enough, else a new one.
fn output(size: usize) -> BytesMut {
    if size <= KEPT_BYTES
        && let Some(last) = LAST.with_borrow_mut(Option::take)
        && let Ok(mut buf) = last.try_into_mut()
        // Growing past the capacity would move (and misalign) the buffer.
        && buf.capacity() >= size
    {
        // Bytes already in the buffer are overwritten, not cleared first;
        // only a longer block's extra bytes are zeroed.
        buf.resize(size, 0);
        return buf;
    }
    // A new buffer has no other owner, so this does not copy; an empty one
    // is the shared static empty `Bytes`, and any other failure would only
    // cost the alignment.
    AlignedBuf::zeroed(size)
        .into_bytes()
        .try_into_mut()
        .unwrap_or_else(|_| BytesMut::zeroed(size))
}

/// Hands out a decompressed block, keeping its buffer for the thread's
/// next block if it is not too large.
fn keep(out: BytesMut) -> Bytes {
    let block = out.freeze();
    if block.len() <= KEPT_BYTES {
        LAST.with_borrow_mut(|last| *last = Some(block.clone()));
    }
    block
}

/// A zeroed buffer of `len` bytes whose start is 64-byte aligned (copies
/// into an unaligned destination run many times slower on some CPUs), made
/// without `unsafe` by over-allocating and starting at the aligned byte.
struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    const ALIGN: usize = 64;

    fn zeroed(len: usize) -> AlignedBuf {
        let bytes = vec![0u8; len + Self::ALIGN - 1];
        // `align_offset` may refuse (return usize::MAX); the buffer is then
        // merely unaligned, never wrong.
        let start = bytes.as_ptr().align_offset(Self::ALIGN);
        let start = if start < Self::ALIGN { start } else { 0 };
        AlignedBuf { bytes, start, len }
    }

    fn into_bytes(self) -> Bytes {
        Bytes::from(self.bytes).slice(self.start..self.start + self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..10_000u32)
            .flat_map(|i| format!("{{\"n\":{i},\"msg\":\"hello\"}}").into_bytes())
            .collect()
    }

    #[test]
    fn lz4_and_zstd_round_trip_into_aligned_memory() {
        let block = sample();
        for compression in [
            Compression::Lz4,
            Compression::Zstd { level: 1 },
            Compression::Zstd { level: 9 },
        ] {
            let packed = compress(compression, &block).expect("repetitive data shrinks");
            assert!(packed.len() < block.len() / 3, "{compression:?}");
            let unpacked = decompress(codec_of(compression), &packed).unwrap();
            assert_eq!(&unpacked[..], &block[..]);
            assert_eq!(unpacked.as_ptr() as usize % 64, 0);
        }
    }

    /// An empty block decompresses too (to an empty buffer).
    #[test]
    fn an_empty_block_round_trips() {
        for compression in [Compression::Lz4, Compression::Zstd { level: 1 }] {
            let packed = match compression {
                Compression::Lz4 => lz4_flex::block::compress_prepend_size(&[]),
                _ => zstd::bulk::compress(&[], 1).unwrap(),
            };
            let unpacked = decompress(codec_of(compression), &packed).unwrap();
            assert!(unpacked.is_empty(), "{compression:?}");
        }
    }

    /// A block decompresses into the thread's last buffer once nothing
    /// points into it, never while something does, and always aligned.
    #[test]
    fn the_last_buffer_is_reused_only_when_free() {
        let block = sample();
        let packed = compress(Compression::Lz4, &block).unwrap();
        let smaller = compress(Compression::Lz4, &block[..block.len() / 2]).unwrap();
        let first = decompress(CODEC_LZ4, &packed).unwrap();
        let held = first.slice(10..20);
        let place = first.as_ptr();
        drop(first);
        let second = decompress(CODEC_LZ4, &smaller).unwrap();
        assert_ne!(second.as_ptr(), place, "a record still points into it");
        assert_eq!(&held[..], &block[10..20]);
        assert_eq!(&second[..], &block[..block.len() / 2]);
        let place = second.as_ptr();
        drop((held, second));
        let third = decompress(CODEC_LZ4, &packed).unwrap();
        assert_eq!(&third[..], &block[..]);
        assert_eq!(third.as_ptr() as usize % 64, 0);
        // The second buffer was half the size: the third needed a new one.
        assert_ne!(third.as_ptr(), place);
        let place = third.as_ptr();
        drop(third);
        let fourth = decompress(
            CODEC_ZSTD,
            &compress(Compression::Zstd { level: 1 }, &block[..100]).unwrap(),
        )
        .unwrap();
        assert_eq!(fourth.as_ptr(), place, "free and large enough: reused");
        assert_eq!(&fourth[..], &block[..100]);
    }

    #[test]
    fn incompressible_blocks_are_left_alone() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        assert_eq!(compress(Compression::Lz4, &noise), None);
        assert_eq!(compress(Compression::Zstd { level: 3 }, &noise), None);
        assert_eq!(compress(Compression::None, &sample()), None);
    }

    #[test]
    fn damaged_blocks_are_errors_not_panics() {
        let block = sample();
        for codec in [CODEC_LZ4, CODEC_ZSTD] {
            let compression = if codec == CODEC_LZ4 {
                Compression::Lz4
            } else {
                Compression::Zstd { level: 1 }
            };
            let packed = compress(compression, &block).unwrap();
            for cut in [0, 1, 3, 4, 10, packed.len() / 2, packed.len() - 1] {
                let _ = decompress(codec, &packed[..cut]);
            }
            for at in (0..packed.len()).step_by(97) {
                let mut bad = packed.clone();
                bad[at] ^= 0x5a;
                if let Ok(out) = decompress(codec, &bad) {
                    assert!(out.len() <= MAX_DECOMPRESSED_BYTES);
                }
            }
        }
        // A size claim past the bound is refused before allocating.
        let mut huge = (u32::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(&[0u8; 16]);
        assert!(matches!(
            decompress(CODEC_LZ4, &huge),
            Err(CorruptKind::Length { .. })
        ));
        assert!(decompress(7, &[1, 2, 3]).is_err());
    }
}
