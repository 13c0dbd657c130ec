//! What the coordinator's socket tests share: a tiny grid and a configuration.

use std::time::Duration;

use pastiche_coordinator::core::CoordinatorConfig;
use pastiche_coordinator::scheduler::SchedulerConfig;

/// Two tasks on inputs that are already (nominally) in the store.
#[allow(dead_code)] // not every test file that shares this module uses it
pub const GRID: &str = r#"
name = "tiny"
content = ["inputs/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.png"]
style = ["inputs/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.jpg"]
[grid]
size = [32, 48]
iterations = 3
"#;

pub fn config(lease: Duration) -> CoordinatorConfig {
    CoordinatorConfig {
        scheduler: SchedulerConfig {
            lease_timeout: lease,
            blocklist_after: 3,
            ..SchedulerConfig::default()
        },
        default_max_attempts: 3,
        ..CoordinatorConfig::default()
    }
}
