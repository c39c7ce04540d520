//! The keys a config struct accepts, read from its `Deserialize` implementation, so lists of
//! keys are never typed a second time beside the struct.

use serde::de::{self, Deserialize, Deserializer, Visitor};

/// The field names `T`'s derived `Deserialize` knows (empty for a type that is not a struct).
pub fn fields_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(FieldLister { fields: &mut fields });
    fields
}

/// A deserializer that answers every request with an error, noting the fields of a struct.
struct FieldLister<'a> {
    fields: &'a mut &'static [&'static str],
}

#[derive(Debug)]
struct Listed;

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fields listed")
    }
}

impl std::error::Error for Listed {}

impl de::Error for Listed {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        Listed
    }
}

impl<'de> Deserializer<'de> for FieldLister<'_> {
    type Error = Listed;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Listed> {
        Err(Listed)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Listed> {
        *self.fields = fields;
        Err(Listed)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(dead_code)]
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Example {
        name: String,
        #[serde(default)]
        labels: Vec<String>,
        #[serde(rename = "max_age")]
        age: u32,
    }

    #[test]
    fn lists_the_keys_as_written() {
        assert_eq!(fields_of::<Example>(), ["name", "labels", "max_age"]);
        assert!(fields_of::<String>().is_empty());
    }
}
