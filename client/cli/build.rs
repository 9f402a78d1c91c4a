//! Link the CLI's relative relocations packed (DT_RELR, glibc ≥ 2.36): a cold
//! `keyward get` then spends less time in the dynamic loader.

fn main() {
    println!("cargo:rerun-if-env-changed=KEYWARD_NO_RELR");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").is_ok_and(|env| env == "gnu");
    if linux && gnu && std::env::var_os("KEYWARD_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bin=keyward=-Wl,-z,pack-relative-relocs");
    }
}
