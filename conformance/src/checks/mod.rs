//! The checks, one module per area. Each check is a named async function that
//! returns `Ok(())`, an error whose message is the one-line reason it failed,
//! or a [`crate::context::Skip`].

pub mod clients;
pub mod discovery;
pub mod management;
pub mod pull;
pub mod push;

use crate::context::Check;

/// Every check, in the order they run: pull, push, discovery, management, clients.
pub fn all() -> Vec<Check> {
    let mut v = pull::checks();
    v.extend(push::checks());
    v.extend(discovery::checks());
    v.extend(management::checks());
    v.extend(clients::checks());
    v
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn check_ids_are_unique_and_well_formed() {
        let all = super::all();
        let mut seen = HashSet::new();
        for c in &all {
            let id = c.id();
            assert!(seen.insert(id.clone()), "duplicate check {id}");
            assert!(
                c.name
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_'),
                "bad check name {id}"
            );
        }
        assert!(all.len() >= 80, "only {} checks", all.len());
    }
}
