//! Small syntax checks shared by the rules: names, durations, quantities, cron.

/// A DNS-1123 label: lowercase alphanumerics and `-`, alphanumeric at both ends, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1035 label (what a Kubernetes Service name must be): a DNS label that starts
/// with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

/// An IANA service name (what a container port name must be): ≤ 15 characters, lowercase
/// alphanumerics and `-`, at least one letter, no `--`, not starting or ending with `-`.
pub fn is_port_name(s: &str) -> bool {
    is_dns_label(s)
        && s.len() <= 15
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.contains("--")
}

/// A host name for ingress, optionally with a leading `*.` wildcard.
pub fn is_host_name(s: &str) -> bool {
    let s = s.strip_prefix("*.").unwrap_or(s);
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// A Go duration such as `30s`, `1m`, `1h30m` or `1.5h`.
pub fn is_duration(s: &str) -> bool {
    duration_seconds(s).is_some()
}

/// The length of a Go duration in whole seconds (rounded down), or `None` if `s` is not one.
pub fn duration_seconds(s: &str) -> Option<u64> {
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest
            .bytes()
            .take_while(|b| b.is_ascii_digit() || *b == b'.')
            .count();
        let n: f64 = rest[..num_len].parse().ok().filter(|_| num_len > 0)?;
        rest = &rest[num_len..];
        let (unit, scale) = [
            ("ns", 1e-9),
            ("us", 1e-6),
            ("µs", 1e-6),
            ("ms", 1e-3),
            ("s", 1.0),
            ("m", 60.0),
            ("h", 3600.0),
        ]
        .into_iter()
        .filter(|(u, _)| rest.starts_with(u))
        .max_by_key(|(u, _)| u.len())?;
        rest = &rest[unit.len()..];
        total += n * scale;
    }
    Some(total as u64)
}

/// A duration as Flux's CRDs accept it (`^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$`): a Go
/// duration without `ns`/`us` units, bare `0` or a leading `.`.
pub fn is_flux_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let whole = rest.bytes().take_while(u8::is_ascii_digit).count();
        if whole == 0 {
            return false;
        }
        rest = &rest[whole..];
        if let Some(after) = rest.strip_prefix('.') {
            let frac = after.bytes().take_while(u8::is_ascii_digit).count();
            if frac == 0 {
                return false;
            }
            rest = &after[frac..];
        }
        match ["ms", "s", "m", "h"]
            .into_iter()
            .find(|u| rest.starts_with(u))
        {
            Some(u) => rest = &rest[u.len()..],
            None => return false,
        }
    }
    true
}

/// A Kubernetes quantity such as `512Mi`, `1.5Gi`, `250m` or `2`.
pub fn is_quantity(s: &str) -> bool {
    quantity_value(s).is_some()
}

/// The value of a quantity (bytes for memory suffixes).
pub fn quantity_value(s: &str) -> Option<f64> {
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
        ("m", 1e-3),
    ];
    let (num, mult) = suffixes
        .iter()
        .find_map(|(suf, m)| s.strip_suffix(suf).map(|n| (n, *m)))
        .unwrap_or((s, 1.0));
    if num.is_empty()
        || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || num.matches('.').count() > 1
    {
        return None;
    }
    num.parse::<f64>().ok().map(|n| n * mult)
}

/// A five-field cron schedule (or a `@hourly`-style macro).
pub fn is_cron(s: &str) -> bool {
    if s.starts_with('@') {
        return matches!(
            s,
            "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly"
        );
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5
        && fields.iter().all(|f| {
            f.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'*' | b',' | b'-' | b'/' | b'?'))
        })
}

/// A namespaced sysctl name such as `net.ipv4.ip_local_port_range`.
pub fn is_sysctl(s: &str) -> bool {
    let parts: Vec<&str> = s.split(['.', '/']).collect();
    parts.len() >= 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flux_durations() {
        for ok in ["10m", "1h30m", "1.5h", "500ms", "30s"] {
            assert!(is_flux_duration(ok), "{ok}");
        }
        for bad in ["", "0", "10", "1us", ".5h", "1.h", "5 m", "m"] {
            assert!(!is_flux_duration(bad), "{bad}");
        }
    }

    #[test]
    fn durations() {
        for ok in ["1m", "30s", "1h30m", "1.5h", "100ms", "0"] {
            assert!(is_duration(ok), "{ok}");
        }
        for bad in ["", "1", "m", "1d", "1 m", "-1m", "1mm1"] {
            assert!(!is_duration(bad), "{bad}");
        }
    }

    #[test]
    fn quantities() {
        assert_eq!(quantity_value("1Gi"), Some(1024f64.powi(3)));
        assert_eq!(quantity_value("250m"), Some(0.25));
        assert!(is_quantity("50Gi") && is_quantity("2") && is_quantity("0.5"));
        assert!(
            !is_quantity("Gi")
                && !is_quantity("1GB")
                && !is_quantity("1.2.3")
                && !is_quantity("-1")
        );
    }

    #[test]
    fn names() {
        assert!(is_dns1035_label("api-gateway"));
        assert!(!is_dns1035_label("1api") && !is_dns1035_label("Api") && !is_dns1035_label("api-"));
        assert!(is_port_name("http") && is_port_name("grpc-web"));
        assert!(
            !is_port_name("averyveryverylongname")
                && !is_port_name("8080")
                && !is_port_name("a--b")
        );
        assert!(is_host_name("api.example.com") && is_host_name("*.example.com"));
        assert!(!is_host_name("api_example.com") && !is_host_name("https://x"));
        assert!(is_cron("0 3 * * *") && is_cron("@daily") && !is_cron("0 3 * *"));
        assert!(is_sysctl("net.ipv4.ip_forward") && !is_sysctl("forward"));
    }
}
