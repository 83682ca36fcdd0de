//! Dense bit-packing of integer codes.
//!
//! Code `i` of a `b`-bit stream occupies bits `[i·b, i·b + b)` of a little-endian bit string:
//! two 4-bit codes per byte (low nibble first), four 2-bit codes per byte, eight 3-bit codes in
//! three bytes, and so on. Eight codes always fill exactly `b` bytes, which is why the kernels
//! split work at multiples of eight codes.

use crate::error::{Error, Result};

/// A stream of `len` codes of `bits` bits each, packed densely.
///
/// ```
/// use quantlens::PackedCodes;
/// let p = PackedCodes::pack(&[1, 2, 3, 4, 5], 3).unwrap();
/// assert_eq!(p.storage_bytes(), 2); // 15 bits
/// assert_eq!(p.unpack(), vec![1, 2, 3, 4, 5]);
/// assert!(PackedCodes::pack(&[8], 3).is_err()); // 8 does not fit in 3 bits
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackedCodes {
    bits: u8,
    len: usize,
    bytes: Vec<u8>,
}

/// Bytes needed for `len` codes of `bits` bits.
pub(crate) fn packed_len(len: usize, bits: u8) -> usize {
    (len * bits as usize).div_ceil(8)
}

impl PackedCodes {
    /// Pack codes, checking that each fits in `bits` (1..=8).
    pub fn pack(codes: &[u8], bits: u8) -> Result<Self> {
        check_bits(bits)?;
        if let Some((i, &c)) = codes
            .iter()
            .enumerate()
            .find(|&(_, &c)| (c as u32) >> bits != 0)
        {
            return Err(Error::InconsistentParts(format!(
                "code {c} at index {i} does not fit in {bits} bits"
            )));
        }
        let mut bytes = vec![0u8; packed_len(codes.len(), bits)];
        pack_into(codes, bits, &mut bytes);
        Ok(PackedCodes {
            bits,
            len: codes.len(),
            bytes,
        })
    }

    /// Pack codes produced by a crate kernel (known to fit in `bits`), in parallel chunks of
    /// whole bytes. Same bytes as [`pack`](Self::pack).
    pub(crate) fn pack_trusted(codes: &[u8], bits: u8) -> Result<Self> {
        use rayon::prelude::*;
        check_bits(bits)?;
        debug_assert!(codes.iter().all(|&c| (c as u32) >> bits == 0));
        // 64 Ki codes (a multiple of 8) fill exactly 8 Ki · bits bytes.
        const CHUNK: usize = 64 * 1024;
        let mut bytes = vec![0u8; packed_len(codes.len(), bits)];
        bytes
            .par_chunks_mut(CHUNK / 8 * bits as usize)
            .zip(codes.par_chunks(CHUNK))
            .for_each(|(out, c)| pack_into(c, bits, out));
        Ok(PackedCodes {
            bits,
            len: codes.len(),
            bytes,
        })
    }

    /// Wrap already-packed bytes; checks only the length.
    pub fn from_bytes(bytes: Vec<u8>, bits: u8, len: usize) -> Result<Self> {
        check_bits(bits)?;
        if bytes.len() != packed_len(len, bits) {
            return Err(Error::InconsistentParts(format!(
                "{len} codes of {bits} bits need {} bytes, got {}",
                packed_len(len, bits),
                bytes.len()
            )));
        }
        Ok(PackedCodes { bits, len, bytes })
    }

    /// Bits per code.
    pub fn bits(&self) -> u8 {
        self.bits
    }
    /// Number of codes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// True when there are no codes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The packed bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// Bytes of storage: exactly `ceil(len · bits / 8)`.
    pub fn storage_bytes(&self) -> usize {
        self.bytes.len()
    }
    /// Code `i` (panics if `i >= len`, like slice indexing).
    pub fn get(&self, i: usize) -> u8 {
        assert!(i < self.len, "code index {i} out of range {}", self.len);
        get_code(&self.bytes, self.bits, i)
    }
    /// All codes, one per byte.
    pub fn unpack(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len];
        unpack_from(&self.bytes, self.bits, &mut out);
        out
    }
}

fn check_bits(bits: u8) -> Result<()> {
    if (1..=8).contains(&bits) {
        Ok(())
    } else {
        Err(Error::InvalidBits {
            bits,
            min: 1,
            max: 8,
            scheme: "code packing",
        })
    }
}

/// Scalar reference: read code `i` bit by bit.
pub(crate) fn get_code(bytes: &[u8], bits: u8, i: usize) -> u8 {
    let mut c = 0u8;
    for k in 0..bits as usize {
        let bit = i * bits as usize + k;
        c |= ((bytes[bit / 8] >> (bit % 8)) & 1) << k;
    }
    c
}

/// Pack `codes` into `out` (`packed_len(codes.len(), bits)` bytes). Codes must fit in `bits`.
pub(crate) fn pack_into(codes: &[u8], bits: u8, out: &mut [u8]) {
    match bits {
        1 => pack_fixed::<1>(codes, out),
        2 => pack_fixed::<2>(codes, out),
        3 => pack_fixed::<3>(codes, out),
        4 => pack_fixed::<4>(codes, out),
        5 => pack_fixed::<5>(codes, out),
        6 => pack_fixed::<6>(codes, out),
        7 => pack_fixed::<7>(codes, out),
        8 => out.copy_from_slice(codes),
        _ => unreachable!("bits validated by callers"),
    }
}

/// Unpack `out.len()` codes from `bytes`.
pub(crate) fn unpack_from(bytes: &[u8], bits: u8, out: &mut [u8]) {
    match bits {
        1 => unpack_fixed::<1>(bytes, out),
        2 => unpack_fixed::<2>(bytes, out),
        3 => unpack_fixed::<3>(bytes, out),
        4 => unpack_fixed::<4>(bytes, out),
        5 => unpack_fixed::<5>(bytes, out),
        6 => unpack_fixed::<6>(bytes, out),
        7 => unpack_fixed::<7>(bytes, out),
        8 => out.copy_from_slice(&bytes[..out.len()]),
        _ => unreachable!("bits validated by callers"),
    }
}

/// Eight `B`-bit codes become one little-endian `8·B`-bit word: `B` bytes.
#[inline(always)]
fn pack_fixed<const B: usize>(codes: &[u8], out: &mut [u8]) {
    let full = codes.len() / 8;
    for (chunk, dst) in codes.chunks_exact(8).zip(out.chunks_exact_mut(B)) {
        let mut word = 0u64;
        for (k, &c) in chunk.iter().enumerate() {
            word |= (c as u64) << (k * B);
        }
        dst.copy_from_slice(&word.to_le_bytes()[..B]);
    }
    let rest = &codes[full * 8..];
    if !rest.is_empty() {
        let mut word = 0u64;
        for (k, &c) in rest.iter().enumerate() {
            word |= (c as u64) << (k * B);
        }
        let tail = &mut out[full * B..];
        let n = tail.len();
        tail.copy_from_slice(&word.to_le_bytes()[..n]);
    }
}

#[inline(always)]
fn unpack_fixed<const B: usize>(bytes: &[u8], out: &mut [u8]) {
    let mask = (1u64 << B) - 1;
    let full = out.len() / 8;
    for (dst, src) in out.chunks_exact_mut(8).zip(bytes.chunks_exact(B)) {
        let mut le = [0u8; 8];
        le[..B].copy_from_slice(src);
        let word = u64::from_le_bytes(le);
        for (k, d) in dst.iter_mut().enumerate() {
            *d = ((word >> (k * B)) & mask) as u8;
        }
    }
    let rest = &mut out[full * 8..];
    if !rest.is_empty() {
        let src = &bytes[full * B..];
        let mut le = [0u8; 8];
        le[..src.len()].copy_from_slice(src);
        let word = u64::from_le_bytes(le);
        for (k, d) in rest.iter_mut().enumerate() {
            *d = ((word >> (k * B)) & mask) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Scalar reference packer: set bits one at a time.
    fn pack_reference(codes: &[u8], bits: u8) -> Vec<u8> {
        let mut out = vec![0u8; packed_len(codes.len(), bits)];
        for (i, &c) in codes.iter().enumerate() {
            for k in 0..bits as usize {
                let bit = i * bits as usize + k;
                out[bit / 8] |= ((c >> k) & 1) << (bit % 8);
            }
        }
        out
    }

    fn codes_and_bits() -> impl Strategy<Value = (Vec<u8>, u8)> {
        (1u8..=8).prop_flat_map(|bits| {
            let max = ((1u16 << bits) - 1) as u8;
            (proptest::collection::vec(0..=max, 0..200), Just(bits))
        })
    }

    proptest! {
        #[test]
        fn fast_pack_matches_bitwise_reference((codes, bits) in codes_and_bits()) {
            let p = PackedCodes::pack(&codes, bits).unwrap();
            prop_assert_eq!(p.bytes(), &pack_reference(&codes, bits)[..]);
            prop_assert_eq!(p.unpack(), codes.clone());
            prop_assert_eq!(&PackedCodes::pack_trusted(&codes, bits).unwrap(), &p);
            for (i, &c) in codes.iter().enumerate() {
                prop_assert_eq!(p.get(i), c);
            }
        }
    }

    #[test]
    fn parallel_packing_matches_across_chunk_boundaries() {
        for bits in 1..=8u8 {
            let n = 3 * 64 * 1024 + 5;
            let codes: Vec<u8> = (0..n)
                .map(|i| (crate::rng::nth(7, i as u64) % (1 << bits)) as u8)
                .collect();
            assert_eq!(
                PackedCodes::pack_trusted(&codes, bits).unwrap().bytes(),
                &pack_reference(&codes, bits)[..]
            );
        }
    }

    #[test]
    fn documented_layouts() {
        // 4-bit: low nibble first.
        assert_eq!(PackedCodes::pack(&[0x1, 0xA], 4).unwrap().bytes(), &[0xA1]);
        // 2-bit: four per byte, first code in the lowest bits.
        assert_eq!(
            PackedCodes::pack(&[1, 2, 3, 0], 2).unwrap().bytes(),
            &[0b00_11_10_01]
        );
        // 3-bit: eight codes in three bytes.
        let p = PackedCodes::pack(&[7, 0, 0, 0, 0, 0, 0, 7], 3).unwrap();
        assert_eq!(p.bytes(), &[0b0000_0111, 0, 0b1110_0000]);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            PackedCodes::pack(&[4], 2),
            Err(Error::InconsistentParts(_))
        ));
        assert!(matches!(
            PackedCodes::pack(&[0], 9),
            Err(Error::InvalidBits { bits: 9, .. })
        ));
        assert!(PackedCodes::from_bytes(vec![0; 3], 4, 7).is_err());
        assert!(PackedCodes::from_bytes(vec![0; 3], 4, 6).is_ok());
    }
}
