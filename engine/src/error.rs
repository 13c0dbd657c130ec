use std::path::PathBuf;

use pastiche_spec::ParamError;

/// Everything a render can fail with. Each variant names the input at fault, so the
/// message alone tells a user what to fix.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Params(#[from] ParamError),

    #[error("cannot read image {path}: {reason}")]
    Image { path: PathBuf, reason: String },

    // The cause is in the message, not a `#[source]`: error reports print the
    // chain, and would print it twice.
    #[error("cannot write {path}: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("weights file {path}: {reason}")]
    Weights { path: PathBuf, reason: String },

    #[error("device '{0}' is not available{1}")]
    Device(String, &'static str),

    #[error("{0}")]
    TooLarge(String),

    #[error("{image} image of {width}x{height} px is too small for layer {layer} of {backbone}; use a larger --size{}", if *image == "style" { " or --style-scale" } else { "" })]
    TooSmall {
        image: &'static str,
        width: i64,
        height: i64,
        layer: String,
        backbone: pastiche_spec::Backbone,
    },

    #[error("the loss became {value} at iteration {iteration}: lower the learning rate or the style weight")]
    NonFiniteLoss { iteration: u32, value: f64 },

    #[error("style_weight auto cannot balance this render: {0}; give style_weight a number")]
    Unbalanced(&'static str),

    #[error("{0}")]
    NoCheckpoint(&'static str),

    #[error("cancelled after {0} iterations")]
    Cancelled(u32),

    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),

    /// A bug: the render panicked. Not retried (it would panic again).
    #[error("the render panicked: {0}")]
    Panicked(String),
}

impl EngineError {
    /// Whether the same render could succeed if tried again (on this or another
    /// worker), as opposed to failing again because of its inputs.
    pub fn is_retryable(&self) -> bool {
        // Too large for the memory free here and now: another worker, or this
        // one later, may have it.
        matches!(
            self,
            EngineError::Write { .. } | EngineError::Torch(_) | EngineError::TooLarge(_)
        )
    }
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;
