#!/usr/bin/env python3
"""Load Lattice's OSCAL with compliance-trestle, as an assessor's tooling would.

    tools/oscal-trestle-check.py [--binary PATH] [--world DIR] [--keep DIR]

Generates, with the lattice-policy binary, the assessment plan and the assessment results
of a scan of the example world (`examples/world`) and the SOC 2 and CIS Kubernetes
catalogs, then reads each with trestle's OSCAL models (pydantic models of NIST's
schema) and checks what ties them together: the results' import-ap names the plan's
file and carries its SHA-256, every control id the results review resolves in a catalog
(NIST's from the reference material under LATTICE_REFERENCE_DIR when it is there), and
every observed subject is in the inventory. Exit 0 when all of it holds, 1 otherwise.

The binary: --binary, else $LATTICE_POLICY, else the newest of
$CARGO_TARGET_DIR/{release,debug}/lattice-policy (default target dir: ./target).
"""

import argparse
import hashlib
import os
import pathlib
import subprocess
import sys
import tempfile

AT = "2026-11-21T12:00:00Z"
ASSESSOR = "Example Audit LLP"


def fail(message):
    print(f"oscal-trestle-check: {message}", file=sys.stderr)
    sys.exit(1)


def find_binary(given):
    if given:
        return pathlib.Path(given)
    if os.environ.get("LATTICE_POLICY"):
        return pathlib.Path(os.environ["LATTICE_POLICY"])
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", "target"))
    found = [
        target / profile / "lattice-policy"
        for profile in ("release", "debug")
        if (target / profile / "lattice-policy").is_file()
    ]
    if not found:
        fail(f"no lattice-policy binary under {target}/{{release,debug}}; build it or pass --binary")
    return max(found, key=lambda p: p.stat().st_mtime)


def run(binary, args, ok=(0,)):
    done = subprocess.run([str(binary), *args], capture_output=True, text=True)
    if done.returncode not in ok:
        fail(f"`lattice-policy {' '.join(args)}` exited {done.returncode}:\n{done.stderr}")
    return done


def generate(binary, world, out):
    # Exit 1 is a scan with findings: the example world has some on purpose.
    common = ["--world", str(world), "--at", AT, "--assessor", ASSESSOR]
    run(binary, ["compliance", "scan", "-o", "oscal-ap", "--out", str(out / "report.oscal-ap.json"), *common], ok=(0, 1))
    run(binary, ["compliance", "scan", "-o", "oscal", "--out", str(out / "report.oscal.json"), *common], ok=(0, 1))
    for framework in ("soc2", "cis-kubernetes"):
        run(binary, ["compliance", "catalog", "--framework", framework, "--at", AT,
                     "--out", str(out / f"catalog-{framework}.json")])


def control_ids(catalog):
    """The control ids and part ids (objectives among them) of a catalog."""
    ids, objectives = set(), set()

    # trestle's generated models differ in which lists each level has: read them softly.
    def each(obj, field):
        return getattr(obj, field, None) or []

    def parts(ps):
        for p in ps:
            if getattr(p, "id", None):
                objectives.add(p.id)
            parts(each(p, "parts"))

    def controls(cs):
        for c in cs:
            ids.add(c.id)
            parts(each(c, "parts"))
            controls(each(c, "controls"))

    def groups(gs):
        for g in gs:
            controls(each(g, "controls"))
            groups(each(g, "groups"))

    controls(each(catalog, "controls"))
    groups(each(catalog, "groups"))
    return ids, objectives


def prop(obj, name):
    return next((p.value for p in obj.props or [] if p.name == name), None)


def check(out):
    try:
        from trestle.oscal.assessment_plan import AssessmentPlan
        from trestle.oscal.assessment_results import AssessmentResults
        from trestle.oscal.catalog import Catalog
    except ImportError as e:
        fail(f"compliance-trestle is not installed ({e}); pip install compliance-trestle")

    def read(model, path):
        try:
            doc = model.oscal_read(path)
        except Exception as e:  # trestle raises its own errors and pydantic's
            fail(f"trestle cannot load {path.name} as {model.__name__}:\n{e}")
        if doc is None:
            fail(f"trestle found nothing in {path.name}")
        print(f"  {path.name}: {model.__name__} {doc.uuid}")
        return doc

    ap = read(AssessmentPlan, out / "report.oscal-ap.json")
    ar = read(AssessmentResults, out / "report.oscal.json")
    catalogs = {
        fw: read(Catalog, out / f"catalog-{fw}.json") for fw in ("soc2", "cis-kubernetes")
    }
    reference = os.environ.get("LATTICE_REFERENCE_DIR")
    nist = None
    if reference:
        path = pathlib.Path(reference) / "oscal" / "NIST_SP-800-53_rev5_HIGH-baseline-resolved-profile_catalog-min.json"
        if path.is_file():
            nist = read(Catalog, path)
    if nist is not None:
        catalogs["nist-800-53"] = nist
    else:
        print("  (no NIST catalog under LATTICE_REFERENCE_DIR: nist-800-53 ids are not resolved here)")

    # The plan the results import is the file beside them, with the hash they carry.
    href = ar.import_ap.href
    plan = out / href
    if not plan.is_file():
        fail(f"import-ap names {href}, which is not beside the results")
    digest = hashlib.sha256(plan.read_bytes()).hexdigest()
    hashes = [
        h.value
        for r in (ar.back_matter.resources if ar.back_matter else [])
        for link in r.rlinks or []
        if link.href == href
        for h in link.hashes or []
    ]
    if digest not in hashes:
        fail(f"no back-matter hash of {href} matches its SHA-256 {digest} (found {hashes})")

    # Every reviewed control and every finding's objective resolves in a catalog.
    resolvable = {fw: control_ids(c) for fw, c in catalogs.items()}
    if len(ar.results) != 1:
        fail(f"expected one result, found {len(ar.results)}")
    result = ar.results[0]
    checked = 0
    for selection in [*result.reviewed_controls.control_selections, *ap.reviewed_controls.control_selections]:
        fw = prop(selection, "framework")
        if fw not in resolvable:
            continue
        for c in [*(selection.include_controls or []), *(selection.exclude_controls or [])]:
            if c.control_id not in resolvable[fw][0]:
                fail(f"{fw} control {c.control_id} resolves in no catalog")
            checked += 1
    for finding in result.findings or []:
        fw = prop(finding, "framework")
        if fw in resolvable and finding.target.target_id not in resolvable[fw][1]:
            fail(f"{fw} objective {finding.target.target_id} resolves in no catalog")
    if checked == 0:
        fail("no control id was checked")

    # Every observed subject is inventoried, in the results and in the plan alike.
    items = {i.uuid for i in result.local_definitions.inventory_items or []}
    planned = {i.uuid for i in ap.local_definitions.inventory_items or []}
    if items != planned:
        fail("the plan and the results inventory different subjects")
    for o in result.observations or []:
        for s in o.subjects or []:
            if s.subject_uuid not in items:
                fail(f"observation {o.uuid} names subject {s.subject_uuid}, which is not inventoried")
        if [m.value if hasattr(m, "value") else m for m in o.methods] != ["EXAMINE"]:
            fail(f"observation {o.uuid} has methods {o.methods}, not EXAMINE")
    print(f"  {checked} control ids resolved, {len(items)} subjects inventoried, "
          f"{len(result.risks or [])} risks, {len(result.findings or [])} findings")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", help="the lattice-policy binary")
    parser.add_argument("--world", default="examples/world", help="the world to scan")
    parser.add_argument("--keep", help="write the documents here instead of a temporary directory")
    args = parser.parse_args()
    binary = find_binary(args.binary)
    if not binary.is_file():
        fail(f"{binary} is not a file")
    print(f"oscal-trestle-check: {binary} on {args.world}")
    if args.keep:
        out = pathlib.Path(args.keep)
        out.mkdir(parents=True, exist_ok=True)
        generate(binary, args.world, out)
        check(out)
    else:
        with tempfile.TemporaryDirectory(prefix="lattice-oscal-") as d:
            generate(binary, args.world, pathlib.Path(d))
            check(pathlib.Path(d))
    print("oscal-trestle-check: trestle loads the plan, the results and the catalogs")


if __name__ == "__main__":
    main()
