//! The bundled rule packs are compiled in (`PolicyStore::bundled`): rebuild when they change.
fn main() {
    println!("cargo:rerun-if-changed=../policies");
}
