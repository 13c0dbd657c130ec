//! Shared by every package that links libtorch (`build = "../engine/build.rs"`).
//!
//! torch-sys puts libtorch's directory in its own rpath only, which does not reach a
//! downstream binary or test: without this, each of them would need LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_some() {
        // Nothing references libtorch_cuda by symbol (it registers the CUDA backend in
        // static initialisers), so the default --as-needed drops it and no GPU is seen.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
