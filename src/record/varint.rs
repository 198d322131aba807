//! LEB128 varints (unsigned) and zigzag varints (signed), decoded totally.

/// Longest encoding of a `u64`.
pub(crate) const MAX_VARINT_BYTES: usize = 10;

pub(crate) fn put_u64(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

pub(crate) fn put_i64(buf: &mut Vec<u8>, value: i64) {
    put_u64(buf, ((value << 1) ^ (value >> 63)) as u64);
}

pub(crate) fn len_u64(mut value: u64) -> usize {
    let mut n = 1;
    while value >= 0x80 {
        value >>= 7;
        n += 1;
    }
    n
}

pub(crate) fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)) as u64)
}

/// Decodes an unsigned varint from the front of `buf`; returns the value and
/// the bytes it took, or `None` if it is cut short or longer than a `u64`.
///
/// Lengths and deltas in a batch are nearly always one or two bytes, so
/// those are decoded inline; longer ones take the loop.
#[inline]
pub(crate) fn get_u64(buf: &[u8]) -> Option<(u64, usize)> {
    match *buf {
        [b0, ..] if b0 < 0x80 => Some((u64::from(b0), 1)),
        [b0, b1, ..] if b1 < 0x80 => Some((u64::from(b0 & 0x7f) | u64::from(b1) << 7, 2)),
        _ => get_u64_long(buf),
    }
}

#[cold]
fn get_u64_long(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().take(MAX_VARINT_BYTES).enumerate() {
        let bits = u64::from(byte & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && byte > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// Decodes a zigzag varint from the front of `buf`, as [`get_u64`].
#[inline]
pub(crate) fn get_i64(buf: &[u8]) -> Option<(i64, usize)> {
    let (raw, n) = get_u64(buf)?;
    Some((unzigzag(raw), n))
}

/// The signed value of a zigzag-encoded one.
#[inline]
pub(crate) fn unzigzag(raw: u64) -> i64 {
    ((raw >> 1) as i64) ^ -((raw & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_at_the_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_u64(&mut buf, v);
            assert_eq!(buf.len(), len_u64(v));
            assert_eq!(get_u64(&buf), Some((v, buf.len())));
        }
        for v in [0i64, -1, 1, -64, 64, i64::MIN, i64::MAX] {
            let mut buf = Vec::new();
            put_i64(&mut buf, v);
            assert_eq!(buf.len(), len_i64(v));
            assert_eq!(get_i64(&buf), Some((v, buf.len())));
        }
    }

    #[test]
    fn refuses_overlong_and_cut_short() {
        assert_eq!(get_u64(&[0x80, 0x80]), None);
        assert_eq!(get_u64(&[0xff; 10]), None);
        let mut eleven = vec![0x80; 10];
        eleven.push(0);
        assert_eq!(get_u64(&eleven), None);
        assert_eq!(get_u64(&[]), None);
    }

    #[test]
    fn the_short_forms_agree_with_the_loop() {
        for b0 in 0..=u8::MAX {
            assert_eq!(get_u64(&[b0]), get_u64_long(&[b0]), "{b0:#x}");
            for b1 in 0..=u8::MAX {
                for rest in [&[][..], &[0x01], &[0x80]] {
                    let mut buf = vec![b0, b1];
                    buf.extend_from_slice(rest);
                    assert_eq!(get_u64(&buf), get_u64_long(&buf), "{buf:x?}");
                }
            }
        }
    }
}
