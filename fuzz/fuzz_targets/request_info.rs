//! The proxy's request reading: any method, path and query read as a request or refused
//! with an error, never a panic; a request that reads is read the same way twice, its
//! Cedar action is one the schema declares, and a name or namespace never holds a segment
//! the path did not (no `..` survives).
#![no_main]

use lattice_proxy::RequestInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // method \n path \n query
    let mut parts = text.splitn(3, '\n');
    let method = parts.next().unwrap_or_default();
    let path = parts.next().unwrap_or_default();
    let query = parts.next().unwrap_or_default();
    let Ok(info) = RequestInfo::parse(method, path, query) else {
        return;
    };
    assert_eq!(RequestInfo::parse(method, path, query).as_ref(), Ok(&info));
    let action = info.action();
    assert!(
        lattice_proxy::PROXY_ACTIONS.contains(&action),
        "{action} is not a proxy action"
    );
    for field in [&info.namespace, &info.resource, &info.name, &info.subresource] {
        assert!(field != ".." && field != ".", "{info:?}");
    }
});
