//! Weights files: which one a render uses, what a file says about itself, and
//! importing other formats (ONNX, PyTorch `.pth`, safetensors) into checked
//! safetensors files with torchvision's names.

mod import;
mod onnx;
mod pickle;
mod pth;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use pastiche_spec::Backbone;

use crate::backbone::weights::{convention_of, key, metadata_of};
use crate::backbone::InputConvention;
use crate::error::{EngineError, Result};
pub use import::{import, ImportOptions};

/// The variable that names the directory of installed weights (`.cargo/config.toml`
/// sets it to the checkout's `.deps/weights` for `cargo run` and `cargo test`).
pub const WEIGHTS_DIR_VAR: &str = "PASTICHE_WEIGHTS_DIR";

/// Where installed weights live: `$PASTICHE_WEIGHTS_DIR`, else `.deps/weights` in the
/// nearest directory above the running executable that has one (a binary built in
/// a checkout, `target/release/pastiche`, finds what `scripts/setup.sh` installed).
pub fn weights_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(WEIGHTS_DIR_VAR) {
        // Absolute, as grids name installed files relative to nothing else.
        return std::path::absolute(dir).ok();
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .map(|dir| dir.join(".deps/weights"))
        .find(|dir| dir.is_dir())
}

/// The file an installed backbone's weights have in `dir`.
pub fn installed_in(dir: &Path, backbone: Backbone) -> PathBuf {
    dir.join(format!("{}.safetensors", backbone.name()))
}

/// The installed weights of `backbone`, if there are any.
pub fn installed(backbone: Backbone) -> Option<PathBuf> {
    Some(installed_in(&weights_dir()?, backbone)).filter(|path| path.is_file())
}

/// Which weights a render of a backbone uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsChoice {
    /// The file the user named.
    Given(PathBuf),
    /// None named: the pretrained file installed for the backbone.
    Installed(PathBuf),
    /// Neither: the seeded random network.
    Random,
}

impl WeightsChoice {
    pub fn path(&self) -> Option<&Path> {
        match self {
            WeightsChoice::Given(path) | WeightsChoice::Installed(path) => Some(path),
            WeightsChoice::Random => None,
        }
    }
}

/// The weights for `backbone`: the `given` file, else the installed one, else random.
pub fn resolve(backbone: Backbone, given: Option<&Path>) -> WeightsChoice {
    match (given, installed(backbone)) {
        (Some(path), _) => WeightsChoice::Given(path.to_owned()),
        (None, Some(path)) => WeightsChoice::Installed(path),
        (None, None) => WeightsChoice::Random,
    }
}

/// What a weights file says about itself, and its digest.
#[derive(Debug, Clone)]
pub struct WeightsInfo {
    pub path: PathBuf,
    pub backbone: Option<String>,
    pub convention: InputConvention,
    pub source: Option<String>,
    pub licence: Option<String>,
    pub sha256: String,
}

/// Reads a weights file's metadata and hashes it.
pub fn describe(path: &Path) -> Result<WeightsInfo> {
    let bytes = std::fs::read(path).map_err(|e| EngineError::Weights {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let metadata: HashMap<String, String> = metadata_of(path, &bytes)?;
    Ok(WeightsInfo {
        path: path.to_owned(),
        backbone: metadata.get(key::BACKBONE).cloned(),
        convention: convention_of(path, &metadata)?,
        source: metadata.get(key::SOURCE).cloned(),
        licence: metadata.get(key::LICENCE).cloned(),
        sha256: pastiche_spec::sha256_hex(&bytes),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_weights_live_under_the_backbone_name() {
        let dir = Path::new("/opt/weights");
        assert_eq!(
            installed_in(dir, Backbone::GoogLeNet),
            Path::new("/opt/weights/googlenet.safetensors")
        );
    }

    #[test]
    fn a_given_file_wins_over_the_installed_one() {
        let given = Path::new("mine.safetensors");
        assert_eq!(
            resolve(Backbone::Vgg16, Some(given)),
            WeightsChoice::Given(given.to_owned())
        );
    }
}
