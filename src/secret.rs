//! Secrets: values that must never reach logs, `/metrics` or any page, and the rule that tells
//! which query parameters and headers hold one.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

/// A secret value. `Debug` and `Display` print `<redacted>`; only [`Secret::expose`] gives the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<str>);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<Arc<str>>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that sends it (a header, a DSN).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Where a secret comes from in the config: inline, or `{file: PATH}` (trailing newline trimmed).
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// Written in the config itself.
    Inline(String),
    /// Read from a file at load time (and again at every reload).
    File {
        /// Path of the file holding the secret.
        file: PathBuf,
    },
}

impl<'de> Deserialize<'de> for SecretSource {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = SecretSource;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, or {file: PATH}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SecretSource, E> {
                Ok(SecretSource::Inline(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SecretSource, A::Error> {
                let mut file = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "file" => file = Some(map.next_value::<PathBuf>()?),
                        other => return Err(serde::de::Error::unknown_field(other, &["file"])),
                    }
                }
                file.map(|file| SecretSource::File { file })
                    .ok_or_else(|| serde::de::Error::missing_field("file"))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::File { file } => write!(f, "File({})", file.display()),
        }
    }
}

impl Secret {
    /// Whether `offered` is this secret, compared in constant time (a bearer token from a
    /// request: the time taken says nothing about how much of it was right).
    pub fn matches(&self, offered: &str) -> bool {
        constant_time_eq(self.expose().as_bytes(), offered.as_bytes())
    }
}

/// `a == b` in time that depends on the lengths only.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Words that mark a query parameter or a header as secret wherever they appear in its name
/// (case-insensitive): `access_token`, `X-Api-Key`, `passwd`, `sessionid`, `Authorization` ...
pub const SECRET_WORDS: &[&str] = &[
    "token", "key", "secret", "pass", "pwd", "auth", "bearer", "jwt", "sess", "cookie", "cred", "sig", "private", "otp",
];

/// The value shown instead of a secret query value.
pub const REDACTED: &str = "redacted";

/// Which names hold secrets: [`SECRET_WORDS`] plus the words of the config's `secret_names`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SecretNames {
    extra: Arc<[String]>,
}

impl SecretNames {
    /// The built-in words plus `extra` (any case).
    pub fn new(extra: impl IntoIterator<Item = String>) -> Self {
        Self {
            extra: extra.into_iter().map(|w| w.to_ascii_lowercase()).collect(),
        }
    }

    /// Whether a query parameter or header called `name` holds a secret.
    pub fn is_secret(&self, name: &str) -> bool {
        let lower = name.to_ascii_lowercase();
        SECRET_WORDS.iter().any(|w| lower.contains(w)) || self.extra.iter().any(|w| lower.contains(w.as_str()))
    }

    /// A target as it may be shown: user and password removed, secret query values replaced by
    /// `redacted`, the fragment dropped. Never the raw text of a target that does not parse:
    /// that is redacted as text, by the same rules.
    pub fn redact_target(&self, target: &str) -> String {
        match url::Url::parse(target) {
            Ok(url) if !url.cannot_be_a_base() && target.contains("://") => self.redact_url(url),
            _ => self.redact_text(target),
        }
    }

    fn redact_url(&self, mut url: url::Url) -> String {
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_fragment(None);
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let value = if self.is_secret(&k) {
                        REDACTED.to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), value)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        url.to_string()
    }

    /// The same rules on text as written, parsed or not (`host:port/path?query`, a mistyped
    /// URL): for messages that quote what the user wrote.
    pub fn redact_text(&self, text: &str) -> String {
        let text = text.split('#').next().unwrap_or_default();
        let (base, query) = match text.split_once('?') {
            Some((base, query)) => (base, Some(query)),
            None => (text, None),
        };
        let (scheme, rest) = match base.find("://") {
            Some(i) => base.split_at(i + 3),
            None => ("", base),
        };
        let authority_end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(authority_end);
        let host = authority.rsplit('@').next().unwrap_or_default();
        let mut out = format!("{scheme}{host}{path}");
        if let Some(query) = query {
            out.push('?');
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if self.is_secret(name) => format!("{name}={REDACTED}"),
                    _ => pair.to_string(),
                })
                .collect();
            out.push_str(&pairs.join("&"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_removes_credentials_and_secret_values() {
        let names = SecretNames::default();
        let cases = [
            (
                "http://user:pw@host:8080/x?a=1&access_token=t#frag",
                "http://host:8080/x?a=1&access_token=redacted",
            ),
            (
                "https://h/?pass=1&pwd=2&jwt=3&session=4&X-Api-Key=5&sig=6&page=7",
                "https://h/?pass=redacted&pwd=redacted&jwt=redacted&session=redacted&X-Api-Key=redacted&sig=redacted&page=7",
            ),
            // Mistyped URLs are redacted as text, never shown raw.
            (
                "http://user:hunter2@127.0.0.1:99999/?token=x",
                "http://127.0.0.1:99999/?token=redacted",
            ),
            ("https://elastic:hunter2@[::1", "https://[::1"),
            // Targets that are not URLs.
            ("db:5432", "db:5432"),
            ("[::1]:22", "[::1]:22"),
            ("u:p@db:5432", "db:5432"),
            ("host:80/health?apikey=s", "host:80/health?apikey=redacted"),
            (
                "sqlite:/var/db.sqlite?mode=ro&password=x",
                "sqlite:/var/db.sqlite?mode=ro&password=redacted",
            ),
        ];
        for (target, shown) in cases {
            assert_eq!(names.redact_target(target), shown, "{target}");
        }
        let more = SecretNames::new(["Customer".to_string()]);
        assert_eq!(
            more.redact_target("http://h/?customer_id=42&x=1"),
            "http://h/?customer_id=redacted&x=1"
        );
        assert!(more.is_secret("X-Customer") && names.is_secret("X-Api-Key") && !names.is_secret("Accept"));
    }

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
        let source = SecretSource::Inline("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }
}
