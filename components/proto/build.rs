//! Compiles every `.proto` file under `proto/` with protox (no `protoc` needed),
//! generates prost code for all of them and saves the encoded descriptor set
//! for the reflection-based JSON codec.

use std::path::{Path, PathBuf};
use std::{env, fs};

use prost::Message;

fn collect_protos(dir: &Path, root: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let mut entries = fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_protos(&path, root, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            let relative = path
                .strip_prefix(root)
                .expect("file lies under the proto root");
            out.push(relative.to_path_buf());
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("proto");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // A directory makes cargo rescan it, so files added later trigger a rebuild.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    let mut files = Vec::new();
    collect_protos(&proto_root, &proto_root, &mut files)?;

    let mut compiler = protox::Compiler::new([&proto_root])?;
    compiler.include_imports(true).include_source_info(true);
    compiler.open_files(&files)?;
    let fds = compiler.file_descriptor_set();

    // The runtime pool does not need comments and source spans.
    let mut lean = fds.clone();
    for file in &mut lean.file {
        file.source_code_info = None;
    }
    fs::write(
        out_dir.join("file_descriptor_set.bin"),
        lean.encode_to_vec(),
    )?;

    prost_build::Config::new()
        .enable_type_names()
        .include_file("_includes.rs")
        .compile_fds(fds)?;
    Ok(())
}
