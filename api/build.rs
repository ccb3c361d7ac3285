//! Compiles the gRPC protocol (`proto/phoenix/v1alpha1/api.proto`) with protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("phoenix_descriptor.bin"))
        .build_server(true)
        .build_client(true)
        // Shared, reference-counted bytes: the server sends one cached copy of an object to
        // every watcher and list.
        .bytes(".phoenix.v1alpha1.WatchEvent.object")
        .bytes(".phoenix.v1alpha1.ListResponse.items")
        .compile_protos(&["proto/phoenix/v1alpha1/api.proto"], &["proto"])?;
    Ok(())
}
