//! Compiles `proto/hotrestart.proto` with protox (pure Rust, no `protoc`) and prost-build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/hotrestart.proto");
    let fds = protox::compile(["hotrestart.proto"], ["proto"])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
