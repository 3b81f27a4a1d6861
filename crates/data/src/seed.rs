//! Deterministic per-item random streams: every generated or augmented item gets its own
//! ChaCha stream derived from (seed, tags), so results do not depend on thread scheduling.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A random stream for the item identified by `tags` under `seed`.
pub fn item_rng(seed: u64, tags: &[u64]) -> ChaCha8Rng {
    let mut h = mix(seed);
    for &t in tags {
        h = mix(h ^ mix(t));
    }
    ChaCha8Rng::seed_from_u64(h)
}
