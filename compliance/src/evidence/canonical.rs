//! The JSON Canonicalization Scheme (RFC 8785) for evidence records, so that anyone can
//! recompute a record's digest from its text with any conforming implementation.
//!
//! Written here rather than taken from a crate: the JCS crates on crates.io are unmaintained,
//! and evidence records hold only what makes the scheme short to get exactly right: objects,
//! arrays, strings, booleans, null and integers. Keys are sorted by their UTF-16 code units;
//! strings are escaped as ECMAScript's `JSON.stringify` escapes them (`\"`, `\\`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, other controls as lowercase `\u00xx`, everything else as is); integers are
//! written in decimal. A number that is not an integer within ±2^53 (which ECMAScript would
//! write in another form) is refused rather than written differently from the standard.

use serde_json::Value;

/// The largest integer ECMAScript numbers hold exactly.
const EXACT: u64 = 1 << 53;

/// `value` in canonical form, or why it cannot be.
pub fn canonical(value: &Value) -> Result<String, String> {
    let mut out = String::new();
    write(value, &mut out)?;
    Ok(out)
}

fn write(value: &Value, out: &mut String) -> Result<(), String> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            let exact = n
                .as_u64()
                .filter(|u| *u <= EXACT)
                .map(|u| u.to_string())
                .or_else(|| {
                    n.as_i64()
                        .filter(|i| i.unsigned_abs() <= EXACT)
                        .map(|i| i.to_string())
                });
            match exact {
                Some(text) => out.push_str(&text),
                None => {
                    return Err(format!(
                        "the number {n} is not an integer within ±2^53; evidence records hold no other"
                    ));
                }
            }
        }
        Value::String(s) => string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                string(key, out);
                out.push(':');
                write(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::canonical;
    use serde_json::json;

    #[test]
    fn keys_sort_by_utf16_code_units_as_rfc_8785_sorts_them() {
        // RFC 8785 §3.2.3's sorting example: the property names, in the order it gives.
        let value = json!({
            "\u{20ac}": "Euro Sign",
            "\r": "Carriage Return",
            "\u{fb33}": "Hebrew Letter Dalet With Dagesh",
            "1": "One",
            "\u{1f600}": "Emoji: Grinning Face",
            "\u{80}": "Control",
            "\u{f6}": "Latin Small Letter O With Diaeresis"
        });
        let text = canonical(&value).unwrap();
        let order: Vec<&str> = [
            "Carriage Return",
            "One",
            "Control",
            "Latin Small Letter O With Diaeresis",
            "Euro Sign",
            "Emoji: Grinning Face",
            "Hebrew Letter Dalet With Dagesh",
        ]
        .into_iter()
        .collect();
        let mut at = 0;
        for name in order {
            let found = text[at..]
                .find(name)
                .unwrap_or_else(|| panic!("{name} in order: {text}"));
            at += found;
        }
    }

    #[test]
    fn strings_integers_and_nesting_are_written_as_the_standard_writes_them() {
        let value = json!({"b": [1, -2, true, null], "a": "q\"\\\u{1}\n\u{e9}", "c": {"z": 0, "y": 9007199254740992u64}});
        assert_eq!(
            canonical(&value).unwrap(),
            r#"{"a":"q\"\\\u0001\né","b":[1,-2,true,null],"c":{"y":9007199254740992,"z":0}}"#
        );
        assert!(canonical(&json!({"x": 1.5})).is_err());
        assert!(canonical(&json!({"x": 9007199254740993u64})).is_err());
    }
}
