//! The last pull of each manifest, for the rules about use. A manifest GET only notes
//! the time in memory (no database write on the read path); the notes are written in
//! one transaction every `record_pulls_every_secs`, and at shutdown. A note lost to a
//! crash costs a pull's recency, never a manifest: a rule counts a push as a use.

use std::collections::HashMap;
use std::sync::Mutex;

use signet_storage::meta::Retention;
use signet_storage::Digest;

/// Pulls noted since the last write: repository → manifest → unix seconds.
#[derive(Default)]
pub struct PullLog {
    noted: Mutex<HashMap<String, HashMap<Digest, i64>>>,
}

impl PullLog {
    /// Notes a pull of `digest` from `repo` now.
    pub fn note(&self, repo: &str, digest: &Digest) {
        let at = signet_storage::meta::now();
        let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
        // Looked up by reference first: a repeated pull allocates nothing.
        if let Some(of_repo) = noted.get_mut(repo) {
            match of_repo.get_mut(digest) {
                Some(last) => *last = at,
                None => {
                    of_repo.insert(digest.clone(), at);
                }
            }
        } else {
            noted.insert(repo.to_string(), HashMap::from([(digest.clone(), at)]));
        }
    }

    /// Writes the notes; those that could not be written are kept for the next time.
    pub async fn write(&self, store: &dyn Retention) -> signet_storage::StorageResult<usize> {
        let taken = std::mem::take(&mut *self.noted.lock().unwrap_or_else(|e| e.into_inner()));
        let pulls: Vec<(String, Digest, i64)> = taken
            .into_iter()
            .flat_map(|(repo, of_repo)| {
                of_repo
                    .into_iter()
                    .map(move |(digest, at)| (repo.clone(), digest, at))
            })
            .collect();
        if let Err(e) = store.record_pulls(&pulls).await {
            for (repo, digest, at) in pulls {
                let mut noted = self.noted.lock().unwrap_or_else(|e| e.into_inner());
                let last = noted.entry(repo).or_default().entry(digest).or_insert(at);
                *last = (*last).max(at);
            }
            return Err(e);
        }
        Ok(pulls.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_are_written_once() {
        use signet_storage::meta::{Manifests, SqliteMetadata};
        let store = SqliteMetadata::open("sqlite::memory:").await.unwrap();
        let log = PullLog::default();
        let d = Digest::sha256_of(b"m");
        log.note("a/b", &d);
        log.note("a/b", &d);
        log.note("c", &d);
        // Manifests that are not stored are skipped by the store, not refused.
        assert_eq!(log.write(&store).await.unwrap(), 2);
        assert_eq!(log.write(&store).await.unwrap(), 0, "written once");
        assert!(store
            .get_manifest(
                &"a/b".parse().unwrap(),
                &signet_storage::Reference::Digest(d)
            )
            .await
            .unwrap()
            .is_none());
    }
}
