//! Running hashes saved in an upload session's row, so whichever process receives the
//! next request hashes on from where the last one stopped.

use std::collections::BTreeMap;

use sha2::digest::common::hazmat::{SerializableState, SerializedState};
use sha2::{Sha256, Sha512};

use crate::digest::{Algorithm, DigestHasher};
use crate::error::{StorageError, StorageResult};

/// A running hash as text for the session row (`SerializableState`, hex).
pub fn save(h: &DigestHasher) -> String {
    match h {
        DigestHasher::Sha256(h) => hex::encode(h.serialize()),
        DigestHasher::Sha512(h) => hex::encode(h.serialize()),
    }
}

pub fn load(algorithm: Algorithm, state: &str) -> StorageResult<DigestHasher> {
    let corrupt = || StorageError::Corrupt(format!("{} hash state of an upload", algorithm.name()));
    let bytes = hex::decode(state).map_err(|_| corrupt())?;
    Ok(match algorithm {
        Algorithm::Sha256 => {
            let state =
                SerializedState::<Sha256>::try_from(bytes.as_slice()).map_err(|_| corrupt())?;
            DigestHasher::Sha256(Sha256::deserialize(&state).map_err(|_| corrupt())?)
        }
        Algorithm::Sha512 => {
            let state =
                SerializedState::<Sha512>::try_from(bytes.as_slice()).map_err(|_| corrupt())?;
            DigestHasher::Sha512(Sha512::deserialize(&state).map_err(|_| corrupt())?)
        }
    })
}

/// Every running hash of a session, by algorithm name.
pub fn load_all(hashes: &BTreeMap<String, String>) -> StorageResult<Vec<DigestHasher>> {
    hashes
        .iter()
        .map(|(name, state)| {
            let algorithm = match name.as_str() {
                "sha256" => Algorithm::Sha256,
                "sha512" => Algorithm::Sha512,
                other => {
                    return Err(StorageError::Corrupt(format!(
                        "hash {other:?} of an upload"
                    )))
                }
            };
            load(algorithm, state)
        })
        .collect()
}

pub fn save_all(hashers: &[DigestHasher]) -> BTreeMap<String, String> {
    hashers
        .iter()
        .map(|h| {
            let name = match h {
                DigestHasher::Sha256(_) => Algorithm::Sha256.name(),
                DigestHasher::Sha512(_) => Algorithm::Sha512.name(),
            };
            (name.to_string(), save(h))
        })
        .collect()
}

/// Fresh hashes of `algorithms`, saved.
pub fn fresh(algorithms: &[Algorithm]) -> BTreeMap<String, String> {
    save_all(
        &algorithms
            .iter()
            .map(|a| DigestHasher::new(*a))
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn hash_states_survive_the_session_row() {
        // Hashing in two halves across a save and load equals hashing at once.
        let bytes = b"the first half|and the second half of a blob";
        for algorithm in [Algorithm::Sha256, Algorithm::Sha512] {
            let mut first = DigestHasher::new(algorithm);
            first.update(&bytes[..15]);
            let saved = save(&first);
            let mut resumed = load(algorithm, &saved).unwrap();
            resumed.update(&bytes[15..]);
            assert_eq!(resumed.finish(), Digest::of(algorithm, bytes));
        }
        assert!(matches!(
            load(Algorithm::Sha256, "00ff"),
            Err(StorageError::Corrupt(_))
        ));
    }
}
