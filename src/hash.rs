//! The one hash fabrik uses for ids, fingerprints and ownership marks: FNV-1a, 64 bits.
//!
//! Small and stable across builds, platforms and releases (unlike `DefaultHasher`), which
//! is what these values need: a mark written on a host by one fabrik is read by the next,
//! and names, MACs and UUIDs derived from ids must come out the same on every run. Not
//! cryptographic: it tells "made from the same value" apart, nothing more.

use serde::Serialize;

/// FNV-1a's standard starting value.
pub const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
/// The second starting value of [`fnv1a_128`]: the standard one, its halves swapped.
const OFFSET_SWAPPED: u64 = 0x8422_2325_cbf2_9ce4;
const PRIME: u64 = 0x0100_0000_01b3;

/// FNV-1a, fed a piece at a time (as an [`std::io::Write`], so JSON can be hashed as it
/// is written, never held).
#[derive(Clone, Copy, Debug)]
pub struct Fnv1a(u64);

impl Fnv1a {
    pub fn new() -> Fnv1a {
        Fnv1a(OFFSET)
    }

    fn with_basis(basis: u64) -> Fnv1a {
        Fnv1a(basis)
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0 = bytes.iter().fold(self.0, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    }

    pub fn finish(self) -> u64 {
        self.0
    }
}

impl Default for Fnv1a {
    fn default() -> Fnv1a {
        Fnv1a::new()
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.update(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// FNV-1a of `bytes`.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = Fnv1a::new();
    h.update(bytes);
    h.finish()
}

/// 128 bits from `bytes`: FNV-1a from the standard starting value and from the swapped
/// one, for name-based UUIDs.
pub fn fnv1a_128(bytes: &[u8]) -> (u64, u64) {
    let mut b = Fnv1a::with_basis(OFFSET_SWAPPED);
    b.update(bytes);
    (fnv1a(bytes), b.finish())
}

/// FNV-1a of a value's JSON (`serde_json::to_vec`'s bytes), hashed as it is written; the
/// hash of nothing should the value not serialize.
pub fn json(value: &impl Serialize) -> u64 {
    let mut h = Fnv1a::new();
    match serde_json::to_writer(&mut h, value) {
        Ok(()) => h.finish(),
        Err(_) => fnv1a(&[]),
    }
}

/// A value's fingerprint as fabrik writes it in marks and plans: `fnv1a64:<16 hex>`.
pub fn fingerprint(value: &impl Serialize) -> String {
    format!("fnv1a64:{:016x}", json(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // FNV-1a's published test vectors.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn json_is_hashed_as_to_vec_writes_it() {
        let value = serde_json::json!({"b": [1, 2, "x"], "a": null});
        assert_eq!(json(&value), fnv1a(&serde_json::to_vec(&value).unwrap()));
        assert_eq!(fingerprint(&value), format!("fnv1a64:{:016x}", fnv1a(&serde_json::to_vec(&value).unwrap())));
    }

    #[test]
    fn pieces_hash_as_the_whole() {
        let mut h = Fnv1a::new();
        h.update(b"foo");
        h.update(b"bar");
        assert_eq!(h.finish(), fnv1a(b"foobar"));
        let (a, b) = fnv1a_128(b"vm:h1/x");
        assert_eq!(a, fnv1a(b"vm:h1/x"));
        assert_ne!(a, b);
    }
}
