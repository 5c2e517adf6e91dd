//! Rebuild when the web UI's files change: they are embedded in the
//! binary (`src/management/ui.rs`), and the embedding macro does not tell
//! cargo about them.

fn main() {
    println!("cargo:rerun-if-changed=ui/static");
}
