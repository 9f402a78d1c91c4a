//! Link options for the agent binary (docs/BENCHMARKS.md, "Memory"):
//!
//! - Relative relocations packed (DT_RELR, glibc ≥ 2.36): the dynamic loader
//!   reads a few kilobytes instead of ~100 KiB of relocation entries at every
//!   start, and those pages stay out of the idle agent's resident memory.
//! - On x86_64 Linux, where rustc links with its own lld: the functions that
//!   run at start-up and while idle placed first and together in `.text`
//!   (`link/idle-order.txt`, made by `link/make-idle-order.sh`). The kernel
//!   maps code in 64 KiB runs around each page a process touches, so a hot set
//!   scattered through 2.7 MiB of code kept most of it resident.
//!
//! `KEYWARD_NO_RELR` and `KEYWARD_NO_ORDERFILE` turn them off (an older glibc;
//! a linker other than lld).

fn main() {
    println!("cargo:rerun-if-env-changed=KEYWARD_NO_RELR");
    println!("cargo:rerun-if-env-changed=KEYWARD_NO_ORDERFILE");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let linux_gnu = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if linux_gnu && std::env::var_os("KEYWARD_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bin=keyward-agent=-Wl,-z,pack-relative-relocs");
    }
    if linux_gnu
        && var("CARGO_CFG_TARGET_ARCH") == "x86_64"
        && std::env::var_os("KEYWARD_NO_ORDERFILE").is_none()
    {
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("link/idle-order.txt");
        println!("cargo:rerun-if-changed={}", order.display());
        println!(
            "cargo:rustc-link-arg-bin=keyward-agent=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        // Names of another build's hashes are skipped silently; CI checks
        // the shipped build still finds them (link/check-idle-order.sh).
        println!("cargo:rustc-link-arg-bin=keyward-agent=-Wl,--no-warn-symbol-ordering");
    }
}
