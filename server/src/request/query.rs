//! A request's query string, read against the parameters its route declares.
//!
//! Each declared parameter is single-valued or a list. A single-valued one given twice
//! is refused, so no reader can take the first while another takes the last. Names and
//! values are decoded once (form encoding: `+` is a space). Parameters a route does
//! not declare are ignored: nothing reads them.

use super::decode::percent_decode;
use crate::error::ApiError;

/// One parameter a route reads.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    pub name: &'static str,
    /// A list (`?tag=a&tag=b`), or at most one value.
    pub many: bool,
    /// The error that names a bad value of this parameter (the OCI code that fits it).
    pub invalid: fn(String) -> ApiError,
}

impl Param {
    pub const fn one(name: &'static str, invalid: fn(String) -> ApiError) -> Self {
        Param {
            name,
            many: false,
            invalid,
        }
    }

    pub const fn many(name: &'static str, invalid: fn(String) -> ApiError) -> Self {
        Param {
            name,
            many: true,
            invalid,
        }
    }
}

/// The declared parameters' values, in the order given.
#[derive(Debug, Clone, Default)]
pub struct Params {
    values: Vec<(&'static str, String)>,
}

impl Params {
    /// Reads `raw` (the query string without `?`) for the parameters `declared`.
    pub fn read(raw: &str, declared: &[Param]) -> Result<Params, ApiError> {
        let mut params = Params::default();
        for pair in raw.split('&').filter(|p| !p.is_empty()) {
            let (raw_name, raw_value) = pair.split_once('=').unwrap_or((pair, ""));
            let name = percent_decode(raw_name, true).ok_or_else(|| {
                ApiError::Unsupported(format!(
                    "malformed query parameter name {:?}",
                    shorten(raw_name)
                ))
            })?;
            let Some(param) = declared.iter().find(|p| p.name == name) else {
                continue;
            };
            let value = percent_decode(raw_value, true).ok_or_else(|| {
                (param.invalid)(format!(
                    "the query parameter {} is not well encoded",
                    param.name
                ))
            })?;
            if !param.many && params.values.iter().any(|(n, _)| *n == param.name) {
                return Err((param.invalid)(format!(
                    "the query parameter {} may be given once",
                    param.name
                )));
            }
            params.values.push((param.name, value.into_owned()));
        }
        Ok(params)
    }

    /// The value of a single-valued parameter.
    pub fn one(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a list parameter, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.values
            .iter()
            .filter(move |(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// At most 64 characters of something a client sent, for an error message.
pub fn shorten(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLARED: [Param; 3] = [
        Param::one("digest", ApiError::DigestInvalid),
        Param::one("n", ApiError::SizeInvalid),
        Param::many("tag", ApiError::TagInvalid),
    ];

    #[test]
    fn reads_declared_parameters_once() {
        let p = Params::read("digest=sha256%3Aab&tag=a&x=1&tag=b&n=", &DECLARED).unwrap();
        assert_eq!(p.one("digest"), Some("sha256:ab"));
        assert_eq!(p.one("n"), Some(""));
        assert_eq!(p.all("tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(p.one("x"), None);
        // Encoded names are the same parameter.
        let p = Params::read("%64igest=x", &DECLARED).unwrap();
        assert_eq!(p.one("digest"), Some("x"));
    }

    #[test]
    fn refuses_a_single_parameter_given_twice() {
        for raw in ["digest=a&digest=a", "digest=a&%64igest=b", "n=1&n=2"] {
            assert!(Params::read(raw, &DECLARED).is_err(), "{raw}");
        }
        // Undeclared parameters may repeat: nothing reads them.
        assert!(Params::read("x=1&x=2", &DECLARED).is_ok());
    }

    #[test]
    fn refuses_broken_encoding() {
        assert!(matches!(
            Params::read("digest=%zz", &DECLARED),
            Err(ApiError::DigestInvalid(_))
        ));
        assert!(Params::read("%zz=1", &DECLARED).is_err());
    }
}
