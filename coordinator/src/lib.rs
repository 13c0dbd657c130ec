//! The coordinator: it takes grids of renders from users and hands their tasks to
//! workers. It never links libtorch.

pub mod scheduler;
