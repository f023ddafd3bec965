fn main() {
    for k in lattice_schemas::crd::Kind::ALL {
        println!("---\n{}", serde_json::to_string_pretty(&k.crd()).unwrap());
    }
}
