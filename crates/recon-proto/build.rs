//! Generates the change-event types from `proto/` (needs `protoc` on PATH or
//! in `PROTOC`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not with env!(): a build script binary can be reused
    // from another checkout of the same sources.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR")?;
    let proto_root = std::path::Path::new(&manifest_dir).join("../../proto");
    let events = proto_root.join("recon/events/v1/events.proto");
    println!("cargo:rerun-if-changed={}", events.display());
    prost_build::compile_protos(&[events], &[proto_root])?;
    Ok(())
}
