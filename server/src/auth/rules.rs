//! Authorisation: who may pull, push and delete which repositories. Rules name
//! repository patterns (globs) and accounts; they add up, and the admin role may do
//! everything. Token scopes (`repository:team/app:pull,push`) are parsed here too, and
//! narrowed to what the rules grant.

use std::collections::HashSet;
use std::fmt;

use signet_oci::pattern::InvalidPattern;
use signet_oci::RepoPattern;

use super::config::RuleConfig;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Empty for anonymous callers.
    pub name: String,
    pub robot: bool,
    pub admin: bool,
}

impl Identity {
    pub fn anonymous() -> Self {
        Identity {
            name: String::new(),
            robot: false,
            admin: false,
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.name.is_empty()
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.is_anonymous(), self.robot) {
            (true, _) => f.write_str("anonymous"),
            (false, true) => write!(f, "robot:{}", self.name),
            (false, false) => f.write_str(&self.name),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Pull, Action::Push, Action::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
        }
    }

    /// A scope's action names; `*` is every action. Unknown names are dropped.
    pub fn parse_list(list: &str) -> Vec<Action> {
        let mut actions: Vec<Action> = Vec::new();
        for name in list.split(',').map(str::trim) {
            let found: &[Action] = match name {
                "pull" => &[Action::Pull],
                "push" => &[Action::Push],
                "delete" => &[Action::Delete],
                "*" => &Action::ALL,
                _ => &[],
            };
            for a in found {
                if !actions.contains(a) {
                    actions.push(*a);
                }
            }
        }
        actions.sort();
        actions
    }
}

/// The accounts one action of one rule names.
#[derive(Debug, Clone, Default)]
struct Who {
    names: HashSet<String>,
    anonymous: bool,
    authenticated: bool,
}

impl Who {
    fn new(names: &[String]) -> Self {
        let mut who = Who::default();
        for name in names {
            match name.as_str() {
                "anonymous" => who.anonymous = true,
                "*" => who.authenticated = true,
                other => {
                    who.names.insert(other.to_string());
                }
            }
        }
        who
    }

    fn includes(&self, identity: &Identity) -> bool {
        if identity.is_anonymous() {
            self.anonymous
        } else {
            self.authenticated || self.names.contains(&identity.name)
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    repositories: Vec<RepoPattern>,
    pull: Who,
    push: Who,
    delete: Who,
}

#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The rules of the configuration; a repository pattern that does not compile is an
    /// error (see [`signet_oci::pattern`] for the grammar).
    pub fn new(config: &[RuleConfig]) -> Result<Self, InvalidPattern> {
        let rules = config
            .iter()
            .map(|r| {
                Ok(Rule {
                    repositories: r
                        .repositories
                        .iter()
                        .map(|p| RepoPattern::new(p))
                        .collect::<Result<_, _>>()?,
                    pull: Who::new(&r.pull),
                    push: Who::new(&r.push),
                    delete: Who::new(&r.delete),
                })
            })
            .collect::<Result<_, InvalidPattern>>()?;
        Ok(Rules(rules))
    }

    /// Every account name the rules mention (to warn about typos).
    pub fn named_accounts(config: &[RuleConfig]) -> impl Iterator<Item = &String> {
        config
            .iter()
            .flat_map(|r| r.pull.iter().chain(&r.push).chain(&r.delete))
            .filter(|n| *n != "anonymous" && *n != "*")
    }

    pub fn allows(&self, identity: &Identity, repository: &str, action: Action) -> bool {
        if identity.admin {
            return true;
        }
        self.0.iter().any(|rule| {
            rule.repositories.iter().any(|g| g.matches(repository)) && {
                let push = rule.push.includes(identity);
                let delete = rule.delete.includes(identity);
                match action {
                    Action::Pull => rule.pull.includes(identity) || push || delete,
                    Action::Push => push,
                    Action::Delete => delete,
                }
            }
        })
    }

    /// The part of `requested` the rules grant.
    pub fn granted(
        &self,
        identity: &Identity,
        repository: &str,
        requested: &[Action],
    ) -> Vec<Action> {
        requested
            .iter()
            .copied()
            .filter(|a| self.allows(identity, repository, *a))
            .collect()
    }
}

/// One requested scope: `repository:<name>:<actions>` or `registry:catalog:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    pub kind: String,
    pub name: String,
    pub actions: String,
}

impl Scope {
    /// Parses `type[(class)]:name:actions`; the name may itself hold colons.
    pub fn parse(text: &str) -> Option<Scope> {
        let (kind, rest) = text.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        let kind = kind.split_once('(').map_or(kind, |(k, _)| k);
        if kind.is_empty() || name.is_empty() {
            return None;
        }
        Some(Scope {
            kind: kind.to_string(),
            name: name.to_string(),
            actions: actions.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Identity {
        Identity {
            name: name.into(),
            robot: false,
            admin: false,
        }
    }

    #[test]
    fn rules_add_up_and_push_includes_pull() {
        let rules = Rules::new(&[
            RuleConfig {
                repositories: vec!["public/**".into()],
                pull: vec!["anonymous".into(), "*".into()],
                ..Default::default()
            },
            RuleConfig {
                repositories: vec!["team/*".into()],
                pull: vec!["bob".into()],
                push: vec!["alice".into(), "ci".into()],
                delete: vec!["alice".into()],
            },
        ])
        .unwrap();
        let anon = Identity::anonymous();
        assert!(rules.allows(&anon, "public/x", Action::Pull));
        assert!(!rules.allows(&anon, "public/x", Action::Push));
        assert!(!rules.allows(&anon, "team/app", Action::Pull));
        assert!(rules.allows(&user("bob"), "public/x", Action::Pull));
        assert!(rules.allows(&user("bob"), "team/app", Action::Pull));
        assert!(!rules.allows(&user("bob"), "team/app", Action::Push));
        assert!(rules.allows(&user("ci"), "team/app", Action::Pull));
        assert!(rules.allows(&user("ci"), "team/app", Action::Push));
        assert!(!rules.allows(&user("ci"), "team/app", Action::Delete));
        assert!(rules.allows(&user("alice"), "team/app", Action::Delete));
        assert!(!rules.allows(&user("alice"), "team/app/deeper", Action::Pull));
        let admin = Identity {
            admin: true,
            ..user("root")
        };
        assert!(rules.allows(&admin, "anything/at/all", Action::Delete));
        assert_eq!(
            rules.granted(&user("bob"), "team/app", &Action::parse_list("pull,push")),
            vec![Action::Pull]
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(
            Scope::parse("repository:team/app:pull,push"),
            Some(Scope {
                kind: "repository".into(),
                name: "team/app".into(),
                actions: "pull,push".into()
            })
        );
        assert_eq!(
            Scope::parse("repository(plugin):x:pull").unwrap().kind,
            "repository"
        );
        assert_eq!(Scope::parse("registry:catalog:*").unwrap().name, "catalog");
        assert_eq!(Scope::parse("nonsense"), None);
        assert_eq!(
            Action::parse_list("push,pull,bogus,pull"),
            vec![Action::Pull, Action::Push]
        );
        assert_eq!(Action::parse_list("*"), Action::ALL.to_vec());
    }
}
