//! Finds the libtorch that torch-sys links against (the project venv's `torch/lib`) and writes it
//! into the binary's run-time search path, so `sam6d` runs without `LD_LIBRARY_PATH`.
//! Also forces `libtorch_cuda` to stay linked where it exists: with `--as-needed` the linker
//! drops it (nothing references it by symbol) and CUDA silently becomes unavailable (tch-rs #980).
use std::path::PathBuf;
use std::process::Command;

/// (libtorch lib dir, torch version) as the venv's Python reports them.
fn torch_info() -> Option<(PathBuf, String)> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let version = std::fs::read_to_string(PathBuf::from(&dir).join("build-version")).unwrap_or_default();
        return Some((PathBuf::from(dir).join("lib"), version.trim().to_string()));
    }
    // The same interpreter torch-sys asks (scripts/env.sh puts the venv first on PATH).
    let python = if std::env::var_os("VIRTUAL_ENV").is_some() { "python" } else { "python3" };
    let out = Command::new(python)
        .args(["-c", "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib')); print(torch.__version__)"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next()?.trim());
    let version = lines.next().unwrap_or("").trim().to_string();
    dir.is_dir().then_some((dir, version))
}

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=VIRTUAL_ENV");
    println!("cargo:rerun-if-changed=build.rs");
    let Some((dir, version)) = torch_info() else {
        println!("cargo:warning=libtorch not found: run scripts/setup.sh (creates .venv with torch)");
        println!("cargo:rustc-env=SAM6D_LIBTORCH_VERSION=unknown");
        println!("cargo:rustc-env=SAM6D_LIBTORCH_DIR=unknown");
        return;
    };
    let dir = dir.canonicalize().unwrap_or(dir);
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    println!("cargo:rustc-env=SAM6D_LIBTORCH_DIR={}", dir.display());
    println!("cargo:rustc-env=SAM6D_LIBTORCH_VERSION={version}");
    if dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
