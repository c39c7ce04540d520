//! Secrets: values that must never reach logs, `/metrics` or any page.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_formats_its_value() {
        let secret = Secret::new("hunter2");
        assert_eq!(format!("{secret} {secret:?}"), "<redacted> <redacted>");
        let source = SecretSource::Inline("hunter2".into());
        assert!(!format!("{source:?}").contains("hunter2"));
        assert_eq!(secret.expose(), "hunter2");
    }
}
