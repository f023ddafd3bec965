//! `lattice login --oidc-issuer`'s reading of what an issuer answers: any bytes as a
//! discovery document, a device authorization response (under any status), a token
//! endpoint answer, or an ID token are read or refused, never a panic. Whatever is accepted
//! holds what the login relies on: endpoints and pages over https, a non-empty ID token, an
//! ID token of the issuer for the client that has not expired.
#![no_main]

use lattice_cli::device_flow::{
    Poll, check_id_token, next_interval, read_device_code, read_discovery, read_poll,
};
use libfuzzer_sys::fuzz_target;

const ISSUER: &str = "https://idp.example.com";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let status = [200u16, 400, 401, 403, 500][usize::from(mode >> 4) % 5];
    match mode % 4 {
        0 => {
            if let Ok(e) = read_discovery(ISSUER, rest) {
                assert!(e.device_authorization.starts_with("https://"));
                assert!(e.token.starts_with("https://"));
            }
        }
        1 => {
            if let Ok(code) = read_device_code(ISSUER, status, rest) {
                assert_eq!(status, 200);
                assert!(code.verification_uri.starts_with("https://"));
                assert!(!code.user_code.is_empty());
                assert!(code.expires_in > 0);
                assert!(!code.user_code.chars().any(char::is_control));
            }
        }
        2 => {
            let answer = read_poll(status, rest);
            if let Poll::Token(t) = &answer {
                assert_eq!(status, 200);
                assert!(!t.id_token.is_empty());
                assert!(t.refresh_token.as_ref().is_none_or(|r| !r.is_empty()));
            }
            let wait = next_interval(u64::from(mode), &answer);
            assert!((1..=60).contains(&wait));
        }
        _ => {
            let now = jiff::Timestamp::from_second(1_800_000_000).unwrap();
            let token = String::from_utf8_lossy(rest);
            if let Ok(expiry) = check_id_token(&token, ISSUER, "lattice", now) {
                assert!(expiry > now);
            }
        }
    }
});
