//! Named random streams: every draw is a pure function of
//! `(seed, purpose, epoch, step)`, which is what makes `--resume` exact.
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Tags that keep the random streams of different purposes apart.
pub mod tag {
    pub const SPLIT: u64 = 0x5350_4c49;
    pub const SHUFFLE: u64 = 0x5348_5546;
    pub const AUGMENT: u64 = 0x4155_474d;
    pub const DROPOUT: u64 = 0x4452_4f50;
    pub const INIT: u64 = 0x494e_4954;
    pub const CALIBRATION: u64 = 0x4341_4c49;
    pub const SYNTHETIC: u64 = 0x5359_4e54;
}

/// Mix several words into one seed (splitmix64 over the words), so that
/// `(seed, epoch, step, purpose)` names an independent random stream.
pub fn mix(words: &[u64]) -> u64 {
    let mut h: u64 = 0x9E37_79B9_7F4A_7C15;
    for &w in words {
        h ^= w;
        h = h.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = h;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        h = z ^ (z >> 31);
    }
    h
}

/// The random generator for one `(seed, epoch, step, purpose)`.
pub fn stream_rng(words: &[u64]) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix(words))
}
