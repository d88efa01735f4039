//! Links libsparse. Where the library is found, in order:
//!
//! 1. `SPARSE_LIB_DIR`: the directory holding libsparse.so;
//! 2. `pkg-config --libs sparse` (honours PKG_CONFIG_PATH and PKG_CONFIG_SYSROOT_DIR; the
//!    program is `$PKG_CONFIG` when set).
//!
//! The directories found are also written into this package's own binaries (tests, examples) as
//! an rpath so that `cargo test` runs without LD_LIBRARY_PATH; set SPARSE_NO_RPATH=1 to skip.
use std::env;
use std::process::Command;

fn main() {
    for var in [
        "SPARSE_LIB_DIR",
        "SPARSE_NO_RPATH",
        "PKG_CONFIG",
        "PKG_CONFIG_PATH",
        "PKG_CONFIG_SYSROOT_DIR",
        "PKG_CONFIG_LIBDIR",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-changed=build.rs");
    let mut dirs: Vec<String> = Vec::new();
    if let Ok(dir) = env::var("SPARSE_LIB_DIR") {
        if dir.is_empty() {
            panic!("SPARSE_LIB_DIR is set but empty");
        }
        dirs.push(dir);
    } else {
        let pkg_config = env::var("PKG_CONFIG").unwrap_or_else(|_| "pkg-config".to_string());
        let output = Command::new(&pkg_config).args(["--libs", "sparse"]).output();
        match output {
            Ok(out) if out.status.success() => {
                let text = String::from_utf8_lossy(&out.stdout).to_string();
                for flag in text.split_whitespace() {
                    if let Some(dir) = flag.strip_prefix("-L") {
                        dirs.push(dir.to_string());
                    }
                }
            }
            Ok(out) => panic!(
                "libsparse not found: `{pkg_config} --libs sparse` failed ({}). Set \
                 SPARSE_LIB_DIR to the directory holding libsparse.so, or PKG_CONFIG_PATH to the \
                 directory holding sparse.pc.",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => panic!(
                "libsparse not found: cannot run `{pkg_config}` ({e}). Set SPARSE_LIB_DIR to the \
                 directory holding libsparse.so."
            ),
        }
    }
    let rpath = env::var("SPARSE_NO_RPATH").map(|v| v != "1").unwrap_or(true);
    for dir in &dirs {
        println!("cargo:rustc-link-search=native={dir}");
        if rpath {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
    }
    println!("cargo:rustc-link-lib=dylib=sparse");
}
