//! Whether a literal value looks like a credential, read from the value itself: a known
//! token format, a password inside a URL, a private key, or a long random-looking string.
//!
//! A variable's name says nothing reliable: `PASSWORD_FILE=/run/secrets/db` and
//! `TOKEN_TTL=3600` hold no secret, while `DATABASE_URL=postgres://app:…@db/app` does. The
//! formats are those the providers document for their keys (prefix, alphabet, length); the
//! entropy rule is the one secret scanners use (Shannon entropy over the characters of a
//! base64 or hex word, with a bar that rises with length). Written here rather than with a
//! regex crate: each format is a prefix and a character class, which plain code states as
//! clearly and without a pattern compiler on the projection's path.

/// What kind of credential `value` looks like, or `None`.
pub fn looks_like_credential(value: &str) -> Option<&'static str> {
    let value = value.trim();
    if value.contains("-----BEGIN") && value.contains("PRIVATE KEY-----") {
        return Some("a PEM private key");
    }
    if url_with_password(value) {
        return Some("a URL with a password");
    }
    value.split_whitespace().find_map(word)
}

fn word(w: &str) -> Option<&'static str> {
    let w = w.trim_matches(|c: char| matches!(c, '"' | '\'' | ',' | ';'));
    known_format(w).or_else(|| random_looking(w).then_some("a high-entropy string"))
}

/// `prefix` followed by at least `min` characters, all in `class`.
fn prefixed(w: &str, prefix: &str, min: usize, class: fn(char) -> bool) -> bool {
    w.strip_prefix(prefix)
        .is_some_and(|rest| rest.chars().count() >= min && rest.chars().all(class))
}

fn alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

fn token(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

/// A provider's token: its prefix, how many characters follow at least, their class, and
/// what to call it.
type Format = (&'static str, usize, fn(char) -> bool, &'static str);

fn known_format(w: &str) -> Option<&'static str> {
    const AWS: [&str; 8] = [
        "AKIA", "ASIA", "AGPA", "AIDA", "AROA", "ANPA", "ANVA", "AIPA",
    ];
    let upper_alnum = |c: char| c.is_ascii_uppercase() || c.is_ascii_digit();
    if w.len() == 20 && AWS.iter().any(|p| prefixed(w, p, 16, upper_alnum)) {
        return Some("an AWS access key id");
    }
    let formats: [Format; 14] = [
        ("ghp_", 36, alnum, "a GitHub token"),
        ("gho_", 36, alnum, "a GitHub token"),
        ("ghu_", 36, alnum, "a GitHub token"),
        ("ghs_", 36, alnum, "a GitHub token"),
        ("ghr_", 36, alnum, "a GitHub token"),
        ("github_pat_", 22, token, "a GitHub token"),
        ("glpat-", 20, token, "a GitLab token"),
        ("xoxb-", 10, token, "a Slack token"),
        ("xoxp-", 10, token, "a Slack token"),
        ("sk_live_", 16, alnum, "a Stripe key"),
        ("rk_live_", 16, alnum, "a Stripe key"),
        ("AIza", 35, token, "a Google API key"),
        ("hf_", 30, alnum, "a Hugging Face token"),
        ("sk-", 32, token, "an API secret key"),
    ];
    formats
        .iter()
        .find(|(prefix, min, class, _)| prefixed(w, prefix, *min, *class))
        .map(|(_, _, _, kind)| *kind)
        .or_else(|| jwt(w).then_some("a JSON Web Token"))
}

/// Three base64url segments, the first a JSON object (`eyJ` is `{"` encoded).
fn jwt(w: &str) -> bool {
    let parts: Vec<&str> = w.split('.').collect();
    parts.len() == 3
        && parts[0].starts_with("eyJ")
        && parts[1].starts_with("eyJ")
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(token))
}

/// `scheme://user:password@host…` with a non-empty password.
fn url_with_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let Some((userinfo, _host)) = authority.rsplit_once('@') else {
        return false;
    };
    userinfo
        .split_once(':')
        .is_some_and(|(_, password)| !password.is_empty())
}

/// A word of 20 or more base64 or hex characters, with letters and digits, whose Shannon
/// entropy per character clears a bar that rises with length (random text of length n
/// cannot exceed log2 n): 3.0 bits for hex of 32 or more, else 0.85·log2 n capped at 4.5.
fn random_looking(w: &str) -> bool {
    let n = w.chars().count();
    if n < 20
        || !w
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '_' | '-'))
        || !w.chars().any(|c| c.is_ascii_digit())
        || !w.chars().any(|c| c.is_ascii_alphabetic())
    {
        return false;
    }
    let entropy = shannon(w);
    if w.chars().all(|c| c.is_ascii_hexdigit()) {
        return n >= 32 && entropy >= 3.0;
    }
    entropy >= (0.85 * (n as f64).log2()).min(4.5)
}

fn shannon(w: &str) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for c in w.chars() {
        *counts.entry(c).or_insert(0usize) += 1;
    }
    let n = w.chars().count() as f64;
    counts
        .values()
        .map(|&k| {
            let p = k as f64 / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::looks_like_credential as cred;

    #[test]
    fn provider_formats_urls_keys_and_random_strings_are_credentials() {
        for (value, kind) in [
            ("AKIAIOSFODNN7EXAMPLE", "an AWS access key id"),
            ("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", "a GitHub token"),
            ("glpat-Xy7_kP2mQ9vR4tW8zB1n", "a GitLab token"),
            ("xoxb-2048-1024-aBcDeF123456", "a Slack token"),
            ("sk_live_4eC39HqLyjWDarjtT1zdp7dc", "a Stripe key"),
            (
                "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
                "a Google API key",
            ),
            (
                "hf_AbCdEfGhIjKlMnOpQrStUvWxYz01234567",
                "a Hugging Face token",
            ),
            (
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhZG1pbiJ9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
                "a JSON Web Token",
            ),
            (
                "postgres://app:S3cr3t-Passw0rd@db.internal:5432/app",
                "a URL with a password",
            ),
            (
                "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----",
                "a PEM private key",
            ),
            ("q8Zr2Lx0Vn5Tb7Wk3Yp9Mf4Hd6Js1Gc", "a high-entropy string"),
            (
                "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                "a high-entropy string",
            ),
        ] {
            assert_eq!(cred(value), Some(kind), "{value}");
        }
    }

    #[test]
    fn names_paths_numbers_ids_and_plain_urls_are_not() {
        for value in [
            "",
            "3600",
            "true",
            "/run/secrets/db-password",
            "ledger",
            "hunter2",
            "https://api.example.com/v1/charges?mode=test",
            "postgres://app@db.internal:5432/app",
            "550e8400-e29b-41d4-a716-446655440000",
            "payments-gateway-production-2024",
            "docker.io/library/nginx:1.27",
            "INFO",
            "sk-short",
        ] {
            assert_eq!(cred(value), None, "{value}");
        }
    }
}
