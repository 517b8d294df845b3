//! Strict JSON objects from people: the admin API's bodies and the lines of a key import.
//!
//! Job: read one JSON object into a typed value (`deny_unknown_fields` types), or say what
//! is wrong as `(field, why)`, where the field is the JSON path (`grants[0].role`) or the
//! caller's name for the value as a whole (`body`, `line`).
//!
//! Invariants: an unknown field gets the config loader's did-you-mean
//! ([`crate::yaml::unknown_name_hint`]) or the list of known ones, so every reader of
//! people's input says it alike; serde's positions (" at line L column C") and type
//! names (`struct PatchBody`) never reach the message. Why `serde_path_to_error`: serde
//! alone says *what* is wrong, not *where*.

use serde::de::DeserializeOwned;

/// `bytes` as one JSON object of type `T`; `whole` names the value in errors.
pub fn object<T: DeserializeOwned>(bytes: &[u8], whole: &str) -> Result<T, (String, String)> {
    let refuse = |why: &str| (whole.to_owned(), why.to_owned());
    // An array, a string or a number where an object belongs: say so in plain words,
    // not serde's ("expected struct PatchBody with 10 elements").
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(refuse("must be a JSON object"));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = without_position(&inner.to_string());
        if message.starts_with("unknown field `") {
            // The path already ends with the unknown field's name.
            let hint = crate::yaml::unknown_name_hint(&message)
                .or_else(|| {
                    let expected = message.split_once("`, ")?.1;
                    Some(format!("; {expected}"))
                })
                .unwrap_or_default();
            return (path, format!("unknown field{hint}"));
        }
        let field = if path == "." || inner.is_syntax() || inner.is_eof() {
            whole.to_owned()
        } else {
            path
        };
        (field, message)
    })?;
    de.end()
        .map_err(|_| refuse("trailing characters after the JSON value"))?;
    Ok(value)
}

/// `serde_json` appends " at line L column C"; the field name says more to a person.
fn without_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message.get(..i).unwrap_or(message).to_owned(),
        None => message.to_owned(),
    }
}
