//! Writes the C header of the ABI (`include/nncy_kernels.h`) with cbindgen.
//! The file is rewritten only when its content changes, so that builds that
//! depend on it are not invalidated needlessly.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=src/ffi.rs");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let header = match cbindgen::Builder::new().with_crate(&dir).with_config(config).generate() {
        Ok(bindings) => {
            let mut text = Vec::new();
            bindings.write(&mut text);
            text
        }
        Err(e) => {
            // A syntax error in the crate is reported better by rustc itself.
            println!("cargo:warning=cbindgen failed, header not updated: {e}");
            return;
        }
    };
    let path = dir.join("include").join("nncy_kernels.h");
    if std::fs::read(&path).ok().as_deref() != Some(&header[..]) {
        std::fs::create_dir_all(path.parent().unwrap()).expect("create include/");
        std::fs::write(&path, header).expect("write include/nncy_kernels.h");
    }
}
