//! Compiles pastiche.proto with protox (a protobuf compiler in Rust, so building
//! needs no protoc installed), and keeps the encoded descriptors for gRPC reflection.
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=pastiche.proto");
    let descriptors = protox::compile(["pastiche.proto"], ["."])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("pastiche_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
