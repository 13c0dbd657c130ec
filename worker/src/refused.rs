//! A worker whose token the coordinator refuses.

/// The coordinator refused this worker's token. Unlike a coordinator that is
/// away, waiting will not help: the worker stops, and is not restarted.
#[derive(Debug)]
pub struct TokenRefused {
    coordinator: String,
    message: String,
}

impl std::fmt::Display for TokenRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the coordinator refused this worker's token ({}): set --token-file or PASTICHE_TOKEN to the token of {}",
            self.message, self.coordinator
        )
    }
}

impl std::error::Error for TokenRefused {}

pub(crate) fn refused(coordinator: &str, status: &tonic::Status) -> anyhow::Error {
    TokenRefused {
        coordinator: coordinator.to_owned(),
        message: status.message().to_owned(),
    }
    .into()
}
