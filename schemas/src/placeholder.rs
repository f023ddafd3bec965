//! Score placeholders: `${metadata.name}`, `${resources.db.host}`, `${cluster.name}`.
//!
//! As the Score specification defines them: `$$` is a literal `$`, a `.` inside a key is
//! written `\.`, and a `$` not followed by `{` or `$` is literal text.

use std::ops::Range;

/// A piece of a string with placeholders.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// Literal text (escapes already resolved).
    Text(String),
    /// A reference: its path (e.g. `["resources", "db", "host"]`) and where `${…}` stands
    /// in the input.
    Ref {
        path: Vec<String>,
        span: Range<usize>,
    },
}

/// A malformed placeholder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaceholderError {
    pub message: String,
    /// Where it stands in the input.
    pub span: Range<usize>,
}

/// Splits `input` into text and references.
pub fn parse(input: &str) -> Result<Vec<Segment>, PlaceholderError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = input;
    let mut offset = 0;
    while let Some(i) = rest.find('$') {
        text.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(next) = after.strip_prefix('$') {
            text.push('$');
            rest = next;
            offset += i + 2;
        } else if let Some(body) = after.strip_prefix('{') {
            let start = offset + i;
            let Some(end) = find_close(body) else {
                return Err(PlaceholderError {
                    message: format!("unterminated placeholder `{}`", &input[start..]),
                    span: start..input.len(),
                });
            };
            let span = start..start + 2 + end + 1;
            let path = split_path(&body[..end]);
            if path.iter().any(String::is_empty) {
                return Err(PlaceholderError {
                    message: format!("empty name in placeholder `{}`", &input[span.clone()]),
                    span,
                });
            }
            if !text.is_empty() {
                out.push(Segment::Text(std::mem::take(&mut text)));
            }
            out.push(Segment::Ref {
                path,
                span: span.clone(),
            });
            rest = &body[end + 1..];
            offset = span.end;
        } else {
            text.push('$');
            rest = after;
            offset += i + 1;
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        out.push(Segment::Text(text));
    }
    Ok(out)
}

/// The index of the `}` closing a placeholder body; `\}` does not close it.
fn find_close(body: &str) -> Option<usize> {
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'}' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

fn split_path(body: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('.') | Some('}') | Some('\\')) => {
                parts
                    .last_mut()
                    .expect("never empty")
                    .push(chars.next().expect("peeked"));
            }
            '.' => parts.push(String::new()),
            c => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

/// Whether `input` holds any placeholder.
pub fn has_refs(input: &str) -> bool {
    parse(input).is_ok_and(|s| s.iter().any(|s| matches!(s, Segment::Ref { .. })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(path: &[&str], span: Range<usize>) -> Segment {
        Segment::Ref {
            path: path.iter().map(|s| s.to_string()).collect(),
            span,
        }
    }

    #[test]
    fn text_and_references() {
        assert_eq!(
            parse("postgres://${resources.db.host}:5432").unwrap(),
            vec![
                Segment::Text("postgres://".into()),
                r(&["resources", "db", "host"], 11..31),
                Segment::Text(":5432".into())
            ]
        );
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        assert_eq!(
            parse("$${x} costs $5").unwrap(),
            vec![Segment::Text("${x} costs $5".into())]
        );
    }

    #[test]
    fn escaped_dots_stay_in_keys() {
        assert_eq!(
            parse(r"${metadata.annotations.example\.com/team}").unwrap(),
            vec![r(&["metadata", "annotations", "example.com/team"], 0..41)]
        );
    }

    #[test]
    fn malformed_placeholders_are_errors() {
        assert!(
            parse("${resources.db")
                .unwrap_err()
                .message
                .contains("unterminated")
        );
        assert!(
            parse("${resources..db}")
                .unwrap_err()
                .message
                .contains("empty name")
        );
        assert!(parse("${}").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_and_spans_are_in_bounds(s in ".{0,64}") {
            match parse(&s) {
                Ok(segments) => for seg in segments {
                    if let Segment::Ref { span, .. } = seg {
                        prop_assert!(span.end <= s.len());
                        prop_assert!(s[span].starts_with("$\u{7b}"), "span does not start a placeholder");
                    }
                },
                Err(e) => prop_assert!(e.span.end <= s.len()),
            }
        }
    }
}
