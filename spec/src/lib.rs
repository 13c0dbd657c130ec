//! What one render is, independent of how it runs.
//!
//! These types are shared by the engine (which runs a render with libtorch), the
//! farm (which schedules renders and must not link libtorch) and the CLI. Anything
//! that can be checked without a tensor is checked here, so a bad parameter is
//! refused where it is written rather than on a worker.

mod duration;
mod finished;
mod grid;
mod layers;
pub mod layout;
mod losses;
pub mod params;
#[cfg(feature = "store")]
pub mod store;
mod style;
#[cfg(feature = "images")]
pub mod upright;

pub use duration::{format_duration, parse_duration};
pub use finished::{FinishedTask, TaskInputs, Winner};
pub use grid::{
    grid_with_input_keys, grid_with_pretrained_weights, input_digest, input_entries, input_names,
    local_inputs, parse_grid, read_grid, sha256_hex, task_id, Grid, GridError, GridTask,
    MAX_GRID_TASKS, PRETRAINED,
};
pub use layers::{
    Backbone, LayerError, GOOGLENET_LAYERS, INCEPTION_V3_LAYERS, VGG16_LAYERS, VGG19_LAYERS,
};
pub use losses::{scale_of_csv_row, LossRecord, LOSSES_CSV_HEADER, LOSSES_CSV_HEADER_WITH_SCALE};
pub use params::table::{Param, PARAMS};
pub use params::{
    Init, LineSearch, OptimizerKind, OptimizerSpec, ParamError, Precision, RenderParams, Stage,
    StyleLayer, StyleWeight, DEFAULT_STOP_WINDOW, MAX_SIZE, MIN_SIZE,
};
pub use style::Style;

/// The last error of `error`'s chain of sources: for errors whose messages
/// repeat their causes' (transports, object stores), the one worth printing.
pub fn innermost_cause<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause
}

/// Seconds since the Unix epoch, for the records people read (0 if the clock is
/// before it).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
