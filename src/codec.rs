//! Compression of a batch's records block: none, LZ4 or Zstandard.
//!
//! The whole records block of a batch is compressed as one unit, after the
//! header, and the codec is recorded in the header's attributes, so one
//! partition may hold batches of different codecs. Compression is skipped
//! when it does not make the block smaller.
//!
//! Decompressed blocks go into a fresh 64-byte-aligned buffer that the
//! decoded records then point into, so reading a compressed batch copies
//! its payload exactly once, and into aligned memory.

use bytes::Bytes;

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
            let mut out = AlignedBuf::zeroed(size);
            let written = lz4_flex::block::decompress_into(rest, out.as_mut())
                .map_err(|_| bad("lz4 block does not decompress"))?;
            if written != size {
                return Err(bad("lz4 block has the wrong size"));
            }
            Ok(out.into_bytes())
        }
        CODEC_ZSTD => {
            let size = zstd::zstd_safe::get_frame_content_size(block)
                .ok()
                .flatten()
                .ok_or(bad("zstd frame without a content size"))?;
            let size = usize::try_from(size).map_err(|_| bad("zstd frame too large"))?;
            check_size(size)?;
            let mut out = AlignedBuf::zeroed(size);
            let written = zstd::bulk::decompress_to_buffer(block, out.as_mut())
                .map_err(|_| bad("zstd frame does not decompress"))?;
            if written != size {
                return Err(bad("zstd frame has the wrong size"));
            }
            Ok(out.into_bytes())
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

    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
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
