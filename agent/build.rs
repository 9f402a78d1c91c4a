//! Link the agent's relative relocations packed (DT_RELR, glibc ≥ 2.36): the
//! dynamic loader then reads a few kilobytes instead of ~100 KiB of
//! relocation entries at every start, and those pages stay out of the idle
//! agent's resident memory (docs/BENCHMARKS.md, "Memory").

fn main() {
    println!("cargo:rerun-if-env-changed=KEYWARD_NO_RELR");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu && std::env::var_os("KEYWARD_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bin=keyward-agent=-Wl,-z,pack-relative-relocs");
    }
}
