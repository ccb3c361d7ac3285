//! Compiles the gRPC protocol (`proto/phoenix/v1alpha1/api.proto`) with protox, a protobuf
//! compiler in Rust: building phoenix-api needs no `protoc` (ADR 0015).
//!
//! protox writes the file descriptor set that `protoc --include_imports --include_source_info`
//! would (what prost-build asks protoc for), to `OUT_DIR/phoenix_descriptor.bin`;
//! tonic-prost-build generates the Rust code from that file without running protoc, and
//! `phoenix_api::proto::FILE_DESCRIPTOR_SET` embeds the same file for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor = out.join("phoenix_descriptor.bin");
    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_file("phoenix/v1alpha1/api.proto")?;
    std::fs::write(&descriptor, compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor)
        .skip_protoc_run()
        .build_server(true)
        .build_client(true)
        // Shared, reference-counted bytes: the server sends one cached copy of an object to
        // every watcher and list.
        .bytes(".phoenix.v1alpha1.WatchEvent.object")
        .bytes(".phoenix.v1alpha1.ListResponse.items")
        .compile_protos(&["proto/phoenix/v1alpha1/api.proto"], &["proto"])?;
    Ok(())
}
