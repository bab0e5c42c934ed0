//! Generates bindings to the system DPDK with bindgen and compiles the
//! wrappers bindgen writes for DPDK's `static inline` functions
//! (`rte_eth_rx_burst`, `rte_pktmbuf_alloc`, `rte_ring_*`, ...), which have
//! no symbol in the shared libraries.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-changed=helpers.c");
    println!("cargo:rerun-if-changed=build.rs");

    let dpdk =
        pkg_config::Config::new().atleast_version("22.11").cargo_metadata(false).probe("libdpdk").unwrap_or_else(|e| {
            panic!(
                "DPDK 22.11 not found via pkg-config (libdpdk): {e}\n\
                 fix: run scripts/setup.sh (installs libdpdk-dev) as root"
            )
        });

    // Link: the shared libraries pkg-config names. PMDs are loaded at run
    // time by EAL from Debian's plugin directory, so only the libraries we
    // call are needed; `--as-needed` drops the rest.
    for path in &dpdk.link_paths {
        println!("cargo:rustc-link-search=native={}", path.display());
    }
    for lib in &dpdk.libs {
        println!("cargo:rustc-link-lib=dylib={lib}");
    }

    let mut clang_args: Vec<String> = dpdk.include_paths.iter().map(|p| format!("-I{}", p.display())).collect();
    clang_args.push("-include".into());
    clang_args.push("rte_config.h".into());
    // DPDK's headers need SSE4.2 intrinsics on x86.
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        clang_args.push("-march=corei7".into());
    }

    let out = PathBuf::from(env::var("OUT_DIR").unwrap());
    let wrap_src = out.join("static_fns");

    let bindings = bindgen::Builder::default()
        .header("wrapper.h")
        .clang_args(&clang_args)
        .wrap_static_fns(true)
        .wrap_static_fns_path(&wrap_src)
        .allowlist_function("rte_.*")
        .allowlist_function("ubox_.*")
        .allowlist_type("rte_.*")
        .allowlist_var("RTE_.*")
        .allowlist_var("RING_F_.*")
        // Packed structs that hold aligned ones: Rust cannot represent them.
        .opaque_type("rte_l2tpv2_.*")
        .opaque_type("rte_gtp_.*")
        .opaque_type("rte_flow_item_l2tpv2")
        .opaque_type("rte_flow_item_gtp.*")
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_arp_ipv4")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        .prepend_enum_name(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on DPDK headers");
    bindings.write_to_file(out.join("bindings.rs")).expect("writing bindings.rs");

    // Compile bindgen's wrappers for static inline functions plus our helpers.
    let mut build = cc::Build::new();
    build
        .file(wrap_src.with_extension("c"))
        .file("helpers.c")
        .include(env::var("CARGO_MANIFEST_DIR").unwrap())
        .flag("-include")
        .flag("rte_config.h")
        .flag("-O3")
        .warnings(false);
    for p in &dpdk.include_paths {
        build.include(p);
    }
    if env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        build.flag("-march=corei7");
    }
    build.compile("ubox_dpdk_inline");
}
