//! The process's secrets: keys for the hashes an attacker must not be able
//! to predict (the flow tables' index, SYN cookies) and the seed of
//! smoltcp's ISNs and ephemeral ports. They come from the OS RNG once, at
//! start-up; without it ZProxy does not start (there is no fallback on time
//! or pid, which an attacker can guess).

use std::fmt;
use std::hash::Hasher;

use siphasher::sip::SipHasher13;

/// Drawn once per process by [`Secrets::from_os_rng`]; each worker gets a
/// copy through [`Secrets::for_worker`]. `Debug` does not show the values.
#[derive(Clone, PartialEq, Eq)]
pub struct Secrets {
    /// Seed for smoltcp's ISNs and ephemeral ports and for where each
    /// upstream group's local ports start; differs per worker.
    pub iss_seed: u64,
    /// SipHash-1-3 key of the flow table and TIME-WAIT index (`net::flow`).
    pub flow_key: [u8; 16],
    /// SipHash-2-4 key of the SYN cookie MAC (`net::syncookie`).
    pub cookie_key: [u8; 16],
}

/// The OS RNG gave no bytes: ZProxy refuses to start.
#[derive(Debug)]
pub struct EntropyError(pub getrandom::Error);

impl fmt::Display for EntropyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no entropy from the OS RNG: {}", self.0)
    }
}

impl std::error::Error for EntropyError {}

impl Secrets {
    /// Fresh secrets from the OS RNG (`getrandom(2)`). An error means the
    /// kernel gave none: the caller must refuse to start, not fall back.
    pub fn from_os_rng() -> Result<Secrets, EntropyError> {
        let mut buf = [0u8; 40];
        getrandom::fill(&mut buf).map_err(EntropyError)?;
        Ok(Secrets::from_bytes(&buf))
    }

    /// Secrets derived from `seed` alone, the same on every run: for tests
    /// and fuzzing, never for a proxy facing a network. `iss_seed` is
    /// `seed` itself, so a harness sees the ISNs it saw with that seed.
    pub fn from_seed(seed: u64) -> Secrets {
        let mut buf = [0u8; 40];
        for (i, chunk) in buf.chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&derive(seed, i as u64).to_le_bytes());
        }
        Secrets {
            iss_seed: seed,
            ..Secrets::from_bytes(&buf)
        }
    }

    /// The secrets of worker `index`: the same keys for every worker (a
    /// cookie or a flow hashes alike wherever it is checked), but an
    /// `iss_seed` of its own, so that workers do not draw the same ISNs.
    pub fn for_worker(&self, index: usize) -> Secrets {
        Secrets {
            iss_seed: derive(self.iss_seed, index as u64),
            ..self.clone()
        }
    }

    fn from_bytes(buf: &[u8; 40]) -> Secrets {
        let (seed, keys) = buf.split_at(8);
        let (flow_key, cookie_key) = keys.split_at(16);
        Secrets {
            iss_seed: u64::from_le_bytes(seed.try_into().expect("8 bytes")),
            flow_key: flow_key.try_into().expect("16 bytes"),
            cookie_key: cookie_key.try_into().expect("16 bytes"),
        }
    }
}

/// A pseudo-random function of (`seed`, `n`): SipHash-1-3 keyed by `seed`.
fn derive(seed: u64, n: u64) -> u64 {
    let mut h = SipHasher13::new_with_keys(seed, 0x7a70_726f_7879_2d73);
    h.write_u64(n);
    h.finish()
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secrets { .. }")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_rng_secrets_differ_between_draws() {
        let a = Secrets::from_os_rng().expect("the OS RNG works here");
        let b = Secrets::from_os_rng().expect("the OS RNG works here");
        assert_ne!(a, b);
        assert_ne!(a.flow_key, a.cookie_key);
        assert_eq!(format!("{a:?}"), "Secrets { .. }", "Debug hides the keys");
    }

    #[test]
    fn seeded_secrets_are_reproducible_and_workers_share_keys() {
        let s = Secrets::from_seed(42);
        assert_eq!(s, Secrets::from_seed(42));
        assert_eq!(s.iss_seed, 42);
        assert_ne!(s.flow_key, Secrets::from_seed(43).flow_key);
        let (w0, w1) = (s.for_worker(0), s.for_worker(1));
        assert_ne!(w0.iss_seed, w1.iss_seed);
        assert_eq!((w0.flow_key, w0.cookie_key), (s.flow_key, s.cookie_key));
        assert_eq!((w1.flow_key, w1.cookie_key), (s.flow_key, s.cookie_key));
    }

    #[test]
    fn the_entropy_error_says_what_failed() {
        let e = EntropyError(getrandom::Error::UNSUPPORTED);
        assert!(
            e.to_string().starts_with("no entropy from the OS RNG: "),
            "{e}"
        );
    }
}
