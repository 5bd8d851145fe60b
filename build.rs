//! Compiles `proto/` into tonic clients and servers without a `protoc` install:
//! `protox` parses the files in pure Rust and `tonic-prost-build` generates
//! code from the resulting descriptors.
//!
//! The descriptor set written for reflection is the one protox encodes itself:
//! going through `prost_types::FileDescriptorSet` would drop extension options
//! such as `google.api.http`, which the REST gateway transcodes from.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "ordermesh/common/v1/money.proto",
    "ordermesh/inventory/v1/inventory.proto",
    "ordermesh/payment/v1/payment.proto",
    "ordermesh/order/v1/order.proto",
    "ordermesh/events/v1/events.proto",
    "ordermesh/mesh/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["proto"])?;
    compiler.include_imports(true).include_source_info(true);
    for proto in PROTOS {
        compiler.open_file(proto)?;
    }
    std::fs::write(
        out_dir.join("ordermesh_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
