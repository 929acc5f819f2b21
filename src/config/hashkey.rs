//! `hash_key` on an `[[upstream]]`: what `balance = "consistent_hash"`
//! hashes to choose a server: the client address (default), a request
//! header, or a cookie.

use serde::Deserialize;

use super::locate::Place;
use super::{Balance, Config, ConfigError};

/// What a request is hashed on (`hash_key`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum HashKey {
    /// `"client"`: the client's address (the real one behind a PROXY balancer).
    #[default]
    Client,
    /// `"header:NAME"`: the first `NAME` header's value.
    Header(String),
    /// `"cookie:NAME"`: the value of cookie `NAME`.
    Cookie(String),
}

impl TryFrom<String> for HashKey {
    type Error = String;

    fn try_from(s: String) -> Result<HashKey, String> {
        let named = |name: &str, what: &str| -> Result<String, String> {
            if super::headers::is_token(name) {
                Ok(name.to_owned())
            } else {
                Err(format!(
                    "hash_key \"{s}\": \"{name}\" is not a valid {what} name"
                ))
            }
        };
        match s.split_once(':') {
            None if s == "client" => Ok(HashKey::Client),
            Some(("header", name)) => {
                Ok(HashKey::Header(named(name, "header")?.to_ascii_lowercase()))
            }
            Some(("cookie", name)) => Ok(HashKey::Cookie(named(name, "cookie")?)),
            _ => Err(format!(
                "hash_key \"{s}\" is not \"client\", \"header:NAME\" or \"cookie:NAME\""
            )),
        }
    }
}

impl Config {
    /// A `hash_key` other than the client needs `balance = "consistent_hash"`.
    pub(super) fn validate_hash_keys(&self, text: &str) -> Result<(), ConfigError> {
        for (i, g) in self.upstreams.iter().enumerate() {
            if g.hash_key != HashKey::Client && g.balance != Balance::ConsistentHash {
                return Err(ConfigError::Invalid {
                    file: None,
                    line: Place::new("upstream", i).line(text, "hash_key"),
                    key: "upstream.hash_key".into(),
                    message: format!(
                        "upstream \"{}\": hash_key is used by balance = \"consistent_hash\" only; set that balance or remove hash_key",
                        g.name
                    ),
                });
            }
        }
        Ok(())
    }
}
