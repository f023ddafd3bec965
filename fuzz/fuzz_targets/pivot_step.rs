//! A pivot's steps, as the child's agent reads them from a lifecycle command, an unpivot's
//! export page, as the parent reads it from the child's answer, and the move plan, as the
//! parent's cell computes it from whatever its API server lists: any bytes are a step, a
//! page or refused, never a panic. A step taken applies only Cluster API objects, Secrets
//! and ConfigMaps into the namespace it names, and an export or release names only its
//! cluster's own namespace; a page accepted carries only what a move may, in
//! `capi-edge`; a plan moves each object at most once, and an owner that moves comes
//! before what it owns.
#![no_main]

use lattice_clusters::pivot::{self, Step};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(step) = Step::from_payload(data) {
        if let Step::Apply { namespace, objects } = &step {
            for o in objects {
                assert!(pivot::check(namespace, o).is_ok());
                assert_eq!(o["metadata"]["namespace"].as_str(), Some(namespace.as_str()));
            }
        }
        if let Step::Export { namespace, cluster, .. } | Step::Release { namespace, cluster } =
            &step
        {
            assert_eq!(*namespace, format!("capi-{cluster}"));
        }
        assert_eq!(Step::from_payload(&step.to_payload()).as_ref(), Ok(&step));
    }
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(page) = pivot::ExportPage::from_message("capi-edge", text)
    {
        assert!(page.objects.len() <= page.total);
        for o in &page.objects {
            assert!(pivot::check("capi-edge", o).is_ok());
        }
    }
    let Ok(serde_json::Value::Array(found)) = serde_json::from_slice::<serde_json::Value>(data)
    else {
        return;
    };
    let ordered = pivot::plan("edge", &found);
    assert!(ordered.len() <= found.len());
    let uid = |o: &serde_json::Value| o["metadata"]["uid"].as_str().map(str::to_owned);
    let mut seen = std::collections::HashSet::new();
    for (i, o) in ordered.iter().enumerate() {
        if let Some(u) = uid(o) {
            // Objects with the same uid are the same object listed twice; each moves once.
            if found.iter().filter(|f| uid(f).as_deref() == Some(&u)).count() == 1 {
                assert!(seen.insert(u.clone()), "{u} moves twice");
            }
        }
        for owner in o["metadata"]["ownerReferences"].as_array().into_iter().flatten() {
            let Some(owner_uid) = owner["uid"].as_str() else { continue };
            if let Some(at) = ordered.iter().position(|x| uid(x).as_deref() == Some(owner_uid)) {
                // An owner after what it owns only inside an ownership cycle, or for an
                // object that owns itself.
                if at > i {
                    let cyclic = o["metadata"]["uid"].as_str() == Some(owner_uid)
                        || ordered[at]["metadata"]["ownerReferences"].as_array().is_some();
                    assert!(cyclic, "owner {owner_uid} after what it owns");
                }
            }
        }
    }
    let _ = pivot::batches(ordered.iter().map(pivot::portable).collect());
});
