//! Generates the change-event types from `proto/` (needs `protoc` on PATH or
//! in `PROTOC`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let events = proto_root.join("recon/events/v1/events.proto");
    println!("cargo:rerun-if-changed={}", events.display());
    prost_build::compile_protos(&[events], &[proto_root])?;
    Ok(())
}
